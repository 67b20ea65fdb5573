/**
 * Builds container images byte for byte reproducibly (same digests on every machine and run) and
 * pushes them to a registry with the distribution v2 protocol. No docker, no buildkit: layers are
 * tars we write ourselves, manifests and configs are JSON we serialise ourselves.
 *
 * What makes the bytes reproducible:
 * - tar: entries sorted by path (a parent always precedes its children), mtime fixed, uid/gid 0,
 *   uname/gname empty, modes normalised; ustar headers only (tar-stream).
 * - gzip: zlib with the Z_RLE strategy. Node's bundled zlib (Chromium's fork) picks its match-finder
 *   hash by CPU features (crc32c where SSE4.2 or ARMv8 CRC exist, Rabin-Karp otherwise), so the
 *   default strategy compresses differently on different machines. Z_RLE uses no hash chains: its
 *   output here equals stock zlib's (checked against zlib 1.2.13), still compressing ~25 %. The gzip
 *   header has no name, mtime 0 and a fixed OS byte.
 * - JSON: objects are built with a fixed key order and serialised without whitespace.
 */
import { createHash } from 'node:crypto';
import { promises as fs, type Stats } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { pack, type Pack } from 'tar-stream';
import { registryRequest, type HttpResult, type TestRegistry } from './registry';

export const MEDIA_TYPES = {
  docker: {
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    manifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  },
  oci: {
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    index: 'application/vnd.oci.image.index.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  },
} as const;

export type ManifestFormat = 'docker' | 'oci';

/** Every file in every layer, and every `created`, carries this time. */
export const FIXED_TIME = new Date('2024-01-01T00:00:00Z');
export const FIXED_CREATED = '2024-01-01T00:00:00Z';

// ---------------------------------------------------------------------------------------------
// Layers

export type LayerEntry =
  | { path: string; type: 'dir'; mode?: number }
  | { path: string; type: 'file'; mode?: number; content: Buffer | string }
  | { path: string; type: 'symlink'; target: string }
  /** `target` is another entry of the same layer, by its path. */
  | { path: string; type: 'hardlink'; target: string };

/** A deterministic tar of `entries` (any order in, sorted out). */
export async function tarLayer(entries: LayerEntry[]): Promise<Buffer> {
  const sorted = sortEntries(entries);
  const seen = new Set<string>();
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    tar.on('end', () => resolve());
    tar.on('error', reject);
  });
  for (const e of sorted) {
    const name = normalisePath(e.path);
    const header: EntryHeader = { name, mtime: FIXED_TIME, uid: 0, gid: 0, uname: '', gname: '' };
    switch (e.type) {
      case 'dir':
        await addEntry(tar, { ...header, name: `${name}/`, type: 'directory', mode: e.mode ?? 0o755 });
        break;
      case 'file':
        await addEntry(tar, { ...header, type: 'file', mode: e.mode ?? 0o644 }, Buffer.from(e.content));
        break;
      case 'symlink':
        await addEntry(tar, { ...header, type: 'symlink', mode: 0o777, linkname: e.target });
        break;
      case 'hardlink': {
        const target = normalisePath(e.target);
        if (!seen.has(target)) throw new Error(`hardlink ${name} -> ${target}: target must come earlier in the layer`);
        await addEntry(tar, { ...header, type: 'link', mode: 0o644, linkname: target });
        break;
      }
    }
    seen.add(name);
  }
  tar.finalize();
  await done;
  return Buffer.concat(chunks);
}

type EntryHeader = Parameters<Pack['entry']>[0];

function addEntry(tar: Pack, header: EntryHeader, content?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null) => (err ? reject(err) : resolve());
    if (content) tar.entry(header, content, cb);
    else tar.entry(header, cb);
  });
}

function normalisePath(p: string): string {
  const clean = path.posix.normalize(p).replace(/^\/+/, '').replace(/\/+$/, '');
  if (!clean || clean === '.' || clean.startsWith('../')) throw new Error(`bad layer path: ${JSON.stringify(p)}`);
  return clean;
}

