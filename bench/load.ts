/**
 * Load (issue 8): N parallel clients × M requests each on the paddockd binary's unix socket,
 * mixing list, inspect, create, start, stop and rm. VM-starting operations are a small bounded
 * share (TCG boots cost ~1 s of both cores each), the rest exercise the API and state paths.
 * Prints throughput, latency percentiles, a status histogram, the 5xx count and the daemon's RSS
 * at start, middle and end.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/load.js [--clients 50] [--requests 200] [--max-starts 6]
 *
 * test/integration/load.test.ts runs a reduced version and asserts on the figures.
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { startTestRegistry } from '../test/helpers/registry';
import { seedTestImages } from '../test/helpers/seed-images';
import { rng } from '../test/fuzz/fuzzer';
import { api, makeBase, removeBase, startPaddockd, type DaemonProcess } from '../test/fuzz/harness';

export interface LoadOptions {
  socketPath: string;
  image: string;
  clients: number;
  requestsPerClient: number;
  /** Container starts in the whole run (each boots a VM); 0 turns starts into inspects. */
  maxStarts: number;
  seed: number;
  /** Sampled at start, halfway and at the end. */
  rssKiB: () => number;
}

export interface LoadFigures {
  clients: number;
  requests: number;
  seconds: number;
  throughputPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  byOperation: Record<string, { count: number; p50: number; p99: number }>;
  statuses: Record<string, number>;
  fiveXX: string[];
  transportErrors: string[];
  starts: number;
  rssKiB: { start: number; middle: number; end: number };
}

type Op = 'list-containers' | 'list-images' | 'list-volumes' | 'inspect-container' | 'inspect-image' | 'create' | 'start' | 'stop' | 'rm' | 'ping';

/** The mix: mostly reads, a steady stream of creates and removals, a trickle of starts/stops. */
const MIX: [Op, number][] = [
  ['list-containers', 18], ['list-images', 8], ['list-volumes', 5], ['inspect-container', 22], ['inspect-image', 8],
  ['create', 14], ['rm', 12], ['start', 3], ['stop', 4], ['ping', 6],
];

export async function runLoad(opts: LoadOptions): Promise<LoadFigures> {
  const rand = rng(opts.seed);
  const total = MIX.reduce((a, [, w]) => a + w, 0);
  const pickOp = (): Op => {
    let r = rand() * total;
    for (const [op, w] of MIX) if ((r -= w) < 0) return op;
    return 'ping';
  };
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.clients });
  const created: string[] = [];
  const running = new Set<string>();
  let starts = 0;
  const latencies: number[] = [];
  const perOp: Record<string, number[]> = {};
  const figures: LoadFigures = {
    clients: opts.clients, requests: 0, seconds: 0, throughputPerSecond: 0, latencyMs: { p50: 0, p90: 0, p99: 0, max: 0 }, byOperation: {},
    statuses: {}, fiveXX: [], transportErrors: [], starts: 0, rssKiB: { start: opts.rssKiB(), middle: 0, end: 0 },
  };
  const totalRequests = opts.clients * opts.requestsPerClient;
  let done = 0;

  const request = (method: string, p: string, body?: unknown): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        { socketPath: opts.socketPath, agent, method, path: p, headers: data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {} },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.setTimeout(120_000, () => req.destroy(new Error('timeout after 120 s')));
      req.on('error', reject);
      req.end(data);
    });

  const one = async (op: Op): Promise<void> => {
    const any = () => created[Math.floor(rand() * created.length)];
    let method = 'GET';
    let p = '/_ping';
    let body: unknown;
    let target: string | undefined;
    switch (op) {
      case 'list-containers': p = rand() < 0.5 ? '/containers/json?all=1' : '/containers/json'; break;
      case 'list-images': p = '/images/json'; break;
      case 'list-volumes': p = '/volumes'; break;
      case 'inspect-container': p = `/containers/${created.length ? any() : 'none'}/json`; break;
      case 'inspect-image': p = `/images/${encodeURIComponent(opts.image)}/json`; break;
      case 'create': method = 'POST'; p = '/containers/create'; body = { Image: opts.image, Cmd: ['sleep', '300'], Labels: { load: '1' } }; break;
      case 'start':
        // Over budget, or nothing to start: an inspect keeps the request count honest.
        if (starts >= opts.maxStarts || !created.length) return one('inspect-container');
        starts++;
        target = any();
        method = 'POST'; p = `/containers/${target}/start`; break;
      case 'stop':
        if (!running.size) return one('inspect-container');
        target = [...running][Math.floor(rand() * running.size)];
        method = 'POST'; p = `/containers/${target}/stop?t=0`; break;
      case 'rm':
        if (!created.length) return one('list-containers');
        target = created.splice(Math.floor(rand() * created.length), 1)[0];
        running.delete(target);
        method = 'DELETE'; p = `/containers/${target}?force=1`; break;
      case 'ping': break;
    }
    const t0 = performance.now();
    let status = 0;
    try {
      const r = await request(method, p, body);
      status = r.status;
      if (status >= 500) figures.fiveXX.push(`${method} ${p} -> ${status} ${r.body.slice(0, 200)}`);
      if (op === 'create' && status === 201) created.push(JSON.parse(r.body).Id);
      if (op === 'start' && status === 204) running.add(target!);
      if (op === 'stop' && status === 204) running.delete(target!);
    } catch (err) {
      figures.transportErrors.push(`${method} ${p}: ${(err as Error).message}`);
    }
    const ms = performance.now() - t0;
    latencies.push(ms);
    (perOp[op] ??= []).push(ms);
    figures.statuses[status || 'error'] = (figures.statuses[status || 'error'] ?? 0) + 1;
    if (++done === Math.floor(totalRequests / 2)) figures.rssKiB.middle = opts.rssKiB();
  };

  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: opts.clients }, async () => {
      for (let i = 0; i < opts.requestsPerClient; i++) await one(pickOp());
    }),
  );
  figures.seconds = (performance.now() - t0) / 1000;
  // What the run left: removed so that the daemon's memory at the end is comparable.
  await Promise.all(created.splice(0).map((id) => request('DELETE', `/containers/${id}?force=1`).catch(() => undefined)));
  figures.rssKiB.end = opts.rssKiB();
  agent.destroy();
  figures.requests = latencies.length;
  figures.throughputPerSecond = Math.round(figures.requests / figures.seconds);
  figures.latencyMs = { p50: pct(latencies, 50), p90: pct(latencies, 90), p99: pct(latencies, 99), max: pct(latencies, 100) };
  for (const [op, xs] of Object.entries(perOp)) figures.byOperation[op] = { count: xs.length, p50: pct(xs, 50), p99: pct(xs, 99) };
  figures.starts = starts;
  return figures;
}

