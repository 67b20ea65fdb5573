/**
 * The daemons a compat run drives: a Paddock daemon (own process, test/helpers), Debian's
 * reference dockerd 20.10 (test/helpers/reference-dockerd), or any DOCKER_HOST given on the
 * command line. All of them pull from one seeded local registry on 127.0.0.1.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { startReferenceDockerd, type ReferenceDockerd } from '../../test/helpers/reference-dockerd';
import type { SeedName, SeededImage } from '../../test/helpers/seed-images';
import type { Feature } from './scenario';

export type TargetKind = 'paddock' | 'dockerd' | 'external';

export interface Target {
  kind: TargetKind;
  /** Label in tables and diffs. */
  name: string;
  dockerHost: string;
  /** The API socket, for raw HTTP requests (undefined for a tcp:// external host). */
  socketPath?: string;
  /** "127.0.0.1:PORT" of the seeded registry. */
  registry: string;
  images: Record<SeedName, SeededImage>;
  /** The daemon's own (maximum) API version, from GET /version. */
  apiVersion: string;
  /** When set, every client is pinned to this API version (the --diff mode compares like with like). */
  clientApiVersion?: string;
  features: Set<Feature>;
  /** Directory prefixes that appear in outputs (data roots), masked by the normaliser. */
  volatilePaths: string[];
  /** Private DOCKER_CONFIG for the CLIs. */
  cliConfigDir: string;
  /** Where scenarios keep their scratch files. */
  workDir: string;
  /** Why the daemon is gone, if it died during the run. */
  died(): string | undefined;
  stop(): Promise<void>;
}

/** The environment every client process gets: this target, no proxies, no inherited DOCKER_*. */
export function clientEnv(t: Target, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/_proxy$/i.test(k) || k.startsWith('DOCKER_') || k.startsWith('COMPOSE_')) continue;
    env[k] = v;
  }
  env.DOCKER_HOST = t.dockerHost;
  env.DOCKER_CONFIG = t.cliConfigDir;
  env.DOCKER_CLI_HINTS = 'false';
  env.NO_COLOR = '1';
  if (t.clientApiVersion) {
    env.DOCKER_API_VERSION = t.clientApiVersion;
    env.COMPOSE_API_VERSION = t.clientApiVersion;
  }
  return { ...env, ...extra };
}

function baseTarget(kind: TargetKind, name: string, runDir: string): Pick<Target, 'kind' | 'name' | 'cliConfigDir' | 'workDir'> {
  const workDir = path.join(runDir, name);
  const cliConfigDir = path.join(workDir, 'docker-config');
  mkdirSync(cliConfigDir, { recursive: true });
  writeFileSync(path.join(cliConfigDir, 'config.json'), '{}\n');
  return { kind, name, cliConfigDir, workDir };
}

export async function startPaddockTarget(opts: {
  runDir: string;
  registry: string;
  images: Record<SeedName, SeededImage>;
}): Promise<Target> {
  const base = baseTarget('paddock', 'paddock', opts.runDir);
  const logPath = path.join(base.workDir, 'daemon.log');
  const log = openSync(logPath, 'a');
  const script = path.join(__dirname, '..', 'paddock-daemon.js');
  // pdeathsig: the daemon (and with it its VMs) goes when the runner goes, however it goes.
  const child: ChildProcess = spawn('setpriv', ['--pdeathsig', 'TERM', '--', process.execPath, script, '--insecure-registry', opts.registry], {
    stdio: ['pipe', 'pipe', log],
    env: { ...process.env, PADDOCK_TEST_LOG_LEVEL: process.env.PADDOCK_TEST_LOG_LEVEL ?? 'warn' },
  });
  let exitInfo: string | undefined;
  let stopping = false;
  child.on('exit', (code, signal) => {
    if (!stopping) exitInfo = `paddock daemon exited (code ${code}, signal ${signal}); last log lines:\n${tail(logPath, 25)}`;
  });
  const ready = await new Promise<{ dockerHost: string; socketPath: string; dataRoot: string }>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)));
    });
    child.on('exit', () => reject(new Error(`paddock daemon did not start:\n${tail(logPath, 40)}`)));
  });
  const apiVersion = await daemonApiVersion(ready.socketPath);
  return {
    ...base,
    dockerHost: ready.dockerHost,
    socketPath: ready.socketPath,
    registry: opts.registry,
    images: opts.images,
    apiVersion,
    features: new Set<Feature>(['bridge-networks', 'port-publishing', 'api-1.44', 'paddock']),
    volatilePaths: [path.dirname(ready.dataRoot)],
    died: () => exitInfo,
    stop: async () => {
      stopping = true;
      if (child.exitCode !== null || child.signalCode !== null) {
        // It crashed: nobody ran its close(), so its container mounts and temp dir are ours to remove.
        cleanUpAfterCrash(path.dirname(ready.dataRoot));
        return;
      }
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await gone;
      clearTimeout(t);
    },
  };
}

