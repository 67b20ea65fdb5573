/**
 * A bounded-time API fuzzer: random and mutated requests to every route the router serves and
 * every operation of api-spec/operations.json (plus paths nobody serves), over HTTP and over raw
 * sockets for what an HTTP client will not send (bad chunked encoding, truncated bodies, garbage,
 * oversized headers). It records what came back and judges it:
 *   - hang: no status line (nor a closed connection) within the deadline;
 *   - bad error body: a status >= 400 whose body is not JSON {"message": string};
 *   - unexpected 5xx: a 5xx not on the allow-list of answers dockerd gives too.
 * Crashes are judged by the caller (it owns the daemon process).
 *
 * Safety (the daemon runs as root on a shared machine): nothing may reach past 127.0.0.0/8, so
 * registry names are forced onto the test registry or a closed loopback port; bodies lose host
 * bind mounts, published ports and restart policies; only fixture containers are ever started,
 * and at most `maxStarts` times (a TCG boot costs ~1 s of both cores).
 */
import http from 'node:http';
import net from 'node:net';
import tar from 'tar-stream';

export interface RouteSpec {
  method: string;
  path: string;
}

export interface Pools {
  containers: string[];
  /** Fixture containers the fuzzer may start (sane config, made by the caller). */
  startable: string[];
  images: string[];
  volumes: string[];
  networks: string[];
  execs: string[];
}

export interface FuzzOptions {
  socketPath: string;
  seconds: number;
  seed: number;
  concurrency: number;
  routes: RouteSpec[];
  /** "127.0.0.1:PORT" of a test registry: the only registry names may point at (or 127.0.0.1:1). */
  registryHost: string;
  /** Called now and then to refresh ids; the caller also keeps fixtures alive there. */
  pools: () => Promise<Pools>;
  maxStarts: number;
  /** A request must get a status line (or see its connection closed) within this. */
  answerTimeoutMs: number;
  /** 5xx answers that dockerd gives too: matched against "METHOD /path STATUS message". */
  allowed5xx: RegExp[];
}

export interface FuzzFigures {
  seed: number;
  seconds: number;
  requests: number;
  rawRequests: number;
  statuses: Record<string, number>;
  closedWithoutAnswer: number;
  starts: number;
  hangs: string[];
  badErrorBodies: string[];
  unexpected5xx: string[];
  /** The allow-listed 5xx, by route, status and message (for the report). */
  allowed5xx: Record<string, number>;
  routesHit: number;
}

