/**
 * Content-addressed blobs (`blobs/sha256/<hex>`): manifests, image configs and layer blobs as the
 * registry served them. A blob is written to a temp file while its digest is computed and only
 * renamed into place when the digest is the one expected, so a present blob is always whole
 * and right; a killed write leaves a temp file that the next open sweeps away.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { invalid, notFound } from '../../errors';
import { DigestingStream } from './digest-stream';
import { fsyncDir, writeFileAtomic } from './state-store';

const DIGEST = /^sha256:([a-f0-9]{64})$/;

export class DigestMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`digest mismatch: expected ${expected}, got ${actual}`);
  }
}

export interface Ingest {
  /** Where to write the blob's bytes. */
  writable: DigestingStream;
  /** Waits for the write to end and checks the digest, publishing nothing. */
  verify(expected?: string): Promise<string>;
  /** Ends the write (the writable must have ended), verifies and publishes; returns the digest. */
  commit(expected?: string): Promise<string>;
  abort(): Promise<void>;
}

export class ContentStore {
  private readonly blobDir: string;
  private readonly ingestDir: string;

  private constructor(readonly root: string) {
    this.blobDir = path.join(root, 'blobs', 'sha256');
    this.ingestDir = path.join(root, 'ingest');
  }

  static async open(root: string): Promise<ContentStore> {
    const store = new ContentStore(root);
    await fs.mkdir(store.blobDir, { recursive: true, mode: 0o700 });
    await fs.rm(store.ingestDir, { recursive: true, force: true });
    await fs.mkdir(store.ingestDir, { recursive: true, mode: 0o700 });
    return store;
  }

  pathOf(digest: string): string {
    const m = DIGEST.exec(digest);
    if (!m) throw invalid(`invalid digest ${digest}`);
    return path.join(this.blobDir, m[1]);
  }

  async has(digest: string): Promise<boolean> {
    try {
      await fs.access(this.pathOf(digest));
      return true;
    } catch {
      return false;
    }
  }

  async size(digest: string): Promise<number> {
    try {
      return (await fs.stat(this.pathOf(digest))).size;
    } catch {
      throw notFound(`blob ${digest} not found`);
    }
  }

  async read(digest: string): Promise<Buffer> {
    try {
      return await fs.readFile(this.pathOf(digest));
    } catch {
      throw notFound(`blob ${digest} not found`);
    }
  }

  open(digest: string): Readable {
    return createReadStream(this.pathOf(digest), { highWaterMark: 1024 * 1024 });
  }

  /** Stores a small blob whole; returns its digest. */
  async put(data: Buffer): Promise<string> {
    const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');
    if (!(await this.has(digest))) await writeFileAtomic(this.pathOf(digest), data, 0o600);
    return digest;
  }

  /** Starts writing a blob of unknown digest (verified at commit). */
  ingest(): Ingest {
    const tmp = path.join(this.ingestDir, randomBytes(8).toString('hex'));
    const file = createWriteStream(tmp, { mode: 0o600, highWaterMark: 1024 * 1024 });
    const writable = new DigestingStream({ highWaterMark: 1024 * 1024 });
    const written = pipeline(writable, file);
    written.catch(() => undefined);
    const verify = async (expected?: string) => {
      await written;
      const actual = writable.digest();
      if (expected && expected !== actual) {
        await fs.rm(tmp, { force: true });
        throw new DigestMismatchError(expected, actual);
      }
      return actual;
    };
    return {
      writable,
      verify,
      commit: async (expected?: string) => {
        const actual = await verify(expected);
        await fs.rename(tmp, this.pathOf(actual));
        await fsyncDir(this.blobDir);
        return actual;
      },
      abort: async () => {
        writable.destroy();
        await written.catch(() => undefined);
        await fs.rm(tmp, { force: true });
      },
    };
  }

  /** Stores a stream as a blob; with `expected`, a wrong digest stores nothing and throws. */
  async putStream(input: Readable, expected?: string): Promise<{ digest: string; size: number }> {
    const ing = this.ingest();
    try {
      await pipeline(input, ing.writable);
    } catch (err) {
      await ing.abort();
      throw err;
    }
    const digest = await ing.commit(expected);
    return { digest, size: ing.writable.bytes };
  }

  async delete(digest: string): Promise<void> {
    await fs.rm(this.pathOf(digest), { force: true });
  }

  async list(): Promise<string[]> {
    const names = await fs.readdir(this.blobDir);
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }
}
