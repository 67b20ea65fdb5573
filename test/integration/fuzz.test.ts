/**
 * Fuzz (issue 8): random and mutated requests to every operation of api-spec/operations.json
 * (which `npm run api-spec` keeps equal to the router) for a bounded time against the paddockd
 * binary, with real objects behind the ids (a pulled image, running and created containers, a
 * volume). Passes only with zero daemon crashes (exit or a logged uncaught exception), zero
 * hangs, JSON {"message"} bodies on every error and no 5xx outside dockerd's own.
 * PADDOCK_FUZZ_SECONDS (default 40) and PADDOCK_FUZZ_SEED (default: random, printed) replay a run.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import tar from 'tar-stream';
import path from 'node:path';
import { repoRoot } from '../helpers/guest';
import { startTestRegistry, type TestRegistry } from '../helpers/registry';
import { seedTestImages } from '../helpers/seed-images';
import { runFuzz, type Pools, type RouteSpec } from '../fuzz/fuzzer';
import { api, makeBase, ping, removeBase, startPaddockd, type DaemonProcess } from '../fuzz/harness';

const SECONDS = Number(process.env.PADDOCK_FUZZ_SECONDS ?? 40);
jest.setTimeout(SECONDS * 1000 + 240_000);

let base: string;
let registry: TestRegistry;
let busybox: string;
let daemon: DaemonProcess;

/** 5xx answers dockerd gives as well ("route status message"). */
const ALLOWED_5XX = [
  // Swarm endpoints: a node outside a swarm (dockerd and Podman answer the same).
  /^\S+ \/(swarm|services|nodes|tasks|secrets|configs)\S* 503 (This node is not a swarm manager|\(no body: HEAD\))/,
  // A VM that goes away while it is being asked (stop/kill racing top/stats/exec): the agent's
  // channel closes under the request; dockerd answers such races with a 5xx from runc too.
  /^\S+ \/(containers\/\{id\}\/(top|stats|exec|archive|export|changes|attach|pause|unpause|resize|commit)|exec\/\{id\}\/\w+|commit) 5\d\d (agent connection closed|qmp connection closed|.*not running)/,
  // Registry unreachable (the closed loopback port 1): dockerd answers 500 with the dial error.
  /^(POST \/images\/create|POST \/images\/\{name\}\/push|GET \/distribution\/\{name\}\/json|POST \/auth) 5\d\d .*(127\.0\.0\.1:1\b|ECONNREFUSED|connection refused)/,
  // The same, asked with HEAD: no body to show the message.
  /^GET \/distribution\/\{name\}\/json 5\d\d \(no body: HEAD\)$/,
  // Not implemented operations answer 501 where dockerd has no such feature either (e.g. plugins).
  /^\S+ \S+ 501 /,
];

beforeAll(async () => {
  base = makeBase('paddock-fuzz-');
  registry = await startTestRegistry();
  busybox = (await seedTestImages(registry, ['busybox'])).busybox.ref;
  daemon = await startPaddockd(base);
  const pulled = await api(daemon.socketPath, 'POST', `/images/create?fromImage=${encodeURIComponent(busybox)}`);
  expect(pulled.status).toBe(200);
  await ensureFixtures();
});

afterAll(async () => {
  if (daemon) {
    // A clean stop ends the VMs; SIGKILL if it does not come.
    const stopped = new Promise((r) => daemon.child.once('exit', r));
    daemon.child.kill('SIGTERM');
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 20_000).unref())]);
    await daemon.kill('SIGKILL');
  }
  await registry?.stop();
  if (base) await removeBase(base);
});

const FIXTURES = { running: 'fz-running', created: 'fz-created' };

/** Keeps a running and a created container and the image there (the fuzz may remove them). */
async function ensureFixtures(): Promise<void> {
  const sock = daemon.socketPath;
  if ((await api(sock, 'GET', `/images/${encodeURIComponent(busybox)}/json`)).status === 404) {
    await api(sock, 'POST', `/images/create?fromImage=${encodeURIComponent(busybox)}`);
  }
  for (const [name, cmd] of [[FIXTURES.running, ['sleep', '3600']], [FIXTURES.created, ['sh', '-c', 'sleep 3600']]] as const) {
    const got = await api(sock, 'GET', `/containers/${name}/json`);
    if (got.status === 404) await api(sock, 'POST', `/containers/create?name=${name}`, { Image: busybox, Cmd: cmd, HostConfig: { Memory: 128 * 1024 * 1024 } });
  }
  const running = await api(sock, 'GET', `/containers/${FIXTURES.running}/json`);
  if (running.status === 200 && !JSON.parse(running.body).State.Running) await api(sock, 'POST', `/containers/${FIXTURES.running}/start`);
}

