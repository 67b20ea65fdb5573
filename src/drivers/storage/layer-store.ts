/**
 * Unpacked layers, one directory per diff ID (`layers/<hex>/diff`), each usable as an overlayfs
 * lower dir on its own: a layer's whiteouts only ever hide what lies below it, so a layer does
 * not depend on its parents and images that share a layer share its directory.
 *
 * A layer is unpacked into a staging directory and renamed into place with its record, so a
 * present layer is always complete. Each record lists the stored blobs (compressed or not)
 * whose decompression is exactly the layer's tar: push and save send those bytes, so digests
 * survive a round trip.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { invalid } from '../../errors';
import { fsyncDir, ObjectDirectory, writeJsonAtomic } from './state-store';

export interface LayerBlob {
  digest: string;
  mediaType: string;
  size: number;
  /** "domain/path" of the repository it was pulled from: a push to that registry can mount it. */
  source?: string;
}

export interface LayerRecord {
  /** sha256 of the uncompressed tar: the image config's rootfs.diff_ids entry. */
  diffId: string;
  /** Bytes of content, as dockerd sizes a layer. */
  size: number;
  /** Bytes of the uncompressed tar (what `docker save` writes for this layer). */
  tarSize: number;
  /** Blobs in the content store that decompress to this layer's tar. */
  blobs: LayerBlob[];
  created: string;
}

export interface StagedLayer {
  /** Unpack the layer here. */
  dir: string;
  commit(record: LayerRecord): Promise<LayerRecord>;
  abort(): Promise<void>;
}

const hexOf = (diffId: string) => {
  const m = /^sha256:([a-f0-9]{64})$/.exec(diffId);
  if (!m) throw invalid(`invalid layer diff ID ${diffId}`);
  return m[1];
};

/** Length of the short link names: 12 hex digits, as short IDs are. */
const LINK_LENGTH = 12;

export class LayerStore {
  private readonly records: ObjectDirectory<LayerRecord>;
  private readonly cache = new Map<string, LayerRecord>();
  /**
   * Short symlinks to the diff dirs (`<root>/../l/<12 hex>`): overlayfs takes all lower dirs in
   * one mount option of at most a page (4 KiB), so short paths mean more layers per image
   * (about 100 instead of 40 with full paths). A layer whose short name is taken uses its
   * full path.
   */
  private readonly linkRoot: string;
  private readonly linked = new Set<string>();

  private constructor(readonly root: string) {
    this.records = new ObjectDirectory<LayerRecord>(root, 'layer.json');
    this.linkRoot = path.join(path.dirname(root), 'l');
  }

  static async open(root: string): Promise<LayerStore> {
    await fs.mkdir(root, { recursive: true, mode: 0o700 });
    const store = new LayerStore(root);
    await fs.mkdir(store.linkRoot, { recursive: true, mode: 0o700 });
    await store.records.sweep();
    for (const hex of await store.records.ids()) {
      const rec = await store.records.read(hex);
      if (rec) store.cache.set(rec.diffId, rec);
      else await fs.rm(path.join(root, hex), { recursive: true, force: true }); // a dir without its record
    }
    for (const name of await fs.readdir(store.linkRoot)) {
      const target = await fs.readlink(path.join(store.linkRoot, name)).catch(() => '');
      const hex = /layers\/([a-f0-9]{64})\/diff$/.exec(target)?.[1];
      if (hex && store.cache.has(`sha256:${hex}`) && name === hex.slice(0, LINK_LENGTH)) store.linked.add(`sha256:${hex}`);
      else await fs.rm(path.join(store.linkRoot, name), { force: true });
    }
    for (const diffId of store.cache.keys()) if (!store.linked.has(diffId)) await store.link(diffId);
    return store;
  }

  /** The unpacked tree of a layer, at its full path. */
  diffDir(diffId: string): string {
    return path.join(this.root, hexOf(diffId), 'diff');
  }

  /** The same tree by its shortest name: what goes into overlayfs' lowerdir. */
  mountDir(diffId: string): string {
    return this.linked.has(diffId) ? path.join(this.linkRoot, hexOf(diffId).slice(0, LINK_LENGTH)) : this.diffDir(diffId);
  }

  private async link(diffId: string): Promise<void> {
    const hex = hexOf(diffId);
    try {
      await fs.symlink(`../${path.basename(this.root)}/${hex}/diff`, path.join(this.linkRoot, hex.slice(0, LINK_LENGTH)));
      this.linked.add(diffId);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }

  get(diffId: string): LayerRecord | undefined {
    return this.cache.get(diffId);
  }

  list(): LayerRecord[] {
    return [...this.cache.values()];
  }

  async stage(): Promise<StagedLayer> {
    const tmp = path.join(this.root, `.staging-${randomBytes(6).toString('hex')}.creating`);
    await fs.mkdir(path.join(tmp, 'diff'), { recursive: true, mode: 0o755 });
    return {
      dir: path.join(tmp, 'diff'),
      commit: async (record) => {
        const existing = this.cache.get(record.diffId);
        if (existing) {
          // Unpacked meanwhile by someone else: keep theirs, remember our blob too.
          await fs.rm(tmp, { recursive: true, force: true });
          for (const b of record.blobs) await this.addBlob(record.diffId, b);
          return this.cache.get(record.diffId)!;
        }
        await writeJsonAtomic(path.join(tmp, 'layer.json'), record);
        await fs.rename(tmp, path.join(this.root, hexOf(record.diffId)));
        await fsyncDir(this.root);
        this.cache.set(record.diffId, record);
        await this.link(record.diffId);
        return record;
      },
      abort: () => fs.rm(tmp, { recursive: true, force: true }),
    };
  }

  /** Remembers one more blob form of a layer (e.g. the gzip made for a push). */
  async addBlob(diffId: string, blob: LayerBlob): Promise<void> {
    const rec = this.cache.get(diffId);
    if (!rec || rec.blobs.some((b) => b.digest === blob.digest)) return;
    const updated = { ...rec, blobs: [...rec.blobs, blob] };
    await this.records.write(hexOf(diffId), updated);
    this.cache.set(diffId, updated);
  }

  async remove(diffId: string): Promise<void> {
    if (this.linked.delete(diffId)) await fs.rm(path.join(this.linkRoot, hexOf(diffId).slice(0, LINK_LENGTH)), { force: true });
    this.cache.delete(diffId);
    await this.records.remove(hexOf(diffId));
  }
}
