/**
 * Published-port forwarding (issue 5): throughput and latency through Paddock's port proxy
 * against dockerd's docker-proxy, in one invocation, interleaved, with the same busybox servers
 * (httpd for GETs, `nc -ll -e` for an upload sink and a 1-byte echo) at the far end of every path:
 *
 *  [paddock]        127.0.0.1:P on the host → paddockd's port publisher → unix socket → the
 *                   netns proxy → paddock-switch → the VM's virtio-net NIC (QEMU, TCG here) →
 *                   busybox in the container (`docker run -p 127.0.0.1::80 ...`).
 *  [paddock no-pp]  (breakdown) a client inside the daemon's network namespace → the container's
 *                   address: the switch and the VM NIC without the port proxy.
 *  [dockerd]        dockerd 20.10 + runc with a default bridge and its userland proxy
 *                   (`--iptables=false`: every connection goes through docker-proxy) →
 *                   docker0/veth → busybox in a runc container. dockerd, its bridge and veths
 *                   live in a network namespace of the bench's own, never in the host's.
 *  [docker-proxy]   /usr/sbin/docker-proxy alone in front of busybox on 127.0.0.1: docker-proxy's
 *                   own userland forwarding cost.
 *  [direct]         busybox on 127.0.0.1, no proxy.
 *
 * The baselines' servers, docker-proxy and dockerd run in that bench namespace (only `lo` and
 * dockerd's docker0): loopback there is the host's loopback code, and busybox nc, which cannot
 * bind an address, never listens on the host's interfaces. Clients are separate processes (so the
 * in-process daemon's event loop forwards, nothing else): one on the host, one in each namespace.
 *
 * Measured per path:
 *  - GET / (6 bytes) on a fresh TCP connection each, sequential: connect → response end;
 *  - 1-byte echo round trip on one established connection (busybox httpd has no keep-alive);
 *  - download: GET of a 20 MiB file (tmpfs in the container, /dev/shm on the host);
 *  - upload: 50 MiB pushed into a sink that answers "ok" once it has read them all, timed to
 *    that answer (bytes still in a proxy's buffers do not count as delivered).
 * Then the ratios Paddock/docker-proxy, Paddock/direct and Paddock/dockerd, and what each proxy
 * adds over the same path without it ([1] − [2] against [4] − [5]).
 *
 *   npx tsc -p tsconfig.json && node dist/bench/port-forward.js [--requests 200] [--rounds 10]
 *       [--downloads 5] [--uploads 5] [--no-dockerd]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, promises as fs, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';
import { DOCKER_CLI, runDocker, startTestDaemon, type CliResult } from '../test/helpers/daemon';
import { containerdConfig, daemonEnv, launcherScript, REFERENCE_DOCKER_CLI, referenceDockerdUnavailable } from '../test/helpers/reference-dockerd';
import { removeTree, startTestRegistry, stopProcess } from '../test/helpers/registry';
import { seedTestImages } from '../test/helpers/seed-images';
import { argNumber } from './guest-boot';

const BUSYBOX = '/bin/busybox';
const DOCKER_PROXY = ['/usr/sbin/docker-proxy', '/usr/bin/docker-proxy'].find((p) => existsSync(p));
const BIG_BYTES = 20 * 1024 * 1024;
const UPLOAD_BYTES = 50 * 1024 * 1024;
const INDEX = 'hello\n';
/** `nc -ll -e`: a child per connection with the socket as stdin/stdout. */
const SINK = ['nc', '-ll', '-p', '5001', '-e', 'sh', '-c', `head -c ${UPLOAD_BYTES} >/dev/null; echo ok`];
const ECHO = ['nc', '-ll', '-p', '5002', '-e', 'cat'];
/** The same servers in a container (/www a tmpfs there). */
const CONTAINER_SCRIPT = [
  'set -e',
  `printf '${INDEX.replace('\n', '\\n')}' > /www/index.html`,
  `dd if=/dev/zero of=/www/big bs=1048576 count=${BIG_BYTES / 1048576} 2>/dev/null`,
  'httpd -p 80 -h /www',
  `${ECHO.join(' ')} &`,
  `exec ${SINK.slice(0, 5).join(' ')} sh -c '${SINK[7]}'`,
].join('\n');

