/** Container and exec endpoints: HTTP in and out; the container service does the work. */
import type { Socket } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { sampleGuest, statsJson, type GuestSample } from '../../engine/containers/container-stats';
import { extractInto, listChanges, statPath, tarPath } from '../../engine/containers/container-fs';
import type { ContainerService, WaitCondition } from '../../engine/containers/container-service';
import { readLogEntries, type LogEntry } from '../../engine/containers/json-log';
import { invalid, notFound } from '../../errors';
import type { RequestContext } from '../context';
import type { Route } from '../router';
import { frame, MULTIPLEXED_STREAM, parseDetachKeys, pipeStdin, RAW_STREAM } from '../streams';
import { filterContainers, inspectView, listView } from './container-views';
import { parseTimestamp } from './events';
import { BODY, checkBody } from '../body-types';
import { MAX_JSON_BODY } from '../context';
import type { ExecCreateRequest } from '../../engine/containers/exec';

export function containerRoutes(svc: ContainerService): Route[] {
  const id = (ctx: RequestContext) => ctx.params.id;
  return [
    {
      method: 'GET',
      path: '/containers/json',
      handler: async (ctx) => {
        let list = filterContainers(svc, svc.list(), ctx.filters(), ctx.bool('all'));
        const limit = ctx.int('limit');
        if (limit !== undefined && limit > 0) list = list.slice(0, limit);
        const withSize = ctx.bool('size');
        ctx.json(200, await Promise.all(list.map(async (r) => ({ ...listView(r), ...(withSize ? await svc.sizes(r) : {}) }))));
      },
    },
    {
      method: 'POST',
      path: '/containers/create',
      handler: async (ctx) => {
        const body = await ctx.jsonBody<unknown>(undefined, BODY.containerCreate);
        ctx.json(201, await svc.create(body, ctx.query.get('name') ?? undefined));
      },
    },
    { method: 'POST', path: '/containers/prune', handler: async (ctx) => ctx.json(200, await svc.prune()) },
    { method: 'GET', path: '/containers/{id}/json', handler: (ctx) => ctx.json(200, inspectView(svc, svc.get(id(ctx)))) },
    {
      method: 'POST',
      path: '/containers/{id}/start',
      handler: async (ctx) => {
        await svc.start(id(ctx));
        ctx.noContent();
      },
    },
    {
      method: 'POST',
      path: '/containers/{id}/stop',
      handler: async (ctx) => {
        await svc.stop(id(ctx), { timeoutSeconds: ctx.int('t') ?? ctx.int('timeout'), signal: ctx.query.get('signal') ?? undefined });
        ctx.noContent();
      },
    },
    {
      method: 'POST',
      path: '/containers/{id}/restart',
      handler: async (ctx) => {
        await svc.restart(id(ctx), { timeoutSeconds: ctx.int('t') ?? ctx.int('timeout'), signal: ctx.query.get('signal') ?? undefined });
        ctx.noContent();
      },
    },
    {
      method: 'POST',
      path: '/containers/{id}/kill',
      handler: async (ctx) => {
        await svc.kill(id(ctx), ctx.query.get('signal') ?? undefined);
        ctx.noContent();
      },
    },
    {
      method: 'POST',
      path: '/containers/{id}/pause',
      handler: async (ctx) => {
        await svc.pause(id(ctx));
        ctx.noContent();
      },
    },
    {
      method: 'POST',
      path: '/containers/{id}/unpause',
      handler: async (ctx) => {
        await svc.unpause(id(ctx));
        ctx.noContent();
      },
    },
    {
      method: 'POST',
      path: '/containers/{id}/rename',
      handler: async (ctx) => {
        const name = ctx.query.get('name');
        if (!name) throw invalid('Neither old nor new names may be empty');
        await svc.rename(id(ctx), name);
        ctx.noContent();
      },
    },
    {
      method: 'POST',
      path: '/containers/{id}/update',
      handler: async (ctx) => ctx.json(200, await svc.update(id(ctx), await ctx.jsonBody({}, BODY.containerUpdate))),
    },
    {
      method: 'POST',
      path: '/containers/{id}/resize',
      handler: async (ctx) => {
        const [h, w] = [ctx.int('h'), ctx.int('w')];
        if (h === undefined || w === undefined) throw invalid('h and w are required');
        await svc.resize(id(ctx), h, w);
        ctx.text(200, '');
      },
    },
    { method: 'POST', path: '/containers/{id}/wait', handler: (ctx) => waitHandler(svc, ctx) },
    {
      method: 'DELETE',
      path: '/containers/{id}',
      handler: async (ctx) => {
        await svc.remove(id(ctx), { force: ctx.bool('force'), volumes: ctx.bool('v') });
        ctx.noContent();
      },
    },
    { method: 'POST', path: '/containers/{id}/attach', handler: (ctx) => attachHandler(svc, ctx), hijack: true },
    { method: 'GET', path: '/containers/{id}/attach/ws', handler: (ctx) => attachWebSocketHandler(svc, ctx), hijack: true },
    { method: 'GET', path: '/containers/{id}/logs', handler: (ctx) => logsHandler(svc, ctx) },
    { method: 'GET', path: '/containers/{id}/top', handler: (ctx) => topHandler(svc, ctx) },
    { method: 'GET', path: '/containers/{id}/stats', handler: (ctx) => statsHandler(svc, ctx) },
    {
      method: 'GET',
      path: '/containers/{id}/changes',
      handler: async (ctx) => {
        const record = svc.get(id(ctx));
        const changes = await listChanges(svc.upperDir(record), await svc.imageLayerDirs(record));
        ctx.json(200, changes.length ? changes : null);
      },
    },
    {
      method: 'GET',
      path: '/containers/{id}/export',
      handler: async (ctx) => {
        const record = svc.get(id(ctx));
        const { merged } = await svc.mountedRootfs(record);
        const res = ctx.stream(200, 'application/x-tar');
        await tarPath(merged, merged, '.', res);
        svc.publish(record, 'export');
      },
    },
    { method: 'HEAD', path: '/containers/{id}/archive', handler: (ctx) => archiveStat(svc, ctx, false) },
    { method: 'GET', path: '/containers/{id}/archive', handler: (ctx) => archiveStat(svc, ctx, true) },
    {
      method: 'PUT',
      path: '/containers/{id}/archive',
      handler: async (ctx) => {
        const record = svc.get(id(ctx));
        const target = ctx.query.get('path');
        if (!target) throw invalid('path is required');
        const { merged } = await svc.mountedRootfs(record);
        await extractInto(merged, target, ctx.req, {
          noOverwriteDirNonDir: ctx.bool('noOverwriteDirNonDir'),
          copyUidGid: ctx.bool('copyUIDGID'),
        }).catch((err) => {
          if ((err as { kind?: string }).kind === 'not-found') throw notFound(`Could not find the file ${target} in container ${id(ctx)}`);
          throw err;
        });
        ctx.text(200, '');
      },
    },
    {
      method: 'POST',
      path: '/containers/{id}/exec',
      handler: async (ctx) => ctx.json(201, svc.execs.create(id(ctx), await ctx.jsonBody<ExecCreateRequest>(undefined, BODY.execCreate))),
    },
    { method: 'POST', path: '/exec/{id}/start', handler: (ctx) => execStartHandler(svc, ctx), hijack: true },
    {
      method: 'POST',
      path: '/exec/{id}/resize',
      handler: (ctx) => {
        const [h, w] = [ctx.int('h'), ctx.int('w')];
        if (h === undefined || w === undefined) throw invalid('h and w are required');
        svc.execs.resize(id(ctx), h, w);
        ctx.text(200, '');
      },
    },
    { method: 'GET', path: '/exec/{id}/json', handler: (ctx) => ctx.json(200, svc.execs.inspect(id(ctx))) },
  ];
}