/** mulberry32: small, seedable, good enough to replay a run from its printed seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const QUERY_NAMES = [
  'all', 'limit', 'size', 'filters', 'name', 'force', 'v', 't', 'timeout', 'signal', 'stream', 'stdout', 'stderr', 'stdin',
  'logs', 'follow', 'tail', 'since', 'until', 'timestamps', 'h', 'w', 'path', 'fromImage', 'fromSrc', 'repo', 'tag', 'message',
  'changes', 'pause', 'author', 'container', 'quiet', 'condition', 'platform', 'noprune', 'dangling', 'detachKeys', 'ps_args',
  'one-shot', 'noOverwriteDirNonDir', 'copyUIDGID', 'names', 'comment', 'link', 'digests', 'shared-size', 'term', 'x',
];

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS', 'TRACE', 'FOO'];
const VERSIONS = ['', '', '', '/v1.41', '/v1.44', '/v1.24', '/v1.12', '/v9.99', '/v1.0', '/vX', '/v1.41.1'];
const NASTY = [
  '', ' ', '0', '-1', '1e309', 'NaN', '99999999999999999999999', '..', '../../etc/passwd', '%2e%2e%2f', '/', '//', 'a/b',
  '\u0000', '\u202e', '😀', 'ÿ', 'x'.repeat(5000), '%', '%zz', '%00', '{}', '[]', 'null', 'true', "'", '"', '\\', '*',
  'sha256:', 'sha256:' + '0'.repeat(64), 'busybox', 'busybox:latest', 'a:b:c', 'UPPER', '.hidden', '-dash',
];
const NASTY_JSON_VALUES: unknown[] = [
  null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, Number.MAX_SAFE_INTEGER, '', 'x', '😀\u0000\u202e', 'x'.repeat(10000),
  [], {}, [null], [1, 'a', {}], { '': null }, { __proto__: { polluted: true } }, { constructor: { prototype: { polluted: true } } },
];

/** Bodies that look like what clients send, to be mutated. */
function templates(image: string): Record<string, unknown> {
  return {
    '/containers/create': {
      Image: image, Cmd: ['true'], Env: ['A=1'], Labels: { a: 'b' }, Tty: false, OpenStdin: false, WorkingDir: '/',
      Entrypoint: null, User: '', ExposedPorts: { '80/tcp': {} }, Volumes: { '/data': {} }, StopSignal: 'SIGTERM',
      Healthcheck: { Test: ['NONE'] },
      HostConfig: { Memory: 134217728, NanoCpus: 1e9, AutoRemove: false, Tmpfs: { '/t': 'size=1m' }, LogConfig: { Type: 'json-file', Config: {} } },
      NetworkingConfig: { EndpointsConfig: { bridge: { Aliases: ['x'] } } },
    },
    '/containers/{id}/exec': { AttachStdout: true, AttachStderr: true, Cmd: ['echo', 'hi'], Env: ['X=1'], Tty: false, User: '', WorkingDir: '/' },
    '/exec/{id}/start': { Detach: false, Tty: false },
    '/containers/{id}/update': { CpuShares: 512, Memory: 0, RestartPolicy: { Name: 'no' } },
    '/volumes/create': { Name: 'fuzzvol', Driver: 'local', DriverOpts: {}, Labels: { a: 'b' } },
    '/networks/create': { Name: 'fuzznet', Driver: 'bridge', Internal: false, Labels: {}, IPAM: { Config: [{ Subnet: '10.250.0.0/24' }] } },
    '/networks/{id}/connect': { Container: 'x', EndpointConfig: { Aliases: ['a'] } },
    '/networks/{id}/disconnect': { Container: 'x', Force: false },
    '/commit': { Cmd: ['sh'], Env: ['B=2'], Labels: { c: 'd' } },
    '/auth': { username: 'u', password: 'p', serveraddress: '127.0.0.1:1' },
  };
}

interface Built {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
  raw?: Buffer;
  route: string;
  /** Raw cases that end the write side early: closing is then a fine answer. */
  mayClose?: boolean;
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzFigures> {
  const rand = rng(opts.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const chance = (p: number) => rand() < p;
  const figures: FuzzFigures = {
    seed: opts.seed, seconds: opts.seconds, requests: 0, rawRequests: 0, statuses: {}, closedWithoutAnswer: 0, starts: 0,
    hangs: [], badErrorBodies: [], unexpected5xx: [], allowed5xx: {}, routesHit: 0,
  };
  const hit = new Set<string>();
  const tars = await hostileTars(rand);
  let pools = await opts.pools();
  let sinceRefresh = 0;
  let refreshing: Promise<void> | null = null;

  const randomString = (): string => {
    if (chance(0.5)) return pick(NASTY);
    const n = Math.floor(rand() * 24);
    let s = '';
    for (let i = 0; i < n; i++) {
      const cp = chance(0.8) ? 0x20 + Math.floor(rand() * 95) : Math.floor(rand() * 0x2ffff);
      s += String.fromCodePoint(cp >= 0xd800 && cp <= 0xdfff ? cp + 0x800 : cp); // no lone surrogates
    }
    return s;
  };
  const randomJson = (depth = 0): unknown => {
    const r = rand();
    if (depth > 4 || r < 0.35) return chance(0.5) ? pick(NASTY_JSON_VALUES) : randomString();
    if (r < 0.6) return Array.from({ length: Math.floor(rand() * 4) }, () => randomJson(depth + 1));
    const o: Record<string, unknown> = {};
    for (let i = Math.floor(rand() * 5); i > 0; i--) o[chance(0.5) ? randomString() : pick(['Image', 'Cmd', 'Env', 'Name', 'HostConfig', 'Labels', 'Tty', 'Config'])] = randomJson(depth + 1);
    return o;
  };
  /** Replaces, retypes, deletes or adds fields somewhere in a template. */
  const mutate = (v: unknown, depth = 0): unknown => {
    if (chance(0.15)) return randomJson(depth);
    if (Array.isArray(v)) return chance(0.3) ? [...v, randomJson(depth + 1)] : v.map((x) => mutate(x, depth + 1));
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (chance(0.1)) continue;
        o[k] = chance(0.3) ? mutate(x, depth + 1) : x;
      }
      if (chance(0.2)) o[randomString()] = randomJson(depth + 1);
      return o;
    }
    return chance(0.3) ? pick(NASTY_JSON_VALUES) : v;
  };

