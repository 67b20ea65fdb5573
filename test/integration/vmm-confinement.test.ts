/**
 * VMM confinement on a real VM: the QEMU process of a running container holds only the 9p
 * capabilities under a uid of its own, with no_new_privs and a seccomp filter, sits in its own
 * cgroup with limits derived from the VM, sees only its own files — and the container still
 * works (ownership, setuid/setgid bits, files of a non-root user). Its cgroup goes with it.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import path from 'node:path';
import type { GuestImage } from '../../src/drivers/guest/guest-image';
import type { QemuHypervisor } from '../../src/drivers/hypervisor/qemu';
import {
  SHARE_CAPABILITIES,
  VMM_MEMORY_OVERHEAD_BYTES,
  VMM_UID_BASE,
  VMM_UID_RANGE,
} from '../../src/drivers/hypervisor/vmm-confinement';
import { Sandbox } from '../../src/engine/sandbox';
import { isAlive, makeContainerRootfs, openQemu, readAll, testGuestImage, waitUntil, type TestContainerDir } from '../helpers/guest';

jest.setTimeout(120_000);

const CAP_BITS: Record<string, number> = { chown: 0, dac_override: 1, fowner: 3, fsetid: 4, mknod: 27, setfcap: 31, net_admin: 12 };
const MEMORY_MIB = 96;

let guest: GuestImage;
let qemu: QemuHypervisor;
let ctr: TestContainerDir;
let sandbox: Sandbox;
let pid: number;
let on: (measure: string) => boolean;

beforeAll(async () => {
  guest = await testGuestImage();
  qemu = await openQemu();
  const opts = (qemu.info().securityOptions ?? []).join(' ');
  on = (m) => opts.includes(m);
  ctr = await makeContainerRootfs();
  sandbox = await Sandbox.start(qemu, guest, { id: 'vmm-confinement-test', rootfsDir: ctr.rootfs.merged, memoryMiB: MEMORY_MIB, vcpus: 1 });
  pid = sandbox.vm.pid;
});

afterAll(async () => {
  await sandbox?.kill();
  await ctr?.cleanup();
});

function status(p: number): Record<string, string> {
  return Object.fromEntries(
    readFileSync(`/proc/${p}/status`, 'utf8')
      .split('\n')
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
  );
}

async function sh(script: string, uid = 0) {
  const p = await sandbox.exec({ args: ['sh', '-c', script], env: ['PATH=/bin'], uid, gid: uid });
  const [stdout, stderr, exit] = await Promise.all([readAll(p.stdout), readAll(p.stderr), p.exited]);
  return { stdout, stderr, ...exit };
}

/** The VM's cgroup directories, from /proc/<pid>/cgroup and the mounted hierarchies. */
function vmCgroups(p: number): Array<{ controller: string; dir: string }> {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  const out: Array<{ controller: string; dir: string }> = [];
  for (const line of readFileSync(`/proc/${p}/cgroup`, 'utf8').trim().split('\n')) {
    const [, ctrls, rel] = line.split(':');
    if (!rel.includes('/paddock/')) continue;
    const m = ctrls === '' ? mounts.find((f) => f[2] === 'cgroup2') : mounts.find((f) => f[2] === 'cgroup' && f[3].split(',').includes(ctrls.split(',')[0]));
    if (m) out.push({ controller: ctrls || 'unified', dir: path.join(m[1], rel) });
  }
  return out;
}

test('docker info lists the measures in force', () => {
  const opts = qemu.info().securityOptions ?? [];
  expect(opts).toContain('name=seccomp,profile=qemu-sandbox');
  expect(opts.find((o) => o.startsWith('name=vmm-confinement,'))).toMatch(/user=per-vm,caps=chown\+dac_override\+fowner\+fsetid\+setfcap,no-new-privs,cgroup=v[12],mountns/);
});