/** dockerd flushes the headers at once and the status line only when the condition holds. */
async function waitHandler(svc: ContainerService, ctx: RequestContext): Promise<void> {
  const condition = (ctx.query.get('condition') || 'not-running') as WaitCondition;
  const { result } = svc.wait(ctx.params.id, condition);
  const res = ctx.stream(200, 'application/json');
  let gone = false;
  res.on('close', () => (gone = true));
  const r = await result;
  if (!gone) res.end(JSON.stringify(r) + '\n');
}

function outputWriters(ctx: RequestContext, tty: boolean, out: NodeJS.WritableStream) {
  const write = (type: 1 | 2) => (chunk: Buffer) => {
    out.write(tty ? chunk : frame(type, chunk));
  };
  return { stdout: write(1), stderr: write(2) };
}

async function attachHandler(svc: ContainerService, ctx: RequestContext): Promise<void> {
  const record = svc.get(ctx.params.id);
  const tty = Boolean(record.Config.Tty);
  const detachKeys = parseDetachKeys(ctx.query.get('detachKeys'));
  const wantStdin = ctx.bool('stdin');
  const wantStdout = ctx.bool('stdout');
  const wantStderr = ctx.bool('stderr');
  await readBodyBeforeHijack(ctx); // dockerd ignores an attach request's body
  const hijacked = ctx.hijack(tty ? RAW_STREAM : MULTIPLEXED_STREAM);
  const writers = outputWriters(ctx, tty, hijacked.output);
  if (ctx.bool('logs')) await replayLogs(svc, record.Id, ctx, (e) => (e.stream === 'stdout' ? writers.stdout : writers.stderr)(Buffer.from(e.log)));
  if (!ctx.bool('stream', true)) {
    hijacked.close();
    return;
  }
  const sinks = {
    stdin: null as Readable | null,
    stdout: wantStdout ? writers.stdout : undefined,
    stderr: wantStderr ? writers.stderr : undefined,
  };
  const detach = () => {
    svc.detachAll(record.Id, sinks);
  };
  sinks.stdin = wantStdin ? pipeStdin(hijacked.input, detachKeys, detach) : null;
  hijacked.output.on('close', detach);
  hijacked.output.on('error', detach);
  await svc.attach(record.Id, sinks);
  hijacked.close();
}