  const paramValue = (name: string, routePath: string, method: string): string => {
    if (chance(0.25)) return randomString();
    switch (name) {
      case 'id':
        if (routePath.startsWith('/exec/')) return pick(pools.execs.length ? pools.execs : ['nope']);
        if (routePath.startsWith('/networks/')) return pick(pools.networks.length ? pools.networks : ['bridge']);
        if (/\/(start|restart)$/.test(routePath) && method === 'POST') {
          if (figures.starts >= opts.maxStarts || !pools.startable.length) return 'no-such-container-' + Math.floor(rand() * 1e6);
          figures.starts++;
          return pick(pools.startable);
        }
        return pick(pools.containers.length ? pools.containers : ['nope']);
      case 'name':
        if (routePath.startsWith('/volumes/')) return pick(pools.volumes.length ? pools.volumes : ['nope']);
        return pick(pools.images.length ? pools.images : ['busybox']);
      default:
        return randomString();
    }
  };

  /** Keeps every registry name on loopback; keeps host paths, ports and boots out of bodies. */
  const makeSafe = (b: Built, path: string, query: URLSearchParams, body: unknown): unknown => {
    const onLoopback = (name: string) => (chance(0.5) ? `${opts.registryHost}/${name.replace(/^[^/]*[.:][^/]*\//, '')}` : `127.0.0.1:1/${name}`);
    if (/\/images\/create\/?$/.test(path)) {
      if (query.has('fromImage') || !query.has('fromSrc')) query.set('fromImage', onLoopback(query.get('fromImage') ?? 'x'));
      if (query.has('fromSrc') && query.get('fromSrc') !== '-') query.set('fromSrc', chance(0.5) ? '-' : 'http://127.0.0.1:1/layer.tar');
    }
    if (/\/images\/search\/?$/.test(path)) query.set('term', '127.0.0.1:1/x');
    if (/^\/(images\/.+\/push|distribution\/.+\/json)\/?$/.test(path) || /\/(plugins\/pull|plugins\/.+\/upgrade|build)/.test(path)) {
      return { rewritePath: true, body };
    }
    if (path.startsWith('/auth') && body && typeof body === 'object' && !Array.isArray(body)) {
      (body as Record<string, unknown>).serveraddress = chance(0.5) ? opts.registryHost : '127.0.0.1:1';
    } else if (path.startsWith('/auth')) {
      return { username: 'u', password: 'p', serveraddress: '127.0.0.1:1', junk: body };
    }
    if (/\/(stop|restart)\/?$/.test(path)) {
      for (const k of ['t', 'timeout']) if (query.has(k)) query.set(k, String(Math.min(2, Math.max(-1, Number(query.get(k)) || 0))));
    }
    if (/\/swarm\/(init|join)/.test(path)) return {}; // answered 503 anyway; never send addresses
    scrub(body);
    void b;
    return body;
  };

