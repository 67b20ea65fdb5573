/**
 * What a handler gets: parsed path params and query, the negotiated API version, and helpers to
 * answer in Docker's formats (JSON, streams of JSON lines, hijacked raw streams).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex, Readable, Writable } from 'node:stream';
import { invalid, PaddockError } from '../errors';
import { checkBody, type BodyType } from './body-types';

/**
 * dockerd reads JSON bodies without a limit; the largest real ones (a create with many labels
 * and env entries, a commit config) are kilobytes, so 10 MiB only stops a client that wants
 * the daemon's memory.
 */
export const MAX_JSON_BODY = 10 * 1024 * 1024;

export class RequestContext {
  readonly query: URLSearchParams;

  constructor(
    readonly req: IncomingMessage,
    /** Absent when the request arrived as an HTTP upgrade (then `upgradeSocket` is set). */
    readonly res: ServerResponse | undefined,
    readonly params: Record<string, string>,
    readonly apiVersion: string,
    url: URL,
    readonly upgradeSocket?: Duplex,
    readonly upgradeHead?: Buffer,
  ) {
    this.query = url.searchParams;
  }

  get headersSent(): boolean {
    return this.res ? this.res.headersSent : true;
  }

  json(status: number, body: unknown, headers: Record<string, string> = {}): void {
    const data = JSON.stringify(body) + '\n';
    if (!this.res) {
      this.upgradeSocket?.end(
        `HTTP/1.1 ${status} ${status < 400 ? 'OK' : 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(data)}\r\n\r\n${data}`,
      );
      return;
    }
    this.res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data), ...headers });
    this.res.end(data);
  }

  text(status: number, body: string, headers: Record<string, string> = {}): void {
    this.res?.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), ...headers });
    this.res?.end(this.req.method === 'HEAD' ? undefined : body);
  }

  noContent(status = 204): void {
    if (!this.res) return void this.upgradeSocket?.end(`HTTP/1.1 ${status} No Content\r\n\r\n`);
    this.res.writeHead(status);
    this.res.end();
  }

  /** Starts a streamed response (progress lines, logs, events) with headers flushed at once. */
  stream(status: number, contentType: string): ServerResponse {
    const res = this.res!;
    res.writeHead(status, { 'Content-Type': contentType });
    res.flushHeaders();
    return res;
  }

  /**
   * Takes over the connection for a raw stream, as dockerd does for attach and exec start:
   * `101 UPGRADED` when the client asked for an upgrade (then stdin flows back on the same
   * socket), else a plain 200 streamed response with no input side.
   */
  hijack(contentType: string): HijackedStream {
    const socket = this.upgradeSocket;
    if (socket) {
      socket.write(
        `HTTP/1.1 101 UPGRADED\r\nContent-Type: ${contentType}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n`,
      );
      if (this.upgradeHead?.length) socket.unshift(this.upgradeHead);
      return { input: socket, output: socket, close: () => socket.end() };
    }
    const res = this.stream(200, contentType);
    return { input: null, output: res, close: () => res.end() };
  }

  /**
   * Reads a whole (JSON) body, at most `limit` bytes. Larger bodies are refused from their
   * Content-Length before reading, else as soon as they pass the limit; the connection is then
   * closed after the answer instead of draining what the client still sends. Tar bodies (load,
   * import, archive PUT) are streamed by their handlers and never come through here.
   */
  async rawBody(limit = MAX_JSON_BODY): Promise<Buffer> {
    const tooLarge = () => {
      if (this.res) this.res.shouldKeepAlive = false;
      return invalid(`request body is larger than the limit of ${limit} bytes`);
    };
    const declared = Number(this.req.headers['content-length'] ?? 0);
    if (declared > limit) throw tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of this.req) {
        size += (chunk as Buffer).length;
        if (size > limit) throw tooLarge();
        chunks.push(chunk as Buffer);
      }
    } catch (err) {
      if (err instanceof PaddockError) throw err;
      // The client went away or sent a broken body (e.g. a connection closed mid-body).
      if (this.res) this.res.shouldKeepAlive = false;
      throw invalid(`error reading request body: ${(err as Error).message}`);
    }
    return Buffer.concat(chunks);
  }

  /**
   * Parses a JSON body; an empty body gives `fallback` (dockerd accepts empty bodies where
   * optional). With `type`, values of the wrong JSON type are refused as dockerd's decoder does.
   */
  async jsonBody<T>(fallback?: T, type?: BodyType): Promise<T> {
    const raw = (await this.rawBody()).toString('utf8');
    if (raw.trim() === '') {
      if (fallback !== undefined) return fallback;
      throw invalid('invalid JSON: request body is empty');
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      // Also a RangeError for nesting deep enough to exhaust the stack: still the client's fault.
      throw invalid(`invalid JSON: ${(err as Error).message}`);
    }
    if (parsed === null && fallback !== undefined) return fallback;
    // Every body of the Engine API is an object; dockerd's decoder says so in Go's words.
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw invalid(`json: cannot unmarshal ${Array.isArray(parsed) ? 'array' : typeof parsed} into Go value of type object`);
    }
    return type ? checkBody(parsed as T, type) : (parsed as T);
  }

  /** Docker's boolean query values: 1/true/True are true, 0/false/empty are false. */
  bool(name: string, fallback = false): boolean {
    const v = this.query.get(name);
    if (v === null) return fallback;
    return !['', '0', 'false', 'False', 'FALSE', 'no'].includes(v);
  }

  int(name: string, fallback?: number): number | undefined {
    const v = this.query.get(name);
    if (v === null || v === '') return fallback;
    const n = Number(v);
    if (!Number.isFinite(n)) throw invalid(`invalid value for ${name}: ${JSON.stringify(v)}`);
    return n;
  }

  /** The `filters` query parameter as {name: [values]} (both of Docker's encodings). */
  filters(): Record<string, string[]> {
    const raw = this.query.get('filters');
    if (!raw) return {};
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      throw invalid(`invalid filter '${raw}'`);
    }
    if (parsed === null) return {};
    if (typeof parsed !== 'object' || Array.isArray(parsed)) throw invalid(`invalid filter '${raw}'`);
    const out: Record<string, string[]> = {};
    for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
      if (Array.isArray(v)) out[k] = v.map(String);
      else if (v && typeof v === 'object') out[k] = Object.entries(v).filter(([, on]) => on).map(([name]) => name);
      else throw invalid(`invalid filter '${k}'`);
    }
    return out;
  }
}

export interface HijackedStream {
  /** The client's stdin, when the connection was upgraded. */
  input: Readable | null;
  output: Writable;
  close(): void;
}