async function pools(): Promise<Pools> {
  const sock = daemon.socketPath;
  await ensureFixtures().catch(() => undefined);
  const json = async (p: string) => {
    const r = await api(sock, 'GET', p, undefined, 30_000).catch(() => undefined);
    return r && r.status === 200 ? JSON.parse(r.body) : [];
  };
  const containers = (await json('/containers/json?all=1')) as { Id: string; Names: string[] }[];
  const images = (await json('/images/json')) as { Id: string; RepoTags: string[] | null }[];
  const volumes = ((await json('/volumes')) as { Volumes?: { Name: string }[] }).Volumes ?? [];
  const networks = (await json('/networks')) as { Id: string; Name: string }[];
  const running = await json(`/containers/${FIXTURES.running}/json`);
  return {
    containers: containers.flatMap((c) => [c.Id, c.Id.slice(0, 12), ...c.Names.map((n) => n.slice(1))]),
    startable: [FIXTURES.running, FIXTURES.created],
    images: images.flatMap((i) => [i.Id, ...(i.RepoTags ?? [])]),
    volumes: volumes.map((v) => v.Name),
    networks: Array.isArray(networks) ? networks.flatMap((n) => [n.Id, n.Name]) : [],
    execs: (running as { ExecIDs?: string[] | null }).ExecIDs ?? [],
  };
}

