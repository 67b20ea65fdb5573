/**
 * `docker pull`: resolve a tag (or digest) to a manifest, pick the platform from a list, fetch
 * and verify the config, download missing layers in parallel (three at a time, as dockerd),
 * unpacking each while it downloads, then publish the image and its references in one step.
 * Progress is reported in dockerd's words so the CLI renders it the same way.
 */
import type { Credentials } from '../../drivers/registry/auth';
import { Registry, RegistryResponseError, type RegistryRepository } from '../../drivers/registry/client';
import {
  formatPlatform,
  hostPlatform,
  parseManifest,
  selectPlatform,
  type ImageManifest,
  type Platform,
} from '../../drivers/registry/manifest';
import {
  familiarName,
  familiarString,
  isNameOnly,
  withTag,
  type NamedReference,
} from '../../drivers/registry/reference';
import { internal, invalid, notFound, PaddockError } from '../../errors';
import type { EventBus } from '../events';
import type { ImageStore } from './image-store';
import { ingestLayer } from './layer-ingest';
import { LayerProgress, shortId, type ProgressSink } from './progress';
import type { ImageConfigFile } from './types';

const MAX_CONCURRENT_DOWNLOADS = 3;

export interface PullOptions {
  ref: NamedReference;
  platform?: Platform;
  credentials: Credentials;
  progress: ProgressSink;
  /** Aborted when the client goes away: downloads stop and nothing is stored (as dockerd). */
  signal?: AbortSignal;
}

export interface PullDeps {
  store: ImageStore;
  events: EventBus;
  insecureRegistries: string[];
}

export async function pullImage(deps: PullDeps, opts: PullOptions): Promise<void> {
  const { ref } = opts;
  const registry = new Registry(ref.domain, { insecureRegistries: deps.insecureRegistries });
  const repo = registry.repository(ref.path, opts.credentials, ['pull'], opts.signal);
  if (isNameOnly(ref)) {
    // `docker pull -a`: every tag of the repository.
    const tags = await repo.listTags().catch((err) => {
      throw describePullError(err, ref);
    });
    let updated = false;
    for (const tag of tags) updated = (await pullOne(deps, repo, withTag(ref, tag), opts)) || updated;
    opts.progress.write({ status: `Status: ${updated ? 'Downloaded newer image' : 'Image is up to date'} for ${familiarName(ref)}` });
    return;
  }
  const updated = await pullOne(deps, repo, ref, opts);
  opts.progress.write({ status: `Status: ${updated ? 'Downloaded newer image' : 'Image is up to date'} for ${familiarString(ref)}` });
}

/** Pulls one tag or digest; true when a reference now points somewhere new. */
async function pullOne(deps: PullDeps, repo: RegistryRepository, ref: NamedReference, opts: PullOptions): Promise<boolean> {
  const { store } = deps;
  const tagOrDigest = ref.digest ?? ref.tag!;
  const top = await repo.getManifest(tagOrDigest).catch((err) => {
    throw describePullError(err, ref);
  });
  let parsed = parseManifest(top.raw, top.mediaType);
  const manifestDigests = [top.digest];
  if (parsed.kind === 'list') {
    const chosen = selectPlatform(parsed.list, opts.platform ?? hostPlatform());
    const platformManifest = await repo.getManifest(chosen.digest).catch((err) => {
      throw describePullError(err, ref);
    });
    parsed = parseManifest(platformManifest.raw, platformManifest.mediaType);
    if (parsed.kind !== 'image') throw invalid(`manifest list ${top.digest} points at another list`);
    await store.contents.put(platformManifest.raw);
    manifestDigests.push(platformManifest.digest);
  }
  const manifest = parsed.manifest;
  opts.progress.write({ status: `Pulling from ${ref.path}`, id: tagOrDigest });

  const configRaw = await repo.getBlob(manifest.config.digest).catch((err) => {
    throw describePullError(err, ref);
  });
  const config = parseConfig(configRaw, manifest);
  if (opts.platform && !ref.digest && (config.os !== opts.platform.os || config.architecture !== opts.platform.architecture)) {
    throw notFound(
      `image with reference ${familiarString(ref)} was found but does not match the specified platform: wanted ${formatPlatform(opts.platform)}, actual: ${config.os}/${config.architecture}`,
    );
  }

  const diffIds = config.rootfs.diff_ids;
  const leases = [...diffIds, ...manifest.layers.map((l) => l.digest), manifest.config.digest, ...manifestDigests];
  return store.withLease(leases, async () => {
    await downloadLayers(store, repo, manifest, diffIds, opts.progress, opts.signal);
    throwIfAborted(opts.signal);
    await store.contents.put(top.raw);
    const wasPointing = store.refs.get(ref);
    const image = await store.lock(async () => {
      const img = await store.addImage(configRaw, { manifests: manifestDigests });
      await store.refs.set(ref, img.stored.id);
      if (ref.tag) await store.refs.set({ domain: ref.domain, path: ref.path, digest: top.digest }, img.stored.id);
      await store.markReady(img);
      return img;
    });
    opts.progress.write({ status: `Digest: ${top.digest}` });
    deps.events.publish('image', 'pull', familiarString(ref), { ...imageLabels(image.config), name: familiarName(ref) });
    return wasPointing !== image.stored.id;
  });
}

