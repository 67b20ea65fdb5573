/**
 * The image service: Docker's image semantics over the image store and the registry client.
 * The HTTP layer calls it; containers use it through ImageBackend (resolve layers, commit).
 */
import type { Readable } from 'node:stream';
import { credentialsFrom, type AuthConfig } from '../../drivers/registry/auth';
import { Registry } from '../../drivers/registry/client';
import { hostPlatform, parseManifest, type Platform } from '../../drivers/registry/manifest';
import {
  DEFAULT_DOMAIN,
  familiarName,
  familiarString,
  parseDigest,
  parseNormalizedNamed,
  withDefaultTag,
  withDigest,
  withTag,
  type NamedReference,
} from '../../drivers/registry/reference';
import { invalid, notFound, PaddockError } from '../../errors';
import type { EventBus } from '../events';
import type { CommitRequest, ImageBackend, ImageRecord, ImageRuntimeConfig } from '../image-backend';
import { loadImages, saveImages, selectForSave } from './archive';
import { applyChanges } from './changes';
import { mergeCommitConfig } from './commit-config';
import { commitImage, importImage } from './create';
import { ImageDeleter, type DeleteResponseItem } from './delete';
import { danglingFilter, labelsMatch, referenceMatches, untilFilter, validateFilters, type Filters } from './filters';
import { ImageStore, type UsageProbe } from './image-store';
import { discardProgress, type ProgressSink } from './progress';
import { describePullError, imageLabels, pullImage } from './pull';
import { pushImage } from './push';
import type { LoadedImage } from './types';
import { createdSeconds, imageHistory, inspectImage, repoDigests, repoTags, summarizeImage } from './views';

export interface ImageServiceOptions {
  /** Root of the image store (blobs, layers, image metadata). */
  root: string;
  events: EventBus;
  insecureRegistries: string[];
}

export interface PullRequest {
  fromImage: string;
  tag?: string;
  platform?: Platform;
  auth: AuthConfig;
  signal?: AbortSignal;
}

export interface ImportRequest {
  source: Readable;
  origin: string;
  repo?: string;
  tag?: string;
  message?: string;
  changes: string[];
  platform?: Platform;
}

/** What `POST /commit` learns about the container it commits. */
export interface CommitContainerRequest {
  containerId: string;
  containerName?: string;
  containerLabels?: Record<string, string>;
  imageId: string;
  upperDir: string;
  /** The container's config, to fill what the request's config leaves unset. */
  containerConfig: ImageRuntimeConfig;
  /** The config sent in the request body (may be empty). */
  requestConfig: ImageRuntimeConfig;
  changes: string[];
  repo?: string;
  tag?: string;
  author?: string;
  comment?: string;
}

export class ImageService implements ImageBackend {
  private probe: UsageProbe = async () => [];

  private constructor(
    readonly opts: ImageServiceOptions,
    readonly store: ImageStore,
  ) {}

  static async open(opts: ImageServiceOptions): Promise<ImageService> {
    const store = await ImageStore.open(opts.root);
    const service = new ImageService(opts, store);
    // Containers are not known yet: collect only what no image, hidden or not, needs.
    await store.lock(() => store.collectGarbage(undefined));
    return service;
  }

  // ------------------------------------------------------------------ ImageBackend

  async resolve(ref: string): Promise<ImageRecord> {
    // Containers name their image by full ID; an image removed with force while they exist is
    // still theirs to use.
    const hidden = /^sha256:[a-f0-9]{64}$/.test(ref) ? this.store.getIncludingHidden(ref) : undefined;
    const img = hidden ?? this.store.lookup(ref);
    return this.record(img);
  }

  async commit(req: CommitRequest): Promise<ImageRecord> {
    const parent = this.store.getIncludingHidden(req.parent.id);
    if (!parent) throw notFound(`No such image: ${req.parent.id}`);
    const img = await commitImage(this.store, this.opts.events, {
      parent,
      changesDir: req.changesDir,
      config: req.config,
      containerId: req.containerId,
      author: req.author,
      comment: req.comment,
      reference: req.reference ? withDefaultTag(parseNormalizedNamed(req.reference)) : undefined,
    });
    return this.record(img);
  }