test('QEMU runs under a uid of its own with only the 9p capabilities, no_new_privs and a seccomp filter', () => {
  const s = status(pid);
  expect(s.Name).toMatch(/^qemu-system/);
  const mask = SHARE_CAPABILITIES.reduce((m, c) => m | (1n << BigInt(CAP_BITS[c])), 0n);
  const hex = mask.toString(16).padStart(16, '0');
  expect(s.CapEff).toBe(hex);
  expect(s.CapPrm).toBe(hex);
  expect(s.CapBnd).toBe(hex);
  expect(s.NoNewPrivs).toBe('1');
  expect(s.Seccomp).toBe('2');
  const uids = s.Uid.split(/\s+/).map(Number);
  expect(new Set(uids).size).toBe(1);
  expect(uids[0]).toBeGreaterThanOrEqual(VMM_UID_BASE);
  expect(uids[0]).toBeLessThan(VMM_UID_BASE + VMM_UID_RANGE);
  expect(s.Gid.split(/\s+/).map(Number)).toEqual([uids[0], uids[0], uids[0], uids[0]]);
  expect(s.Groups).toBe('');
});

test('QEMU is alone in its own cgroup, with limits derived from the VM', () => {
  expect(on('cgroup=')).toBe(true);
  const cgs = vmCgroups(pid);
  expect(cgs.length).toBeGreaterThan(0);
  for (const { controller, dir } of cgs) {
    expect(dir).toMatch(new RegExp(`/paddock/d${process.pid}/vmm-confinement-test\\.\\d+$`));
    expect(readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim().split('\n')).toEqual([String(pid)]);
    const read = (f: string) => readFileSync(path.join(dir, f), 'utf8').trim();
    const memory = String(MEMORY_MIB * 1024 * 1024 + VMM_MEMORY_OVERHEAD_BYTES);
    if (controller === 'unified') {
      expect(read('memory.max')).toBe(memory);
      expect(read('cpu.max')).toBe('200000 100000');
      expect(read('pids.max')).toBe('512');
    } else if (controller === 'memory') {
      expect(read('memory.limit_in_bytes')).toBe(memory);
    } else if (controller.split(',').includes('cpu')) {
      expect(read('cpu.cfs_quota_us')).toBe('200000');
    } else if (controller === 'pids') {
      expect(read('pids.max')).toBe('512');
    }
  }
  expect(cgs.map((c) => c.controller)).toEqual(expect.arrayContaining([expect.stringMatching(/memory|unified/)]));
});

test('QEMU sees only its own files: a tmpfs root with /usr read-only, its kernel, initramfs and rootfs', () => {
  expect(on('mountns')).toBe(true);
  expect(readlinkSync(`/proc/${pid}/ns/mnt`)).not.toBe(readlinkSync('/proc/self/ns/mnt'));
  const root = `/proc/${pid}/root`;
  const top = (p: string) => p.split('/')[1];
  const allowed = new Set(['usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'etc', 'dev', 'proc', 'oldroot',
    ...[guest.kernelPath, guest.initrdPath, ctr.rootfs.merged, path.resolve(require('node:os').tmpdir())].map(top)]);
  for (const e of readdirSync(root)) expect(allowed).toContain(e);
  expect(readdirSync(`${root}/etc`)).toEqual(['ld.so.cache']);
  expect(readdirSync(`${root}/dev`).sort()).toEqual(['full', 'null', 'random', 'urandom', 'zero']);
  expect(readdirSync(`${root}/oldroot`)).toEqual([]);
  expect(existsSync(`${root}/root`)).toBe(false);
  expect(existsSync(`${root}/etc/passwd`)).toBe(false);
  expect(existsSync(`${root}${ctr.rootfs.merged}/bin/busybox`)).toBe(true);
  // Of the test's own files, only the container's merged rootfs is there (not its upper/work dirs).
  expect(existsSync(`${root}${ctr.dir}/rootfs/upper`)).toBe(false);
  const mountinfo = readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').map((l) => l.split(' '));
  const opts = (mp: string) => mountinfo.find((f) => f[4] === mp)?.[5] ?? 'not mounted';
  expect(opts(guest.kernelPath)).toMatch(/^ro,/);
  expect(opts(guest.initrdPath)).toMatch(/^ro,/);
  expect(opts('/usr')).toMatch(/^ro,/);
  expect(opts('/')).toMatch(/^ro,/);
  expect(opts(ctr.rootfs.merged)).toMatch(/^rw,/);
});

test('the guest image is installed read-only and root\'s', () => {
  if (process.env.PADDOCK_KERNEL && process.env.PADDOCK_INITRD) return; // the user's own files are left as they are
  for (const f of [guest.kernelPath, guest.initrdPath]) {
    const st = statSync(f);
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 0, 0o444]);
  }
});

