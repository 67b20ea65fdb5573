/**
 * Driver conformance: one suite, written against the Hypervisor/Vm interface and the agent only,
 * that every hypervisor driver must pass. It runs for each driver whose hypervisor is present on
 * this host and says loudly which drivers it skipped and why.
 *
 * What it checks: boot to the agent's READY on our guest kernel; a process's stdout, stderr and
 * exit code; stdin to its end; a signal; pause/resume (where the driver offers `pause`); a disk
 * (an ext4 image of a busybox tree, which every driver can attach and which is the processes'
 * root, so no directory sharing is needed); a shared directory both ways (where the driver and the
 * guest kernel have a share kind in common); power-off through the agent; kill; and that no VMM
 * process and no file in the run directory is left behind.
 *
 * Whether a driver "is present" is decided here synchronously (jest declares tests before any
 * await); open() then has to succeed, so a driver that looks present but cannot open fails loudly
 * instead of being skipped.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AgentConnection, type MountRequest, type ProcessSpec } from '../../src/drivers/agent/agent-client';
import type { GuestImage } from '../../src/drivers/guest/guest-image';
import type { FsShareKind, Hypervisor, Vm } from '../../src/drivers/hypervisor/hypervisor';
import { hypervisorNames, openHypervisor } from '../../src/drivers/hypervisor/registry';
import { locateBinary } from '../../src/drivers/hypervisor/vmm-process';
import { busyboxRootfs, isAlive, readAll, removeBusyboxRootfs, testGuestImage, waitUntil } from '../helpers/guest';

jest.setTimeout(120_000);

/** Why a driver's hypervisor cannot run here, or null when it looks present. */
function absentBecause(driver: string): string | null {
  const writable = (p: string) => {
    try {
      accessSync(p, constants.R_OK | constants.W_OK);
      return true;
    } catch {
      return false;
    }
  };
  switch (driver) {
    case 'qemu':
      return locateBinary('qemu-system-x86_64') ? null : 'qemu-system-x86_64 not installed';
    case 'firecracker':
      if (!locateBinary('firecracker')) return 'firecracker not installed';
      return writable('/dev/kvm') ? null : 'no usable /dev/kvm';
    case 'cloud-hypervisor':
      if (!locateBinary('cloud-hypervisor')) return 'cloud-hypervisor not installed';
      return writable('/dev/kvm') ? null : 'no usable /dev/kvm';
    case 'xen': {
      if (!locateBinary('xl')) return 'xl (xen-utils) not installed';
      const caps = existsSync('/proc/xen/capabilities') ? readFileSync('/proc/xen/capabilities', 'utf8') : '';
      return caps.includes('control_d') ? null : 'not running in a Xen dom0';
    }
    case 'virtualbox':
      if (!locateBinary('VBoxManage')) return 'VirtualBox not installed';
      return existsSync('/dev/vboxdrv') ? null : 'vboxdrv module not loaded';
    default:
      return 'no presence check for this driver in the conformance suite';
  }
}

const drivers = hypervisorNames().map((name) => ({ name, skip: absentBecause(name) }));
const skipped = drivers.filter((d) => d.skip);
if (skipped.length) {
  console.warn(
    `hypervisor conformance: SKIPPED ${skipped.length} of ${drivers.length} drivers (hypervisor not present here):\n` +
      skipped.map((d) => `  - ${d.name}: ${d.skip}`).join('\n'),
  );
}

// mount(2) flags
const MS_RDONLY = 0x1;
/** The guest mount of a share, per kind (as the engine would mount it). */
function shareMount(kind: FsShareKind, tag: string, target: string): MountRequest {
  switch (kind) {
    case '9p':
      return { source: tag, target, fsType: '9p', flags: 0, data: 'trans=virtio,version=9p2000.L,msize=524288' };
    case '9p-xen':
      return { source: tag, target, fsType: '9p', flags: 0, data: 'trans=xen,version=9p2000.L' };
    case 'virtio-fs':
      return { source: tag, target, fsType: 'virtiofs', flags: 0 };
    case 'vboxsf':
      return { source: tag, target, fsType: 'vboxsf', flags: 0 };
  }
}
/** Where each driver's first data disk shows up in the guest. */
const DISK_CANDIDATES = ['/dev/vda', '/dev/xvda', '/dev/sdb'];
const ROOT = '/conformance';