/** `logs=1` on attach: the stored output of the streams the client asked for, before live output. */
async function replayLogs(svc: ContainerService, id: string, ctx: RequestContext, write: (e: LogEntry) => void): Promise<void> {
  for (const e of await readLogEntries(svc.logPath(id), { stdout: ctx.bool('stdout'), stderr: ctx.bool('stderr') })) write(e);
}

/**
 * Attach over a websocket (the `ws` library does the protocol): output goes out as binary
 * messages, raw as with a TTY (no multiplexing), and messages from the client are stdin.
 */
async function attachWebSocketHandler(svc: ContainerService, ctx: RequestContext): Promise<void> {
  const record = svc.get(ctx.params.id);
  if (!ctx.upgradeSocket) throw invalid('attach/ws needs a websocket upgrade (Connection: Upgrade, Upgrade: websocket)');
  // ws answers a malformed handshake itself, in plain text, and never calls back: refuse it here
  // with a JSON error instead (the checks are ws's own).
  const h = ctx.req.headers;
  if (h.upgrade?.toLowerCase() !== 'websocket') throw invalid('Invalid Upgrade header');
  if (!/^[+/0-9A-Za-z]{22}==$/.test(String(h['sec-websocket-key'] ?? ''))) throw invalid('Missing or invalid Sec-WebSocket-Key header');
  if (!['8', '13'].includes(String(h['sec-websocket-version'] ?? ''))) throw invalid('Missing or invalid Sec-WebSocket-Version header');
  if (ctx.req.method !== 'GET') throw invalid('Invalid HTTP method');
  const wss = new WebSocketServer({ noServer: true });
  const ws = await new Promise<WebSocket>((resolve) =>
    wss.handleUpgrade(ctx.req, ctx.upgradeSocket as Socket, ctx.upgradeHead ?? Buffer.alloc(0), resolve),
  );
  const send = (chunk: Buffer) => {
    if (ws.readyState === ws.OPEN) ws.send(chunk, { binary: true });
  };
  if (ctx.bool('logs')) await replayLogs(svc, record.Id, ctx, (e) => send(Buffer.from(e.log)));
  if (!ctx.bool('stream')) {
    ws.close();
    return;
  }
  const stdin = ctx.bool('stdin') ? new PassThrough() : null;
  const sinks = { stdin, stdout: ctx.bool('stdout') ? send : undefined, stderr: ctx.bool('stderr') ? send : undefined };
  ws.on('message', (data: Buffer) => stdin?.write(data));
  ws.on('close', () => {
    stdin?.end();
    svc.detachAll(record.Id, sinks);
  });
  await svc.attach(record.Id, sinks);
  ws.close();
}

