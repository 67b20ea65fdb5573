/**
 * The paddockd binary as a child process, for the fuzz, load and fault-injection runs: they need
 * to see it crash (exit, or an "uncaught exception" it logged and survived), measure its memory,
 * and SIGKILL it, none of which an in-process daemon allows.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, promises as fs, readFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/guest';

export const PADDOCKD = path.join(repoRoot, 'dist/src/cli/paddockd.js');

export interface DaemonProcess {
  child: ChildProcess;
  base: string;
  socketPath: string;
  dataRoot: string;
  execRoot: string;
  /** Lines of stderr that say the daemon caught an exception it did not expect. */
  uncaught: string[];
  /** Set when the process ended on its own (not by our kill). */
  exited: { code: number | null; signal: NodeJS.Signals | null } | null;
  rssKiB(): number;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A fresh base directory under the system temp dir (every path the runs delete is inside it). */
export function makeBase(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * The daemon's defaults, VM templates included (a kill during a template build is one of the
 * instants fault injection covers). PADDOCK_TEST_VM_TEMPLATES=0 boots every VM plainly, to tell
 * a template problem from another.
 */
const templateArgs = () => (process.env.PADDOCK_TEST_VM_TEMPLATES === '0' ? ['--vm-templates=false'] : []);

/** Starts paddockd on `base` (reused across restarts: same data and exec roots) and waits for /_ping. */
export async function startPaddockd(base: string, extraArgs: string[] = [], opts: { echoStderr?: boolean } = {}): Promise<DaemonProcess> {
  if (!existsSync(PADDOCKD)) throw new Error('dist/ is missing: run npx tsc -p tsconfig.json (npm test does)');
  const socketPath = path.join(base, 'paddock.sock');
  const dataRoot = path.join(base, 'data');
  const execRoot = path.join(base, 'exec');
  const child = spawn(
    process.execPath,
    [PADDOCKD, '-H', `unix://${socketPath}`, '--data-root', dataRoot, '--exec-root', execRoot, '--log-level', 'warn', '--ip-masq=false', ...templateArgs(), ...extraArgs],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const proc: DaemonProcess = {
    child,
    base,
    socketPath,
    dataRoot,
    execRoot,
    uncaught: [],
    exited: null,
    rssKiB: () => rssKiB(child.pid!),
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await gone;
    },
  };
  let killedByUs = false;
  const origKill = child.kill.bind(child);
  child.kill = (sig?: NodeJS.Signals | number) => {
    killedByUs = true;
    return origKill(sig);
  };
  child.on('exit', (code, signal) => {
    if (!killedByUs) proc.exited = { code, signal };
  });
  let pending = '';
  child.stderr!.on('data', (c: Buffer) => {
    pending += c.toString();
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      if (/uncaught exception|unhandled rejection/.test(line)) proc.uncaught.push(line.slice(0, 2000));
      if (opts.echoStderr) process.stderr.write(`[paddockd] ${line}\n`);
    }
  });
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (proc.exited) throw new Error(`paddockd exited at start: ${JSON.stringify(proc.exited)}`);
    if ((await ping(socketPath).catch(() => 0)) === 200) return proc;
    await new Promise((r) => setTimeout(r, 100));
  }
  await proc.kill();
  throw new Error('paddockd did not answer /_ping within 90 s');
}

export function ping(socketPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/_ping', timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

export function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Processes whose command line mentions `needle` (e.g. the run's base dir): QEMU, virtiofsd … */
export async function processesMentioning(needle: string): Promise<{ pid: number; cmdline: string }[]> {
  const out: { pid: number; cmdline: string }[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = (await fs.readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').join(' ').trim();
      if (cmdline.includes(needle)) out.push({ pid: Number(entry), cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Removes a base directory made by makeBase(), refusing anything outside the temp dir. */
export async function removeBase(base: string): Promise<void> {
  const tmp = os.tmpdir();
  if (!base || !path.resolve(base).startsWith(tmp + path.sep)) throw new Error(`refusing to remove ${base}`);
  // The daemon's overlay mounts may outlive it after a SIGKILL: unmount what is below base first.
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1])
    .filter((m) => m && m.startsWith(base + '/'))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    await new Promise((resolve) => spawn('umount', ['-l', m.replace(/\\040/g, ' ')]).on('close', resolve));
  }
  await fs.rm(base, { recursive: true, force: true });
}

/** A minimal API client over the unix socket: status, headers, body (answers with a deadline). */
export interface Answer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

export function api(socketPath: string, method: string, urlPath: string, body?: unknown, timeoutMs = 120_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.isBuffer(body) || typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request(
      { socketPath, method, path: urlPath, headers: data !== undefined ? { 'Content-Type': 'application/json' } : {}, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms: ${method} ${urlPath}`)));
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}
