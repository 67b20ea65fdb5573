/**
 * The image store under the daemon's data root:
 *   blobs/sha256/<hex>        content store (configs, manifests, layer blobs)
 *   layers/<hex>/diff         unpacked layers by diff ID (overlayfs lower dirs)
 *   images/<hex>/image.json   per-image metadata (the ID is the config digest)
 *   repositories.json         tags and digest references
 * Metadata changes are serialised by one lock; downloads and unpacking run outside it and
 * hold leases so that garbage collection never takes what an operation in flight uses.
 * Nothing counts references on disk: collection is mark-and-sweep from the images that exist,
 * so a crash can never leave a count wrong.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { notFound } from '../../errors';
import { familiarString, parseAnyReference, withDefaultTag } from '../../drivers/registry/reference';
import { ContentStore } from '../../drivers/storage/content-store';
import { LayerStore } from '../../drivers/storage/layer-store';
import { ObjectDirectory } from '../../drivers/storage/state-store';
import { logger } from '../../util/log';
import { ReferenceStore } from './references';
import type { ImageConfigFile, LoadedImage, StoredImage } from './types';

const log = logger('image-store');

export type UsageProbe = (imageId: string) => Promise<Array<{ id: string; running: boolean }>>;

const hexOf = (id: string) => id.replace(/^sha256:/, '');

export class ImageStore {
  readonly images = new Map<string, LoadedImage>();
  private readonly records: ObjectDirectory<StoredImage>;
  private readonly leases = new Map<string, number>();
  /** Layers being downloaded, by diff ID: a second pull of the same layer waits for the first. */
  readonly layersInFlight = new Map<string, Promise<unknown>>();
  private queue: Promise<unknown> = Promise.resolve();
  /** An empty directory: the rootfs of an image without layers. */
  readonly emptyLayerDir: string;

  private constructor(
    readonly root: string,
    readonly contents: ContentStore,
    readonly layers: LayerStore,
    readonly refs: ReferenceStore,
  ) {
    this.records = new ObjectDirectory<StoredImage>(path.join(root, 'images'), 'image.json');
    this.emptyLayerDir = path.join(root, 'empty');
  }

  static async open(root: string): Promise<ImageStore> {
    await fs.mkdir(root, { recursive: true, mode: 0o700 });
    const [contents, layers, refs] = await Promise.all([
      ContentStore.open(root),
      LayerStore.open(path.join(root, 'layers')),
      ReferenceStore.open(root),
    ]);
    const store = new ImageStore(root, contents, layers, refs);
    await fs.mkdir(store.emptyLayerDir, { recursive: true, mode: 0o755 });
    await store.records.sweep();
    for (const hex of await store.records.ids()) {
      const stored = await store.records.read(hex);
      if (!stored) continue;
      try {
        const raw = await contents.read(stored.id);
        store.images.set(stored.id, { stored, config: JSON.parse(raw.toString('utf8')), configSize: raw.length });
      } catch (err) {
        log.warn('dropping image whose config is unreadable', { id: stored.id, error: String(err) });
        await store.records.remove(hex);
      }
    }
    await store.recoverPending();
    return store;
  }

  /** Runs metadata changes one at a time. */
  lock<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Keeps blobs and layers (by digest or diff ID) from collection while `fn` runs. */
  async withLease<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    for (const k of keys) this.leases.set(k, (this.leases.get(k) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      for (const k of keys) {
        const n = (this.leases.get(k) ?? 1) - 1;
        if (n <= 0) this.leases.delete(k);
        else this.leases.set(k, n);
      }
    }
  }

  lease(key: string): () => void {
    this.leases.set(key, (this.leases.get(key) ?? 0) + 1);
    return () => {
      const n = (this.leases.get(key) ?? 1) - 1;
      if (n <= 0) this.leases.delete(key);
      else this.leases.set(key, n);
    };
  }

  visible(): LoadedImage[] {
    return [...this.images.values()].filter((i) => !i.stored.deleted && i.stored.state === 'ready');
  }

  get(id: string): LoadedImage | undefined {
    const img = this.images.get(id);
    return img && !img.stored.deleted && img.stored.state === 'ready' ? img : undefined;
  }

  /** Any stored image by full ID, hidden ones (deleted but used) included. */
  getIncludingHidden(id: string): LoadedImage | undefined {
    return this.images.get(id);
  }

  /** dockerd's GetImage: reference, then full or short ID; NotFound in dockerd's words. */
  lookup(refOrId: string): LoadedImage {
    const parsed = parseAnyReference(refOrId);
    if (parsed.kind === 'digest') {
      const img = this.get(parsed.digest);
      if (img) return img;
      throw notFound(`No such image: ${parsed.digest}`);
    }
    const id = this.refs.get(parsed.ref);
    if (id) {
      const img = this.get(id);
      if (img) return img;
    }
    const byId = this.searchId(refOrId);
    if (byId) return byId;
    throw notFound(`No such image: ${familiarString(withDefaultTag(parsed.ref))}`);
  }

  /** A unique ID prefix (with or without "sha256:"); undefined when none or ambiguous. */
  searchId(term: string): LoadedImage | undefined {
    const hex = term.replace(/^sha256:/, '');
    if (!/^[a-f0-9]+$/.test(hex)) return undefined;
    const hits = this.visible().filter((i) => hexOf(i.stored.id).startsWith(hex));
    return hits.length === 1 ? hits[0] : undefined;
  }

  /** Layer directories of an image as overlayfs lower dirs (short paths), top-most first. */
  layerDirs(config: ImageConfigFile): string[] {
    const ids = config.rootfs?.diff_ids ?? [];
    if (ids.length === 0) return [this.emptyLayerDir];
    return [...ids].reverse().map((d) => this.layers.mountDir(d));
  }

  /** The same directories at their full paths (for inspect's GraphDriver). */
  layerDiffDirs(config: ImageConfigFile): string[] {
    const ids = config.rootfs?.diff_ids ?? [];
    if (ids.length === 0) return [this.emptyLayerDir];
    return [...ids].reverse().map((d) => this.layers.diffDir(d));
  }

  imageSize(config: ImageConfigFile): number {
    return (config.rootfs?.diff_ids ?? []).reduce((n, d) => n + (this.layers.get(d)?.size ?? 0), 0);
  }

  /**
   * Stores an image's config (its ID is the config's digest). New images start 'pending';
   * an existing one is returned as it is (re-pulls and re-loads are no-ops).
   */
  async addImage(configRaw: Buffer, opts: { parent?: string; manifests?: string[] } = {}): Promise<LoadedImage> {
    const id = await this.contents.put(configRaw);
    const existing = this.images.get(id);
    if (existing) {
      const manifests = [...new Set([...existing.stored.manifests, ...(opts.manifests ?? [])])];
      if (existing.stored.deleted || manifests.length !== existing.stored.manifests.length) {
        const stored: StoredImage = { ...existing.stored, manifests, deleted: undefined, state: existing.stored.deleted ? 'pending' : existing.stored.state };
        await this.records.write(hexOf(id), stored);
        existing.stored = stored;
      }
      return existing;
    }
    const stored: StoredImage = {
      id,
      ...(opts.parent ? { parent: opts.parent } : {}),
      manifests: opts.manifests ?? [],
      added: new Date().toISOString(),
      state: 'pending',
    };
    await this.records.create(hexOf(id), stored);
    const img: LoadedImage = { stored, config: JSON.parse(configRaw.toString('utf8')), configSize: configRaw.length };
    this.images.set(id, img);
    return img;
  }

  async updateImage(img: LoadedImage, change: Partial<StoredImage>): Promise<void> {
    const stored = { ...img.stored, ...change };
    await this.records.write(hexOf(img.stored.id), stored);
    img.stored = stored;
  }

  async markReady(img: LoadedImage): Promise<void> {
    if (img.stored.state !== 'ready') await this.updateImage(img, { state: 'ready' });
  }

  async removeImageRecord(id: string): Promise<void> {
    this.images.delete(id);
    await this.records.remove(hexOf(id));
  }

  children(id: string): LoadedImage[] {
    return [...this.images.values()].filter((i) => i.stored.parent === id && !i.stored.deleted);
  }

  /** Pending images from a crash: kept if something references them, else removed. */
  private async recoverPending(): Promise<void> {
    for (const img of [...this.images.values()]) {
      if (img.stored.state !== 'pending') continue;
      if (this.refs.referencesTo(img.stored.id).length > 0) await this.markReady(img);
      else await this.removeImageRecord(img.stored.id);
    }
  }

  /**
   * Mark and sweep: layers and blobs that no image (hidden ones still used by containers
   * included) and no operation in flight needs are deleted. Returns the removed layers' diff IDs.
   * Call under the lock.
   */
  async collectGarbage(probe: UsageProbe | undefined): Promise<string[]> {
    // Without a probe (at start, before containers are known) hidden images are kept.
    for (const img of [...this.images.values()]) {
      if (probe && img.stored.deleted && (await probe(img.stored.id)).length === 0) await this.removeImageRecord(img.stored.id);
    }
    const liveLayers = new Set<string>(this.leases.keys());
    const liveBlobs = new Set<string>(this.leases.keys());
    for (const img of this.images.values()) {
      liveBlobs.add(img.stored.id);
      for (const m of img.stored.manifests) liveBlobs.add(m);
      for (const d of img.config.rootfs?.diff_ids ?? []) liveLayers.add(d);
    }
    const removed: string[] = [];
    for (const layer of this.layers.list()) {
      if (liveLayers.has(layer.diffId)) {
        for (const b of layer.blobs) liveBlobs.add(b.digest);
        continue;
      }
      await this.layers.remove(layer.diffId);
      removed.push(layer.diffId);
    }
    for (const digest of await this.contents.list()) {
      if (!liveBlobs.has(digest)) await this.contents.delete(digest);
    }
    return removed;
  }
}