async function execStartHandler(svc: ContainerService, ctx: RequestContext): Promise<void> {
  const body = await readSmallBody(ctx);
  const exec = svc.execs.get(ctx.params.id);
  const tty = body.Tty ?? exec.ProcessConfig.tty;
  if (body.Detach) {
    await svc.execs.start(ctx.params.id, { stdin: null }, { detach: true, tty });
    ctx.json(200, {});
    return;
  }
  // Fail before hijacking so that errors still reach the client as JSON.
  svc.requireRunning(exec.ContainerID);
  const hijacked = ctx.hijack(tty ? RAW_STREAM : MULTIPLEXED_STREAM);
  const writers = outputWriters(ctx, tty, hijacked.output);
  try {
    await svc.execs.start(
      ctx.params.id,
      {
        stdin: exec.OpenStdin ? hijacked.input : null,
        stdout: exec.OpenStdout ? writers.stdout : undefined,
        stderr: exec.OpenStderr ? writers.stderr : undefined,
      },
      { detach: false, tty },
    );
  } catch (err) {
    // Headers are gone: report inside the stream, on stdout, as dockerd does.
    writers.stdout(Buffer.from(`${(err as Error).message}\r\n`));
  }
  hijacked.close();
}

/**
 * A hijacked request's body (exec start options; dockerode also sends attach options) arrives on
 * the connection that then carries stdin: read exactly Content-Length bytes, without waiting for
 * EOF, so that none of it is taken for stdin.
 */
async function readBodyBeforeHijack(ctx: RequestContext): Promise<Buffer> {
  const length = Number(ctx.req.headers['content-length'] ?? 0);
  if (!length) return Buffer.alloc(0);
  // These bodies are a few bytes of options: never buffer a client's gigabytes.
  if (!(length <= MAX_JSON_BODY)) throw invalid(`request body is larger than the limit of ${MAX_JSON_BODY} bytes`);
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const source: Readable = ctx.upgradeSocket ? (ctx.upgradeSocket as Readable) : ctx.req;
    if (ctx.upgradeHead?.length) {
      chunks.push(ctx.upgradeHead);
      got += ctx.upgradeHead.length;
    }
    if (got >= length) {
      const all = Buffer.concat(chunks);
      if (all.length > length) source.unshift(all.subarray(length)); // stdin that came along
      return resolve(all.subarray(0, length));
    }
    const onData = (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= length) {
        source.off('data', onData);
        source.pause();
        const all = Buffer.concat(chunks);
        if (all.length > length) source.unshift(all.subarray(length));
        resolve(all.subarray(0, length));
      }
    };
    source.on('data', onData);
    // A client that hangs up before the whole body came must not leave this waiting for ever.
    source.once('close', () => reject(invalid('connection closed before the request body was complete')));
  });
  // The head was consumed here: don't replay it as stdin.
  (ctx as { upgradeHead?: Buffer }).upgradeHead = undefined;
  return raw;
}

async function readSmallBody(ctx: RequestContext): Promise<{ Detach?: boolean; Tty?: boolean }> {
  const raw = await readBodyBeforeHijack(ctx);
  if (raw.length === 0) return {};
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw invalid(`invalid JSON: ${(err as Error).message}`);
  }
  if (body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw invalid(`json: cannot unmarshal ${Array.isArray(body) ? 'array' : typeof body} into Go value of type object`);
  return checkBody(body as { Detach?: boolean; Tty?: boolean }, BODY.execStart);
}

