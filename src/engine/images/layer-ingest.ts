/**
 * Brings one layer into the store from a stream of its blob (gzip or plain tar): the bytes go
 * to the content store and, at the same time, through decompression into a staging directory.
 * Both digests are checked before anything is published; on any mismatch or error, nothing
 * of the layer is left behind.
 */
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { invalid } from '../../errors';
import { DigestMismatchError } from '../../drivers/storage/content-store';
import { MediaTypes } from '../../drivers/registry/manifest';
import { decompressing, detectCompression, DigestingStream } from '../../drivers/storage/digest-stream';
import type { LayerRecord } from '../../drivers/storage/layer-store';
import { BreakoutError, unpackLayer } from '../../drivers/storage/layer-unpack';
import type { ImageStore } from './image-store';

export interface IngestOptions {
  /** Media type to record for the blob; by default, OCI tar or tar+gzip as the bytes say. */
  mediaType?: string;
  /** The blob digest the manifest promised (pulls); verified. */
  expectedDigest?: string;
  /** The diff ID the image config promised; verified. */
  expectedDiffId?: string;
  /** The repository the blob came from ("domain/path"), for cross-repository mounts on push. */
  source?: string;
  /** Called with the number of blob bytes read so far. */
  onBytes?: (read: number) => void;
  /** Called when all bytes were read, before verification and publishing. */
  onDownloaded?: () => void;
}

export async function ingestLayer(store: ImageStore, source: Readable, opts: IngestOptions): Promise<LayerRecord> {
  const blob = store.contents.ingest();
  const staged = await store.layers.stage();
  const diff = new DigestingStream();
  let read = 0;
  let head: Buffer | undefined;
  const counter = new Transform({
    highWaterMark: 1024 * 1024,
    transform(chunk: Buffer, _enc, done) {
      head ??= chunk.subarray(0, 4);
      read += chunk.length;
      opts.onBytes?.(read);
      done(null, chunk);
    },
  });
  const toUnpack = new PassThrough({ highWaterMark: 1024 * 1024 });
  counter.pipe(toUnpack);
  try {
    // A layer that fails to unpack (a corrupt download usually fails gunzip first) is still
    // read to its end, so that the digest check can name the real cause.
    let unpackError: unknown;
    let unpacked: { size: number } | undefined;
    await Promise.all([
      pipeline(source, counter, blob.writable),
      (async () => {
        const decompressed = decompressing(toUnpack);
        decompressed.on('error', (err) => diff.destroy(err));
        unpacked = await unpackLayer(decompressed.pipe(diff), staged.dir);
      })().catch((err) => {
        unpackError = err;
        counter.unpipe(toUnpack);
        toUnpack.destroy();
        counter.resume();
      }),
    ]);
    opts.onDownloaded?.();
    await blob.verify(opts.expectedDigest);
    if (unpackError) throw unpackError;
    const diffId = diff.digest();
    if (opts.expectedDiffId && opts.expectedDiffId !== diffId) {
      throw invalid(`layer diff ID mismatch: expected ${opts.expectedDiffId}, got ${diffId}`);
    }
    const digest = await blob.commit(opts.expectedDigest);
    return await staged.commit({
      diffId,
      size: unpacked!.size,
      tarSize: diff.bytes,
      blobs: [{ digest, mediaType: opts.mediaType ?? detectedMediaType(head), size: read, ...(opts.source ? { source: opts.source } : {}) }],
      created: new Date().toISOString(),
    });
  } catch (err) {
    source.destroy();
    await blob.abort();
    await staged.abort();
    if (err instanceof DigestMismatchError) {
      throw invalid(`filesystem layer verification failed for digest ${err.expected}`);
    }
    if (err instanceof BreakoutError) throw invalid(`invalid layer: ${err.message}`);
    throw err;
  }
}

function detectedMediaType(head: Buffer | undefined): string {
  return head && detectCompression(head) === 'gzip' ? MediaTypes.ociLayerGzip : MediaTypes.ociLayer;
}
