/**
 * Pieces shared by the non-QEMU drivers (Xen, VirtualBox, Firecracker, Cloud Hypervisor): running
 * the VMM or its tool as a child that dies with the daemon, keeping the console tail, reading a
 * process's CPU/RSS, talking JSON over HTTP on a unix socket, and opening a hybrid-vsock stream.
 *
 * qemu.ts keeps its own copies of the first few on purpose: it is owned and tuned separately, and
 * these drivers must not change its behaviour.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { invalid, notImplemented, unavailable, type PaddockError } from '../../errors';
import type { HypervisorCapabilities, VmExit, VmStats } from './hypervisor';

/** The one-line error a driver's open() answers when its hypervisor cannot run here. */
export function driverUnavailable(driver: string, why: string, remedy: string): PaddockError {
  return unavailable(`hypervisor "${driver}" is not available: ${why} (${remedy})`);
}

/** The program a driver needs: the one its options name, else the host's; unavailable when neither. */
export function requireBinary(
  driver: string,
  given: string | undefined,
  locate: (name: string) => string | null,
  name: string,
  remedy: string,
): string {
  const binary = given ?? locate(name);
  if (!binary) throw driverUnavailable(driver, `${name} not found`, remedy);
  return binary;
}

/** How the KVM-only drivers (Firecracker, Cloud Hypervisor) look binaries and /dev/kvm up; tests fake it. */
export interface KvmHost {
  locate(name: string): string | null;
  kvmUsable(): Promise<boolean>;
}

export const realKvmHost: KvmHost = {
  locate: (n) => locateBinary(n),
  kvmUsable: () => fs.access('/dev/kvm', 6).then(() => true, () => false),
};

export interface KvmVmmOptions {
  runRoot: string;
  binary?: string;
  host?: KvmHost;
}

/** What a KVM-only VMM driver says when it cannot run here, and how its binary tells its version. */
export interface KvmVmmRequirements {
  binaryRemedy: string;
  kvmRemedy: string;
  versionPattern: RegExp;
}

/**
 * open() of a driver whose VMM is one binary named like the driver and needing KVM (Firecracker,
 * Cloud Hypervisor): finds the binary, checks /dev/kvm, prepares and sweeps the run root, and
 * asks the binary its version.
 */
export async function openKvmVmm(
  driver: string,
  options: KvmVmmOptions,
  req: KvmVmmRequirements,
): Promise<{ host: KvmHost; binary: string; runRoot: string; version: string }> {
  const host = options.host ?? realKvmHost;
  const binary = requireBinary(driver, options.binary, (n) => host.locate(n), driver, req.binaryRemedy);
  if (!(await host.kvmUsable())) throw driverUnavailable(driver, '/dev/kvm is missing or not writable', req.kvmRemedy);
  const runRoot = await prepareRunRoot(options.runRoot, driver, true);
  const version = await toolVersion(binary, ['--version'], req.versionPattern);
  return { host, binary, runRoot, version };
}

/**
 * The driver's own directory under the daemon's run root (named after the driver), private to
 * root; with `sweep`, run dirs a dead daemon left there are removed.
 */
export async function prepareRunRoot(daemonRunRoot: string, driver: string, sweep: boolean): Promise<string> {
  const runRoot = path.join(daemonRunRoot, driver);
  await fs.mkdir(runRoot, { recursive: true, mode: 0o700 });
  if (sweep) await sweepStaleRunDirs(runRoot, 'vm-');
  return runRoot;
}

/** A fresh run dir for one VM (`vm-<id>-XXXXXX`, the prefix sweepStaleRunDirs looks for). */
export function makeRunDir(runRoot: string, vmId: string): Promise<string> {
  return fs.mkdtemp(path.join(runRoot, `vm-${vmId.slice(0, 12)}-`));
}

/** A copy of a driver's capability table that callers may change freely. */
export function copyCapabilities(c: HypervisorCapabilities): HypervisorCapabilities {
  return { ...c, fsShare: [...c.fsShare], nicBackends: [...c.nicBackends] };
}