async function downloadLayers(
  store: ImageStore,
  repo: RegistryRepository,
  manifest: ImageManifest,
  diffIds: string[],
  sink: ProgressSink,
  signal?: AbortSignal,
): Promise<void> {
  const todo: Array<{ index: number; progress: LayerProgress }> = [];
  const announced = new Set<string>();
  manifest.layers.forEach((layer, index) => {
    const progress = new LayerProgress(sink, shortId(layer.digest));
    if (store.layers.get(diffIds[index])) {
      if (!announced.has(layer.digest)) progress.status('Already exists');
    } else if (!announced.has(layer.digest)) {
      progress.status('Pulling fs layer');
      todo.push({ index, progress });
    }
    announced.add(layer.digest);
  });
  todo.slice(MAX_CONCURRENT_DOWNLOADS).forEach((t) => t.progress.status('Waiting'));

  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < todo.length && !failure) {
      const { index, progress } = todo[next++];
      try {
        throwIfAborted(signal);
        await downloadLayer(store, repo, manifest.layers[index], diffIds[index], progress, signal);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(MAX_CONCURRENT_DOWNLOADS, todo.length) }, worker));
  if (failure) throw failure;
}

async function downloadLayer(
  store: ImageStore,
  repo: RegistryRepository,
  layer: ImageManifest['layers'][number],
  diffId: string,
  progress: LayerProgress,
  signal?: AbortSignal,
): Promise<void> {
  if (store.layers.get(diffId)) {
    progress.status('Already exists');
    return;
  }
  const inFlight = store.layersInFlight.get(diffId);
  if (inFlight) {
    // Another pull is fetching this very layer: wait for it rather than download it twice.
    await inFlight.catch(() => undefined);
    if (store.layers.get(diffId)) {
      progress.status('Download complete');
      progress.status('Pull complete');
      return;
    }
  }
  const download = fetchLayer(store, repo, layer, diffId, progress, signal);
  store.layersInFlight.set(diffId, download);
  try {
    await download;
  } finally {
    if (store.layersInFlight.get(diffId) === download) store.layersInFlight.delete(diffId);
  }
}

async function fetchLayer(
  store: ImageStore,
  repo: RegistryRepository,
  layer: ImageManifest['layers'][number],
  diffId: string,
  progress: LayerProgress,
  signal?: AbortSignal,
): Promise<void> {
  if (layer.urls?.length) throw invalid(`foreign layer ${layer.digest} (from ${layer.urls[0]}) is not supported`);
  const { stream, size } = await repo.openBlob(layer.digest);
  const abort = () => stream.destroy(new PaddockError('internal', 'context canceled'));
  signal?.addEventListener('abort', abort, { once: true });
  if (signal?.aborted) abort();
  const total = size ?? layer.size;
  await ingestLayer(store, stream, {
    mediaType: layer.mediaType,
    expectedDigest: layer.digest,
    expectedDiffId: diffId,
    source: `${repo.registry.domain}/${repo.path}`,
    onBytes: (n) => progress.update('Downloading', n, total),
    onDownloaded: () => {
      progress.update('Downloading', total, total, true);
      progress.status('Verifying Checksum');
      progress.status('Download complete');
      progress.update('Extracting', total, total, true);
    },
  }).finally(() => signal?.removeEventListener('abort', abort));
  progress.status('Pull complete');
}

function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new PaddockError('internal', 'context canceled');
}

function parseConfig(raw: Buffer, manifest: ImageManifest): ImageConfigFile {
  let config: ImageConfigFile;
  try {
    config = JSON.parse(raw.toString('utf8'));
  } catch {
    throw invalid(`image config ${manifest.config.digest} is not valid JSON`);
  }
  if (!config.rootfs || !Array.isArray(config.rootfs.diff_ids)) throw invalid(`image config ${manifest.config.digest} has no rootfs`);
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw invalid(`image config has ${config.rootfs.diff_ids.length} layers, its manifest ${manifest.layers.length}`);
  }
  if (config.os && config.os !== 'linux') throw invalid(`image operating system "${config.os}" cannot be used on this platform`);
  return config;
}

export function imageLabels(config: ImageConfigFile): Record<string, string> {
  return { ...(config.config?.Labels ?? {}) };
}

/** dockerd's words for registry failures during a pull. */
export function describePullError(err: unknown, ref: NamedReference): Error {
  if (err instanceof RegistryResponseError) {
    const denied = err.codes.some((c) => ['UNAUTHORIZED', 'DENIED', 'NAME_UNKNOWN'].includes(c)) || err.status === 401 || err.status === 403;
    if (denied) {
      return new PaddockError(
        'not-found',
        `pull access denied for ${familiarName(ref)}, repository does not exist or may require 'docker login': ${err.message}`,
      );
    }
    if (err.status === 404 || err.codes.includes('MANIFEST_UNKNOWN')) {
      return notFound(`manifest for ${familiarString(ref)} not found: ${err.message}`);
    }
    return err;
  }
  if (err instanceof PaddockError) return err;
  return internal(String((err as Error)?.message ?? err), err);
}