for (const d of drivers) {
  const title = d.skip ? `${d.name} (SKIPPED: ${d.skip})` : d.name;
  (d.skip ? describe.skip : describe)(`hypervisor conformance: ${title}`, () => {
    let hv: Hypervisor;
    let guest: GuestImage;
    let workDir: string;
    let runRoot: string;
    let vm: Vm;
    let agent: AgentConnection;
    let shareKind: FsShareKind | undefined;
    const pids: number[] = [];

    beforeAll(async () => {
      guest = await testGuestImage();
      workDir = mkdtempSync(path.join(os.tmpdir(), `paddock-conf-${d.name}-`));
      runRoot = path.join(workDir, 'run');
      hv = await openHypervisor(d.name, { runRoot });
      const caps = hv.capabilities();
      shareKind = caps.fsShare.find((k) => guest.fsShare.includes(k));
      // The processes' root: an ext4 image of the busybox tree (mkfs.ext4 -d, no mounting).
      const image = path.join(workDir, 'root.ext4');
      execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'conformance', '-d', busyboxRootfs(), image, '64M']);
      const shareDir = path.join(workDir, 'share');
      await fs.mkdir(shareDir);
      await fs.writeFile(path.join(shareDir, 'from-host.txt'), 'hello from the host\n');
      vm = await hv.create({
        id: `conformance-${d.name}`,
        kernelPath: guest.kernelPath,
        initrdPath: guest.initrdPath,
        acpi: guest.needsAcpi,
        memoryMiB: 128,
        vcpus: 1,
        disks: [{ id: 'rootdisk', hostPath: image, format: 'raw' }],
        shares: shareKind ? [{ tag: 'conf', hostPath: shareDir, kind: shareKind }] : [],
      });
      pids.push(vm.pid);
      agent = new AgentConnection(vm.agentChannel);
    });

    afterAll(async () => {
      agent?.close();
      await vm?.kill();
      await fs.rm(workDir, { recursive: true, force: true });
      await removeBusyboxRootfs();
    });

    async function run(args: string[], input?: string, extra: Partial<ProcessSpec> = {}) {
      const p = await agent.start({ args, root: ROOT, env: ['PATH=/bin'], openStdin: input !== undefined, ...extra });
      if (input !== undefined) p.stdin.end(input);
      const [stdout, stderr, exit] = await Promise.all([readAll(p.stdout), readAll(p.stderr), p.exited]);
      return { stdout, stderr, ...exit };
    }

    test('boots our guest kernel to the agent', async () => {
      const info = await agent.waitReady(60_000);
      expect(info.kernelRelease).toBe(guest.kernelRelease);
      expect(vm.id).toBe(`conformance-${d.name}`);
      expect(isAlive(vm.pid)).toBe(true);
      expect(hv.info().name).toBe(d.name);
    });

    test('the disk is attached: it mounts as the processes\' root', async () => {
      let mounted: string | undefined;
      for (const dev of DISK_CANDIDATES) {
        try {
          await agent.mount({ source: dev, target: ROOT, fsType: 'ext4', flags: 0 });
          mounted = dev;
          break;
        } catch {
          // not this driver's disk name
        }
      }
      expect(mounted).toBeDefined();
      await agent.mount({ source: 'proc', target: `${ROOT}/proc`, fsType: 'proc', flags: 0 });
    });

    test('a process: stdout and stderr apart, exit code', async () => {
      const r = await run(['sh', '-c', 'echo to-out; echo to-err >&2; exit 3']);
      expect(r).toMatchObject({ stdout: 'to-out\n', stderr: 'to-err\n', exitCode: 3 });
    });

    test('stdin reaches the process, including its end', async () => {
      const input = 'x'.repeat(100_000) + '\nlast line\n';
      const r = await run(['cat'], input);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toBe(input);
    });

    test('a signal ends a process', async () => {
      const p = await agent.start({ args: ['sleep', '300'], root: ROOT, env: ['PATH=/bin'] });
      p.signal(15);
      await expect(p.exited).resolves.toMatchObject({ signal: 15 });
    });

    test('pause stops the guest and resume lets it go on (capability pause)', async () => {
      if (!hv.capabilities().pause) {
        await expect(vm.pause()).rejects.toThrow(/capabilit/);
        return;
      }
      await vm.pause();
      await expect(agent.ping(700)).rejects.toThrow(/ping/);
      await vm.resume();
      await expect(agent.ping(10_000)).resolves.toBeUndefined();
    });

    test('a shared directory carries files both ways (capability fsShare)', async () => {
      if (!shareKind) {
        console.warn(`hypervisor conformance: ${d.name}: no share kind in common with the guest kernel (driver ${hv.capabilities().fsShare.join(', ') || 'none'}, guest ${guest.fsShare.join(', ')}): share test not run`);
        return;
      }
      await agent.mount(shareMount(shareKind, 'conf', `${ROOT}/mnt`));
      const r = await run(['sh', '-c', 'cat /mnt/from-host.txt && echo from-guest > /mnt/from-guest.txt']);
      expect(r).toMatchObject({ stdout: 'hello from the host\n', exitCode: 0 });
      expect(await fs.readFile(path.join(workDir, 'share', 'from-guest.txt'), 'utf8')).toBe('from-guest\n');
    });

    test('stats report the running VM', async () => {
      const s = await vm.stats();
      expect(s.rssBytes).toBeGreaterThan(0);
      expect(s.cpuNanos).toBeGreaterThan(0);
    });

    test('power-off through the agent ends the VMM by itself', async () => {
      await agent.shutdown().catch(() => undefined); // the channel may close before the answer
      const exit = await Promise.race([vm.exited, new Promise<null>((r) => setTimeout(() => r(null), 20_000))]);
      expect(exit).not.toBeNull();
      expect(exit!.signal).toBeNull(); // powered off, not killed
      expect(await waitUntil(() => !isAlive(vm.pid), 5000)).toBe(true);
    });

    test('kill ends a VM at once', async () => {
      const second = await hv.create({
        id: `conformance-${d.name}-kill`,
        kernelPath: guest.kernelPath,
        initrdPath: guest.initrdPath,
        acpi: guest.needsAcpi,
        memoryMiB: 64,
        vcpus: 1,
      });
      pids.push(second.pid);
      const exit = await second.kill();
      expect(typeof exit.consoleTail).toBe('string');
      expect(await waitUntil(() => !isAlive(second.pid), 5000)).toBe(true);
    });

    test('nothing is left behind: no VMM process, no file in the run directory', async () => {
      for (const pid of pids) expect(isAlive(pid)).toBe(false);
      const stray = execFileSync('ps', ['-eo', 'pid,args']).toString().split('\n').filter((l) => l.includes(workDir));
      expect(stray).toEqual([]);
      const files: string[] = [];
      const walk = async (dir: string) => {
        for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
          if (e.isDirectory()) await walk(path.join(dir, e.name));
          else files.push(path.join(dir, e.name));
        }
      };
      await walk(runRoot);
      expect(files).toEqual([]);
    });
  });
}

test('the suite knows every registered driver', () => {
  expect(drivers.map((d) => d.name).sort()).toEqual(['cloud-hypervisor', 'firecracker', 'qemu', 'virtualbox', 'xen']);
  for (const d of drivers) expect(d.skip).not.toBe('no presence check for this driver in the conformance suite');
});
