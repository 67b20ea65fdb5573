/**
 * Guest boot: what the driver path costs on top of a bare VM boot, measured side by side in one
 * run (these machines are noisy: read the ratio, not the absolute numbers).
 *
 *   (a) raw      qemu-system-x86_64 spawned here with the driver's own arguments (same kernel,
 *                initramfs, machine, accelerator, 9p rootfs share), timed from spawn to the
 *                agent's READY frame on the agent socket;
 *   (b) sandbox  Sandbox.start() (QEMU driver: sockets, QMP handshake, READY, the container
 *                mounts) then exec(['true']) until it exits: create → process exit.
 *
 * Runs alternate a, b, a, b, ... so drift in host load hits both alike.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/guest-boot.js [--runs N]
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { FrameDecoder, MessageType, PROTOCOL_VERSION, Tag, TlvFields } from '../src/drivers/agent/protocol';
import type { GuestImage } from '../src/drivers/guest/guest-image';
import type { ShareSpec, VmSpec } from '../src/drivers/hypervisor/hypervisor';
import type { QemuHypervisor } from '../src/drivers/hypervisor/qemu';
import { Sandbox } from '../src/engine/sandbox';
import { makeContainerRootfs, openQemu, removeBusyboxRootfs, testGuestImage, testRunRoot } from '../test/helpers/guest';

/** The driver's private command-line builders: reused so that (a) boots exactly what (b) boots. */
interface QemuInternals {
  commandLine(spec: VmSpec, runDir: string, shareArgs: string[]): string[];
  shareArgs(shares: ShareSpec[], runDir: string, helpers: unknown[]): Promise<string[]>;
  opts: { binary: string };
}

export interface RawBootResult {
  /** Spawn → READY frame, milliseconds. */
  readyMs: number;
  kernelRelease: string;
}

let rawCounter = 0;

/**
 * Boots the guest with the QEMU driver's exact command line, but spawned and watched here:
 * spawn → READY on the agent socket. The VM is killed right after READY.
 */
export async function rawBoot(hv: QemuHypervisor, guest: GuestImage, rootfsDir: string, timeoutMs = 60_000): Promise<RawBootResult> {
  const internals = hv as unknown as QemuInternals;
  const runDir = await fs.mkdtemp(path.join(testRunRoot(), 'raw-'));
  const servers: net.Server[] = [];
  const sockets: net.Socket[] = [];
  const listen = (name: string, onConn: (s: net.Socket) => void) =>
    new Promise<void>((resolve, reject) => {
      const server = net.createServer((s) => {
        sockets.push(s);
        onConn(s);
      });
      servers.push(server);
      server.on('error', reject);
      server.listen(path.join(runDir, name), resolve);
    });
  let qemu: ReturnType<typeof spawn> | undefined;
  try {
    let onReady!: (r: { at: number; release: string }) => void;
    let onFail!: (e: Error) => void;
    const ready = new Promise<{ at: number; release: string }>((resolve, reject) => {
      onReady = resolve;
      onFail = reject;
    });
    await listen('agent.sock', (s) => {
      const decoder = new FrameDecoder();
      s.on('data', (chunk: Buffer) => {
        for (const f of decoder.push(chunk)) {
          if (f.type !== MessageType.Ready) continue;
          const fields = TlvFields.decode(f.payload);
          if (fields.u32(Tag.Version) !== PROTOCOL_VERSION) onFail(new Error(`agent speaks protocol ${fields.u32(Tag.Version)}`));
          else onReady({ at: performance.now(), release: fields.str(Tag.Kernel) ?? '' });
        }
      });
    });
    // QEMU's monitor chardev connects too; nothing needs to be said on it.
    await listen('qmp.sock', (s) => s.resume());
    const spec: VmSpec = {
      id: `raw-boot-${process.pid}-${rawCounter++}`,
      kernelPath: guest.kernelPath,
      initrdPath: guest.initrdPath,
      memoryMiB: 128,
      vcpus: 1,
      shares: [{ tag: 'rootfs', hostPath: rootfsDir, kind: '9p' }],
    };
    const shareArgs = await internals.shareArgs(spec.shares!, runDir, []);
    const args = internals.commandLine(spec, runDir, shareArgs);
    let console = '';
    const started = performance.now();
    qemu = spawn(internals.opts.binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    qemu.stdout!.on('data', (c) => (console = (console + c).slice(-4000)));
    qemu.stderr!.on('data', (c) => (console = (console + c).slice(-4000)));
    const exited = new Promise<never>((_, reject) =>
      qemu!.on('close', (code, sig) => reject(new Error(`qemu exited before READY (${code ?? sig}): ${console.trim().slice(-800)}`))),
    );
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no READY within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const r = await Promise.race([ready, exited, timeout]);
      return { readyMs: r.at - started, kernelRelease: r.release };
    } finally {
      clearTimeout(timer);
    }
  } finally {
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      const gone = new Promise((r) => qemu!.once('close', r));
      qemu.kill('SIGKILL');
      await gone;
    }
    for (const s of sockets) s.destroy();
    for (const s of servers) s.close();
    await fs.rm(runDir, { recursive: true, force: true });
  }
}

