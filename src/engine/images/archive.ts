/**
 * `docker save` and `docker load`. Save writes what dockerd 25+ writes: an OCI image layout
 * (oci-layout, index.json, blobs/sha256/...) plus the docker-compatible manifest.json and
 * repositories; layers are the exact uncompressed tars their diff IDs name. Load reads that,
 * the older `<id>/layer.tar` form (symlinked layers included), and plain OCI layouts; every
 * layer is checked against the diff ID its config promises.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream, existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { hostPlatform, MediaTypes, parseManifest, selectPlatform } from '../../drivers/registry/manifest';
import {
  familiarName,
  familiarString,
  parseAnyReference,
  parseNormalizedNamed,
  withDefaultTag,
  type NamedReference,
} from '../../drivers/registry/reference';
import { decompressing, detectCompression } from '../../drivers/storage/digest-stream';
import { layerRelativePath } from '../../drivers/storage/layer-unpack';
import { invalid } from '../../errors';
import type { EventBus } from '../events';
import type { ImageStore } from './image-store';
import { ingestLayer } from './layer-ingest';
import { shortId, type ProgressSink } from './progress';
import type { ImageConfigFile, LoadedImage } from './types';

export interface SaveSelection {
  image: LoadedImage;
  tags: NamedReference[];
}

/** Resolves `docker save` names as dockerd does: a bare repository name means all its tags. */
export function selectForSave(store: ImageStore, names: string[]): SaveSelection[] {
  const byId = new Map<string, SaveSelection>();
  const add = (image: LoadedImage, tag?: NamedReference) => {
    const sel = byId.get(image.stored.id) ?? { image, tags: [] };
    byId.set(image.stored.id, sel);
    if (tag && !sel.tags.some((t) => familiarString(t) === familiarString(tag))) sel.tags.push(tag);
  };
  for (const name of names) {
    const parsed = parseAnyReference(name);
    if (parsed.kind === 'named' && !parsed.ref.tag && !parsed.ref.digest) {
      const entries = store.refs.byName(parsed.ref).filter((e) => e.ref.tag && store.get(e.id));
      if (entries.length) {
        for (const e of entries) add(store.get(e.id)!, e.ref);
        continue;
      }
    }
    const image = store.lookup(name);
    if (parsed.kind === 'named' && store.refs.get(withDefaultTag(parsed.ref)) === image.stored.id && !parsed.ref.digest) {
      add(image, withDefaultTag(parsed.ref));
    } else add(image);
  }
  return [...byId.values()];
}

export function saveImages(store: ImageStore, selection: SaveSelection[], events: EventBus): Readable {
  const pack = tar.pack();
  const epoch = new Date(0);
  const entry = (name: string, body: Buffer | Readable, size?: number) =>
    new Promise<void>((resolve, reject) => {
      const header = { name, mode: 0o644, mtime: epoch, size: Buffer.isBuffer(body) ? body.length : size };
      if (Buffer.isBuffer(body)) {
        pack.entry(header, body, (err) => (err ? reject(err) : resolve()));
        return;
      }
      const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
      body.on('error', reject);
      body.pipe(sink as unknown as NodeJS.WritableStream);
    });
  const dir = (name: string) =>
    new Promise<void>((resolve, reject) =>
      pack.entry({ name, type: 'directory', mode: 0o755, mtime: epoch }, (err) => (err ? reject(err) : resolve())),
    );

  const releases = selection.flatMap((s) => [s.image.stored.id, ...s.image.config.rootfs.diff_ids].map((k) => store.lease(k)));
  const work = (async () => {
    await dir('blobs/');
    await dir('blobs/sha256/');
    const written = new Set<string>();
    const manifestJson: unknown[] = [];
    const indexEntries: unknown[] = [];
    const repositories: Record<string, Record<string, string>> = {};
    for (const { image, tags } of selection) {
      const diffIds = image.config.rootfs.diff_ids;
      if (diffIds.length === 0) throw invalid('empty export - not implemented');
      const layerDescriptors = [];
      for (const diffId of diffIds) {
        const layer = store.layers.get(diffId);
        if (!layer) throw invalid(`layer ${diffId} is missing from the store`);
        if (!written.has(diffId)) {
          const blob = layer.blobs[0];
          await entry(`blobs/sha256/${hex(diffId)}`, decompressing(store.contents.open(blob.digest)), layer.tarSize);
          written.add(diffId);
        }
        layerDescriptors.push({ mediaType: MediaTypes.ociLayer, digest: diffId, size: layer.tarSize });
      }
      if (!written.has(image.stored.id)) {
        await entry(`blobs/sha256/${hex(image.stored.id)}`, await store.contents.read(image.stored.id));
        written.add(image.stored.id);
      }
      const platform = { architecture: image.config.architecture, os: image.config.os, ...(image.config.variant ? { variant: image.config.variant } : {}) };
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaTypes.ociManifest,
          config: { mediaType: MediaTypes.ociConfig, digest: image.stored.id, size: image.configSize },
          layers: layerDescriptors,
        }),
      );
      const manifestDigest = 'sha256:' + createHash('sha256').update(manifest).digest('hex');
      if (!written.has(manifestDigest)) {
        await entry(`blobs/sha256/${hex(manifestDigest)}`, manifest);
        written.add(manifestDigest);
      }
      for (const t of tags) {
        indexEntries.push({
          mediaType: MediaTypes.ociManifest,
          digest: manifestDigest,
          size: manifest.length,
          annotations: { 'io.containerd.image.name': `${t.domain}/${t.path}:${t.tag}`, 'org.opencontainers.image.ref.name': t.tag },
          platform,
        });
        (repositories[familiarName(t)] ??= {})[t.tag!] = hex(diffIds[diffIds.length - 1]);
      }
      if (tags.length === 0) indexEntries.push({ mediaType: MediaTypes.ociManifest, digest: manifestDigest, size: manifest.length, platform });
      manifestJson.push({
        Config: `blobs/sha256/${hex(image.stored.id)}`,
        RepoTags: tags.length ? tags.map(familiarString) : null,
        Layers: diffIds.map((d) => `blobs/sha256/${hex(d)}`),
      });
      events.publish('image', 'save', image.stored.id, { name: image.stored.id });
    }
    await entry('index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: indexEntries }) + '\n'));
    await entry('manifest.json', Buffer.from(JSON.stringify(manifestJson) + '\n'));
    await entry('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
    if (Object.keys(repositories).length) await entry('repositories', Buffer.from(JSON.stringify(repositories) + '\n'));
    pack.finalize();
  })();
  work.catch((err) => pack.destroy(err)).finally(() => releases.forEach((r) => r()));
  return Readable.from(pack as AsyncIterable<Buffer>);
}

