/**
 * `docker push`: uploads every layer the registry lacks (as the blob we pulled it as, or
 * gzipped once and remembered), the config, then the manifest: the very manifest we pulled when
 * it still describes the image (so the digest stays the same), else a new Docker v2 schema 2 one.
 */
import { createGzip } from 'node:zlib';
import type { Credentials } from '../../drivers/registry/auth';
import { Registry, RegistryResponseError, type RegistryRepository } from '../../drivers/registry/client';
import { MediaTypes, parseManifest, type Descriptor } from '../../drivers/registry/manifest';
import { familiarName, familiarString, fullName, type NamedReference } from '../../drivers/registry/reference';
import type { LayerBlob } from '../../drivers/storage/layer-store';
import { invalid, notFound, PaddockError } from '../../errors';
import type { EventBus } from '../events';
import type { ImageStore } from './image-store';
import { LayerProgress, shortId, type ProgressSink } from './progress';
import { imageLabels } from './pull';
import type { LoadedImage } from './types';

const MAX_CONCURRENT_UPLOADS = 5;
const GZIP_TYPES = new Set<string>([MediaTypes.dockerLayerGzip, MediaTypes.ociLayerGzip]);

export interface PushOptions {
  /** Repository, with the tag to push (all local tags of the repository when none). */
  ref: NamedReference;
  credentials: Credentials;
  progress: ProgressSink;
}

export interface PushDeps {
  store: ImageStore;
  events: EventBus;
  insecureRegistries: string[];
}

export async function pushImage(deps: PushDeps, opts: PushOptions): Promise<void> {
  const { store } = deps;
  const { ref } = opts;
  opts.progress.write({ status: `The push refers to repository [${fullName(ref)}]` });
  const targets: Array<{ tag: string; image: LoadedImage }> = [];
  if (ref.tag) {
    const id = store.refs.get(ref);
    const image = id ? store.get(id) : undefined;
    if (!image) throw notFound(`tag does not exist: ${familiarString(ref)}`);
    targets.push({ tag: ref.tag, image });
  } else {
    for (const entry of store.refs.byName(ref)) {
      const image = entry.ref.tag ? store.get(entry.id) : undefined;
      if (image) targets.push({ tag: entry.ref.tag!, image });
    }
    targets.sort((a, b) => (a.tag < b.tag ? -1 : 1));
    if (targets.length === 0) throw notFound(`An image does not exist locally with the tag: ${familiarName(ref)}`);
  }
  const registry = new Registry(ref.domain, { insecureRegistries: deps.insecureRegistries });
  const repo = registry.repository(ref.path, opts.credentials, ['pull', 'push']);
  for (const { tag, image } of targets) {
    await store.withLease([image.stored.id], () => pushTag(deps, repo, ref, tag, image, opts.progress));
  }
}

async function pushTag(
  deps: PushDeps,
  repo: RegistryRepository,
  ref: NamedReference,
  tag: string,
  image: LoadedImage,
  sink: ProgressSink,
): Promise<void> {
  const { store } = deps;
  const diffIds = image.config.rootfs.diff_ids;
  // Layers are listed top-most first, as dockerd lists them.
  const order = diffIds.map((d, i) => ({ diffId: d, index: i })).reverse();
  const progress = new Map(order.map(({ diffId }) => [diffId, new LayerProgress(sink, shortId(diffId))]));
  for (const { diffId } of order) progress.get(diffId)!.status('Preparing');
  order.slice(MAX_CONCURRENT_UPLOADS).forEach(({ diffId }) => progress.get(diffId)!.status('Waiting'));

  const pushed: LayerBlob[] = new Array(diffIds.length);
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < order.length && !failure) {
      const { diffId, index } = order[next++];
      try {
        pushed[index] = await pushLayer(store, repo, diffId, progress.get(diffId)!);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(MAX_CONCURRENT_UPLOADS, order.length) }, worker));
  if (failure) throw describePushError(failure, ref);

  try {
    if (!(await repo.hasBlob(image.stored.id))) {
      await repo.uploadBlob(image.stored.id, image.configSize, () => store.contents.open(image.stored.id));
    }
    const { raw, mediaType } = await manifestFor(store, image, pushed);
    const digest = await repo.putManifest(tag, mediaType, raw);
    await store.contents.put(raw);
    await store.lock(async () => {
      if (!image.stored.manifests.includes(digest)) await store.updateImage(image, { manifests: [...image.stored.manifests, digest] });
      await store.refs.set({ domain: ref.domain, path: ref.path, digest }, image.stored.id);
    });
    sink.write({ status: `${tag}: digest: ${digest} size: ${raw.length}` });
    sink.write({ progressDetail: {}, aux: { Tag: tag, Digest: digest, Size: raw.length } });
    deps.events.publish('image', 'push', familiarString({ ...ref, tag }), { ...imageLabels(image.config), name: familiarName(ref) });
  } catch (err) {
    throw describePushError(err, ref);
  }
}