// ---------------------------------------------------------------------------------------------
// The client (a child process: `port-forward.js --client`), one JSON line per request and answer.

type ClientOp =
  | { op: 'get'; port: number; host: string; n: number }
  | { op: 'rtt'; port: number; host: string; n: number }
  | { op: 'download'; port: number; host: string }
  | { op: 'upload'; port: number; host: string };

function connectTimed(host: string, port: number): net.Socket {
  const s = net.connect({ host, port });
  s.setTimeout(120_000, () => s.destroy(new Error(`${host}:${port}: timed out`)));
  return s;
}

/** One HTTP/1.0 GET on a fresh connection: milliseconds from connect to the server's close. */
function httpGet(host: string, port: number, urlPath: string): Promise<{ ms: number; status: number; body: number; head: Buffer }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = connectTimed(host, port);
    let head: Buffer = Buffer.alloc(0);
    let headerEnd = -1;
    let body = 0;
    s.on('connect', () => s.write(`GET ${urlPath} HTTP/1.0\r\nHost: ${host}\r\n\r\n`));
    s.on('data', (c: Buffer) => {
      if (headerEnd >= 0) {
        if (body < 64) head = Buffer.concat([head, c.subarray(0, 64 - body)]);
        body += c.length;
        return;
      }
      head = Buffer.concat([head, c]);
      headerEnd = head.indexOf('\r\n\r\n');
      if (headerEnd >= 0) {
        body = head.length - headerEnd - 4;
        head = head.subarray(0, headerEnd + 4 + Math.min(body, 64));
      }
    });
    s.on('error', reject);
    s.on('end', () => {
      const ms = performance.now() - t0;
      s.destroy();
      const status = Number(/^HTTP\/1\.[01] (\d+)/.exec(head.toString('latin1'))?.[1] ?? 0);
      resolve({ ms, status, body, head });
    });
  });
}

async function clientOp(req: ClientOp): Promise<number[]> {
  switch (req.op) {
    case 'get': {
      const out: number[] = [];
      for (let i = 0; i < req.n; i++) {
        const r = await httpGet(req.host, req.port, '/');
        const text = r.head.toString('latin1');
        if (r.status !== 200 || !text.endsWith(INDEX)) throw new Error(`GET / on ${req.host}:${req.port}: ${JSON.stringify(text.slice(0, 200))}`);
        out.push(r.ms);
      }
      return out;
    }
    case 'download': {
      const r = await httpGet(req.host, req.port, '/big');
      if (r.status !== 200 || r.body !== BIG_BYTES) throw new Error(`GET /big on ${req.host}:${req.port}: status ${r.status}, ${r.body} bytes`);
      return [r.ms];
    }
    case 'rtt':
      return new Promise((resolve, reject) => {
        const s = connectTimed(req.host, req.port);
        s.setNoDelay(true);
        s.on('error', reject);
        s.on('connect', async () => {
          try {
            const out: number[] = [];
            const warm = 5;
            for (let i = 0; i < req.n + warm; i++) {
              const t0 = performance.now();
              await new Promise<void>((res, rej) => {
                s.once('data', (d: Buffer) => (d.toString() === 'x' ? res() : rej(new Error(`echo answered ${JSON.stringify(d.toString())}`))));
                s.write('x');
              });
              if (i >= warm) out.push(performance.now() - t0);
            }
            s.destroy();
            resolve(out);
          } catch (err) {
            s.destroy();
            reject(err);
          }
        });
      });
    case 'upload':
      return new Promise((resolve, reject) => {
        const t0 = performance.now();
        const s = connectTimed(req.host, req.port);
        const chunk = Buffer.alloc(256 * 1024);
        let left = UPLOAD_BYTES;
        let answer = '';
        const pump = () => {
          while (left > 0) {
            const n = Math.min(left, chunk.length);
            left -= n;
            if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', pump);
          }
        };
        s.on('connect', pump);
        s.on('data', (d: Buffer) => {
          answer += d.toString();
          if (answer.includes('ok\n')) {
            const ms = performance.now() - t0;
            s.destroy();
            if (left > 0) reject(new Error(`sink answered before ${left} bytes were sent`));
            else resolve([ms]);
          }
        });
        s.on('error', reject);
        s.on('close', () => reject(new Error(`upload to ${req.host}:${req.port}: closed, answer ${JSON.stringify(answer)}`)));
      });
  }
}