  const build = (): Built => {
    const route = pick(opts.routes);
    let method = chance(0.88) ? route.method : pick(METHODS);
    if (chance(0.03)) method = 'GET';
    let p = chance(0.04) ? '/' + randomString().split('/').map(encodeURIComponent).join('/') : route.path.replace(/\{(\w+)(:\.\*)?\}/g, (_, name: string) => encodeURIComponent(paramValue(name, route.path, route.method)));
    const query = new URLSearchParams();
    for (let i = Math.floor(rand() * 4); i > 0; i--) {
      const name = chance(0.9) ? pick(QUERY_NAMES) : randomString();
      let value = randomString();
      if (name === 'filters' && chance(0.6)) value = JSON.stringify(chance(0.5) ? { label: [randomString()], dangling: [pick(['true', 'false', 'x'])] } : randomJson());
      query.set(name, value);
    }
    // Streams that never end on their own are judged by their status line; keep some finite.
    if (/\/(stats|logs|events)$/.test(route.path) && chance(0.5)) query.set('stream', '0');
    let bodyValue: unknown;
    const tmpl = templates(pick(pools.images.length ? pools.images : ['busybox']))[route.path];
    if (['POST', 'PUT'].includes(method) || chance(0.05)) {
      const r = rand();
      bodyValue = tmpl === undefined ? (r < 0.5 ? undefined : randomJson()) : r < 0.3 ? tmpl : r < 0.85 ? mutate(tmpl) : randomJson();
    }
    // Routes that take tars get tars: hostile (../, absolute, links out, devices) and broken ones.
    const tarRoute = /\/archive$|\/images\/load$|\/images\/create$/.test(route.path) && ['PUT', 'POST'].includes(method);
    if (tarRoute && route.path === '/images/create' && chance(0.5)) query.set('fromSrc', '-');
    if (tarRoute && chance(0.7)) {
      let t = pick(tars);
      if (chance(0.3)) t = t.subarray(0, Math.floor(rand() * t.length));
      if (chance(0.2)) {
        t = Buffer.from(t);
        for (let i = 0; i < 8; i++) t[Math.floor(rand() * t.length)] = Math.floor(rand() * 256);
      }
      makeSafe({} as Built, p, query, undefined);
      const qs = query.toString();
      return { method, path: `${pick(VERSIONS)}${p}${qs ? '?' + qs : ''}`, headers: { 'Content-Type': 'application/x-tar' }, body: t, route: `${route.method} ${route.path}` };
    }
    const safe = makeSafe({} as Built, p, query, bodyValue) as unknown;
    if (safe && typeof safe === 'object' && (safe as { rewritePath?: boolean }).rewritePath) {
      // Registry-bound operations by name: the name always starts with a loopback registry.
      p = p.replace(/^\/(images|distribution)\/(.+?)(\/push|\/json)$/, (_m, g: string, name: string, tail: string) => `/${g}/${encodeURIComponent(`127.0.0.1:${chance(0.5) ? opts.registryHost.split(':')[1] : '1'}/${decodeSafe(name).replace(/^[^/]*[.:][^/]*\//, '')}`)}${tail}`);
      if (/\/(plugins|build)/.test(p)) p = '/plugins/none'; // never serve a pull from a plugin hub
      bodyValue = (safe as { body?: unknown }).body;
    } else bodyValue = safe;
    const version = pick(VERSIONS);
    const qs = query.toString();
    const fullPath = `${version}${p}${qs ? '?' + qs : ''}`;
    const headers: Record<string, string> = {};
    let body: Buffer | undefined;
    if (bodyValue !== undefined) {
      let text = JSON.stringify(bodyValue) ?? 'null';
      if (chance(0.1)) text = text.slice(0, Math.floor(rand() * text.length)); // truncated JSON
      if (chance(0.03)) text = '['.repeat(20000) + ']'.repeat(20000); // deep nesting
      if (chance(0.02)) text = '\uFEFF' + text;
      body = Buffer.from(text);
      headers['Content-Type'] = chance(0.9) ? 'application/json' : pick(['text/plain', 'application/x-tar', '', 'application/json; charset=utf-16']);
    }
    if (chance(0.05)) headers['X-Registry-Auth'] = pick(['', '!!!', Buffer.from(JSON.stringify(randomJson())).toString('base64'), 'e30=']);
    if (chance(0.03)) headers['Upgrade'] = 'tcp';
    if (chance(0.03)) headers['Connection'] = 'Upgrade';
    return { method, path: fullPath, headers, body, route: `${route.method} ${route.path}` };
  };

  /** Requests an HTTP client library will not send: for the parser and the body readers. */
  const buildRaw = (): Built => {
    const b = build();
    const head = (extra: string) => `${b.method} ${b.path} HTTP/1.1\r\nHost: paddock\r\n${extra}`;
    const json = Buffer.from('{"Image":"busybox","Cmd":["true"]}');
    const cases: (() => Built)[] = [
      () => ({ ...b, raw: Buffer.from(head('Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n')) }),
      () => ({ ...b, raw: Buffer.from(head('Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n')), mayClose: true }),
      () => ({ ...b, raw: Buffer.from(head('Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n')) }),
      () => ({ ...b, raw: Buffer.concat([Buffer.from(head(`Content-Type: application/json\r\nContent-Length: ${json.length + 100}\r\n\r\n`)), json]), mayClose: true }),
      () => ({ ...b, raw: Buffer.from(head('Content-Length: -5\r\n\r\n')) }),
      () => ({ ...b, raw: Buffer.from(head('Content-Length: 99999999999999999999\r\n\r\n')) }),
      () => ({ ...b, raw: Buffer.from(head(`X-Big: ${'a'.repeat(80 * 1024)}\r\n\r\n`)) }),
      () => ({ ...b, raw: Buffer.from(`${b.method} ${b.path} HTTP/1.1\r\nHost: paddock\r\nBad Header\r\n\r\n`) }),
      () => ({ ...b, raw: Buffer.from(`GARBAGE\x00\x01\x02 / HTTP/9.9\r\n\r\n`) }),
      () => ({ ...b, raw: Buffer.from(`${b.method} ${b.path}\r\n\r\n`) }),
      () => ({ ...b, raw: Buffer.from(Array.from({ length: 200 }, () => Math.floor(rand() * 256))) }),
      () => ({ ...b, raw: Buffer.from(head('Content-Length: 0\r\n\r\n') + head('Content-Length: 0\r\n\r\n')) }),
      // Body over the JSON limit on a JSON route: must be refused, not buffered for ever.
      () => ({ ...b, method: 'POST', raw: Buffer.from(`POST /containers/create HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n{"Image":`) , mayClose: true }),
    ];
    return pick(cases)();
  };

  const record = (b: Built, status: number, body: string, closed: boolean) => {
    figures.requests++;
    if (b.raw) figures.rawRequests++;
    if (closed) {
      figures.closedWithoutAnswer++;
      figures.statuses.closed = (figures.statuses.closed ?? 0) + 1;
      return;
    }
    figures.statuses[status] = (figures.statuses[status] ?? 0) + 1;
    hit.add(b.route);
    const where = `${b.method} ${b.path.slice(0, 160)}`;
    if (status >= 400 && b.method !== 'HEAD') {
      let ok = false;
      try {
        const j = JSON.parse(body);
        ok = j !== null && typeof j === 'object' && typeof j.message === 'string';
      } catch {
        ok = false;
      }
      // A body cut off at our read limit is not malformed: count only what came whole.
      if (!ok && body.length < 65536) figures.badErrorBodies.push(`${where} -> ${status} ${JSON.stringify(body.slice(0, 200))}`);
    }
    if (status >= 500) {
      let message = b.method === 'HEAD' ? '(no body: HEAD)' : body;
      try {
        message = JSON.parse(body).message;
      } catch {
        // keep raw
      }
      const line = `${b.route} ${status} ${message}`;
      if (!opts.allowed5xx.some((re) => re.test(line))) figures.unexpected5xx.push(`${where} -> ${status} ${String(message).slice(0, 300)}`);
      else {
        const swarm = /not a swarm manager/.test(String(message)) || /\/(swarm|services|nodes|tasks|secrets|configs)/.test(b.route);
        const key = swarm ? `swarm endpoints ${status}` : `${b.route} ${status} ${String(message).replace(/[0-9a-f]{12,}|127\.0\.0\.1:\d+\/\S*/g, '…').slice(0, 90)}`;
        figures.allowed5xx[key] = (figures.allowed5xx[key] ?? 0) + 1;
      }
    }
  };

  const sendHttp = (b: Built): Promise<void> =>
    new Promise((resolve) => {
      let settled = false;
      const finish = (status: number, body: string, closed: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        record(b, status, body, closed);
        req.destroy();
        resolve();
      };
      let req: http.ClientRequest;
      try {
        req = http.request({ socketPath: opts.socketPath, method: b.method, path: b.path, headers: { ...b.headers, ...(b.body ? { 'Content-Length': String(b.body.length) } : {}) }, agent: false });
      } catch {
        // Node refused to send it (e.g. a character it will not put in a path): raw cases cover those.
        return resolve();
      }
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        figures.requests++;
        figures.hangs.push(`${b.method} ${b.path.slice(0, 160)} (no answer in ${opts.answerTimeoutMs} ms)`);
        req.destroy();
        resolve();
      }, opts.answerTimeoutMs);
      req.on('response', (res) => {
        // A status line arrived: the request is answered. Read a bounded part of the body (an
        // error body whole), then drop the connection (streams such as events never end).
        const chunks: Buffer[] = [];
        let size = 0;
        const status = res.statusCode ?? 0;
        const done = () => finish(status, Buffer.concat(chunks).toString('utf8'), false);
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          size += c.length;
          if (size >= 65536) done();
        });
        res.on('end', done);
        res.on('error', done);
        res.on('close', done);
        // Only the status line is owed within the deadline; a streamed body may go on.
        if (status < 400) setTimeout(done, 2000).unref();
      });
      req.on('upgrade', (res) => finish(res.statusCode ?? 101, '', false));
      req.on('error', () => finish(0, '', true));
      req.end(b.body);
    });

  const sendRaw = (b: Built): Promise<void> =>
    new Promise((resolve) => {
      const sock = net.createConnection(opts.socketPath);
      let data = '';
      let settled = false;
      const finish = (closed: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(data);
        if (m) record(b, Number(m[1]), b.method === 'HEAD' ? '' : firstBody(data), false);
        else if (closed) record(b, 0, '', true);
        sock.destroy();
        resolve();
      };
      const timer = setTimeout(() => {
        if (settled) return;
        if (b.mayClose) {
          // We stopped sending mid-body on purpose: the daemon may rightly wait for the rest.
          // End our side; it must then answer or close promptly.
          sock.end();
          setTimeout(() => {
            if (settled) return;
            settled = true;
            figures.requests++;
            figures.hangs.push(`raw ${b.method} ${b.path.slice(0, 100)}: neither answered nor closed after half-close`);
            sock.destroy();
            resolve();
          }, opts.answerTimeoutMs).unref();
          return;
        }
        settled = true;
        figures.requests++;
        figures.hangs.push(`raw ${JSON.stringify(b.raw!.subarray(0, 80).toString('latin1'))} (no answer in ${opts.answerTimeoutMs} ms)`);
        sock.destroy();
        resolve();
      }, b.mayClose ? 3000 : opts.answerTimeoutMs);
      sock.on('data', (c) => {
        data += c.toString('latin1');
        const end = data.indexOf('\r\n\r\n');
        if (end >= 0) {
          const len = /content-length: (\d+)/i.exec(data.slice(0, end));
          // A HEAD answer carries Content-Length but no body.
          const want = b.method === 'HEAD' || !len ? 0 : Number(len[1]);
          if (data.length >= end + 4 + want || data.length > 65536) setTimeout(() => finish(false), len || b.method === 'HEAD' ? 0 : 200);
        }
      });
      sock.on('error', () => finish(true));
      sock.on('close', () => finish(true));
      sock.write(b.raw!);
    });

  const deadline = Date.now() + opts.seconds * 1000;
  const worker = async () => {
    while (Date.now() < deadline) {
      if (++sinceRefresh >= 150 && !refreshing) {
        sinceRefresh = 0;
        refreshing = opts.pools().then((p) => void (pools = p)).finally(() => (refreshing = null));
      }
      const b = chance(0.15) ? buildRaw() : build();
      await (b.raw ? sendRaw(b) : sendHttp(b));
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  await refreshing;
  figures.routesHit = hit.size;
  return figures;
}

/** Tars with members that try to leave their destination, special files, and plain ones. */
async function hostileTars(rand: () => number): Promise<Buffer[]> {
  const members: (Partial<tar.Header> & { name: string; content?: string })[][] = [
    [{ name: '../../../../tmp/fuzz-escape', content: 'x' }],
    [{ name: '/etc/fuzz-abs', content: 'x' }],
    [{ name: 'up', type: 'symlink', linkname: '/' }, { name: 'up/tmp/fuzz-through-link', content: 'x' }],
    [{ name: 'rel', type: 'symlink', linkname: '../../../../../../tmp' }, { name: 'rel/fuzz-rel', content: 'x' }],
    [{ name: 'hl', type: 'link', linkname: '/etc/passwd' }],
    [{ name: 'hl2', type: 'link', linkname: '../../../../etc/shadow' }],
    [{ name: 'dev', type: 'character-device', devmajor: 1, devminor: 1 }, { name: 'blk', type: 'block-device', devmajor: 8, devminor: 0 }, { name: 'fifo', type: 'fifo' }],
    [{ name: 'suid', content: '#!/bin/sh\n', mode: 0o4755 }, { name: 'd', type: 'directory', mode: 0o7777 }],
    [{ name: 'manifest.json', content: '[{"Config":"../../../etc/passwd","RepoTags":["fuzz:x"],"Layers":["/etc/shadow"]}]' }],
    [{ name: 'big', content: 'x'.repeat(20000) }, { name: 'a/b/c/d/e', content: 'deep' }],
  ];
  const out: Buffer[] = [];
  for (const list of members) {
    const pack = tar.pack();
    for (const { content, ...h } of list) pack.entry({ mode: 0o644, ...h }, content ?? '');
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
    out.push(Buffer.concat(chunks));
  }
  out.push(Buffer.from(Array.from({ length: 2048 }, () => Math.floor(rand() * 256))));
  return out;
}

/** The body of the first response in `data` (raw cases may get several pipelined answers). */
function firstBody(data: string): string {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return '';
  const head = data.slice(0, end);
  const rest = data.slice(end + 4);
  const len = /\r\ncontent-length: *(\d+)/i.exec(head);
  if (len) return rest.slice(0, Number(len[1]));
  if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
    let out = '';
    let at = 0;
    for (;;) {
      const nl = rest.indexOf('\r\n', at);
      if (nl < 0) break;
      const size = parseInt(rest.slice(at, nl), 16);
      if (!size) break;
      out += rest.slice(nl + 2, nl + 2 + size);
      at = nl + 2 + size + 2;
    }
    return out;
  }
  return rest;
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Removes from a request body what would reach the host beyond the daemon's own state: bind
 * mounts of host paths, published ports, host networking, devices, restart loops, huge VMs.
 * Wrong-typed values stay (they must be refused), only working ones go.
 */
function scrub(v: unknown): void {
  if (!v || typeof v !== 'object') return;
  if (Array.isArray(v)) return v.forEach(scrub);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    const x = o[k];
    if (['Binds', 'Mounts', 'Devices', 'DeviceRequests'].includes(k) && Array.isArray(x)) delete o[k];
    else if (['PortBindings', 'PublishAllPorts', 'RestartPolicy', 'Privileged', 'CapAdd', 'Dns', 'ExtraHosts'].includes(k) && x && typeof x !== 'string') delete o[k];
    else if (k === 'PublishAllPorts' || (k === 'NetworkMode' && typeof x === 'string' && /host|container/.test(x))) delete o[k];
    else if (k === 'DriverOpts' && x && typeof x === 'object') delete o[k];
    else if (/^(Memory|MemorySwap|MemoryReservation|NanoCpus|CpuCount|ShmSize)$/.test(k) && typeof x === 'number' && x > 512 * 1024 * 1024) o[k] = 128 * 1024 * 1024;
    else if (k === 'NanoCpus' && typeof x === 'number' && x > 2e9) o[k] = 1e9;
    else scrub(x);
  }
}