/** Byte order of the paths: a directory's path is a prefix of its children's, so it sorts first. */
function sortEntries(entries: LayerEntry[]): LayerEntry[] {
  const byPath = new Map<string, LayerEntry>();
  for (const e of entries) {
    const key = normalisePath(e.path);
    if (byPath.has(key)) throw new Error(`duplicate layer entry ${key}`);
    byPath.set(key, e);
  }
  const keys = [...byPath.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return keys.map((k) => byPath.get(k)!);
}

/** gzip whose bytes depend only on the input (see the file comment for why Z_RLE). */
export function gzipDeterministic(data: Buffer): Buffer {
  const gz = zlib.gzipSync(data, { level: 9, strategy: zlib.constants.Z_RLE });
  gz[9] = 3; // OS = Unix, whatever platform compressed it
  return gz;
}

/**
 * The entries of a directory tree as a layer sees them. Modes are normalised so the umask of
 * whoever made the tree does not leak into digests: directories 0755 (sticky ones 1777), files
 * 0755 if executable by anyone, else 0644. Ownership is always root.
 */
export async function entriesFromDirectory(root: string): Promise<LayerEntry[]> {
  const entries: LayerEntry[] = [];
  const firstPathOfInode = new Map<string, string>();
  async function walk(rel: string): Promise<void> {
    const names = (await fs.readdir(path.join(root, rel))).sort();
    for (const name of names) {
      const relPath = rel ? `${rel}/${name}` : name;
      const abs = path.join(root, relPath);
      const st = await fs.lstat(abs);
      if (st.isDirectory()) {
        entries.push({ path: relPath, type: 'dir', mode: st.mode & 0o1000 ? 0o1777 : 0o755 });
        await walk(relPath);
      } else if (st.isSymbolicLink()) {
        entries.push({ path: relPath, type: 'symlink', target: await fs.readlink(abs) });
      } else if (st.isFile()) {
        const inode = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1 ? firstPathOfInode.get(inode) : undefined;
        if (first) entries.push({ path: relPath, type: 'hardlink', target: first });
        else {
          if (st.nlink > 1) firstPathOfInode.set(inode, relPath);
          entries.push({ path: relPath, type: 'file', mode: fileMode(st), content: await fs.readFile(abs) });
        }
      } else {
        throw new Error(`${abs}: only directories, files and symlinks can go into a test layer`);
      }
    }
  }
  await walk('');
  // Hardlinks must follow their target in the tar; walking sorted names and sorting paths
  // bytewise can disagree ("a-b" vs "a/b"), so re-point each link to the first path in tar order.
  return repointHardlinks(entries);
}

function fileMode(st: Stats): number {
  return st.mode & 0o111 ? 0o755 : 0o644;
}

function repointHardlinks(entries: LayerEntry[]): LayerEntry[] {
  const groups = new Map<string, string[]>();
  for (const e of entries) {
    if (e.type !== 'hardlink') continue;
    const group = groups.get(e.target) ?? [e.target];
    group.push(e.path);
    groups.set(e.target, group);
  }
  if (groups.size === 0) return entries;
  const byPath = new Map(entries.map((e) => [e.path, e]));
  for (const [original, paths] of groups) {
    const ordered = paths.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const content = byPath.get(original) as Extract<LayerEntry, { type: 'file' }>;
    byPath.set(ordered[0], { ...content, path: ordered[0] });
    for (const p of ordered.slice(1)) byPath.set(p, { path: p, type: 'hardlink', target: ordered[0] });
  }
  return [...byPath.values()];
}

// ---------------------------------------------------------------------------------------------
// Content-addressed blob store (the on-disk cache of everything we built)

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export class BlobStore {
  constructor(readonly dir: string) {}

  pathOf(digest: string): string {
    const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
    if (!m) throw new Error(`not a sha256 digest: ${digest}`);
    return path.join(this.dir, 'sha256', m[1]);
  }

  async has(digest: string): Promise<boolean> {
    return fs.access(this.pathOf(digest)).then(
      () => true,
      () => false,
    );
  }

  async sizeOf(digest: string): Promise<number> {
    return (await fs.stat(this.pathOf(digest))).size;
  }

  /** Stores `data` under its digest (atomically: concurrent builders may race) and returns it. */
  async put(data: Buffer): Promise<{ digest: string; size: number }> {
    const digest = sha256Digest(data);
    const file = this.pathOf(digest);
    if (!(await this.has(digest))) {
      await fs.mkdir(path.dirname(file), { recursive: true });
      const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
      await fs.writeFile(tmp, data);
      await fs.rename(tmp, file);
    }
    return { digest, size: data.length };
  }

  async get(digest: string): Promise<Buffer> {
    return fs.readFile(this.pathOf(digest));
  }
}

// ---------------------------------------------------------------------------------------------
// Images

/** A compressed layer blob plus the digest of its uncompressed tar (the config's diff_id). */
export interface LayerBlob {
  digest: string;
  size: number;
  diffId: string;
}

export async function buildLayer(store: BlobStore, entries: LayerEntry[]): Promise<LayerBlob> {
  const tar = await tarLayer(entries);
  const diffId = sha256Digest(tar);
  const { digest, size } = await store.put(gzipDeterministic(tar));
  return { digest, size, diffId };
}

/** The runtime part of an image config, in the Docker/OCI field spelling. */
export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
}

