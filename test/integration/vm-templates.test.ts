/**
 * VM templates (issue 7): containers restored from one saved VM must still be different machines —
 * their own boot_id, random numbers, hostname and wall-clock time — and must start faster than a
 * boot. Two clones of the same template are compared with each other, and with the template's
 * saved files.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { QemuHypervisor } from '../../src/drivers/hypervisor/qemu';
import { Sandbox } from '../../src/engine/sandbox';
import { onSandboxTimings, type StartTimings } from '../../src/engine/start-timings';
import { VmTemplates } from '../../src/engine/vm-templates';
import { makeContainerRootfs, openQemu, readAll, removeBusyboxRootfs, testGuestImage, type TestContainerDir } from '../helpers/guest';

jest.setTimeout(180_000);

let qemu: QemuHypervisor;
let templates: VmTemplates;
let templateRoot: string;
const ctrs: TestContainerDir[] = [];
const sandboxes: Sandbox[] = [];
const timings = new Map<string, StartTimings>();
const stopListening = onSandboxTimings((id, t) => timings.set(id, t));

async function startClone(id: string, hostname: string): Promise<Sandbox> {
  const ctr = await makeContainerRootfs();
  ctrs.push(ctr);
  const sb = await Sandbox.start(templates, await testGuestImage(), { id, rootfsDir: ctr.rootfs.merged, hostname });
  sandboxes.push(sb);
  return sb;
}

async function sh(sb: Sandbox, script: string): Promise<string> {
  const p = await sb.exec({ args: ['/bin/sh', '-c', script], env: ['PATH=/bin'] });
  const [stdout, stderr, exit] = await Promise.all([readAll(p.stdout), readAll(p.stderr), p.exited]);
  if (exit.exitCode !== 0) throw new Error(`${script}: exit ${exit.exitCode}: ${stderr}`);
  return stdout.trim();
}

let a: Sandbox;
let b: Sandbox;

beforeAll(async () => {
  qemu = await openQemu();
  templateRoot = await fs.mkdtemp(path.join(os.tmpdir(), 'paddock-templates-'));
  templates = new VmTemplates(qemu, { root: templateRoot });
  a = await startClone('tpl-clone-a', 'clone-a');
  b = await startClone('tpl-clone-b', 'clone-b');
});

afterAll(async () => {
  stopListening();
  for (const sb of sandboxes) await sb.kill().catch(() => undefined);
  for (const c of ctrs) await c.cleanup().catch(() => undefined);
  await removeBusyboxRootfs();
  if (templateRoot) await fs.rm(templateRoot, { recursive: true, force: true });
});

test('both containers were restored from one template, not booted', async () => {
  const dirs = (await fs.readdir(templateRoot)).filter((d) => !d.includes('.build-'));
  expect(dirs).toHaveLength(1);
  const meta = JSON.parse(await fs.readFile(path.join(templateRoot, dirs[0], 'meta.json'), 'utf8'));
  expect(meta.shape.shareTags).toEqual(['rootfs']);
  expect(meta.stateBytes).toBeLessThan(1024 * 1024); // device state only: the RAM stays in its file
  for (const id of ['tpl-clone-a', 'tpl-clone-b']) {
    expect(timings.get(id)?.restoreLoadMs).toBeGreaterThan(0);
  }
});

test('clones have different boot_ids', async () => {
  const [ida, idb] = [await sh(a, 'cat /proc/sys/kernel/random/boot_id'), await sh(b, 'cat /proc/sys/kernel/random/boot_id')];
  expect(ida).toMatch(/^[0-9a-f-]{36}$/);
  expect(ida).not.toBe(idb);
});

test('clones draw different random numbers', async () => {
  const cmd = 'head -c 16 /dev/urandom | od -x';
  const [ra, rb] = [await sh(a, cmd), await sh(b, cmd)];
  expect(ra).not.toBe(rb);
  // The same pair again, in the other order: no clone repeats the other's stream.
  const [rb2, ra2] = [await sh(b, cmd), await sh(a, cmd)];
  expect(new Set([ra, rb, ra2, rb2]).size).toBe(4);
});

test('clones have their own hostnames', async () => {
  expect(await sh(a, 'hostname')).toBe('clone-a');
  expect(await sh(b, 'hostname')).toBe('clone-b');
});

test("clones' wall clocks are the host's", async () => {
  for (const sb of [a, b]) {
    const guest = Number(await sh(sb, 'date +%s'));
    expect(Math.abs(guest - Date.now() / 1000)).toBeLessThan(5);
  }
});

test('clones write to their own rootfs, not the template or each other', async () => {
  await sh(a, 'echo from-a > /marker');
  await sh(b, 'echo from-b > /marker');
  expect(await sh(a, 'cat /marker')).toBe('from-a');
  expect(await sh(b, 'cat /marker')).toBe('from-b');
  // Guest memory is private too: a tmpfs file written in one clone is absent in the other.
  await sh(a, 'echo secret > /dev/shm/x');
  expect(await sh(b, 'cat /dev/shm/x 2>/dev/null || echo none')).toBe('none');
});

test('NIC MACs differ between clones where they have interfaces besides lo and the trunk', async () => {
  const list = async (sb: Sandbox) =>
    (await sh(sb, 'for d in /sys/class/net/*; do n=${d##*/}; [ "$n" = lo ] || [ "$n" = trunk0 ] || echo "$n $(cat $d/address)"; done'))
      .split('\n')
      .filter(Boolean);
  const [la, lb] = [await list(a), await list(b)];
  // Ethernet addresses only (tunnel devices such as sit0 have an all-zero 4-byte one).
  const macs = (l: string[]) => l.map((x) => x.split(' ')[1]).filter((m) => /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(m) && !/^(00:){5}00$/.test(m));
  for (const m of macs(la)) expect(macs(lb)).not.toContain(m);
});

test('a third clone is started from the saved template faster than the template booted', async () => {
  const dirs = (await fs.readdir(templateRoot)).filter((d) => !d.includes('.build-'));
  const meta = JSON.parse(await fs.readFile(path.join(templateRoot, dirs[0], 'meta.json'), 'utf8'));
  const t0 = performance.now();
  const c = await startClone('tpl-clone-c', 'clone-c');
  const ms = performance.now() - t0;
  expect(await sh(c, 'echo ok')).toBe('ok');
  expect(ms).toBeLessThan(meta.bootMs);
});

test('a template that does not restore is dropped: that container boots, the next one is a clone again', async () => {
  const dirs = (await fs.readdir(templateRoot)).filter((d) => !d.includes('.build-'));
  await fs.writeFile(path.join(templateRoot, dirs[0], 'state'), 'not a migration stream');
  const d = await startClone('tpl-clone-d', 'clone-d');
  expect(await sh(d, 'hostname')).toBe('clone-d');
  expect(timings.get('tpl-clone-d')?.restoreLoadMs).toBeUndefined();
  const e = await startClone('tpl-clone-e', 'clone-e');
  expect(await sh(e, 'hostname')).toBe('clone-e');
  expect(timings.get('tpl-clone-e')?.restoreLoadMs).toBeGreaterThan(0);
});