  async count(): Promise<number> {
    return this.store.visible().length;
  }

  setUsageProbe(probe: UsageProbe): void {
    this.probe = probe;
  }

  private record(img: LoadedImage): ImageRecord {
    const { config, stored } = img;
    return {
      id: stored.id,
      repoTags: repoTags(this.store, stored.id),
      repoDigests: repoDigests(this.store, stored.id),
      created: config.created ?? '',
      architecture: config.architecture,
      os: config.os,
      size: this.store.imageSize(config),
      config: config.config ?? {},
      layerDirs: this.store.layerDirs(config),
    };
  }

  // ------------------------------------------------------------------ queries

  async list(opts: { all: boolean; filters: Filters; apiVersion: string }): Promise<Array<Record<string, unknown>>> {
    const { store } = this;
    validateFilters(opts.filters, 'list');
    const dangling = danglingFilter(opts.filters);
    const until = untilFilter(opts.filters);
    const beforeImages = (opts.filters.before ?? []).map((n) => store.lookup(n));
    const sinceImages = (opts.filters.since ?? []).map((n) => store.lookup(n));
    const references = opts.filters.reference ?? [];
    const out: Array<{ created: number; summary: Record<string, unknown> }> = [];
    // Newest first, by the full creation time (ties in the same second keep a stable order).
    const createdMs = (i: LoadedImage) => Date.parse(i.config.created ?? '') || 0;
    for (const img of store.visible()) {
      const created = createdSeconds(img.config);
      if (beforeImages.some((b) => createdMs(img) >= createdMs(b))) continue;
      if (sinceImages.some((s) => createdMs(img) <= createdMs(s))) continue;
      if (until !== undefined && created * 1e9 >= until) continue;
      if (!labelsMatch(img.config.config?.Labels, opts.filters.label)) continue;
      let refs = store.refs.referencesTo(img.stored.id);
      if (references.length) {
        refs = refs.filter((r) => references.some((p) => referenceMatches(p, r)));
        if (refs.length === 0) continue;
      }
      const tags = refs.filter((r) => r.tag).map(familiarString);
      const digests = refs.filter((r) => r.digest).map(familiarString);
      const isDangling = tags.length === 0;
      if (dangling === true && !isDangling) continue;
      if (dangling === false && isDangling) continue;
      if (isDangling && !opts.all && store.children(img.stored.id).length > 0) continue; // an intermediate image
      const users = await this.probe(img.stored.id);
      out.push({ created: createdMs(img) || created * 1000, summary: summarizeImage(store, img, opts.apiVersion, { tags, digests, containers: users.length }) });
    }
    out.sort((a, b) => b.created - a.created);
    return out.map((o) => o.summary);
  }

  inspect(name: string, apiVersion: string): Record<string, unknown> {
    return inspectImage(this.store, this.store.lookup(name), apiVersion);
  }

  history(name: string): Array<Record<string, unknown>> {
    return imageHistory(this.store, this.store.lookup(name));
  }

  // ------------------------------------------------------------------ references

  async tag(source: string, repo: string | null, tag: string | null): Promise<void> {
    if (!repo) throw invalid('invalid reference format');
    const named = parseNormalizedNamed(repo);
    if (named.digest) throw invalid('cannot import digest reference');
    if (familiarName(named) === 'sha256') throw invalid('refusing to create an ambiguous tag using digest algorithm as name');
    const ref = tag ? withTag(named, tag) : withDefaultTag(named);
    const img = this.store.lookup(source);
    await this.store.lock(async () => {
      await this.store.refs.set(ref, img.stored.id);
      await this.store.updateImage(img, { lastTagTime: new Date().toISOString() });
    });
    this.opts.events.publish('image', 'tag', img.stored.id, { ...imageLabels(img.config), name: familiarString(ref) });
  }

  async remove(name: string, opts: { force: boolean; noprune: boolean }): Promise<DeleteResponseItem[]> {
    return this.store.lock(() => new ImageDeleter(this.store, this.opts.events, this.probe).delete(name, opts.force, !opts.noprune));
  }

