/** Streams that hash what passes through them: how blobs are verified without a second read. */
import { createHash, type Hash } from 'node:crypto';
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { invalid } from '../../errors';

export class DigestingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  private final?: string;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    done(null, chunk);
  }

  /** "sha256:<hex>" of everything that passed; valid once the stream has ended. */
  digest(): string {
    this.final ??= 'sha256:' + this.hash.digest('hex');
    return this.final;
  }
}

export type Compression = 'gzip' | 'zstd' | 'none';

export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

/**
 * Decompresses a layer stream whatever its compression, as Docker does (by magic bytes, not by
 * media type). The first chunk decides; zstd is refused because Node 20's zlib lacks it.
 */
export function decompressing(input: Readable): Readable {
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  let decided = false;
  const onData = (chunk: Buffer) => {
    if (decided) return;
    decided = true;
    input.off('data', onData);
    input.pause();
    const kind = detectCompression(chunk);
    if (kind === 'zstd') {
      out.destroy(invalid('unsupported layer compression: zstd'));
      input.destroy();
      return;
    }
    input.unshift(chunk);
    if (kind === 'gzip') {
      const gunzip = createGunzip({ chunkSize: 256 * 1024 });
      gunzip.on('error', (err) => out.destroy(err));
      input.pipe(gunzip).pipe(out);
    } else {
      input.pipe(out);
    }
  };
  input.on('data', onData);
  input.on('error', (err) => out.destroy(err));
  input.on('end', () => {
    if (!decided) out.end();
  });
  return out;
}
