/**
 * Container logs in dockerd's json-file format (one JSON object per line:
 * {"log": "...", "stream": "stdout", "time": RFC 3339 with nanoseconds}), so the files are what
 * Docker tooling expects, plus the reader behind `docker logs` (tail, since, until, follow).
 */
import { EventEmitter } from 'node:events';
import { createReadStream, createWriteStream, promises as fs, type WriteStream } from 'node:fs';
import readline from 'node:readline';
import { StringDecoder } from 'node:string_decoder';

export type LogStream = 'stdout' | 'stderr';

export interface LogEntry {
  log: string;
  stream: LogStream;
  time: string;
}

export function nanoTimestamp(date = new Date()): string {
  const frac = String(process.hrtime.bigint() % 1_000_000n).padStart(6, '0');
  return date.toISOString().replace(/\.(\d{3})Z$/, `.$1${frac}Z`);
}

/** Nanoseconds since the epoch of an RFC 3339 timestamp with up to nine fraction digits. */
export function timestampNanos(ts: string): number {
  const m = /\.(\d+)Z$/.exec(ts);
  const frac = m ? m[1].padEnd(9, '0').slice(0, 9) : '000000000';
  return Math.floor(Date.parse(ts) / 1000) * 1e9 + Number(frac);
}

/** Appends a container's output; splits it into lines as dockerd's log copier does. */
export class JsonLogWriter extends EventEmitter {
  private out: WriteStream;
  private partial: Record<LogStream, string> = { stdout: '', stderr: '' };
  /** Per stream, so a UTF-8 character split between two reads is decoded whole. */
  private decoders: Record<LogStream, StringDecoder> = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  /** Bytes written so far (the file offset of the next entry). */
  offset = 0;

  constructor(readonly file: string) {
    super();
    this.out = createWriteStream(file, { flags: 'a', mode: 0o640 });
    this.out.on('error', () => undefined);
  }

  async init(): Promise<void> {
    this.offset = await fs.stat(this.file).then((s) => s.size, () => 0);
  }

  write(stream: LogStream, data: Buffer | string): void {
    const text = this.partial[stream] + (typeof data === 'string' ? data : this.decoders[stream].write(data));
    const lines = text.split(/(?<=\n)/);
    const last = lines[lines.length - 1];
    if (!last.endsWith('\n')) {
      this.partial[stream] = last;
      lines.pop();
    } else this.partial[stream] = '';
    for (const line of lines) this.append({ log: line, stream, time: nanoTimestamp() });
    // Very long lines without a newline are flushed in 16 KiB pieces, like dockerd.
    while (this.partial[stream].length > 16 * 1024) {
      this.append({ log: this.partial[stream].slice(0, 16 * 1024), stream, time: nanoTimestamp() });
      this.partial[stream] = this.partial[stream].slice(16 * 1024);
    }
  }

  /** Writes out unterminated output (at process exit). */
  flush(): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      this.partial[stream] += this.decoders[stream].end();
      if (this.partial[stream]) this.append({ log: this.partial[stream], stream, time: nanoTimestamp() });
      this.partial[stream] = '';
    }
  }

  async close(): Promise<void> {
    this.flush();
    await new Promise<void>((resolve) => this.out.end(resolve));
  }

  private append(entry: LogEntry): void {
    const line = JSON.stringify(entry) + '\n';
    const at = this.offset;
    this.offset += Buffer.byteLength(line);
    this.out.write(line);
    this.emit('entry', entry, at);
  }
}

export interface LogQuery {
  stdout: boolean;
  stderr: boolean;
  /** Nanoseconds; entries before are skipped. */
  since?: number;
  until?: number;
  /** Last N lines only (undefined = all). */
  tail?: number;
}

/** Reads stored entries that match the query (up to `maxOffset` bytes of the file). */
export async function readLogEntries(file: string, q: LogQuery, maxOffset = Infinity): Promise<LogEntry[]> {
  const entries: LogEntry[] = [];
  let stream;
  try {
    await fs.access(file);
    stream = createReadStream(file, { end: Number.isFinite(maxOffset) ? Math.max(0, maxOffset - 1) : undefined });
  } catch {
    return entries;
  }
  if (maxOffset === 0) return entries;
  const rl = readline.createInterface({ input: stream, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line) continue;
    let e: LogEntry;
    try {
      e = JSON.parse(line);
    } catch {
      continue; // a line torn by a crash
    }
    if (matches(e, q)) entries.push(e);
  }
  return q.tail !== undefined && q.tail >= 0 ? entries.slice(Math.max(0, entries.length - q.tail)) : entries;
}

export function matches(e: LogEntry, q: LogQuery): boolean {
  if (e.stream === 'stdout' && !q.stdout) return false;
  if (e.stream === 'stderr' && !q.stderr) return false;
  if (q.since !== undefined || q.until !== undefined) {
    const t = timestampNanos(e.time);
    if (q.since !== undefined && t < q.since) return false;
    if (q.until !== undefined && t > q.until) return false;
  }
  return true;
}