export async function startDockerdTarget(opts: {
  runDir: string;
  registry: string;
  images: Record<SeedName, SeededImage>;
}): Promise<Target> {
  const base = baseTarget('dockerd', 'dockerd', opts.runDir);
  const ref: ReferenceDockerd = await startReferenceDockerd({ insecureRegistries: [opts.registry] });
  const apiVersion = await daemonApiVersion(ref.socketPath);
  return {
    ...base,
    dockerHost: ref.host,
    socketPath: ref.socketPath,
    registry: opts.registry,
    images: opts.images,
    apiVersion,
    // The reference runs with --bridge=none --iptables=false so that it never touches the host's
    // network: no bridge networks, no published ports there.
    features: new Set<Feature>(),
    volatilePaths: [path.dirname(ref.socketPath)],
    died: () => undefined,
    stop: () => ref.stop(),
  };
}

export async function externalTarget(opts: {
  runDir: string;
  dockerHost: string;
  registry: string;
  images: Record<SeedName, SeededImage>;
  /** The allow-list's target name for it ("paddock" for a Paddock daemon), default "external". */
  name?: string;
}): Promise<Target> {
  const base = baseTarget('external', opts.name ?? 'external', opts.runDir);
  const socketPath = opts.dockerHost.startsWith('unix://') ? opts.dockerHost.slice('unix://'.length) : undefined;
  if (!socketPath) throw new Error('--host: only unix:// sockets are supported by the raw-HTTP scenarios');
  const apiVersion = await daemonApiVersion(socketPath);
  return {
    ...base,
    dockerHost: opts.dockerHost,
    socketPath,
    registry: opts.registry,
    images: opts.images,
    apiVersion,
    features: new Set<Feature>(['bridge-networks', 'port-publishing', ...(Number(apiVersion.split('.')[1]) >= 44 ? (['api-1.44'] as Feature[]) : [])]),
    volatilePaths: [],
    died: () => undefined,
    stop: async () => undefined,
  };
}

/** Unmounts what a crashed test daemon left mounted under its temp dir (deepest first), then removes the dir. */
function cleanUpAfterCrash(base: string): void {
  if (!/^\/tmp\/paddock-daemon-[A-Za-z0-9]+$/.test(base)) return; // only startTestDaemon's own temp dirs
  const mounts = () =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4])
      .filter((m): m is string => Boolean(m) && m.startsWith(`${base}/`))
      .sort((a, b) => b.length - a.length);
  for (const m of mounts()) {
    try {
      execFileSync('umount', [m], { stdio: 'ignore' });
    } catch {
      // still busy: left mounted, and then the dir is left too
    }
  }
  if (mounts().length === 0) rmSync(base, { recursive: true, force: true });
}

function daemonApiVersion(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/version', method: 'GET', agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body).ApiVersion);
        } catch (err) {
          reject(new Error(`GET /version: ${res.statusCode} ${body}`));
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
