/**
 * Images made here rather than pulled: `docker commit` (a container's writable layer becomes a
 * new top layer over its image) and `docker import` (a root filesystem tarball becomes a
 * one-layer image). Both produce a layer tar, store it gzipped, and unpack it like any layer.
 */
import { createGzip } from 'node:zlib';
import type { Readable } from 'node:stream';
import { hostPlatform, MediaTypes, type Platform } from '../../drivers/registry/manifest';
import { familiarString, type NamedReference } from '../../drivers/registry/reference';
import { packLayer } from '../../drivers/storage/layer-pack';
import type { EventBus } from '../events';
import type { ImageRuntimeConfig } from '../image-backend';
import { applyChanges } from './changes';
import type { ImageStore } from './image-store';
import { ingestLayer } from './layer-ingest';
import { imageLabels } from './pull';
import type { HistoryEntry, ImageConfigFile, LoadedImage } from './types';

export const DOCKER_VERSION = '28.0.0-paddock';

export interface CommitInput {
  parent: LoadedImage;
  changesDir: string;
  config: ImageRuntimeConfig;
  containerId: string;
  containerConfig?: Record<string, unknown>;
  author?: string;
  comment?: string;
  reference?: NamedReference;
}

export async function commitImage(store: ImageStore, events: EventBus, input: CommitInput): Promise<LoadedImage> {
  const { parent } = input;
  const packed = packLayer(input.changesDir);
  const gz = createGzip({ level: 6 });
  packed.stream.on('error', (err) => gz.destroy(err));
  const layer = await ingestLayer(store, packed.stream.pipe(gz), { mediaType: MediaTypes.dockerLayerGzip });
  const empty = (await packed.entries) === 0;
  return store.withLease([layer.diffId], async () => {
    const created = new Date().toISOString();
    const history: HistoryEntry = {
      created,
      ...(input.author ? { author: input.author } : {}),
      ...(input.comment ? { comment: input.comment } : {}),
      ...(empty ? { empty_layer: true } : {}),
    };
    const config: ImageConfigFile = {
      architecture: parent.config.architecture,
      ...(parent.config.variant ? { variant: parent.config.variant } : {}),
      os: parent.config.os ?? 'linux',
      created,
      ...(input.author ? { author: input.author } : {}),
      ...(input.comment ? { comment: input.comment } : {}),
      docker_version: DOCKER_VERSION,
      config: input.config,
      container: input.containerId,
      ...(input.containerConfig ? { container_config: input.containerConfig } : {}),
      rootfs: { type: 'layers', diff_ids: empty ? [...parent.config.rootfs.diff_ids] : [...parent.config.rootfs.diff_ids, layer.diffId] },
      history: [...(parent.config.history ?? []), history],
    };
    return publish(store, events, Buffer.from(JSON.stringify(config)), { parent: parent.stored.id, reference: input.reference });
  });
}

export interface ImportInput {
  source: Readable;
  reference?: NamedReference;
  message?: string;
  changes: string[];
  platform?: Platform;
  /** What the history says it was imported from ("-" for the request body, or a URL). */
  origin: string;
}

export async function importImage(store: ImageStore, events: EventBus, input: ImportInput): Promise<LoadedImage> {
  // The blob is stored as uploaded (gzip or plain): its media type is read from its bytes.
  const layer = await ingestLayer(store, input.source, {});
  return store.withLease([layer.diffId], async () => {
    const created = new Date().toISOString();
    const platform = input.platform ?? hostPlatform();
    const config: ImageConfigFile = {
      architecture: platform.architecture,
      ...(platform.variant ? { variant: platform.variant } : {}),
      os: platform.os,
      created,
      ...(input.message ? { comment: input.message } : {}),
      docker_version: DOCKER_VERSION,
      config: applyChanges({}, input.changes),
      rootfs: { type: 'layers', diff_ids: [layer.diffId] },
      history: [{ created, comment: input.message || `Imported from ${input.origin}` }],
    };
    const img = await publish(store, events, Buffer.from(JSON.stringify(config)), { reference: input.reference });
    events.publish('image', 'import', img.stored.id, { ...imageLabels(img.config), name: img.stored.id });
    return img;
  });
}

async function publish(
  store: ImageStore,
  events: EventBus,
  configRaw: Buffer,
  opts: { parent?: string; reference?: NamedReference },
): Promise<LoadedImage> {
  const img = await store.lock(async () => {
    const image = await store.addImage(configRaw, { parent: opts.parent });
    if (opts.reference) {
      await store.refs.set(opts.reference, image.stored.id);
      await store.updateImage(image, { lastTagTime: new Date().toISOString() });
    }
    await store.markReady(image);
    return image;
  });
  if (opts.reference) {
    events.publish('image', 'tag', img.stored.id, { ...imageLabels(img.config), name: familiarString(opts.reference) });
  }
  return img;
}