function clientMain(): void {
  const rl = readline.createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    chain = chain.then(async () => {
      try {
        process.stdout.write(`${JSON.stringify({ values: await clientOp(JSON.parse(line) as ClientOp) })}\n`);
      } catch (err) {
        process.stdout.write(`${JSON.stringify({ error: (err as Error).message })}\n`);
      }
    });
  });
  rl.on('close', () => void chain.then(() => process.exit(0)));
}

/** The parent's handle on a client process, maybe inside a network namespace. */
class Client {
  private readonly proc: ChildProcess;
  private readonly waiting: Array<(line: string) => void> = [];
  private stderr = '';

  constructor(readonly where: string, netns?: string) {
    const node = [process.execPath, __filename, '--client'];
    const [cmd, ...args] = netns ? ['nsenter', `--net=${netns}`, '--', 'setpriv', '--pdeathsig', 'KILL', '--', ...node] : node;
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    readline.createInterface({ input: this.proc.stdout! }).on('line', (l) => this.waiting.shift()?.(l));
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)));
    this.proc.on('exit', () => {
      for (const w of this.waiting.splice(0)) w(JSON.stringify({ error: `client (${where}) exited: ${this.stderr.trim()}` }));
    });
  }

  async op(req: ClientOp): Promise<number[]> {
    const line = await new Promise<string>((resolve) => {
      this.waiting.push(resolve);
      this.proc.stdin!.write(`${JSON.stringify(req)}\n`);
    });
    const r = JSON.parse(line) as { values?: number[]; error?: string };
    if (r.error !== undefined) throw new Error(`${this.where}: ${r.error}`);
    return r.values!;
  }

  async close(): Promise<void> {
    this.proc.stdin!.end();
    await stopProcess(this.proc, 2000);
  }
}

// ---------------------------------------------------------------------------------------------
// The bench namespace, and what runs in it.