export interface HistoryEntry {
  created_by: string;
  comment?: string;
  /** True for steps that changed only the config (no layer of their own). */
  empty_layer?: boolean;
}

export interface ImageSpec {
  format: ManifestFormat;
  architecture: string;
  os: string;
  variant?: string;
  config: ContainerConfig;
  /** Bottom-most first. */
  layers: LayerBlob[];
  /** One per layer, plus any config-only steps (empty_layer), in build order. */
  history: HistoryEntry[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface BuiltManifest {
  mediaType: string;
  digest: string;
  size: number;
  configDigest: string;
  /** Blob digests the manifest references: config first, then layers bottom-up. */
  blobs: string[];
  layerCount: number;
  platform: Platform;
}

export async function buildImage(store: BlobStore, spec: ImageSpec): Promise<BuiltManifest> {
  const withLayer = spec.history.filter((h) => !h.empty_layer).length;
  if (withLayer !== spec.layers.length) {
    throw new Error(`history has ${withLayer} layer entries for ${spec.layers.length} layers`);
  }
  const types = MEDIA_TYPES[spec.format];
  const config = {
    architecture: spec.architecture,
    ...(spec.variant ? { variant: spec.variant } : {}),
    config: spec.config,
    created: FIXED_CREATED,
    history: spec.history.map((h) => ({ created: FIXED_CREATED, ...h })),
    os: spec.os,
    rootfs: { type: 'layers', diff_ids: spec.layers.map((l) => l.diffId) },
  };
  const configBlob = await store.put(Buffer.from(JSON.stringify(config)));
  const manifest = {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: { mediaType: types.config, digest: configBlob.digest, size: configBlob.size },
    layers: spec.layers.map((l) => ({ mediaType: types.layer, digest: l.digest, size: l.size })),
  };
  const stored = await store.put(Buffer.from(JSON.stringify(manifest)));
  return {
    mediaType: types.manifest,
    digest: stored.digest,
    size: stored.size,
    configDigest: configBlob.digest,
    blobs: [configBlob.digest, ...spec.layers.map((l) => l.digest)],
    layerCount: spec.layers.length,
    platform: { architecture: spec.architecture, os: spec.os, ...(spec.variant ? { variant: spec.variant } : {}) },
  };
}

export interface BuiltIndex {
  mediaType: string;
  digest: string;
  size: number;
  manifests: BuiltManifest[];
}

/** An OCI image index over `manifests`, each entry carrying its manifest's platform. */
export async function buildIndex(store: BlobStore, manifests: BuiltManifest[]): Promise<BuiltIndex> {
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.oci.index,
    manifests: manifests.map((m) => ({ mediaType: m.mediaType, digest: m.digest, size: m.size, platform: m.platform })),
  };
  const stored = await store.put(Buffer.from(JSON.stringify(index)));
  return { mediaType: MEDIA_TYPES.oci.index, digest: stored.digest, size: stored.size, manifests };
}

// ---------------------------------------------------------------------------------------------
// Pushing (distribution v2: monolithic blob uploads, manifests by digest then by tag)

/** What to upload for one tag: blobs first, then manifests; the last manifest gets the tag. */
export interface PushPlan {
  blobs: string[];
  manifests: Array<{ mediaType: string; digest: string }>;
}

export function pushPlanFor(top: BuiltManifest | BuiltIndex): PushPlan {
  const children = 'manifests' in top ? top.manifests : [];
  const singles = 'manifests' in top ? top.manifests : [top];
  const blobs = [...new Set(singles.flatMap((m) => m.blobs))];
  return {
    blobs,
    manifests: [...children, top].map((m) => ({ mediaType: m.mediaType, digest: m.digest })),
  };
}

/**
 * Uploads a plan into `repo` and tags its last manifest `tag`. `mountable` maps blob digests to
 * a repository of the same registry that already has them (cross-repo mount instead of upload);
 * it is updated with what this push uploaded. Returns the registry's digest for the tag.
 */
export async function pushImage(
  reg: Pick<TestRegistry, 'host' | 'auth'>,
  store: BlobStore,
  repo: string,
  tag: string,
  plan: PushPlan,
  mountable: Map<string, string> = new Map(),
): Promise<string> {
  for (const digest of plan.blobs) {
    await pushBlob(reg, store, repo, digest, mountable.get(digest));
    if (!mountable.has(digest)) mountable.set(digest, repo);
  }
  let tagged = '';
  for (let i = 0; i < plan.manifests.length; i++) {
    const m = plan.manifests[i];
    const isTop = i === plan.manifests.length - 1;
    const body = await store.get(m.digest);
    const res = await registryRequest(reg, 'PUT', `/v2/${repo}/manifests/${isTop ? tag : m.digest}`, {
      headers: { 'Content-Type': m.mediaType },
      body,
    });
    expectStatus(res, 201, `PUT manifest ${repo}:${isTop ? tag : m.digest}`);
    const reported = String(res.headers['docker-content-digest'] ?? '');
    if (reported !== m.digest) throw new Error(`registry stored ${repo} manifest as ${reported}, expected ${m.digest}`);
    tagged = reported;
  }
  return tagged;
}

async function pushBlob(
  reg: Pick<TestRegistry, 'host' | 'auth'>,
  store: BlobStore,
  repo: string,
  digest: string,
  mountFrom?: string,
): Promise<void> {
  const head = await registryRequest(reg, 'HEAD', `/v2/${repo}/blobs/${digest}`);
  if (head.status === 200) return;
  const startPath = mountFrom
    ? `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(mountFrom)}`
    : `/v2/${repo}/blobs/uploads/`;
  const started = await registryRequest(reg, 'POST', startPath);
  if (mountFrom && started.status === 201) return;
  expectStatus(started, 202, `start upload of ${digest} to ${repo}`);
  const location = new URL(String(started.headers.location), `http://${reg.host}`);
  location.searchParams.set('digest', digest);
  const size = await store.sizeOf(digest);
  const put = await registryRequest(reg, 'PUT', location.toString(), {
    headers: { 'Content-Type': 'application/octet-stream' },
    body: { file: store.pathOf(digest), size },
  });
  expectStatus(put, 201, `upload ${digest} to ${repo}`);
}

function expectStatus(res: HttpResult, status: number, what: string): void {
  if (res.status !== status) {
    throw new Error(`${what}: HTTP ${res.status} (expected ${status}): ${res.body.toString().slice(0, 500)}`);
  }
}
