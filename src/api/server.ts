/**
 * The HTTP server: version prefix handling, dispatch to the route table (plain and upgraded
 * requests alike), and the one error path that turns typed errors into Docker's JSON answers.
 * A handler's failure never takes the daemon down.
 */
import { promises as fs } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { TlsConfig } from '../config';
import { invalid, PaddockError } from '../errors';
import { logger } from '../util/log';
import { RequestContext } from './context';
import { errorBody, httpStatusOf } from './http-errors';
import type { Router } from './router';
import { negotiate } from './version';

const log = logger('api');
const VERSION_PREFIX = /^\/v(\d+\.\d+)(\/.*)$/;

export interface ApiServerOptions {
  /** Serve HTTPS (TCP listeners with --tls/--tlsverify); the PEM contents, see loadTls(). */
  tls?: { key: Buffer; cert: Buffer; ca?: Buffer; verify: boolean };
}

export function createApiServer(router: Router, opts: ApiServerOptions = {}): http.Server {
  const httpOptions: http.ServerOptions = {
    keepAliveTimeout: 120_000,
    // No overall deadline (pulls, attach and logs -f run for long), but a client must finish
    // its request headers in time, or a slow sender holds a connection for ever.
    requestTimeout: 0,
    headersTimeout: 60_000,
    maxHeaderSize: 64 * 1024,
  };
  const server: http.Server = opts.tls
    ? https.createServer({
        ...httpOptions,
        key: opts.tls.key,
        cert: opts.tls.cert,
        ca: opts.tls.ca,
        // dockerd's tlsconfig: --tlsverify = RequireAndVerifyClientCert against the CA; --tls
        // alone = server-side TLS, any client.
        requestCert: opts.tls.verify,
        rejectUnauthorized: opts.tls.verify,
        minVersion: 'TLSv1.2',
      })
    : http.createServer(httpOptions);
  server.on('request', (req: IncomingMessage, res: ServerResponse) => void dispatch(router, req, res));
  // Upgraded (hijacked) connections leave the server's bookkeeping: track them so that
  // closeAllConnections() at shutdown ends attach and exec sessions too.
  const upgraded = new Set<Duplex>();
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgraded.add(socket);
    socket.on('close', () => upgraded.delete(socket));
    void dispatch(router, req, undefined, socket, head);
  });
  const closeTracked = server.closeAllConnections.bind(server);
  server.closeAllConnections = () => {
    closeTracked();
    for (const s of upgraded) s.destroy();
  };
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Malformed requests (bad chunked encoding, oversized headers) get dockerd's JSON error shape.
    if (!socket.writable) return void socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const body = JSON.stringify({ message: `bad request: ${err.code ?? err.message}` }) + '\n';
    socket.end(`HTTP/1.1 ${status} Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  // A TLS handshake that fails (no client certificate, plain HTTP on the TLS port) ends the
  // connection; only say so at debug level, it is the client's doing.
  server.on('tlsClientError', (err: Error) => log.debug('TLS handshake refused', { error: err.message }));
  return server;
}

/** Reads the PEM files named by the TLS flags; a missing file is a startup error naming it. */
export async function loadTls(config: TlsConfig): Promise<NonNullable<ApiServerOptions['tls']>> {
  const read = async (file: string, what: string, required: boolean) => {
    try {
      return await fs.readFile(file);
    } catch (err) {
      if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw invalid(`could not read ${what} "${file}": ${(err as Error).message}`);
    }
  };
  return {
    key: (await read(config.key, 'TLS key', true))!,
    cert: (await read(config.cert, 'TLS certificate', true))!,
    // Without --tlsverify the CA is only needed to verify clients, which we then do not do.
    ca: await read(config.caCert, 'CA certificate', config.verify),
    verify: config.verify,
  };
}

export interface ListenOptions {
  /** Group for unix sockets, as dockerd's -G: undefined = "docker" if it exists, '' = root. */
  group?: string;
}

/**
 * Listens on one -H address. Unix sockets end up owned by root:<group>, mode 0660, as dockerd
 * makes them: members of the group may drive the daemon, nobody else.
 */
export async function listenApi(server: http.Server, host: string, opts: ListenOptions = {}): Promise<http.Server> {
  if (host.startsWith('unix://')) {
    const socketPath = host.slice('unix://'.length);
    const gid = await socketGroup(opts.group);
    await fs.mkdir(path.dirname(socketPath), { recursive: true });
    await fs.rm(socketPath, { force: true }); // a stale socket from a previous run
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // Until chmod below the socket must not be connectable by others: it is bound under umask
      // 077. Node binds a unix socket synchronously inside listen(), so the process-wide umask
      // is changed for this one synchronous call only.
      const umask = process.umask(0o077);
      try {
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    await fs.chown(socketPath, 0, gid);
    await fs.chmod(socketPath, 0o660);
    return server;
  }
  const m = /^tcp:\/\/\[?([^\]]+?)\]?:(\d+)$/.exec(host);
  if (!m) throw invalid(`invalid host ${host}`);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(m[2]), m[1], () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** The gid for unix sockets: a name from /etc/group or a number; dockerd's default "docker". */
async function socketGroup(group: string | undefined): Promise<number> {
  if (group === '') return 0;
  if (group !== undefined && /^\d+$/.test(group)) return Number(group);
  const name = group ?? 'docker';
  const lines = (await fs.readFile('/etc/group', 'utf8').catch(() => '')).split('\n');
  const entry = lines.map((l) => l.split(':')).find((f) => f[0] === name && f.length >= 3);
  if (entry) return Number(entry[2]);
  if (group === undefined) {
    log.info('group "docker" does not exist: the API socket stays root-only');
    return 0;
  }
  throw invalid(`group ${JSON.stringify(group)} not found (-G/--group)`);
}

async function dispatch(router: Router, req: IncomingMessage, res?: ServerResponse, socket?: Duplex, head?: Buffer): Promise<void> {
  let ctx: RequestContext | undefined;
  const started = Date.now();
  try {
    const url = requestUrl(req.url);
    let path = url.pathname;
    let requested: string | undefined;
    const prefixed = VERSION_PREFIX.exec(path);
    if (prefixed) {
      requested = prefixed[1];
      path = prefixed[2];
    }
    const apiVersion = negotiate(requested);
    const match = router.match(req.method ?? 'GET', path);
    ctx = new RequestContext(req, res, match && match !== 'method-not-allowed' ? match.params : {}, apiVersion, url, socket, head);
    if (!match || match === 'method-not-allowed') {
      // dockerd answers unknown paths and methods alike with 404 "page not found".
      ctx.json(404, { message: 'page not found' });
      return;
    }
    if (socket && !match.route.hijack) {
      ctx.json(400, { message: 'this endpoint does not upgrade connections' });
      return;
    }
    await match.route.handler(ctx);
  } catch (err) {
    answerError(req, res, socket, err, ctx);
  } finally {
    log.debug('request', { method: req.method, url: req.url, ms: Date.now() - started, status: res?.statusCode });
  }
}

/**
 * The request target as a URL. Prefixing the origin (rather than resolving against it) keeps a
 * path such as `//x` a path: resolved, it would name a host `x`, or throw for one that cannot be.
 */
function requestUrl(target: string | undefined): URL {
  const t = target ?? '/';
  try {
    return t.startsWith('/') ? new URL(`http://paddock${t}`) : new URL(t);
  } catch {
    throw invalid(`malformed request target ${JSON.stringify(t.slice(0, 200))}`);
  }
}

function answerError(req: IncomingMessage, res: ServerResponse | undefined, socket: Duplex | undefined, err: unknown, ctx?: RequestContext): void {
  const status = httpStatusOf(err);
  if (!(err instanceof PaddockError) || status >= 500) {
    log.warn('request failed', { method: req.method, url: req.url, error: (err as Error)?.stack ?? String(err) });
  }
  if (res && res.headersSent) {
    // A stream already started: the only honest signal left is to end it.
    res.destroy();
    return;
  }
  if (status === 304) {
    if (res) {
      res.writeHead(304);
      res.end();
    } else socket?.end('HTTP/1.1 304 Not Modified\r\n\r\n');
    return;
  }
  if (ctx) ctx.json(status, errorBody(err));
  else if (res) {
    const body = JSON.stringify(errorBody(err)) + '\n';
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  } else {
    const body = JSON.stringify(errorBody(err)) + '\n';
    socket?.end(`HTTP/1.1 ${status} Error\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }
}
