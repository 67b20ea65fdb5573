/**
 * A private instance of Debian's real dockerd (20.10), as the reference that Paddock's answers are
 * compared with (image IDs, RepoDigests, ...). Everything it owns lives in one temp dir: API
 * socket, data root, exec root, pidfile, and its own containerd (own socket, root and state).
 *
 * Isolation from the host, because this runs as root:
 * - networking: --bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false
 *   (no bridge, no firewall rules, no sysctl flips); it only ever dials the registries we name.
 * - files: it runs in a private mount namespace (unshare --mount) where /etc/docker is a bind of a
 *   temp dir (dockerd 20.10 writes key.json there) and every mount it makes disappears with it.
 * - lifetime: setpriv --pdeathsig KILL on dockerd and on containerd, so neither outlives the test.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, promises as fs } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { removeTree, stopProcess } from './registry';

const execFileP = promisify(execFile);

export const DOCKERD_BINARY = '/usr/sbin/dockerd';
export const CONTAINERD_BINARY = '/usr/bin/containerd';
/** The CLI that matches dockerd 20.10 (Debian's docker.io). */
export const REFERENCE_DOCKER_CLI = '/usr/bin/docker';

export interface ReferenceDockerd {
  /** For DOCKER_HOST: "unix:///.../docker.sock". */
  host: string;
  socketPath: string;
  /** Runs the reference docker CLI against this daemon, with a private DOCKER_CONFIG. */
  docker(args: string[], opts?: { timeoutMs?: number }): Promise<{ code: number; stdout: string; stderr: string }>;
  stop(): Promise<void>;
}

/** Why a reference dockerd cannot run on this machine, or undefined if it might. */
export function referenceDockerdUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const bin of [DOCKERD_BINARY, CONTAINERD_BINARY, REFERENCE_DOCKER_CLI, '/usr/bin/unshare', '/usr/bin/setpriv']) {
    if (!existsSync(bin)) return `${bin} is missing`;
  }
  return undefined;
}

export async function startReferenceDockerd(opts: { insecureRegistries: string[] }): Promise<ReferenceDockerd> {
  const unavailable = referenceDockerdUnavailable();
  if (unavailable) throw new Error(`reference dockerd unavailable: ${unavailable}`);
  for (const r of opts.insecureRegistries) {
    if (!/^127\.0\.0\.1:\d+$/.test(r)) throw new Error(`reference dockerd only talks to 127.0.0.1 registries, not ${r}`);
  }
  // Short: unix socket paths (containerd's, dockerd's) must stay under 108 bytes.
  const base = mkdtempSync(path.join(os.tmpdir(), 'pd-refd-'));
  const p = {
    containerdConfig: path.join(base, 'containerd.toml'),
    containerdSock: path.join(base, 'ctd', 'containerd.sock'),
    dockerSock: path.join(base, 'docker.sock'),
    dataRoot: path.join(base, 'data'),
    execRoot: path.join(base, 'exec'),
    pidfile: path.join(base, 'docker.pid'),
    daemonJson: path.join(base, 'daemon.json'),
    etcDocker: path.join(base, 'etc-docker'),
    cliConfig: path.join(base, 'cli-config'),
    launcher: path.join(base, 'launch.sh'),
  };
  let daemon: ChildProcess | undefined;
  try {
    for (const d of [path.join(base, 'ctd'), p.dataRoot, p.execRoot, p.etcDocker, p.cliConfig]) await fs.mkdir(d, { recursive: true });
    await fs.writeFile(p.containerdConfig, containerdConfig(base, p.containerdSock));
    // An explicit, empty config file: the host's /etc/docker/daemon.json must not apply.
    await fs.writeFile(p.daemonJson, '{}\n');
    await fs.writeFile(path.join(p.cliConfig, 'config.json'), '{}\n');
    const dockerdArgs = [
      `--host=unix://${p.dockerSock}`,
      `--data-root=${p.dataRoot}`,
      `--exec-root=${p.execRoot}`,
      `--pidfile=${p.pidfile}`,
      `--config-file=${p.daemonJson}`,
      `--containerd=${p.containerdSock}`,
      '--bridge=none',
      '--iptables=false',
      '--ip6tables=false',
      '--ip-masq=false',
      '--ip-forward=false',
      // vfs: plain directory copies, no kernel filesystem features needed for a pull.
      '--storage-driver=vfs',
      '--log-level=warn',
      ...opts.insecureRegistries.map((r) => `--insecure-registry=${r}`),
    ];
    await fs.writeFile(p.launcher, launcherScript(p, dockerdArgs), { mode: 0o700 });
    daemon = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'private', '--', 'bash', p.launcher], {
      env: daemonEnv(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    daemon.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-6000);
    });
    const child = daemon;
    const ready = await waitFor(async () => child.exitCode === null && child.signalCode === null && (await ping(p.dockerSock)), 60_000);
    if (!ready) throw new Error(`reference dockerd did not start: ${stderr.trim().split('\n').slice(-15).join('\n') || '(no output)'}`);
    const env = { ...daemonEnv(), DOCKER_HOST: `unix://${p.dockerSock}`, DOCKER_CONFIG: p.cliConfig };
    return {
      host: `unix://${p.dockerSock}`,
      socketPath: p.dockerSock,
      docker: async (args, o = {}) => {
        try {
          const r = await execFileP(REFERENCE_DOCKER_CLI, args, { env, timeout: o.timeoutMs ?? 120_000, maxBuffer: 64 << 20 });
          return { code: 0, stdout: r.stdout, stderr: r.stderr };
        } catch (err) {
          const e = err as { code?: number; stdout?: string; stderr?: string };
          return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
        }
      },
      stop: async () => {
        await stopProcess(child, 15_000);
        await removeBase(base);
      },
    };
  } catch (err) {
    if (daemon) await stopProcess(daemon, 5_000);
    await removeBase(base);
    throw err;
  }
}