async function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err.trim()}`))));
  });
}

/** A long-running program inside `netns`, killed if we die. */
function spawnIn(netns: string, argv: string[], extra: { fd3?: boolean; env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  return spawn('nsenter', [`--net=${netns}`, '--', 'setpriv', '--pdeathsig', 'KILL', '--', ...argv], {
    stdio: ['ignore', 'ignore', 'pipe', ...(extra.fd3 ? (['pipe'] as const) : [])],
    env: extra.env ?? process.env,
  });
}

/** docker-proxy (dockerd 20.10's) writes "0\n" on fd 3 once it listens, "1\n<why>" if not. */
async function startDockerProxy(netns: string, hostPort: number, targetIp: string, targetPort: number): Promise<ChildProcess> {
  const p = spawnIn(netns, [DOCKER_PROXY!, '-proto', 'tcp', '-host-ip', '127.0.0.1', '-host-port', String(hostPort), '-container-ip', targetIp, '-container-port', String(targetPort)], { fd3: true });
  const signal = await new Promise<string>((resolve) => {
    let got = '';
    (p.stdio[3] as NodeJS.ReadableStream).on('data', (d: Buffer) => (got += d.toString()));
    (p.stdio[3] as NodeJS.ReadableStream).on('end', () => resolve(got));
    p.on('exit', () => resolve(got));
    setTimeout(() => resolve(got), 10_000);
  });
  if (!signal.startsWith('0')) throw new Error(`docker-proxy ${hostPort}→${targetIp}:${targetPort}: ${signal.trim() || 'no answer'}`);
  return p;
}

/**
 * The registry listens on the host's 127.0.0.1, which dockerd in the bench namespace cannot reach:
 * a relay listens on the same port inside, and hands each connection over a unix socket to us.
 */
async function registryRelay(netns: string, registryPort: number, dir: string): Promise<{ procs: ChildProcess[]; server: net.Server }> {
  const sock = path.join(dir, 'registry-relay.sock');
  const server = net.createServer((c) => {
    const u = net.connect(registryPort, '127.0.0.1');
    c.pipe(u);
    u.pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  const js = `const net=require('net');net.createServer(c=>{const u=net.connect(${JSON.stringify(sock)});c.pipe(u);u.pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy())}).listen(${registryPort},'127.0.0.1')`;
  const relay = spawnIn(netns, [process.execPath, '-e', js]);
  return { procs: [relay], server };
}

interface Dockerd {
  docker(args: string[], timeoutMs?: number): Promise<CliResult>;
  stop(): Promise<void>;
}

/**
 * dockerd 20.10 with a default bridge and its userland proxy, as test/helpers/reference-dockerd.ts
 * starts it (own containerd, private mount namespace with its own /etc/docker, vfs) but in the
 * bench's network namespace, so that docker0, the veths and docker-proxy never touch the host's.
 */
async function startBridgedDockerd(netns: string, registryHost: string): Promise<Dockerd> {
  const base = mkdtempSync(path.join(os.tmpdir(), 'pd-pfd-'));
  const p = {
    containerdConfig: path.join(base, 'containerd.toml'),
    containerdSock: path.join(base, 'ctd', 'containerd.sock'),
    dockerSock: path.join(base, 'docker.sock'),
    etcDocker: path.join(base, 'etc-docker'),
    cliConfig: path.join(base, 'cli-config'),
    launcher: path.join(base, 'launch.sh'),
  };
  for (const d of [path.join(base, 'ctd'), path.join(base, 'data'), path.join(base, 'exec'), p.etcDocker, p.cliConfig]) await fs.mkdir(d, { recursive: true });
  await fs.writeFile(p.containerdConfig, containerdConfig(base, p.containerdSock));
  await fs.writeFile(path.join(base, 'daemon.json'), '{}\n');
  await fs.writeFile(path.join(p.cliConfig, 'config.json'), '{}\n');
  const dockerdArgs = [
    `--host=unix://${p.dockerSock}`,
    `--data-root=${path.join(base, 'data')}`,
    `--exec-root=${path.join(base, 'exec')}`,
    `--pidfile=${path.join(base, 'docker.pid')}`,
    `--config-file=${path.join(base, 'daemon.json')}`,
    `--containerd=${p.containerdSock}`,
    // The default bridge (docker0, inside the bench namespace); no firewall rules, so every
    // connection to a published port goes through docker-proxy.
    '--iptables=false',
    '--ip6tables=false',
    '--ip-masq=false',
    '--ip-forward=false',
    '--userland-proxy=true',
    '--storage-driver=vfs',
    '--log-level=warn',
    `--insecure-registry=${registryHost}`,
  ];
  await fs.writeFile(p.launcher, launcherScript(p, dockerdArgs), { mode: 0o700 });
  const env = daemonEnv();
  const daemon = spawn('nsenter', [`--net=${netns}`, '--', 'setpriv', '--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'private', '--', 'bash', p.launcher], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  daemon.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const docker = (args: string[], timeoutMs = 120_000) =>
    runDocker(args, { cli: REFERENCE_DOCKER_CLI, dockerHost: `unix://${p.dockerSock}`, configDir: p.cliConfig, timeoutMs });
  const stop = async () => {
    await stopProcess(daemon, 15_000);
    const mounted = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => (l.split(' ')[4] ?? '').startsWith(base));
    if (!mounted) await removeTree(base);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (daemon.exitCode !== null || daemon.signalCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`bridged dockerd did not start: ${stderr.trim().split('\n').slice(-10).join('\n') || '(no output)'}`);
    }
    if ((await docker(['version', '--format', '{{.Server.Version}}'], 5000)).code === 0) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  return { docker, stop };
}

// ---------------------------------------------------------------------------------------------
// Statistics and output

interface Stats {
  min: number;
  median: number;
  p90: number;
  max: number;
}

function stats(values: number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  const mid = Math.floor(s.length / 2);
  return { min: s[0], median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, p90: at(0.9), max: s[s.length - 1] };
}

interface BenchPath {
  key: string;
  label: string;
  client: Client;
  host: string;
  http: number;
  sink: number;
  echo: number;
  data: Record<Metric, number[]>;
}

type Metric = 'get' | 'rtt' | 'download' | 'upload';

const METRICS: Array<{ metric: Metric; title: string; unit: string; throughput?: boolean }> = [
  { metric: 'get', title: 'GET / (6 B) on a fresh connection', unit: 'ms' },
  { metric: 'rtt', title: '1-byte echo round trip, one connection', unit: 'ms' },
  { metric: 'download', title: `download: GET of ${BIG_BYTES / 1048576} MiB`, unit: 'MB/s', throughput: true },
  { metric: 'upload', title: `upload: ${UPLOAD_BYTES / 1048576} MiB into a sink`, unit: 'MB/s', throughput: true },
];

