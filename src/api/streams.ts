/**
 * Docker's stream framing: raw bytes for TTY streams, and for the rest the 8-byte multiplexed
 * frames `[stream, 0, 0, 0, size BE32]` (0 stdin, 1 stdout, 2 stderr); plus detach keys.
 */
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { invalid } from '../errors';

export const RAW_STREAM = 'application/vnd.docker.raw-stream';
export const MULTIPLEXED_STREAM = 'application/vnd.docker.multiplexed-stream';

export function frame(streamType: 0 | 1 | 2, data: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header[0] = streamType;
  header.writeUInt32BE(data.length, 4);
  return Buffer.concat([header, data]);
}

/** Parses `detachKeys` ("ctrl-p,ctrl-q", "a,ctrl-@", ...) into bytes, with dockerd's errors. */
export function parseDetachKeys(spec: string | null | undefined, fallback = 'ctrl-p,ctrl-q'): Buffer {
  const keys = spec === null || spec === undefined || spec === '' ? fallback : spec;
  const out: number[] = [];
  for (const key of keys.split(',')) {
    const k = key.trim();
    if (k === 'DEL') {
      out.push(127);
      continue;
    }
    if (k.length === 1) {
      out.push(k.charCodeAt(0));
      continue;
    }
    const m = /^ctrl-(.)$/.exec(k);
    if (!m) throw invalid(`Invalid detach keys (${keys}) provided`);
    const c = m[1];
    if (c >= 'a' && c <= 'z') out.push(c.charCodeAt(0) - 96);
    else if (c === '@') out.push(0);
    else if (c === '[') out.push(27);
    else if (c === '\\') out.push(28);
    else if (c === ']') out.push(29);
    else if (c === '^') out.push(30);
    else if (c === '_') out.push(31);
    else throw invalid(`Invalid detach keys (${keys}) provided`);
  }
  return Buffer.from(out);
}

/**
 * Passes stdin through until the detach sequence is typed; then calls `onDetach` and ends.
 * Bytes that start the sequence are held back until it is clear whether they complete it.
 */
export function detachFilter(keys: Buffer, onDetach: () => void): Transform {
  let matched = 0;
  let detached = false;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      if (detached) return cb(); // nothing more reaches the container once the client detached
      const out: number[] = [];
      for (const byte of chunk) {
        if (byte === keys[matched]) {
          matched++;
          if (matched === keys.length) {
            detached = true;
            if (out.length) this.push(Buffer.from(out));
            onDetach();
            cb();
            return;
          }
          continue;
        }
        if (matched) out.push(...keys.subarray(0, matched));
        matched = 0;
        if (byte === keys[0]) matched = 1;
        else out.push(byte);
      }
      cb(null, out.length ? Buffer.from(out) : undefined);
    },
  });
}

export function pipeStdin(input: Readable | null, keys: Buffer | null, onDetach: () => void): Readable | null {
  if (!input) return null;
  if (!keys || keys.length === 0) return input;
  return input.pipe(detachFilter(keys, onDetach));
}