function pct(xs: number[], p: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] * 10) / 10;
}

/** Registry + daemon + image, then the run; used by the CLI below and by the jest test. */
export async function loadAgainstFreshDaemon(o: { clients: number; requests: number; maxStarts: number; seed: number }): Promise<LoadFigures> {
  const base = makeBase('paddock-load-');
  const registry = await startTestRegistry();
  let daemon: DaemonProcess | undefined;
  try {
    const image = (await seedTestImages(registry, ['busybox'])).busybox.ref;
    daemon = await startPaddockd(base);
    const pulled = await api(daemon.socketPath, 'POST', `/images/create?fromImage=${encodeURIComponent(image)}`);
    if (pulled.status !== 200 || /"error"/.test(pulled.body)) throw new Error(`pull failed: ${pulled.body.slice(-300)}`);
    const d = daemon;
    const figures = await runLoad({ socketPath: d.socketPath, image, clients: o.clients, requestsPerClient: o.requests, maxStarts: o.maxStarts, seed: o.seed, rssKiB: () => d.rssKiB() });
    if (d.exited || d.uncaught.length) figures.fiveXX.push(`daemon crashed: ${JSON.stringify(d.exited)} ${d.uncaught.join(' | ')}`);
    return figures;
  } finally {
    if (daemon) {
      const gone = new Promise((r) => daemon!.child.once('exit', r));
      daemon.child.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 20_000).unref())]);
      await daemon.kill('SIGKILL');
    }
    await registry.stop();
    await removeBase(base);
  }
}

if (require.main === module) {
  const arg = (name: string, fallback: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? Number(process.argv[i + 1]) : fallback;
  };
  const seed = arg('seed', Math.floor(Math.random() * 2 ** 31));
  loadAgainstFreshDaemon({ clients: arg('clients', 50), requests: arg('requests', 200), maxStarts: arg('max-starts', 6), seed })
    .then((f) => {
      console.log(`load (seed ${seed}): ${f.clients} clients, ${f.requests} requests in ${f.seconds.toFixed(1)} s = ${f.throughputPerSecond}/s`);
      console.log(`latency ms: p50 ${f.latencyMs.p50}  p90 ${f.latencyMs.p90}  p99 ${f.latencyMs.p99}  max ${f.latencyMs.max}`);
      for (const [op, s] of Object.entries(f.byOperation)) console.log(`  ${op.padEnd(18)} ${String(s.count).padStart(6)}  p50 ${s.p50} ms  p99 ${s.p99} ms`);
      console.log(`statuses: ${JSON.stringify(f.statuses)}  5xx: ${f.fiveXX.length}  transport errors: ${f.transportErrors.length}  VM starts: ${f.starts}`);
      console.log(`daemon RSS KiB: start ${f.rssKiB.start}  middle ${f.rssKiB.middle}  end ${f.rssKiB.end}`);
      for (const line of [...f.fiveXX, ...f.transportErrors].slice(0, 10)) console.log(`  ! ${line}`);
      process.exit(f.fiveXX.length || f.transportErrors.length ? 1 : 0);
    })
    .catch((err) => {
      console.error(err);
      process.exit(1);
    });
}