async function logsHandler(svc: ContainerService, ctx: RequestContext): Promise<void> {
  const record = svc.get(ctx.params.id);
  const stdout = ctx.bool('stdout');
  const stderr = ctx.bool('stderr');
  if (!stdout && !stderr) throw invalid('Bad parameters: you must choose at least one stream');
  const tailRaw = ctx.query.get('tail');
  const tail = tailRaw === null || tailRaw === '' || tailRaw === 'all' ? undefined : Number(tailRaw);
  if (tail !== undefined && !Number.isFinite(tail)) throw invalid(`invalid value for tail: ${tailRaw}`);
  const since = parseTimestamp(ctx.query.get('since'));
  const until = parseTimestamp(ctx.query.get('until'));
  const timestamps = ctx.bool('timestamps');
  const tty = Boolean(record.Config.Tty);
  const res = ctx.stream(200, tty ? RAW_STREAM : MULTIPLEXED_STREAM);
  const abort = new AbortController();
  res.on('close', () => abort.abort());
  const write = (e: LogEntry) => {
    const text = Buffer.from(timestamps ? `${e.time} ${e.log}` : e.log);
    res.write(tty ? text : frame(e.stream === 'stdout' ? 1 : 2, text));
  };
  await svc.logs(record.Id, { stdout, stderr, since: since && since > 0 ? since : undefined, until, tail, follow: ctx.bool('follow') }, write, abort.signal);
  res.end();
}

async function topHandler(svc: ContainerService, ctx: RequestContext): Promise<void> {
  const { runtime } = svc.requireRunning(ctx.params.id);
  const procs = await runtime.sandbox.agent.ps();
  const uptime = Number((await runtime.sandbox.agent.readFile('/proc/uptime')).split(' ')[0]);
  const bootMs = Date.now() - uptime * 1000;
  const hhmm = (d: Date) => `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
  const cpuTime = (ticks: number) => {
    const s = Math.floor(ticks / 100);
    return `${String(Math.floor(s / 3600)).padStart(2, '0')}:${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  };
  ctx.json(200, {
    Titles: ['UID', 'PID', 'PPID', 'C', 'STIME', 'TTY', 'TIME', 'CMD'],
    Processes: procs
      .sort((a, b) => a.pid - b.pid)
      .map((p) => [
        p.uid === 0 ? 'root' : String(p.uid),
        String(p.pid),
        String(p.ppid),
        '0',
        hhmm(new Date(bootMs + (p.startTicks / 100) * 1000)),
        p.tty ? `pts/${p.tty & 0xff}` : '?',
        cpuTime(p.cpuTicks),
        p.command,
      ]),
  });
}

async function statsHandler(svc: ContainerService, ctx: RequestContext): Promise<void> {
  const record = svc.get(ctx.params.id);
  const stream = ctx.bool('stream', true) && !ctx.bool('one-shot');
  const sample = async (): Promise<GuestSample | undefined> => {
    const rt = svc.runtime(record.Id);
    return rt ? sampleGuest(rt.sandbox.agent).catch(() => undefined) : undefined;
  };
  if (!stream) {
    // Like dockerd: two samples so that the client can compute a CPU percentage.
    const first = ctx.bool('one-shot') ? undefined : await sample();
    if (first) await sleep(500);
    ctx.json(200, statsJson(record.Id, record.Name, await sample(), first));
    return;
  }
  const res = ctx.stream(200, 'application/json');
  let open = true;
  res.on('close', () => (open = false));
  let prev: GuestSample | undefined;
  while (open) {
    const cur = await sample();
    if (!open) break;
    res.write(JSON.stringify(statsJson(record.Id, record.Name, cur, prev)) + '\n');
    if (!cur && !svc.runtime(record.Id)) break;
    prev = cur;
    await sleep(1000);
  }
  res.end();
}

async function archiveStat(svc: ContainerService, ctx: RequestContext, withBody: boolean): Promise<void> {
  const record = svc.get(ctx.params.id);
  const containerPath = ctx.query.get('path');
  if (!containerPath) throw invalid('path is required');
  const { merged } = await svc.mountedRootfs(record);
  const { hostPath, stat } = await statPath(merged, containerPath, ctx.params.id);
  const header = Buffer.from(JSON.stringify(stat)).toString('base64');
  if (!withBody) {
    ctx.res!.writeHead(200, { 'X-Docker-Container-Path-Stat': header, 'Content-Type': 'application/x-tar' });
    ctx.res!.end();
    return;
  }
  ctx.res!.writeHead(200, { 'X-Docker-Container-Path-Stat': header, 'Content-Type': 'application/x-tar' });
  // A trailing "/." asks for the directory's contents rather than the directory itself.
  const base = containerPath.endsWith('/.') ? '.' : stat.name;
  await tarPath(merged, hostPath, base, ctx.res!);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

