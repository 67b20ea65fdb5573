/**
 * The HTTP transport for registries: node's http/https with keep-alive, redirects (registries
 * send blob downloads to storage backends), and the HTTPS-then-HTTP fallback dockerd applies to
 * insecure registries. Loopback registries are always insecure-allowed, as in dockerd.
 */
import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { PaddockError } from '../../errors';

const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const secureAgent = new https.Agent({ keepAlive: true, maxSockets: 64 });
const insecureTlsAgent = new https.Agent({ keepAlive: true, maxSockets: 64, rejectUnauthorized: false });

export interface HttpRequest {
  method: string;
  url: string;
  headers?: OutgoingHttpHeaders;
  /** A body to send; a function so that a request can be replayed after a redirect. */
  body?: Buffer | (() => Readable);
  /** Skip TLS verification (insecure registries). */
  insecureTls?: boolean;
  signal?: AbortSignal;
}

const MAX_REDIRECTS = 5;

/** A transport failure (no HTTP answer): what dockerd words as `Get "url": reason`. */
export class TransportError extends PaddockError {
  constructor(
    readonly method: string,
    readonly url: string,
    readonly code: string | undefined,
    reason: string,
  ) {
    super('internal', `${method[0]}${method.slice(1).toLowerCase()} "${url}": ${reason}`);
  }
}

export async function httpRequest(req: HttpRequest): Promise<IncomingMessage> {
  let url = new URL(req.url);
  let method = req.method;
  let headers = { ...req.headers };
  for (let hop = 0; ; hop++) {
    const res = await once(method, url, headers, req.body, req.insecureTls ?? false, req.signal);
    const status = res.statusCode ?? 0;
    if ([301, 302, 303, 307, 308].includes(status) && res.headers.location && hop < MAX_REDIRECTS) {
      res.resume();
      const next = new URL(res.headers.location, url);
      if (next.host !== url.host) {
        // Credentials belong to the registry, never to the storage backend it points at.
        const { authorization: _drop, ...rest } = headers as Record<string, unknown>;
        headers = rest as OutgoingHttpHeaders;
      }
      if (status === 303) method = 'GET';
      url = next;
      continue;
    }
    return res;
  }
}

function once(
  method: string,
  url: URL,
  headers: OutgoingHttpHeaders,
  body: HttpRequest['body'],
  insecureTls: boolean,
  signal?: AbortSignal,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const isHttps = url.protocol === 'https:';
    const agent = isHttps ? (insecureTls ? insecureTlsAgent : secureAgent) : httpAgent;
    const finalHeaders: OutgoingHttpHeaders = { 'user-agent': 'paddock/0.1 (docker-compatible)', ...headers };
    if (Buffer.isBuffer(body)) finalHeaders['content-length'] = body.length;
    const request = (isHttps ? https : http).request(url, { method, headers: finalHeaders, agent, signal }, resolve);
    request.on('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.name === 'AbortError'
          ? new PaddockError('internal', 'context canceled')
          : new TransportError(method, url.toString(), err.code, describeNetError(err, url)),
      ),
    );
    if (body === undefined) request.end();
    else if (Buffer.isBuffer(body)) request.end(body);
    else {
      const stream = body();
      stream.on('error', (err) => request.destroy(err));
      stream.pipe(request);
    }
  });
}

function describeNetError(err: NodeJS.ErrnoException, url: URL): string {
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  switch (err.code) {
    case 'ECONNREFUSED':
      return `dial tcp ${url.hostname}:${port}: connect: connection refused`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `dial tcp: lookup ${url.hostname}: no such host`;
    case 'ETIMEDOUT':
      return `dial tcp ${url.hostname}:${port}: i/o timeout`;
    default:
      return err.message;
  }
}

/** True when a failure on https:// means "this endpoint speaks plain HTTP" (or no TLS at all). */
export function isTlsMismatch(err: unknown): boolean {
  if (!(err instanceof TransportError)) return false;
  return (
    err.code === 'EPROTO' ||
    err.code === 'ECONNRESET' ||
    err.code === 'ERR_SSL_WRONG_VERSION_NUMBER' ||
    /wrong version number|packet length too long|ssl|tls/i.test(err.message)
  );
}

export async function readBody(res: IncomingMessage, limit = 16 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      res.destroy();
      throw new PaddockError('invalid', `response from registry larger than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** dockerd's rule: loopback always, plus the configured list (host[:port] or IPv4 CIDR). */
export function isInsecureRegistry(domain: string, insecureList: string[]): boolean {
  const host = hostOf(domain);
  if (host === 'localhost' || host === '::1' || /^127\./.test(host)) return true;
  for (const entry of insecureList) {
    const e = entry.replace(/^https?:\/\//, '').replace(/\/$/, '');
    if (e === domain || e === host) return true;
    const cidr = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(e);
    if (cidr && net.isIPv4(host) && inCidr(host, cidr[1], Number(cidr[2]))) return true;
  }
  return false;
}

function hostOf(domain: string): string {
  if (domain.startsWith('[')) return domain.slice(1, domain.indexOf(']'));
  const i = domain.lastIndexOf(':');
  return i > -1 ? domain.slice(0, i) : domain;
}

function inCidr(ip: string, base: string, bits: number): boolean {
  const toInt = (a: string) => a.split('.').reduce((n, octet) => (n << 8) + Number(octet), 0) >>> 0;
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return (toInt(ip) & mask) === (toInt(base) & mask);
}