const hex = (digest: string) => digest.replace(/^sha256:/, '');

// ------------------------------------------------------------------------------------- load

interface ExtractedArchive {
  dir: string;
  /** Lexically resolved symlinks inside the archive: member path → target path. */
  links: Map<string, string>;
}

export interface LoadOptions {
  quiet: boolean;
  progress: ProgressSink;
}

export async function loadImages(store: ImageStore, input: Readable, events: EventBus, opts: LoadOptions): Promise<void> {
  const archive = await extractArchive(store, input);
  try {
    const manifestPath = resolveMember(archive, 'manifest.json');
    let items: Array<{ config: string; repoTags: string[]; layers: string[] }>;
    if (manifestPath) {
      const doc = JSON.parse(await fs.readFile(manifestPath, 'utf8')) as Array<{ Config: string; RepoTags?: string[] | null; Layers: string[] }>;
      if (!Array.isArray(doc)) throw invalid('invalid manifest.json in archive');
      items = doc.map((d) => ({ config: d.Config, repoTags: d.RepoTags ?? [], layers: d.Layers ?? [] }));
    } else if (resolveMember(archive, 'index.json')) {
      items = await ociLayoutItems(archive);
    } else {
      throw invalid('invalid archive: it has neither manifest.json nor index.json (not a docker save or OCI layout tarball)');
    }
    for (const item of items) await loadOne(store, archive, item, events, opts);
  } finally {
    await fs.rm(archive.dir, { recursive: true, force: true });
  }
}

async function loadOne(
  store: ImageStore,
  archive: ExtractedArchive,
  item: { config: string; repoTags: string[]; layers: string[] },
  events: EventBus,
  opts: LoadOptions,
): Promise<void> {
  const configFile = mustResolve(archive, item.config);
  const configRaw = await fs.readFile(configFile);
  const config = JSON.parse(configRaw.toString('utf8')) as ImageConfigFile;
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== item.layers.length) throw invalid(`invalid manifest, layers length mismatch: expected ${diffIds.length}, got ${item.layers.length}`);
  const tags = item.repoTags.map((t) => withDefaultTag(parseNormalizedNamed(t)));
  await store.withLease(diffIds, async () => {
    for (let i = 0; i < diffIds.length; i++) {
      if (store.layers.get(diffIds[i])) continue;
      const file = mustResolve(archive, item.layers[i]);
      const head = Buffer.alloc(4);
      const fh = await fs.open(file, 'r');
      await fh.read(head, 0, 4, 0);
      const size = (await fh.stat()).size;
      await fh.close();
      const compressed = detectCompression(head) === 'gzip';
      const id = shortId(diffIds[i]);
      await ingestLayer(store, createReadStream(file), {
        mediaType: compressed ? MediaTypes.ociLayerGzip : MediaTypes.ociLayer,
        expectedDiffId: diffIds[i],
        onBytes: (n) => {
          if (!opts.quiet) opts.progress.write({ status: 'Loading layer', progressDetail: { current: n, total: size }, id });
        },
      }).catch((err) => {
        throw invalid(`invalid diffID for layer ${i}: ${(err as Error).message}`);
      });
    }
    const messages: string[] = [];
    const image = await store.lock(async () => {
      const img = await store.addImage(configRaw);
      for (const tag of tags) {
        const previous = await store.refs.set(tag, img.stored.id);
        if (previous && store.get(previous)) {
          messages.push(`The image ${familiarString(tag)} already exists, renaming the old one with ID ${previous} to empty string\n`);
        }
      }
      await store.markReady(img);
      return img;
    });
    for (const m of messages) opts.progress.write({ stream: m });
    if (tags.length) for (const t of tags) opts.progress.write({ stream: `Loaded image: ${familiarString(t)}\n` });
    else opts.progress.write({ stream: `Loaded image ID: ${image.stored.id}\n` });
    events.publish('image', 'load', image.stored.id, { ...(image.config.config?.Labels ?? {}), name: image.stored.id });
  });
}