  async prune(filters: Filters): Promise<{ ImagesDeleted: DeleteResponseItem[] | null; SpaceReclaimed: number }> {
    validateFilters(filters, 'prune');
    const danglingOnly = danglingFilter(filters) ?? true;
    const until = untilFilter(filters);
    return this.store.lock(async () => {
      const deleter = new ImageDeleter(this.store, this.opts.events, this.probe);
      const deleted: DeleteResponseItem[] = [];
      const sizeBefore = this.diskUsage();
      for (const img of this.store.visible()) {
        if (!this.store.get(img.stored.id)) continue; // removed as a parent meanwhile
        const tagged = this.store.refs.referencesTo(img.stored.id).some((r) => r.tag);
        if (danglingOnly && tagged) continue;
        if (until !== undefined && createdSeconds(img.config) * 1e9 >= until) continue;
        if (!labelsMatch(img.config.config?.Labels, filters.label)) continue;
        if (!labelsMatch(img.config.config?.Labels, filters['label!'], true)) continue;
        deleted.push(...(await deleter.pruneImage(img.stored.id)));
      }
      // Also frees images removed with force whose containers are gone since.
      await this.store.collectGarbage(this.probe);
      const reclaimed = Math.max(0, sizeBefore - this.diskUsage());
      this.opts.events.publish('image', 'prune', '', { reclaimed: String(reclaimed) });
      return { ImagesDeleted: deleted.length ? deleted : null, SpaceReclaimed: reclaimed };
    });
  }

  private diskUsage(): number {
    return this.store.layers.list().reduce((n, l) => n + l.size, 0);
  }

  // ------------------------------------------------------------------ registry

  /** `POST /images/create?fromImage=`: parses as dockerd does, then pulls. */
  async pull(req: PullRequest, progress: ProgressSink): Promise<void> {
    let ref = parseNormalizedNamed(req.fromImage.replace(/:$/, ''));
    if (req.tag) {
      let digest: string | undefined;
      try {
        digest = parseDigest(req.tag);
      } catch {
        digest = undefined;
      }
      ref = digest ? withDigest(ref, digest) : withTag(ref, req.tag);
    }
    if (ref.path === 'library/scratch' && ref.domain === DEFAULT_DOMAIN) throw new PaddockError('forbidden', "'scratch' is a reserved name");
    await pullImage(
      { store: this.store, events: this.opts.events, insecureRegistries: this.opts.insecureRegistries },
      { ref, platform: req.platform, credentials: credentialsFrom(req.auth), progress, signal: req.signal },
    );
  }

  async push(name: string, tag: string | null, auth: AuthConfig, progress: ProgressSink): Promise<void> {
    let ref = parseNormalizedNamed(name);
    if (tag) ref = withTag({ domain: ref.domain, path: ref.path }, tag);
    if (ref.digest) ref = { domain: ref.domain, path: ref.path };
    await pushImage(
      { store: this.store, events: this.opts.events, insecureRegistries: this.opts.insecureRegistries },
      { ref, credentials: credentialsFrom(auth), progress },
    );
  }

  /** `GET /distribution/{name}/json`: what the registry says the reference points at. */
  async distributionInspect(name: string, auth: AuthConfig): Promise<Record<string, unknown>> {
    const ref = withDefaultTag(parseNormalizedNamed(name));
    const repo = new Registry(ref.domain, { insecureRegistries: this.opts.insecureRegistries }).repository(ref.path, credentialsFrom(auth), ['pull']);
    const top = await repo.getManifest(ref.digest ?? ref.tag!).catch((err) => {
      throw describePullError(err, ref);
    });
    const parsed = parseManifest(top.raw, top.mediaType);
    const mediaType = top.mediaType || (parsed.kind === 'list' ? parsed.list.mediaType : parsed.manifest.mediaType) || '';
    let platforms: Array<Record<string, unknown>>;
    if (parsed.kind === 'list') {
      platforms = parsed.list.manifests.filter((m) => m.platform).map((m) => ({ ...m.platform }));
    } else {
      const config = JSON.parse((await repo.getBlob(parsed.manifest.config.digest)).toString('utf8'));
      platforms = [
        {
          architecture: config.architecture,
          os: config.os,
          ...(config.variant ? { variant: config.variant } : {}),
          ...(config['os.version'] ? { 'os.version': config['os.version'] } : {}),
        },
      ];
    }
    return {
      Descriptor: { mediaType, digest: top.digest, size: top.raw.length },
      Platforms: platforms,
    };
  }