export interface SandboxRunResult {
  /** Sandbox.start() → `true` exited, milliseconds. */
  totalMs: number;
  vmmStartMs: number;
  agentReadyMs: number;
  rootfsReadyMs: number;
}

let sandboxCounter = 0;

/** The driver path: Sandbox.start, exec `true` until it exits, then kill the VM (not timed). */
export async function sandboxRun(hv: QemuHypervisor, guest: GuestImage, rootfsDir: string): Promise<SandboxRunResult> {
  const t0 = performance.now();
  const sandbox = await Sandbox.start(hv, guest, { id: `bench-${process.pid}-${sandboxCounter++}`, rootfsDir });
  try {
    const proc = await sandbox.exec({ args: ['true'], env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] });
    proc.stdout.resume();
    proc.stderr.resume();
    const exit = await proc.exited;
    const totalMs = performance.now() - t0;
    if (exit.exitCode !== 0) throw new Error(`true exited ${exit.exitCode} (signal ${exit.signal})`);
    return { totalMs, ...sandbox.timings };
  } finally {
    await sandbox.kill();
  }
}

export interface Summary {
  min: number;
  median: number;
  max: number;
}

export function summarise(values: number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return { min: s[0], median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, max: s[s.length - 1] };
}

export function formatRow(label: string, values: number[], unit = 'ms', digits = 0): string {
  const { min, median, max } = summarise(values);
  const f = (v: number) => v.toFixed(digits).padStart(8);
  return `${label.padEnd(34)} ${f(min)} ${f(median)} ${f(max)}  ${unit}  (n=${values.length})`;
}

export function argNumber(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(process.argv[i + 1]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} wants a positive integer`);
  return n;
}

async function main(): Promise<void> {
  const runs = argNumber('--runs', 10);
  const guest = await testGuestImage();
  const hv = await openQemu();
  const info = hv.info();
  const ctr = await makeContainerRootfs();
  try {
    console.log(`qemu ${info.version}, accelerator ${info.accelerator} (${info.acceleratorReason})`);
    console.log(`guest kernel ${guest.kernelRelease}, ${path.basename(guest.kernelPath)} + ${path.basename(guest.initrdPath)}, 128 MiB, 1 vCPU, 9p rootfs`);
    console.log(`runs: ${runs} of each, interleaved; host load average ${(await fs.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')}`);
    // One untimed boot of each warms the page cache (kernel, initramfs, qemu binary).
    await rawBoot(hv, guest, ctr.rootfs.merged);
    await sandboxRun(hv, guest, ctr.rootfs.merged);

    const raw: number[] = [];
    const sb: SandboxRunResult[] = [];
    for (let i = 0; i < runs; i++) {
      raw.push((await rawBoot(hv, guest, ctr.rootfs.merged)).readyMs);
      sb.push(await sandboxRun(hv, guest, ctr.rootfs.merged));
      process.stderr.write(`run ${i + 1}/${runs}: raw ${raw[i].toFixed(0)} ms, sandbox ${sb[i].totalMs.toFixed(0)} ms\n`);
    }
    console.log(`${''.padEnd(34)} ${'min'.padStart(8)} ${'median'.padStart(8)} ${'max'.padStart(8)}`);
    console.log(formatRow('(a) raw qemu: spawn → READY', raw));
    console.log(formatRow('(b) sandbox: start → `true` exited', sb.map((r) => r.totalMs)));
    console.log(formatRow('    of which: VMM started', sb.map((r) => r.vmmStartMs)));
    console.log(formatRow('    of which: agent READY', sb.map((r) => r.agentReadyMs)));
    console.log(formatRow('    of which: rootfs mounted', sb.map((r) => r.rootfsReadyMs)));
    const a = summarise(raw);
    const b = summarise(sb.map((r) => r.totalMs));
    const perRun = sb.map((r, i) => r.totalMs / raw[i]);
    console.log(
      `overhead b/a: median ${(b.median / a.median).toFixed(2)}x, min ${(b.min / a.min).toFixed(2)}x, ` +
        `per-run pairs ${summarise(perRun).min.toFixed(2)}–${summarise(perRun).max.toFixed(2)}x; ` +
        `median extra ${(b.median - a.median).toFixed(0)} ms (accelerator ${info.accelerator})`,
    );
  } finally {
    await ctr.cleanup();
    await removeBusyboxRootfs();
    await fs.rm(testRunRoot(), { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