/** Looks a program up like a shell would, plus the sbin directories root's PATH may lack. */
export function locateBinary(name: string, pathEnv = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'): string | null {
  if (name.includes('/')) return existsSync(name) ? name : null;
  for (const dir of [...pathEnv.split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin']) {
    if (!dir) continue;
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

/** VM ids end up in file names, xl/VBoxManage arguments and API paths: keep them plain. */
export function checkVmId(id: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id)) throw invalid(`invalid VM id ${JSON.stringify(id)}`);
}

/** Share tags become guest mount sources and config tokens. */
export function checkTag(tag: string): void {
  if (!/^[A-Za-z0-9_.-]{1,31}$/.test(tag)) throw invalid(`invalid share tag ${JSON.stringify(tag)}`);
}

/**
 * Kernel arguments every driver gives our guest, before the driver's own and the spec's:
 * quiet boot, a panic ends the VM, the CPU's RNG seeds the CRNG (no virtio-rng everywhere), the
 * agent is /init of the initramfs.
 */
export function commonKernelArgs(): string[] {
  return ['quiet', 'panic=-1', 'random.trust_cpu=on', 'rdinit=/init'];
}

let setprivPath: string | null | undefined;

/**
 * Spawns a process that the kernel SIGKILLs when the daemon dies (PR_SET_PDEATHSIG through
 * util-linux's setpriv): without it a crashed daemon would orphan every VMM.
 */
export function spawnWithParentDeath(binary: string, args: string[], extraFds: Array<'pipe'> = []): ChildProcess {
  if (setprivPath === undefined) setprivPath = locateBinary('setpriv');
  const [cmd, argv] = setprivPath ? [setprivPath, ['--pdeathsig', 'KILL', '--', binary, ...args]] : [binary, args];
  return spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe', ...extraFds] });
}

export const CONSOLE_TAIL_BYTES = 16 * 1024;

/** Keeps the last bytes of the guest console for error messages. */
export class ConsoleBuffer {
  private chunks: Buffer[] = [];
  private size = 0;

  append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > CONSOLE_TAIL_BYTES && this.chunks.length > 1) this.size -= this.chunks.shift()!.length;
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8').slice(-CONSOLE_TAIL_BYTES);
  }
}

/** The last bytes of a console log file, or null when it cannot be read (yet). */
export function consoleFileTail(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').slice(-CONSOLE_TAIL_BYTES);
  } catch {
    return null;
  }
}

/** Collects a child's stdout and stderr into a console buffer and settles when it has exited. */
export function watchProcess(proc: ChildProcess, console: ConsoleBuffer): Promise<VmExit> {
  proc.stdout?.on('data', (c: Buffer) => console.append(c));
  proc.stderr?.on('data', (c: Buffer) => console.append(c));
  return new Promise((resolve) => {
    proc.on('error', (err) => console.append(Buffer.from(`${String(err)}\n`)));
    proc.on('close', (code, signal) => resolve({ code, signal, consoleTail: console.text() }));
  });
}

export function isRunning(proc: ChildProcess): boolean {
  return proc.exitCode === null && proc.signalCode === null;
}

/** A VMM (or toolstack) child of the daemon, with its console tail and its exit. */
export interface VmmChild {
  proc: ChildProcess;
  console: ConsoleBuffer;
  exit: Promise<VmExit>;
}

/** Spawns a VMM that dies with the daemon and starts collecting its output at once. */
export function spawnVmm(binary: string, args: string[], extraFds: Array<'pipe'> = []): VmmChild {
  const proc = spawnWithParentDeath(binary, args, extraFds);
  const console = new ConsoleBuffer();
  return { proc, console, exit: watchProcess(proc, console) };
}

/** The `pid` file of a run dir, by which sweepStaleRunDirs tells live VMs from stale ones. */
export async function writePidFile(runDir: string, proc: ChildProcess): Promise<void> {
  await fs.writeFile(path.join(runDir, 'pid'), String(proc.pid ?? 0));
}

/** A failed create(): kills the VMM if it was started and still runs, then removes what was made. */
export async function abandonStart(vmm: VmmChild | undefined, cleanup: () => Promise<void>): Promise<void> {
  if (vmm && isRunning(vmm.proc)) vmm.proc.kill('SIGKILL');
  await cleanup();
}

const CLOCK_TICKS_PER_SECOND = 100;

/** RSS and CPU time of a host process, from procfs. */
export async function processStats(pid: number, what: string): Promise<VmStats> {
  try {
    const [stat, status] = await Promise.all([
      fs.readFile(`/proc/${pid}/stat`, 'utf8'),
      fs.readFile(`/proc/${pid}/status`, 'utf8'),
    ]);
    // Fields after the command name (which may contain spaces) start at ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return { rssBytes: rssKb * 1024, cpuNanos: (ticks * 1e9) / CLOCK_TICKS_PER_SECOND };
  } catch (err) {
    throw unavailable(`${what} is not running`, err);
  }
}

export interface ToolResult {
  stdout: string;
  stderr: string;
}

/** Runs a management tool (xl, VBoxManage) to completion; a failure carries its stderr. */
export function runTool(binary: string, args: string[], timeoutMs = 60_000): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const detail = String(stderr || stdout || err.message).trim().split('\n').slice(-3).join(' | ');
        reject(unavailable(`${path.basename(binary)} ${args.slice(0, 2).join(' ')} failed: ${detail}`, err));
      } else {
        resolve({ stdout: String(stdout), stderr: String(stderr) });
      }
    });
  });
}