async function pushLayer(store: ImageStore, repo: RegistryRepository, diffId: string, progress: LayerProgress): Promise<LayerBlob> {
  const blob = await compressedBlob(store, diffId);
  if (await repo.hasBlob(blob.digest)) {
    progress.status('Layer already exists');
    return blob;
  }
  const sourcePrefix = `${repo.registry.domain}/`;
  for (const b of store.layers.get(diffId)?.blobs ?? []) {
    if (b.digest !== blob.digest || !b.source?.startsWith(sourcePrefix)) continue;
    const from = b.source.slice(sourcePrefix.length);
    if (from !== repo.path && (await repo.mountBlob(blob.digest, from).catch(() => false))) {
      progress.status(`Mounted from ${from}`);
      return blob;
    }
  }
  let sent = 0;
  await repo.uploadBlob(blob.digest, blob.size, () => {
    sent = 0;
    const stream = store.contents.open(blob.digest);
    stream.on('data', (chunk: Buffer) => {
      sent += chunk.length;
      progress.update('Pushing', sent, blob.size);
    });
    return stream;
  });
  progress.update('Pushing', blob.size, blob.size, true);
  progress.status('Pushed');
  return blob;
}

/** The gzip blob of a layer: the one we pulled, or one made now from the stored tar. */
async function compressedBlob(store: ImageStore, diffId: string): Promise<LayerBlob> {
  const layer = store.layers.get(diffId);
  if (!layer) throw invalid(`layer ${diffId} is missing from the store`);
  for (const b of layer.blobs) {
    if (GZIP_TYPES.has(b.mediaType) && (await store.contents.has(b.digest))) return b;
  }
  const plain = layer.blobs.find((b) => !GZIP_TYPES.has(b.mediaType));
  if (!plain || !(await store.contents.has(plain.digest))) throw invalid(`no stored blob for layer ${diffId}`);
  const gz = createGzip({ level: 6 });
  const source = store.contents.open(plain.digest);
  source.on('error', (err) => gz.destroy(err));
  const { digest, size } = await store.contents.putStream(source.pipe(gz));
  const blob: LayerBlob = { digest, mediaType: MediaTypes.dockerLayerGzip, size };
  await store.layers.addBlob(diffId, blob);
  return blob;
}

/** A stored manifest that still describes exactly these blobs, else a new schema 2 manifest. */
async function manifestFor(store: ImageStore, image: LoadedImage, layers: LayerBlob[]): Promise<{ raw: Buffer; mediaType: string }> {
  for (const digest of [...image.stored.manifests].reverse()) {
    const raw = await store.contents.read(digest).catch(() => undefined);
    if (!raw) continue;
    try {
      const parsed = parseManifest(raw, undefined);
      if (parsed.kind !== 'image') continue;
      const m = parsed.manifest;
      if (m.config.digest === image.stored.id && m.layers.length === layers.length && m.layers.every((l, i) => l.digest === layers[i].digest)) {
        return { raw, mediaType: m.mediaType ?? MediaTypes.ociManifest };
      }
    } catch {
      // not a manifest we can reuse
    }
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.dockerManifest,
    config: { mediaType: MediaTypes.dockerConfig, size: image.configSize, digest: image.stored.id },
    layers: layers.map((l): Descriptor => ({ mediaType: MediaTypes.dockerLayerGzip, size: l.size, digest: l.digest })),
  };
  return { raw: Buffer.from(JSON.stringify(manifest, null, 3)), mediaType: MediaTypes.dockerManifest };
}

/** Registry answers keep their own words ("unauthorized: authentication required"), as dockerd's do. */
function describePushError(err: unknown, _ref: NamedReference): Error {
  if (err instanceof RegistryResponseError || err instanceof PaddockError) return err;
  return new PaddockError('internal', String((err as Error)?.message ?? err));
}