/** Items of a plain OCI layout: index.json → manifests (platform-selected from nested indexes). */
async function ociLayoutItems(archive: ExtractedArchive): Promise<Array<{ config: string; repoTags: string[]; layers: string[] }>> {
  const index = JSON.parse(await fs.readFile(mustResolve(archive, 'index.json'), 'utf8')) as { manifests?: Array<{ digest: string; mediaType?: string; annotations?: Record<string, string> }> };
  const items = [];
  for (const desc of index.manifests ?? []) {
    let raw = await fs.readFile(mustResolve(archive, blobPath(desc.digest)));
    let parsed = parseManifest(raw, desc.mediaType);
    if (parsed.kind === 'list') {
      const chosen = selectPlatform(parsed.list, hostPlatform());
      raw = await fs.readFile(mustResolve(archive, blobPath(chosen.digest)));
      parsed = parseManifest(raw, chosen.mediaType);
      if (parsed.kind !== 'image') throw invalid('nested image indexes are not supported');
    }
    const name = desc.annotations?.['io.containerd.image.name'];
    items.push({
      config: blobPath(parsed.manifest.config.digest),
      repoTags: name ? [familiarString(parseNormalizedNamed(name))] : [],
      layers: parsed.manifest.layers.map((l) => blobPath(l.digest)),
    });
  }
  return items;
}

function blobPath(digest: string): string {
  const [alg, h] = digest.split(':');
  if (!/^[a-z0-9]+$/.test(alg ?? '') || !/^[a-f0-9]+$/.test(h ?? '')) throw invalid(`invalid digest ${digest}`);
  return `blobs/${alg}/${h}`;
}

/**
 * Writes the archive's regular files under a private temp dir. Symlinks are not created: they
 * are remembered and resolved by name, inside the archive only, so nothing from outside it
 * can be read in.
 */
async function extractArchive(store: ImageStore, input: Readable): Promise<ExtractedArchive> {
  const dir = path.join(store.root, `.load-${randomBytes(6).toString('hex')}`);
  await fs.mkdir(dir, { mode: 0o700 });
  const links = new Map<string, string>();
  const extract = tar.extract();
  const feeding = (async () => {
    for await (const chunk of input) {
      if (!extract.write(chunk as Buffer)) await new Promise<void>((r) => extract.once('drain', () => r()));
    }
    (extract as unknown as { end(): void }).end();
  })();
  feeding.catch((err) => extract.destroy(err));
  try {
    for await (const member of extract) {
      const h = member.header;
      const rel = layerRelativePath(h.name);
      if (rel === '' || h.type === 'directory') {
        member.resume();
        continue;
      }
      if (h.type === 'symlink' || h.type === 'link') {
        // Symlinks resolve against their directory, hard links and absolute targets against the archive root.
        const relative = h.type === 'symlink' && !h.linkname.startsWith('/');
        links.set(rel, layerRelativePath(relative ? path.posix.join(path.posix.dirname(rel), h.linkname) : h.linkname));
        member.resume();
        continue;
      }
      if (h.type !== 'file' && h.type !== 'contiguous-file') {
        member.resume();
        continue;
      }
      const file = path.join(dir, rel);
      await fs.mkdir(path.dirname(file), { recursive: true });
      const fh = await fs.open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
      try {
        for await (const chunk of member) await fh.write(chunk as Buffer);
      } finally {
        await fh.close();
      }
    }
    await feeding;
  } catch (err) {
    await fs.rm(dir, { recursive: true, force: true });
    if ((err as Error).message?.includes('outside')) throw invalid(`invalid archive: ${(err as Error).message}`);
    throw invalid(`invalid tar archive: ${(err as Error).message}`);
  }
  return { dir, links };
}

/** The extracted file an archive member names (following the archive's own links), if any. */
function resolveMember(archive: ExtractedArchive, name: string): string | undefined {
  let rel: string;
  try {
    rel = layerRelativePath(name);
  } catch (err) {
    // manifest.json naming "../../etc/passwd": the archive is bad, the daemon is not.
    throw invalid(`invalid archive: ${(err as Error).message}`);
  }
  for (let hops = 0; hops < 40; hops++) {
    const link = archive.links.get(rel);
    if (!link) {
      const direct = path.join(archive.dir, rel);
      return existsSync(direct) ? direct : undefined;
    }
    rel = link;
  }
  return undefined;
}

function mustResolve(archive: ExtractedArchive, name: string): string {
  const p = resolveMember(archive, name);
  if (!p) throw invalid(`invalid archive: cannot resolve ${name}`);
  return p;
}