test('the container still works: chown, setuid and setgid bits, files of a non-root user', async () => {
  const asRoot = await sh(
    'echo hi > /owned && chown 1000:1000 /owned && chmod 4755 /owned && ' +
      'echo g > /sgid && chown 0:1000 /sgid && chmod 2755 /sgid && ' +
      'mkdir -p /home/u && chown 1000:1000 /home/u && chmod 700 /home/u && ' +
      'echo secret > /rootonly && chmod 600 /rootonly && chown 1000:1000 /rootonly && echo more >> /rootonly',
  );
  expect(asRoot).toMatchObject({ exitCode: 0, stderr: '' });
  const asUser = await sh('id -u && echo mine > /home/u/file && chmod 600 /home/u/file && cat /home/u/file', 1000);
  expect(asUser).toMatchObject({ exitCode: 0, stdout: '1000\nmine\n', stderr: '' });

  const host = (p: string) => statSync(path.join(ctr.rootfs.merged, p));
  expect([host('/owned').uid, host('/owned').gid, host('/owned').mode & 0o7777]).toEqual([1000, 1000, 0o4755]);
  expect([host('/sgid').uid, host('/sgid').gid, host('/sgid').mode & 0o7777]).toEqual([0, 1000, 0o2755]);
  expect([host('/home/u').uid, host('/home/u').mode & 0o7777]).toEqual([1000, 0o700]);
  expect([host('/home/u/file').uid, host('/home/u/file').gid, host('/home/u/file').mode & 0o7777]).toEqual([1000, 1000, 0o600]);
  expect(readFileSync(path.join(ctr.rootfs.merged, 'rootonly'), 'utf8')).toBe('secret\nmore\n');
});

// 9p answers ENXIO to mknod of any kind (device, fifo) with or without confinement (measured with
// confinement off too), which is why CAP_MKNOD is not among the capabilities QEMU keeps.
test.failing('mknod in the container rootfs', async () => {
  expect(await sh('mknod /null2 c 1 3 && mkfifo /fifo')).toMatchObject({ exitCode: 0 });
});

test('its cgroups go when the VM exits', async () => {
  const cgs = vmCgroups(pid);
  expect(cgs.length).toBeGreaterThan(0);
  await sandbox.kill();
  expect(isAlive(pid)).toBe(false);
  expect(await waitUntil(() => cgs.every((c) => !existsSync(c.dir)), 5000)).toBe(true);
});

test('virtio-fs: virtiofsd joins the VM\'s cgroup, keeps its own sandbox, and goes with the VM', async () => {
  if (!qemu.capabilities().fsShare.includes('virtio-fs')) return;
  const c = await makeContainerRootfs();
  const sb = await Sandbox.start(qemu, guest, { id: 'vmm-confinement-vfs', rootfsDir: c.rootfs.merged, shareKind: 'virtio-fs' });
  try {
    const p = await sb.exec({ args: ['sh', '-c', 'echo x > /f && chown 1000 /f'], env: ['PATH=/bin'] });
    expect((await p.exited).exitCode).toBe(0);
    expect(statSync(path.join(c.rootfs.merged, 'f')).uid).toBe(1000);
    const cgs = vmCgroups(sb.vm.pid);
    const members = readFileSync(path.join(cgs[0].dir, 'cgroup.procs'), 'utf8').trim().split('\n').map(Number);
    const helpers = members.filter((m) => m !== sb.vm.pid);
    expect(helpers.length).toBeGreaterThan(0);
    // virtiofsd's worker: a mount namespace of its own (pivot_root into the share) and a seccomp filter.
    const worker = helpers.find((h) => status(h).Seccomp === '2');
    expect(worker).toBeDefined();
    expect(readlinkSync(`/proc/${worker}/ns/mnt`)).not.toBe(readlinkSync('/proc/self/ns/mnt'));
    expect(status(worker!).NoNewPrivs).toBe('1');
    await sb.kill();
    expect(await waitUntil(() => helpers.every((h) => !isAlive(h)) && cgs.every((g) => !existsSync(g.dir)), 5000)).toBe(true);
  } finally {
    await sb.kill();
    await c.cleanup();
  }
});