function must(what: string, r: CliResult): string {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.stdout}${r.stderr}`);
  return r.stdout;
}

async function until<T>(what: string, f: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await f();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

async function main(): Promise<void> {
  const requests = argNumber('--requests', 200);
  const rounds = argNumber('--rounds', 10);
  const downloads = argNumber('--downloads', 5);
  const uploads = argNumber('--uploads', 5);
  const withDockerd = !process.argv.includes('--no-dockerd');
  if (!DOCKER_PROXY) throw new Error('no docker-proxy in /usr/sbin or /usr/bin');
  const tStart = performance.now();

  const cleanups: Array<() => Promise<unknown>> = [];
  const paths: BenchPath[] = [];
  const notes: string[] = [];
  const addPath = (key: string, label: string, client: Client, host: string, http: number, sink: number, echo: number) =>
    paths.push({ key, label, client, host, http, sink, echo, data: { get: [], rtt: [], download: [], upload: [] } });
  try {
    const registry = await startTestRegistry();
    cleanups.unshift(() => registry.stop());
    const image = (await seedTestImages(registry, ['busybox'])).busybox.ref;

    // The bench namespace: only lo (and dockerd's docker0 when it runs).
    const nsName = `pfbench-${process.pid}`;
    const benchNs = `/run/netns/${nsName}`;
    await sh('ip', ['netns', 'add', nsName]);
    cleanups.unshift(() => sh('ip', ['netns', 'delete', nsName]));
    await sh('ip', ['-n', nsName, 'link', 'set', 'lo', 'up']);
    const work = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'paddock-pfbench-'));
    cleanups.unshift(() => removeTree(work));
    const www = path.join(work, 'www');
    await fs.mkdir(www);
    await fs.writeFile(path.join(www, 'index.html'), INDEX);
    await fs.writeFile(path.join(www, 'big'), Buffer.alloc(BIG_BYTES));

    const procs: ChildProcess[] = [];
    cleanups.unshift(async () => {
      for (const p of procs) await stopProcess(p, 2000);
    });
    // Host servers, in the bench namespace: 8080 httpd, 5001 sink, 5002 echo.
    procs.push(spawnIn(benchNs, [BUSYBOX, 'httpd', '-f', '-p', '127.0.0.1:8080', '-h', www]));
    procs.push(spawnIn(benchNs, [BUSYBOX, ...SINK]));
    procs.push(spawnIn(benchNs, [BUSYBOX, ...ECHO]));
    // docker-proxy in front of them: 18080, 15001, 15002.
    for (const [from, to] of [[18080, 8080], [15001, 5001], [15002, 5002]]) procs.push(await startDockerProxy(benchNs, from, '127.0.0.1', to));

    // Paddock.
    const pd = await startTestDaemon();
    cleanups.unshift(() => pd.close());
    const hv = pd.daemon.engine.hypervisor.info();
    must('paddock: docker pull', await pd.docker(['pull', '-q', image], { timeoutMs: 300_000 }));
    const runArgs = ['--tmpfs', '/www', image, 'sh', '-c', CONTAINER_SCRIPT];
    const id = must(
      'paddock: docker run -p',
      await pd.docker(['run', '-d', '-p', '127.0.0.1::80', '-p', '127.0.0.1::5001', '-p', '127.0.0.1::5002', ...runArgs], { timeoutMs: 300_000 }),
    ).trim();
    cleanups.unshift(() => pd.docker(['rm', '-f', id]));
    const port = async (p: number) => Number(/127\.0\.0\.1:(\d+)/.exec(must('docker port', await pd.docker(['port', id, String(p)])))![1]);
    const [pdHttp, pdSink, pdEcho] = [await port(80), await port(5001), await port(5002)];
    const pdIp = must('inspect', await pd.docker(['inspect', '-f', '{{.NetworkSettings.IPAddress}}', id])).trim();

    const hostClient = new Client('host');
    cleanups.unshift(() => hostClient.close());
    const benchClient = new Client('bench namespace', benchNs);
    cleanups.unshift(() => benchClient.close());
    addPath('paddock', `paddock: 127.0.0.1:${pdHttp} → port proxy → switch → virtio-net (${hv.accelerator}) → VM`, hostClient, '127.0.0.1', pdHttp, pdSink, pdEcho);

    // The daemon's namespace (named as src/daemon.ts names it), for the path without the port proxy.
    const execRoot = path.join(path.dirname(pd.dataRoot), 'exec');
    const pdNs = `/run/netns/paddock-${createHash('sha256').update(path.resolve(execRoot)).digest('hex').slice(0, 10)}`;
    if (existsSync(pdNs) && pdIp) {
      const nsClient = new Client('paddock namespace', pdNs);
      cleanups.unshift(() => nsClient.close());
      addPath('paddock-nopp', `paddock, no port proxy: daemon netns → ${pdIp} (switch → virtio-net → VM)`, nsClient, pdIp, 80, 5001, 5002);
    } else notes.push(`paddock without the port proxy: not measured (no ${pdNs} or no container address)`);

    // dockerd 20.10 with a bridge, in the bench namespace.
    let dockerdVersion = '';
    const why = withDockerd ? referenceDockerdUnavailable() : 'skipped (--no-dockerd)';
    if (why) notes.push(`dockerd + runc path: not measured: ${why}`);
    else {
      try {
        const relay = await registryRelay(benchNs, Number(registry.host.split(':')[1]), work);
        procs.push(...relay.procs);
        cleanups.unshift(async () => relay.server.close());
        const dd = await startBridgedDockerd(benchNs, registry.host);
        cleanups.unshift(() => dd.stop());
        dockerdVersion = must('dockerd version', await dd.docker(['version', '--format', '{{.Server.Version}}'])).trim();
        await until('dockerd: docker pull', async () => must('pull', await dd.docker(['pull', '-q', image], 300_000)), 30_000);
        const did = must(
          'dockerd: docker run -p',
          await dd.docker(['run', '-d', '-p', '127.0.0.1:28080:80', '-p', '127.0.0.1:25001:5001', '-p', '127.0.0.1:25002:5002', ...runArgs], 120_000),
        ).trim();
        cleanups.unshift(() => dd.docker(['rm', '-f', did]));
        const dip = must('inspect', await dd.docker(['inspect', '-f', '{{.NetworkSettings.IPAddress}}', did])).trim();
        addPath('dockerd', `dockerd ${dockerdVersion}: 127.0.0.1:28080 → docker-proxy → docker0/veth → runc (${dip})`, benchClient, '127.0.0.1', 28080, 25001, 25002);
      } catch (err) {
        notes.push(`dockerd + runc path: not measured: ${(err as Error).message.split('\n')[0]}`);
      }
    }
    addPath('docker-proxy', `docker-proxy alone: 127.0.0.1:18080 → docker-proxy → busybox on 127.0.0.1`, benchClient, '127.0.0.1', 18080, 15001, 15002);
    addPath('direct', 'direct: busybox on 127.0.0.1, no proxy', benchClient, '127.0.0.1', 8080, 5001, 5002);

    // Ready, and one untimed pass of everything (page cache, TCP, JIT, the VM's first packets).
    for (const p of paths) {
      await until(`${p.key}: first GET`, () => p.client.op({ op: 'get', host: p.host, port: p.http, n: 1 }));
      await until(`${p.key}: first echo`, () => p.client.op({ op: 'rtt', host: p.host, port: p.echo, n: 1 }));
      await p.client.op({ op: 'get', host: p.host, port: p.http, n: 10 });
      await p.client.op({ op: 'download', host: p.host, port: p.http });
      await until(`${p.key}: first upload`, () => p.client.op({ op: 'upload', host: p.host, port: p.sink }));
    }

    const cpus = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length;
    const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    console.log(`port forwarding, ${new Date().toISOString().slice(0, 10)}; accelerator: ${hv.accelerator} (${hv.acceleratorReason}); qemu ${hv.version}; ${cpus} CPUs; load average ${load()}`);
    console.log(`docker CLI ${DOCKER_CLI}; ${DOCKER_PROXY}; ${BUSYBOX} (${readFileSync(BUSYBOX).includes('BusyBox v1.') ? 'busybox-static' : '?'}) serves every path`);
    paths.forEach((p, i) => console.log(`  [${i + 1}] ${p.label}`));
    for (const n of notes) console.log(`  note: ${n}`);

    // Interleaved: every round measures every path, starting with a different one each round.
    const perRound = Math.max(1, Math.round(requests / rounds));
    const order = (r: number) => paths.map((_, i) => paths[(i + r) % paths.length]);
    for (let r = 0; r < rounds; r++) {
      for (const p of order(r)) p.data.get.push(...(await p.client.op({ op: 'get', host: p.host, port: p.http, n: perRound })));
      for (const p of order(r)) p.data.rtt.push(...(await p.client.op({ op: 'rtt', host: p.host, port: p.echo, n: perRound })));
    }
    for (let r = 0; r < Math.max(downloads, uploads); r++) {
      for (const p of order(r)) {
        if (r < downloads) p.data.download.push(BIG_BYTES / 1e6 / ((await p.client.op({ op: 'download', host: p.host, port: p.http }))[0] / 1000));
        if (r < uploads) p.data.upload.push(UPLOAD_BYTES / 1e6 / ((await p.client.op({ op: 'upload', host: p.host, port: p.sink }))[0] / 1000));
      }
    }

    const f = (v: number, unit: string) => (unit === 'ms' ? v.toFixed(3) : v.toFixed(1)).padStart(9);
    const byKey = (k: string) => paths.find((p) => p.key === k);
    const paddock = byKey('paddock')!;
    for (const m of METRICS) {
      console.log(`\n${m.title} (${m.unit}${m.throughput ? ', 1 MB = 10^6 B' : ''})`.padEnd(62) + ['min', 'median', 'p90', 'max'].map((h) => h.padStart(9)).join('') + '      n');
      paths.forEach((p, i) => {
        const s = stats(p.data[m.metric]);
        console.log(`  [${i + 1}] ${p.key.padEnd(54)}${f(s.min, m.unit)}${f(s.median, m.unit)}${f(s.p90, m.unit)}${f(s.max, m.unit)}  ${String(p.data[m.metric].length).padStart(5)}`);
      });
      const ratios = ['docker-proxy', 'direct', 'dockerd']
        .map((k) => byKey(k))
        .filter((p): p is BenchPath => Boolean(p))
        .map((p) => {
          const a = stats(paddock.data[m.metric]);
          const b = stats(p.data[m.metric]);
          const best = m.throughput ? a.max / b.max : a.min / b.min;
          const d = m.throughput ? 3 : 2;
          return `paddock/${p.key} ×${(a.median / b.median).toFixed(d)} (best ×${best.toFixed(d)})`;
        });
      console.log(`  median ratio: ${ratios.join('; ')}`);
    }
    // The proxies alone: what each adds over the same path without it (medians).
    const nopp = byKey('paddock-nopp');
    const dp = byKey('docker-proxy');
    const direct = byKey('direct')!;
    const cost = (a: BenchPath, b: BenchPath, m: 'get' | 'rtt') => (stats(a.data[m]).median - stats(b.data[m]).median).toFixed(3);
    console.log('\nwhat the proxy itself adds (difference of medians, ms):');
    if (nopp) console.log(`  paddock port proxy ([1] − [${paths.indexOf(nopp) + 1}]): ${cost(paddock, nopp, 'get')} per fresh connection + GET, ${cost(paddock, nopp, 'rtt')} per round trip`);
    if (dp) console.log(`  docker-proxy ([${paths.indexOf(dp) + 1}] − [${paths.indexOf(direct) + 1}]): ${cost(dp, direct, 'get')} per fresh connection + GET, ${cost(dp, direct, 'rtt')} per round trip`);
    console.log(`\nload average at the end ${load()}; ${((performance.now() - tStart) / 1000).toFixed(0)} s in all`);
    console.log(
      `Paddock's path includes the VM's virtio-net NIC under ${hv.accelerator} emulation (QEMU's netdev stream ↔ paddock-switch); ` +
        `docker-proxy and direct do not, and dockerd's goes through a veth and a bridge in the kernel.`,
    );
    console.log('busybox httpd closes every connection (HTTP/1.0), so the established-connection latency is the echo round trip.');
  } finally {
    for (const c of cleanups) await c().catch((e) => console.error(`cleanup: ${(e as Error).message}`));
  }
}

if (process.argv.includes('--client')) clientMain();
else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
