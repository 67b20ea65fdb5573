/**
 * The HTTP server: version prefix handling, dispatch to the route table (plain and upgraded
 * requests alike), and the one error path that turns typed errors into Docker's JSON answers.
 * A handler's failure never takes the daemon down.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { PaddockError } from '../errors';
import { logger } from '../util/log';
import { RequestContext } from './context';
import { errorBody, httpStatusOf } from './http-errors';
import type { Router } from './router';
import { negotiate } from './version';

const log = logger('api');
const VERSION_PREFIX = /^\/v(\d+\.\d+)(\/.*)$/;

export function createApiServer(router: Router): http.Server {
  const server = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 });
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
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });
  return server;
}

async function dispatch(router: Router, req: IncomingMessage, res?: ServerResponse, socket?: Duplex, head?: Buffer): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://paddock');
  let path = url.pathname;
  let requested: string | undefined;
  const prefixed = VERSION_PREFIX.exec(path);
  if (prefixed) {
    requested = prefixed[1];
    path = prefixed[2];
  }
  let ctx: RequestContext | undefined;
  const started = Date.now();
  try {
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