/** First line a program prints for `args` (its version), or 'unknown'. */
export async function toolVersion(binary: string, args: string[], pattern: RegExp): Promise<string> {
  try {
    const { stdout, stderr } = await runTool(binary, args, 10_000);
    return pattern.exec(`${stdout}\n${stderr}`)?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

export async function waitForPath(p: string, timeoutMs: number, proc?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(p)) {
    if (proc && !isRunning(proc)) throw unavailable(`the VMM exited before ${p} appeared`);
    if (Date.now() > deadline) throw unavailable(`${p} did not appear within ${timeoutMs} ms`);
    await delay(10);
  }
}

export function connectUnix(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Connects to a unix socket that a VMM creates, retrying until it accepts or time runs out. */
export async function connectUnixRetry(socketPath: string, timeoutMs: number, proc?: ChildProcess): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await connectUnix(socketPath);
    } catch (err) {
      if (proc && !isRunning(proc)) throw unavailable(`the VMM exited before ${socketPath} accepted a connection`, err);
      if (Date.now() > deadline) throw unavailable(`${socketPath} did not accept a connection within ${timeoutMs} ms`, err);
      await delay(20);
    }
  }
}

/**
 * Opens a stream to a guest vsock port through a hybrid (unix-socket backed) vsock, the scheme of
 * Firecracker and Cloud Hypervisor: connect to the VMM's socket, send `CONNECT <port>\n`, the
 * VMM answers `OK <host port>\n` once the guest accepted, and the same socket then carries the
 * stream. Until the agent listens the VMM closes the connection, so this retries.
 * Firecracker: docs/vsock.md ("Host-initiated connections"); Cloud Hypervisor: docs/vsock.md.
 */
export async function connectHybridVsock(
  udsPath: string,
  port: number,
  timeoutMs: number,
  proc?: ChildProcess,
): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (proc && !isRunning(proc)) throw unavailable('the VMM exited before the guest agent accepted a vsock connection', lastError);
    try {
      const sock = await connectUnix(udsPath);
      const ok = await vsockHandshake(sock, port, Math.max(100, deadline - Date.now()));
      if (ok) return sock;
    } catch (err) {
      lastError = err;
    }
    await delay(50);
  }
  throw unavailable(`the guest agent did not accept vsock port ${port} within ${timeoutMs} ms`, lastError);
}

/** Sends CONNECT and reads the answer line; bytes after it are the stream's and are put back. */
function vsockHandshake(sock: net.Socket, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(false), timeoutMs);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > 64) finish(false);
        return;
      }
      const line = buf.subarray(0, nl).toString('latin1');
      const rest = buf.subarray(nl + 1);
      if (!/^OK \d+$/.test(line)) return finish(false);
      sock.off('data', onData);
      // Hold the stream (bytes after the OK line included) until the caller reads it: an explicit
      // pause() is not undone by a later 'data' listener, so resume when one is attached.
      sock.pause();
      if (rest.length) sock.unshift(rest);
      const resumeOnReader = (event: string | symbol) => {
        if (event !== 'data') return;
        sock.off('newListener', resumeOnReader);
        process.nextTick(() => sock.resume());
      };
      sock.on('newListener', resumeOnReader);
      finish(true);
    };
    const onEnd = () => finish(false);
    function finish(ok: boolean) {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onEnd);
      sock.off('error', onEnd);
      if (!ok) sock.destroy();
      resolve(ok);
    }
    sock.on('data', onData);
    sock.once('close', onEnd);
    sock.once('error', onEnd);
    sock.write(`CONNECT ${port}\n`);
  });
}

/** The agent's vsock port (rootfs-builder/PROTOCOL.md). */
export const AGENT_VSOCK_PORT = 1024;

/**
 * Boots a VMM driven over a REST API with a hybrid vsock (Firecracker, Cloud Hypervisor): waits
 * for the API socket, sends the plan in order, then reaches the agent over the vsock.
 */
export async function bootOverApi(
  api: UnixHttpClient,
  plan: ApiCall[],
  vsockSocket: string,
  startTimeoutMs: number,
  proc: ChildProcess,
): Promise<net.Socket> {
  await waitForPath(api.socketPath, startTimeoutMs, proc);
  for (const call of plan) await api.call(call);
  return connectHybridVsock(vsockSocket, AGENT_VSOCK_PORT, startTimeoutMs * 4, proc);
}

/** One call of a VMM's REST API. */
export interface ApiCall {
  method: 'GET' | 'PUT' | 'PATCH';
  path: string;
  body?: unknown;
}

/** JSON over HTTP/1.1 on a unix socket (Firecracker's and Cloud Hypervisor's API transport). */
export class UnixHttpClient {
  constructor(
    readonly socketPath: string,
    private readonly what: string,
  ) {}