  /** `POST /auth`: checks credentials against the registry as `docker login` does. */
  async login(auth: AuthConfig): Promise<{ Status: string; IdentityToken?: string }> {
    const domain = registryDomainOf(auth.serveraddress);
    const registry = new Registry(domain, { insecureRegistries: this.opts.insecureRegistries });
    const { identityToken } = await registry.login(credentialsFrom(auth));
    return { IdentityToken: identityToken ?? '', Status: 'Login Succeeded' };
  }

  // ------------------------------------------------------------------ archives

  /** Resolves names first (so unknown ones fail before any byte is sent), then streams. */
  save(names: string[]): Readable {
    if (names.length === 0) throw invalid('no image names given');
    const selection = selectForSave(this.store, names);
    return saveImages(this.store, selection, this.opts.events);
  }

  load(input: Readable, quiet: boolean, progress: ProgressSink): Promise<void> {
    return loadImages(this.store, input, this.opts.events, { quiet, progress });
  }

  async import(req: ImportRequest, progress: ProgressSink = discardProgress): Promise<string> {
    let reference: NamedReference | undefined;
    if (req.repo) {
      const named = parseNormalizedNamed(req.repo);
      if (named.digest) throw invalid('cannot import digest reference');
      reference = req.tag ? withTag(named, req.tag) : withDefaultTag(named);
    }
    const img = await importImage(this.store, this.opts.events, {
      source: req.source,
      origin: req.origin,
      reference,
      message: req.message,
      changes: req.changes,
      platform: req.platform ?? hostPlatform(),
    }).catch((err: unknown) => {
      // A tarball that ends early or is not a tar is the client's error (as for load), not ours.
      if (err instanceof PaddockError) throw err;
      throw invalid(`invalid tar archive: ${(err as Error).message}`);
    });
    progress.write({ status: img.stored.id });
    return img.stored.id;
  }

  /** `POST /commit` after the HTTP layer found the container. Returns the new image ID. */
  async commitContainer(req: CommitContainerRequest): Promise<string> {
    const parent = this.store.getIncludingHidden(req.imageId);
    if (!parent) throw notFound(`No such image: ${req.imageId}`);
    const config = mergeCommitConfig(applyChanges(req.requestConfig, req.changes), req.containerConfig);
    let reference: NamedReference | undefined;
    if (req.repo) {
      const named = parseNormalizedNamed(req.repo);
      if (named.digest) throw invalid('cannot commit to a digest reference');
      reference = req.tag ? withTag(named, req.tag) : withDefaultTag(named);
    }
    const img = await commitImage(this.store, this.opts.events, {
      parent,
      changesDir: req.upperDir,
      config,
      containerId: req.containerId,
      containerConfig: req.containerConfig as Record<string, unknown>,
      author: req.author,
      comment: req.comment,
      reference,
    });
    // dockerd reports a commit as an event of the container.
    this.opts.events.publish('container', 'commit', req.containerId, {
      ...(req.containerLabels ?? {}),
      comment: req.comment ?? '',
      imageID: img.stored.id,
      imageRef: reference ? familiarString(reference) : '',
      ...(req.containerName ? { name: req.containerName } : {}),
    });
    return img.stored.id;
  }
}

/** `docker login` server addresses: "host[:port]", URLs, or Docker Hub's legacy index URL. */
export function registryDomainOf(serverAddress: string | undefined): string {
  if (!serverAddress) return DEFAULT_DOMAIN;
  let s = serverAddress.trim().replace(/^https?:\/\//, '');
  s = s.split('/')[0];
  if (s === '' || s === 'index.docker.io' || s === 'registry-1.docker.io' || s === 'docker.io') return DEFAULT_DOMAIN;
  return s;
}