/**
 * Runs inside the private mount namespace: hides the host's /etc/docker behind our own, starts
 * containerd, waits for its socket, runs dockerd; on SIGTERM stops dockerd, then containerd, and
 * reaps both (so nothing is left for init to reap). If this shell dies, both die with it.
 */
export function launcherScript(p: { etcDocker: string; containerdConfig: string; containerdSock: string }, dockerdArgs: string[]): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    'set -uo pipefail',
    // Without a /etc/docker to cover, dockerd 20.10 would create one on the host: refuse instead.
    '[ -d /etc/docker ] || { echo "no /etc/docker to shadow; refusing to let dockerd create it" >&2; exit 3; }',
    `mount --bind ${q(p.etcDocker)} /etc/docker || exit 3`,
    `setpriv --pdeathsig KILL -- ${CONTAINERD_BINARY} --config ${q(p.containerdConfig)} --log-level warn &`,
    'containerd_pid=$!',
    `for i in $(seq 1 200); do [ -S ${q(p.containerdSock)} ] && break; sleep 0.1; done`,
    `[ -S ${q(p.containerdSock)} ] || { echo "containerd did not start" >&2; kill -KILL $containerd_pid; exit 4; }`,
    `setpriv --pdeathsig KILL -- ${DOCKERD_BINARY} ${dockerdArgs.map(q).join(' ')} &`,
    'dockerd_pid=$!',
    "trap 'kill -TERM $dockerd_pid 2>/dev/null' TERM INT",
    // `wait` returns early when a trapped signal arrives: keep waiting until dockerd is gone.
    'while kill -0 $dockerd_pid 2>/dev/null; do wait $dockerd_pid; done',
    'kill -TERM $containerd_pid 2>/dev/null',
    'wait $containerd_pid',
    '',
  ].join('\n');
}

/** containerd with every path of its own (and the CRI plugin, which would want CNI, off). */
export function containerdConfig(base: string, sock: string): string {
  const q = JSON.stringify;
  return [
    'version = 2',
    `root = ${q(path.join(base, 'ctd', 'root'))}`,
    `state = ${q(path.join(base, 'ctd', 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${q(sock)}`,
    '[ttrpc]',
    `  address = ${q(`${sock}.ttrpc`)}`,
    '[debug]',
    '  address = ""',
    '[metrics]',
    '  address = ""',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(path.join(base, 'ctd', 'opt'))}`,
    '',
  ].join('\n');
}

/** No proxies (registry traffic must go straight to 127.0.0.1) and no inherited DOCKER_* settings. */
export function daemonEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/_proxy$/i.test(k) || k.startsWith('DOCKER_')) continue;
    env[k] = v;
  }
  env.PATH = env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  return env;
}

function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath, path: '/_ping', method: 'GET', agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

/**
 * Removes the temp dir, but never through a mount: dockerd's mounts live in its own namespace
 * and die with it, yet if one is visible here something is wrong and we leave the dir alone.
 */
async function removeBase(base: string): Promise<void> {
  const mountinfo = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const mounted = mountinfo
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => Boolean(m) && (m === base || m.startsWith(`${base}/`)));
  if (mounted.length) throw new Error(`not removing ${base}: still mounted at ${mounted.join(', ')}`);
  await removeTree(base);
}