/** Sends raw bytes (optionally half-closing) and returns the first status line and body, or 'closed'. */
function raw(bytes: string | Buffer, halfClose = false): Promise<{ status: number; body: string } | 'closed'> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(daemon.socketPath);
    let data = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer to ${JSON.stringify(bytes.slice(0, 60).toString())}`));
    }, 10_000);
    const settle = () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(data);
      if (!m) return resolve('closed');
      const len = /content-length: *(\d+)/i.exec(m[2]);
      resolve({ status: Number(m[1]), body: len ? m[3].slice(0, Number(len[1])) : m[3] });
    };
    sock.on('data', (c) => {
      data += c.toString();
      const len = /content-length: *(\d+)/i.exec(data);
      const end = data.indexOf('\r\n\r\n');
      if (len && end >= 0 && data.length >= end + 4 + Number(len[1])) {
        settle();
        sock.destroy();
      }
    });
    sock.on('close', settle);
    sock.on('error', () => undefined);
    sock.write(bytes);
    if (halfClose) sock.end();
  });
}

/** Requests that once broke the daemon (found by this fuzzer) or that input limits must stop. */
test('known bad requests: each answered with a JSON error, none takes the daemon down', async () => {
  const sock = daemon.socketPath;
  const expectError = (r: { status: number; body: string } | 'closed', status: number, message: RegExp) => {
    expect(r).not.toBe('closed');
    const a = r as { status: number; body: string };
    expect(a.status).toBe(status);
    expect(JSON.parse(a.body).message).toMatch(message);
  };
  // A path starting with // once parsed as a URL with a host: an unhandled rejection, no answer.
  expectError(await raw('GET //heA.hqE%5E HTTP/1.1\r\nHost: x\r\n\r\n'), 404, /page not found/);
  expectError(await raw('GET /// HTTP/1.1\r\nHost: x\r\n\r\n'), 404, /page not found/);
  // filters=null once threw a TypeError (500).
  expect((await api(sock, 'GET', '/images/json?filters=null')).status).toBe(200);
  expectError(await raw('GET /images/json?filters=%5B1%5D HTTP/1.1\r\nHost: x\r\n\r\n'), 400, /invalid filter/);
  // Bodies of the wrong JSON type, broken JSON, nesting deep enough to exhaust a recursive parser.
  for (const body of ['[1]', '"x"', '42', 'true']) {
    const r = await api(sock, 'POST', '/containers/create', body);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).message).toMatch(/^json: cannot unmarshal \w+ into Go value/);
  }
  expect(JSON.parse((await api(sock, 'POST', '/volumes/create', '{"Name":')).body).message).toMatch(/^invalid JSON/);
  // Wrong types inside bodies once reached the engine as TypeErrors (500): now dockerd's 400s.
  const typed: [string, string, unknown, string][] = [
    ['POST', '/containers/create', { Image: busybox, HostConfig: { Tmpfs: { '/t': 1 } } }, 'json: cannot unmarshal number 1 into Go struct field ContainerConfigWrapper.HostConfig.Tmpfs of type string'],
    ['POST', '/containers/create', { Image: busybox, Cmd: [1] }, 'json: cannot unmarshal number 1 into Go struct field ContainerConfigWrapper.Cmd of type string'],
    ['POST', '/containers/create', { Image: busybox, HostConfig: { Memory: 1.5 } }, 'json: cannot unmarshal number 1.5 into Go struct field ContainerConfigWrapper.HostConfig.Memory of type int64'],
    ['POST', '/volumes/create', { Name: 1.5 }, 'json: cannot unmarshal number 1.5 into Go struct field CreateOptions.Name of type string'],
    ['POST', `/containers/${FIXTURES.created}/update`, { RestartPolicy: 'always' }, 'json: cannot unmarshal string into Go struct field UpdateConfig.RestartPolicy of type RestartPolicy'],
    ['POST', `/containers/${FIXTURES.running}/exec`, { Cmd: 'echo' }, 'json: cannot unmarshal string into Go struct field ExecOptions.Cmd of type []string'],
  ];
  // Keys that name Object.prototype's members once made the type check itself throw (500).
  const proto = await api(sock, 'POST', '/containers/create', `{"constructor":{"prototype":{"x":1}},"__proto__":{"polluted":true},"Image":${JSON.stringify(busybox)},"Cmd":["true"]}`);
  expect(proto.status).toBe(201);
  expect((await api(sock, 'DELETE', `/containers/${JSON.parse(proto.body).Id}`)).status).toBe(204);
  const longVolume = await api(sock, 'POST', '/volumes/create', { Name: 'v'.repeat(300) });
  expect(longVolume.status).toBe(400);
  for (const [method, p, body, message] of typed) {
    const r = await api(sock, method, p, body);
    expect({ status: r.status, message: JSON.parse(r.body).message }).toEqual({ status: 400, message });
  }
  expect((await api(sock, 'POST', '/volumes/create', '['.repeat(100_000) + ']'.repeat(100_000))).status).toBe(400);
  // Over the 10 MiB JSON limit: refused by Content-Length before reading, and while reading.
  const big = Buffer.alloc(11 * 1024 * 1024, 0x20);
  const tooBig = await api(sock, 'POST', '/containers/create', big);
  expect(tooBig.status).toBe(400);
  expect(JSON.parse(tooBig.body).message).toContain('larger than the limit of 10485760 bytes');
  expectError(await raw('POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{'), 400, /limit/);
  const chunked = await raw(Buffer.concat([Buffer.from('POST /networks/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'), Buffer.from(`${(11 * 1024 * 1024).toString(16)}\r\n`), Buffer.alloc(11 * 1024 * 1024, 0x20), Buffer.from('\r\n0\r\n\r\n')]));
  expectError(chunked, 400, /limit/);
  // A body cut short by the client: answered (400) or closed, never left waiting or a 500.
  const cut = await raw('POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"Image":', true);
  if (cut !== 'closed') expect(cut.status).toBe(400);
  // Parser-level errors get the JSON error shape too.
  expectError(await raw('POST /containers/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n'), 400, /bad request/);
  expectError(await raw(`GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(80 * 1024)}\r\n\r\n`), 431, /HEADER_OVERFLOW/);
  // An update sent while the create of the same name is still writing its state once failed
  // (ENOENT, 500), and before that could leave a half container behind.
  for (let i = 0; i < 5; i++) {
    const name = `race-${i}`;
    const creating = api(sock, 'POST', `/containers/create?name=${name}`, { Image: busybox, Cmd: ['true'] });
    const updates = await Promise.all(Array.from({ length: 10 }, () => api(sock, 'POST', `/containers/${name}/update`, { CpuShares: 512 })));
    expect((await creating).status).toBe(201);
    for (const u of updates) expect([200, 404]).toContain(u.status);
    expect((await api(sock, 'DELETE', `/containers/${name}`)).status).toBe(204);
  }
  // Tars cut off inside a member: the member's stream failed with nobody listening (an
  // uncaught exception) in archive PUT; load and import must take them as calmly.
  const pack = tar.pack();
  pack.entry({ name: 'big', mode: 0o644 }, 'x'.repeat(5000));
  pack.finalize();
  const whole: Buffer[] = [];
  for await (const c of pack as unknown as AsyncIterable<Buffer>) whole.push(Buffer.from(c));
  const cutTar = Buffer.concat(whole).subarray(0, 1000);
  const put = await api(sock, 'PUT', `/containers/${FIXTURES.created}/archive?path=/`, cutTar);
  expect({ status: put.status, message: JSON.parse(put.body).message }).toEqual({ status: 400, message: expect.stringContaining('Error processing tar file') });
  // An image archive whose manifest names files outside it: refused as a bad archive (was a 500).
  const evil = tar.pack();
  evil.entry({ name: 'manifest.json' }, '[{"Config":"../../../etc/passwd","RepoTags":["evil:1"],"Layers":[]}]');
  evil.finalize();
  const evilChunks: Buffer[] = [];
  for await (const c of evil as unknown as AsyncIterable<Buffer>) evilChunks.push(Buffer.from(c));
  const loaded = await api(sock, 'POST', '/images/load', Buffer.concat(evilChunks));
  expect({ status: loaded.status, message: JSON.parse(loaded.body).message }).toEqual({ status: 400, message: expect.stringContaining('outside') });
  for (const p of ['/images/load', '/images/create?fromSrc=-&repo=cut&tag=1']) {
    const r = await api(sock, 'POST', p, cutTar);
    expect(r.status).toBeLessThan(500);
  }
  await new Promise((r) => setTimeout(r, 500)); // let any late stream error surface in the log
  expect(await ping(sock)).toBe(200);
  expect(daemon.uncaught).toEqual([]);
});

test(`fuzz every route for ${SECONDS} s: no crash, no hang, JSON errors, only dockerd's 5xx`, async () => {
  const ops = JSON.parse(readFileSync(path.join(repoRoot, 'api-spec/operations.json'), 'utf8')).operations as RouteSpec[];
  const routes = ops.map(({ method, path: p }) => ({ method, path: p }));
  const seed = Number(process.env.PADDOCK_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const rssStart = daemon.rssKiB();
  const passwdLinks = statSync('/etc/passwd').nlink;
  const figures = await runFuzz({
    socketPath: daemon.socketPath,
    seconds: SECONDS,
    seed,
    concurrency: 8,
    routes,
    registryHost: registry.host,
    pools,
    maxStarts: 4,
    answerTimeoutMs: 30_000,
    allowed5xx: ALLOWED_5XX,
  });
  const alive = !daemon.exited && (await ping(daemon.socketPath).catch(() => 0)) === 200;
  const report = {
    ...figures,
    operations: routes.length,
    crashes: (daemon.exited ? 1 : 0) + daemon.uncaught.length,
    alive,
    rssKiB: { start: rssStart, end: daemon.rssKiB() },
    uncaught: daemon.uncaught.slice(0, 5),
    hangs: figures.hangs.slice(0, 10),
    badErrorBodies: figures.badErrorBodies.slice(0, 10),
    unexpected5xx: figures.unexpected5xx.slice(0, 20),
    counts: { hangs: figures.hangs.length, badErrorBodies: figures.badErrorBodies.length, unexpected5xx: figures.unexpected5xx.length },
  };
  console.log(`fuzz figures (seed ${seed}):\n${JSON.stringify(report, null, 1)}`);
  expect(alive).toBe(true);
  expect(daemon.uncaught).toEqual([]);
  // The hostile tars (fuzzer.ts hostileTars) left nothing on the host.
  for (const f of ['/tmp/fuzz-escape', '/etc/fuzz-abs', '/tmp/fuzz-through-link', '/tmp/fuzz-rel', '/fuzz-escape']) expect(existsSync(f)).toBe(false);
  expect(statSync('/etc/passwd').nlink).toBe(passwdLinks);
  expect(figures.hangs).toEqual([]);
  expect(figures.badErrorBodies).toEqual([]);
  expect(figures.unexpected5xx).toEqual([]);
  // The run must have reached the API broadly, or the figures mean little.
  expect(figures.requests).toBeGreaterThan(SECONDS * 5);
  expect(figures.routesHit).toBeGreaterThan(routes.length * 0.6);
});
