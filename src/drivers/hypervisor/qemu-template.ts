/**
 * VM templates for the QEMU driver (issue 7): the QEMU side of `VmSpec.template`.
 *
 * A template VM boots with its RAM in a file (`memory-backend-file,share=on`), reaches the agent's
 * READY, is paused and migrated to `<dir>/state` with the `x-ignore-shared` capability: the RAM
 * stays in `<dir>/memory` and the state file holds only device state (~50 KB). A clone starts with
 * the same device set on its command line (its own 9p paths, sockets, NIC backend), maps that RAM
 * file `share=off` — copy-on-write, so clones share the template's pages — and loads the state
 * with `-incoming defer` + `migrate-incoming`, then `cont` (the template was saved paused, and
 * QEMU keeps that run state). Under TCG here that takes ~70 ms instead of a ~1.1 s boot.
 *
 * 9p devices can be migrated while the guest has not mounted them (the template never does);
 * virtio-fs (vhost-user) devices cannot, so specs with virtio-fs shares are refused.
 * QEMU 7.2 has no `file:` migration URI, and `exec:` would need a shell that QEMU's seccomp policy
 * (spawn=deny, vmm-confinement.ts) forbids. So the daemon moves the state file: a clone inherits
 * it, opened for reading, as fd 3 (`migrate-incoming fd:3`); a template VM (whose outgoing `fd:`
 * URIs take only fds passed over QMP) sends its state to a unix socket in its run dir, which stays
 * until the save, where the daemon writes it to the file. Neither needs the template directory in
 * the VMM's mount namespace, only the RAM file.
 */
import { createWriteStream, promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { invalid, unavailable } from '../../errors';
import type { VmSpec } from './hypervisor';
import type { QmpClient } from './qmp';

export const TEMPLATE_MEMORY_FILE = 'memory';
export const TEMPLATE_STATE_FILE = 'state';

/** The fd under which QEMU inherits the template's state file (stdio slot 3 of the spawn). */
export const TEMPLATE_STATE_FD = 3;

const IGNORE_SHARED = { capabilities: [{ capability: 'x-ignore-shared', state: true }] };

/** Extra QEMU arguments for a spec with `template` (RAM in the template's file; `-incoming defer` for a clone). */
export function templateArgs(spec: VmSpec, memId: string, usesVirtioFs: boolean): string[] {
  const t = spec.template;
  if (!t) return [];
  if (usesVirtioFs) throw invalid('a VM with virtio-fs shares cannot be saved or restored as a template (vhost-user devices do not migrate)');
  const memory = path.join(t.dir, TEMPLATE_MEMORY_FILE);
  // share=on: the template's guest writes its RAM into the file; share=off: a clone's writes stay private.
  const share = t.mode === 'boot' ? 'on' : 'off';
  const args = ['-object', `memory-backend-file,id=${memId},size=${spec.memoryMiB}M,mem-path=${escapeOpt(memory)},share=${share}`];
  if (t.mode === 'restore') args.push('-incoming', 'defer');
  return args;
}

/**
 * Prepares the files of a template spec before QEMU starts. Boot: creates the RAM file (so that it
 * exists when the VMM's mount namespace is built). Restore: opens the state file for QEMU to
 * inherit; `fds` go to the spawn's stdio from slot 3 on, `close` releases the daemon's copy once
 * QEMU has it.
 */
export async function openTemplateFiles(spec: VmSpec): Promise<{ fds: number[]; close(): Promise<void> }> {
  const t = spec.template;
  if (!t) return { fds: [], close: async () => undefined };
  if (t.mode === 'boot') {
    const memory = await fs.open(path.join(t.dir, TEMPLATE_MEMORY_FILE), 'w', 0o600);
    await memory.truncate(spec.memoryMiB * 1024 * 1024);
    await memory.close();
    return { fds: [], close: async () => undefined };
  }
  const file = await fs.open(path.join(t.dir, TEMPLATE_STATE_FILE), 'r');
  let closed = false;
  return { fds: [file.fd], close: async () => void (closed || ((closed = true), await file.close())) };
}

/**
 * Pauses the template VM and saves its device state into `<dir>/state`, through a unix socket in
 * the VM's run dir (which QEMU can reach inside its mount namespace).
 */
export async function saveTemplateState(qmp: QmpClient, runDir: string, dir: string, timeoutMs = 30_000): Promise<void> {
  const sock = path.join(runDir, 'template-save.sock');
  const statePath = path.join(dir, TEMPLATE_STATE_FILE);
  const server = net.createServer();
  try {
    const received = new Promise<void>((resolve, reject) => {
      server.once('connection', (c) => {
        server.close();
        const out = createWriteStream(statePath, { mode: 0o600 });
        c.on('error', reject);
        out.on('error', reject);
        out.on('close', () => resolve());
        c.pipe(out);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sock, () => resolve());
    });
    await qmp.execute('stop');
    await qmp.execute('migrate-set-capabilities', IGNORE_SHARED);
    await qmp.execute('migrate', { uri: `unix:${sock}` });
    await waitForMigration(qmp, timeoutMs);
    await Promise.race([
      received,
      new Promise((_, reject) => setTimeout(() => reject(unavailable('template state did not arrive')), timeoutMs).unref()),
    ]);
    const file = await fs.open(statePath, 'r');
    await file.sync().finally(() => file.close());
  } finally {
    server.close();
    await fs.rm(sock, { force: true });
  }
}

/** Loads a clone's device state from the state file it inherited and lets it run. */
export async function restoreTemplateState(qmp: QmpClient, timeoutMs = 30_000): Promise<{ loadMs: number; contMs: number }> {
  const t0 = performance.now();
  await qmp.execute('migrate-set-capabilities', IGNORE_SHARED);
  await qmp.execute('migrate-incoming', { uri: `fd:${TEMPLATE_STATE_FD}` });
  await waitForMigration(qmp, timeoutMs);
  const t1 = performance.now();
  await qmp.execute('cont');
  return { loadMs: t1 - t0, contMs: performance.now() - t1 };
}

async function waitForMigration(qmp: QmpClient, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (let wait = 1; ; wait = Math.min(wait * 2, 20)) {
    const s = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    if (s.status === 'completed') return;
    if (s.status === 'failed' || s.status === 'cancelled') throw unavailable(`VM template migration ${s.status}${s['error-desc'] ? `: ${s['error-desc']}` : ''}`);
    if (performance.now() > deadline) throw unavailable(`VM template migration not done after ${timeoutMs} ms (status ${s.status})`);
    await new Promise((r) => setTimeout(r, wait));
  }
}

function escapeOpt(value: string): string {
  return value.replace(/,/g, ',,');
}