  call(c: ApiCall, timeoutMs = 10_000): Promise<unknown> {
    const body = c.body === undefined ? undefined : Buffer.from(JSON.stringify(c.body));
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          method: c.method,
          path: c.path,
          headers: {
            Accept: 'application/json',
            ...(body ? { 'Content-Type': 'application/json', 'Content-Length': body.length } : { 'Content-Length': 0 }),
          },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              // plain-text body (Cloud Hypervisor's errors)
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) return resolve(parsed);
            const fault = (parsed as { fault_message?: string } | undefined)?.fault_message ?? text.trim();
            reject(unavailable(`${this.what} ${c.method} ${c.path} answered ${status}: ${fault}`));
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => reject(unavailable(`${this.what} ${c.method} ${c.path} failed: ${err.message}`, err)));
      req.end(body);
    });
  }
}

/** Removes a directory tree, refusing anything outside `root` (run dirs come from ids). */
export async function removeUnder(root: string, dir: string): Promise<void> {
  const rel = path.relative(root, dir);
  if (!rel || rel.startsWith('..') || path.isAbsolute(rel)) throw invalid(`refusing to remove ${dir}: not under ${root}`);
  await fs.rm(dir, { recursive: true, force: true });
}

/**
 * Deletes run directories left by a daemon that died (their VMMs died with it through
 * pdeathsig): each holds a `pid` file, and a directory whose process is gone is stale.
 */
export async function sweepStaleRunDirs(root: string, prefix: string): Promise<void> {
  let names: string[];
  try {
    names = await fs.readdir(root);
  } catch {
    return;
  }
  for (const name of names.filter((n) => n.startsWith(prefix))) {
    const dir = path.join(root, name);
    const pid = Number(await fs.readFile(path.join(dir, 'pid'), 'utf8').catch(() => '0'));
    if (pid > 0 && pidAlive(pid)) continue;
    await removeUnder(root, dir).catch(() => undefined);
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function once(proc: ChildProcess, event: string): Promise<void> {
  return new Promise((resolve) => proc.once(event, () => resolve()));
}

/**
 * Firecracker, Cloud Hypervisor and Xen PVH boot an uncompressed ELF kernel with a PVH entry
 * note, not a bzImage. kernel/build.sh caches `vmlinux` beside `bzImage`, so a bzImage path is
 * mapped to its sibling.
 */
export async function elfKernelFor(driver: string, kernelPath: string): Promise<string> {
  const head = Buffer.alloc(4);
  const fh = await fs.open(kernelPath, 'r').catch((err) => {
    throw invalid(`guest kernel ${kernelPath} cannot be read: ${(err as Error).message}`);
  });
  try {
    await fh.read(head, 0, 4, 0);
  } finally {
    await fh.close();
  }
  if (head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) return kernelPath;
  const sibling = path.join(path.dirname(kernelPath), 'vmlinux');
  if (existsSync(sibling)) return sibling;
  throw invalid(
    `the ${driver} driver boots an uncompressed ELF vmlinux (PVH entry); ${kernelPath} is not one and no vmlinux is beside it`,
  );
}

/** Base of the drivers' Vm objects whose VMM is one child process of the daemon. */
export abstract class ChildProcessVm {
  readonly pid: number;
  readonly exited: Promise<VmExit>;
  protected readonly proc: ChildProcess;
  protected readonly console: ConsoleBuffer;

  constructor(
    readonly id: string,
    vmm: VmmChild,
    readonly agentChannel: net.Socket,
    cleanup: () => Promise<void>,
  ) {
    this.proc = vmm.proc;
    this.console = vmm.console;
    this.pid = vmm.proc.pid ?? 0;
    this.exited = vmm.exit.then(async (exit) => {
      this.agentChannel.destroy();
      await cleanup().catch(() => undefined);
      return { ...exit, consoleTail: this.consoleTail() };
    });
  }

  /** Ends the VM now; the default kills the VMM process (subclasses add toolstack steps). */
  async kill(): Promise<VmExit> {
    if (isRunning(this.proc)) this.proc.kill('SIGKILL');
    return this.exited;
  }

  stats(): Promise<VmStats> {
    return processStats(this.pid, `VM ${this.id}`);
  }

  consoleTail(): string {
    return this.console.text();
  }
}

/** A capability the driver lacks, named as `capabilities()` names it. */
export function missingCapability(driver: string, capability: string, what: string): PaddockError {
  return notImplemented(`the ${driver} driver cannot ${what} (capability ${capability} is not offered)`);
}

/**
 * Refuses what a spec asks for that these drivers do not implement, rather than ignoring it:
 * VM templates (saving/restoring a booted VM; QEMU's driver implements that contract).
 */
export function refuseUnsupportedSpec(driver: string, spec: object): void {
  if ((spec as { template?: unknown }).template) {
    throw missingCapability(driver, 'snapshot', 'boot or restore a VM template');
  }
}
