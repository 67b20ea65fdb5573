/**
 * The images every image/container test and benchmark pulls, built here from Debian packages
 * (busybox-static, musl) with image-builder.ts and pushed into a TestRegistry.
 *
 * Built blobs are cached under ${PADDOCK_CACHE:-/var/cache/paddock}/test-images/<key>, where the
 * key hashes the builder sources and the package versions that go into the bytes; seeding a fresh
 * registry then costs only the uploads. Digests are the same on every machine with the same
 * Debian packages (busybox-static, musl, gcc): see image-builder.ts for how.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, promises as fs, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  BlobStore,
  buildImage,
  buildIndex,
  buildLayer,
  entriesFromDirectory,
  pushImage,
  pushPlanFor,
  type BuiltManifest,
  type LayerBlob,
  type LayerEntry,
  type ManifestFormat,
  type Platform,
  type PushPlan,
} from './image-builder';
import { checkedDirectory, removeTree, type TestRegistry } from './registry';

export type SeedName = 'busybox' | 'busybox-oci' | 'hello' | 'layered' | 'multiarch' | 'large';

/** Push order; `large` (~200 MB) is seeded only when asked for by name. */
export const ALL_SEEDS: readonly SeedName[] = ['busybox', 'busybox-oci', 'hello', 'layered', 'multiarch', 'large'];
export const DEFAULT_SEEDS: readonly SeedName[] = ALL_SEEDS.filter((s) => s !== 'large');

export interface SeededImage {
  name: SeedName;
  /** "127.0.0.1:PORT/repo:tag" */
  ref: string;
  repo: string;
  tag: string;
  /** What the tag resolves to (for multiarch: the index). RepoDigests = `${host}/${repo}@${manifestDigest}`. */
  manifestDigest: string;
  /** The image ID docker reports (for multiarch: the linux/amd64 image's). */
  configDigest: string;
  /** Media type of the tagged manifest (or index). */
  mediaType: string;
  /** Layers of the image (for multiarch: of the linux/amd64 image). */
  layers: number;
  /** Only for an index: one entry per platform. */
  platforms?: Array<{ platform: Platform; manifestDigest: string; configDigest: string; mediaType: string }>;
}

export const SEED_TAG = 'latest';
export const BUSYBOX_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface SeedOptions {
  /** Build cache root instead of ${PADDOCK_CACHE:-/var/cache/paddock}. */
  cacheRoot?: string;
}

/** Builds (or takes from the cache) the images in `which` and pushes each as `<name>:latest`. */
export async function seedTestImages(
  reg: TestRegistry,
  which: SeedName[] = [...DEFAULT_SEEDS],
  opts: SeedOptions = {},
): Promise<Record<SeedName, SeededImage>> {
  const wanted = checkedSeedNames(which);
  const builder = await SeedBuilder.open(opts.cacheRoot);
  const mountable = new Map<string, string>();
  const seeded: Partial<Record<SeedName, SeededImage>> = {};
  for (const name of wanted) {
    const built = await builder.image(name);
    const pushed = await pushImage(reg, builder.store, name, SEED_TAG, built.plan, mountable);
    if (pushed !== built.image.manifestDigest) throw new Error(`${name}: registry has ${pushed}, built ${built.image.manifestDigest}`);
    seeded[name] = { ...built.image, ref: `${reg.host}/${name}:${SEED_TAG}` };
  }
  // Only the requested names are present; the spec'd return type is kept for callers' convenience.
  return seeded as Record<SeedName, SeededImage>;
}

/** Builds into the cache without pushing (e.g. to warm it before timing a benchmark). */
export async function buildTestImages(which: SeedName[] = [...DEFAULT_SEEDS], opts: SeedOptions = {}): Promise<string> {
  const wanted = checkedSeedNames(which);
  const builder = await SeedBuilder.open(opts.cacheRoot);
  for (const name of wanted) await builder.image(name);
  return builder.dir;
}

/** `which` in push order, without duplicates; unknown names are an error, not a silent no-op. */
function checkedSeedNames(which: readonly string[]): SeedName[] {
  const unknown = which.filter((w) => !(ALL_SEEDS as readonly string[]).includes(w));
  if (unknown.length) throw new Error(`unknown seed image(s): ${unknown.join(', ')} (known: ${ALL_SEEDS.join(', ')})`);
  return ALL_SEEDS.filter((s) => which.includes(s));
}

// ---------------------------------------------------------------------------------------------
// The cache

interface BuiltSeed {
  image: Omit<SeededImage, 'ref'>;
  plan: PushPlan;
}

/** The repository root, above test/helpers (ts-jest) or dist/test/helpers (compiled), else above the cwd. */
const repoRoot = (() => {
  for (const start of [__dirname, process.cwd()]) {
    for (let dir = start; ; dir = path.dirname(dir)) {
      if (existsSync(path.join(dir, 'rootfs-builder/busybox-rootfs.sh'))) return dir;
      if (path.dirname(dir) === dir) break;
    }
  }
  throw new Error(`cannot find the Paddock repository (rootfs-builder/) above ${__dirname} or ${process.cwd()}`);
})();

const HELLO_SOURCE = path.join(repoRoot, 'test/fixtures/images/hello.c');
const BUSYBOX_ROOTFS_SCRIPT = path.join(repoRoot, 'rootfs-builder/busybox-rootfs.sh');

/** Everything whose change changes the bytes we build. */
function cacheKey(): string {
  const h = createHash('sha256');
  const sources = [
    sourceOf('image-builder'),
    sourceOf('seed-images'),
    BUSYBOX_ROOTFS_SCRIPT,
    HELLO_SOURCE,
    // tar-stream writes the tar headers: another version could write other bytes.
    path.join(path.dirname(require.resolve('tar-stream')), 'package.json'),
  ];
  for (const file of sources) h.update(file.slice(repoRoot.length)).update('\0').update(readFileSync(file)).update('\0');
  h.update(commandOutput('dpkg-query', ['-W', 'busybox-static', 'musl-dev', 'musl-tools']));
  h.update(commandOutput('gcc', ['-dumpfullversion']));
  return h.digest('hex').slice(0, 16);
}

/** The TypeScript source of a helper when present, else the compiled file we are running. */
function sourceOf(module: string): string {
  const ts = path.join(repoRoot, 'test/helpers', `${module}.ts`);
  return existsSync(ts) ? ts : path.join(__dirname, `${module}.js`);
}

function commandOutput(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return `${cmd}: unavailable`;
  }
}

async function writableCacheRoot(preferred?: string): Promise<string> {
  const candidates = preferred
    ? [preferred]
    : [process.env.PADDOCK_CACHE || '/var/cache/paddock', path.join(os.tmpdir(), 'paddock-cache')];
  for (const c of candidates) {
    const dir = path.join(checkedDirectory(c), 'test-images');
    try {
      await fs.mkdir(dir, { recursive: true });
      await fs.access(dir, fs.constants.W_OK);
      return dir;
    } catch {
      // try the next one
    }
  }
  throw new Error(`no writable cache directory among ${candidates.join(', ')}`);
}

/**
 * Every change to the builder makes a new key dir (the `large` image alone is ~200 MB), so key
 * dirs nobody has opened for two weeks are removed. Only names that look like our keys.
 */
async function pruneStaleKeys(root: string, current: string): Promise<void> {
  const cutoff = Date.now() - 14 * 24 * 3600 * 1000;
  for (const name of await fs.readdir(root)) {
    const dir = path.join(root, name);
    if (!/^[0-9a-f]{16}$/.test(name) || dir === current) continue;
    const st = await fs.stat(dir).catch(() => undefined);
    if (st?.isDirectory() && st.mtimeMs < cutoff) await removeTree(dir).catch(() => undefined);
  }
}

/** Builds seed images, remembering every intermediate result as a JSON record next to its blobs. */
class SeedBuilder {
  private readonly inFlight = new Map<string, Promise<unknown>>();

  private constructor(
    readonly dir: string,
    readonly store: BlobStore,
  ) {}

  static async open(cacheRoot?: string): Promise<SeedBuilder> {
    const root = await writableCacheRoot(cacheRoot);
    const dir = path.join(root, cacheKey());
    await fs.mkdir(dir, { recursive: true });
    const now = new Date();
    await fs.utimes(dir, now, now); // marks this key as in use, for pruneStaleKeys
    await pruneStaleKeys(root, dir);
    return new SeedBuilder(dir, new BlobStore(path.join(dir, 'blobs')));
  }

  /**
   * A value from records/<key>.json if every blob it names is in the store, else `build()`'s,
   * written back atomically (another process may be building the same thing).
   */
  private memo<T>(key: string, blobsOf: (v: T) => string[], build: () => Promise<T>): Promise<T> {
    let p = this.inFlight.get(key) as Promise<T> | undefined;
    if (!p) {
      p = (async () => {
        const file = path.join(this.dir, 'records', `${key}.json`);
        try {
          const cached = JSON.parse(await fs.readFile(file, 'utf8')) as T;
          const present = await Promise.all(blobsOf(cached).map((d) => this.store.has(d)));
          if (present.every(Boolean)) return cached;
        } catch {
          // absent or unreadable: build it
        }
        const value = await build();
        await fs.mkdir(path.dirname(file), { recursive: true });
        const tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
        await fs.writeFile(tmp, JSON.stringify(value, null, 2));
        await fs.rename(tmp, file);
        return value;
      })();
      this.inFlight.set(key, p);
    }
    return p;
  }

  private layer(key: string, entries: () => Promise<LayerEntry[]>): Promise<LayerBlob> {
    return this.memo(`layer-${key}`, (l) => [l.digest], async () => buildLayer(this.store, await entries()));
  }

  private manifest(key: string, build: () => Promise<BuiltManifest>): Promise<BuiltManifest> {
    return this.memo(`manifest-${key}`, (m) => [m.digest, ...m.blobs], build);
  }

  image(name: SeedName): Promise<BuiltSeed> {
    return this.memo(
      `image-${name}`,
      (s) => [...s.plan.blobs, ...s.plan.manifests.map((m) => m.digest)],
      () => this.buildSeed(name),
    );
  }

  private async buildSeed(name: SeedName): Promise<BuiltSeed> {
    if (name === 'multiarch') {
      const amd64 = await this.busyboxManifest('oci');
      const arm64 = await this.arm64Manifest();
      const index = await buildIndex(this.store, [amd64, arm64]);
      return {
        image: {
          name,
          repo: name,
          tag: SEED_TAG,
          manifestDigest: index.digest,
          configDigest: amd64.configDigest,
          mediaType: index.mediaType,
          layers: amd64.layerCount,
          platforms: index.manifests.map((m) => ({
            platform: m.platform,
            manifestDigest: m.digest,
            configDigest: m.configDigest,
            mediaType: m.mediaType,
          })),
        },
        plan: pushPlanFor(index),
      };
    }
    const manifest = await this.singleManifest(name);
    return {
      image: {
        name,
        repo: name,
        tag: SEED_TAG,
        manifestDigest: manifest.digest,
        configDigest: manifest.configDigest,
        mediaType: manifest.mediaType,
        layers: manifest.layerCount,
      },
      plan: pushPlanFor(manifest),
    };
  }

  private singleManifest(name: Exclude<SeedName, 'multiarch'>): Promise<BuiltManifest> {
    switch (name) {
      case 'busybox':
        return this.busyboxManifest('docker');
      case 'busybox-oci':
        return this.busyboxManifest('oci');
      case 'hello':
        return this.helloManifest();
      case 'layered':
        return this.layeredManifest();
      case 'large':
        return this.largeManifest();
    }
  }

  // ---- the recipes ---------------------------------------------------------------------------

  private busyboxLayer(): Promise<LayerBlob> {
    return this.layer('busybox-rootfs', async () => {
      const tmp = mkdtempSync(path.join(os.tmpdir(), 'paddock-seed-bb-'));
      try {
        const rootfs = path.join(tmp, 'rootfs');
        execFileSync('bash', [BUSYBOX_ROOTFS_SCRIPT, rootfs], { stdio: ['ignore', 'ignore', 'inherit'] });
        return await entriesFromDirectory(rootfs);
      } finally {
        await removeTree(tmp);
      }
    });
  }

  /** busybox and busybox-oci: one layer, identical config bytes, so one image ID for both. */
  private busyboxManifest(format: ManifestFormat): Promise<BuiltManifest> {
    return this.manifest(`busybox-${format}`, async () =>
      buildImage(this.store, {
        format,
        architecture: 'amd64',
        os: 'linux',
        config: { Env: [BUSYBOX_PATH_ENV], Cmd: ['sh'] },
        layers: [await this.busyboxLayer()],
        history: [BUSYBOX_HISTORY],
      }),
    );
  }

  private helloManifest(): Promise<BuiltManifest> {
    return this.manifest('hello', async () => {
      const layer = await this.layer('hello', async () => [
        { path: 'hello', type: 'file', mode: 0o755, content: compileHello() },
      ]);
      return buildImage(this.store, {
        format: 'docker',
        architecture: 'amd64',
        os: 'linux',
        config: { Env: [BUSYBOX_PATH_ENV], Cmd: ['/hello'] },
        layers: [layer],
        history: [{ created_by: 'COPY hello / # static musl build of test/fixtures/images/hello.c' }],
      });
    });
  }

  /**
   * busybox plus three layers that exercise what a layer store must get right: files added,
   * a whiteout deleting a lower file, an opaque directory hiding lower content, links and modes;
   * and a config with every field the container tests read.
   */
  private layeredManifest(): Promise<BuiltManifest> {
    return this.manifest('layered', async () => {
      const adds = await this.layer('layered-adds', async () => [
        { path: 'data', type: 'dir' },
        { path: 'data/keep.txt', type: 'file', content: 'kept from layer 2\n' },
        { path: 'data/remove-me.txt', type: 'file', content: 'deleted by layer 3\n' },
        { path: 'opt', type: 'dir' },
        { path: 'opt/dir', type: 'dir' },
        { path: 'opt/dir/a.txt', type: 'file', content: 'hidden by the opaque dir of layer 3\n' },
      ]);
      const deletes = await this.layer('layered-whiteouts', async () => [
        { path: 'data', type: 'dir' },
        { path: 'data/.wh.remove-me.txt', type: 'file', content: '' },
        { path: 'opt', type: 'dir' },
        { path: 'opt/dir', type: 'dir' },
        { path: 'opt/dir/.wh..wh..opq', type: 'file', content: '' },
        { path: 'opt/dir/b.txt', type: 'file', content: 'added by layer 3\n' },
      ]);
      const links = await this.layer('layered-links', async () => [
        { path: 'data', type: 'dir' },
        { path: 'data/hardlink-a.txt', type: 'file', content: 'one inode, two names\n' },
        { path: 'data/hardlink-b.txt', type: 'hardlink', target: 'data/hardlink-a.txt' },
        { path: 'data/keep-link', type: 'symlink', target: 'keep.txt' },
        { path: 'data/private.txt', type: 'file', mode: 0o600, content: 'mode 0600\n' },
        { path: 'usr/local/bin', type: 'dir' },
        { path: 'usr', type: 'dir' },
        { path: 'usr/local', type: 'dir' },
        { path: 'usr/local/bin/layered-hello', type: 'file', mode: 0o755, content: '#!/bin/sh\necho layered says hi "$@"\n' },
      ]);
      return buildImage(this.store, {
        format: 'docker',
        architecture: 'amd64',
        os: 'linux',
        config: {
          User: '',
          ExposedPorts: { '80/tcp': {} },
          Env: [BUSYBOX_PATH_ENV, 'LAYERED=yes', 'GREETING=hello world'],
          Entrypoint: ['/bin/sh', '-c'],
          Cmd: ['cat keep.txt'],
          Volumes: { '/vol': {} },
          WorkingDir: '/data',
          Labels: { 'org.paddock.test': 'layered', 'org.paddock.layers': '4' },
          StopSignal: 'SIGUSR1',
        },
        layers: [await this.busyboxLayer(), adds, deletes, links],
        history: [
          BUSYBOX_HISTORY,
          { created_by: 'ADD data/keep.txt data/remove-me.txt opt/dir/a.txt /' },
          { created_by: 'RUN rm /data/remove-me.txt && rm -rf /opt/dir && mkdir /opt/dir && echo b > /opt/dir/b.txt' },
          { created_by: 'ADD hardlinks, a symlink, a 0600 file and a script' },
          { created_by: 'ENV LAYERED=yes GREETING="hello world"', empty_layer: true },
          { created_by: 'ENTRYPOINT ["/bin/sh" "-c"] CMD ["cat keep.txt"] WORKDIR /data', empty_layer: true },
        ],
      });
    });
  }

  /** The linux/arm64 half of multiarch: never run here, only there to be skipped by platform. */
  private arm64Manifest(): Promise<BuiltManifest> {
    return this.manifest('multiarch-arm64', async () => {
      const layer = await this.layer('arm64-placeholder', async () => [
        { path: 'ARM64-PLACEHOLDER', type: 'file', content: 'linux/arm64 entry of the multiarch test image\n' },
      ]);
      return buildImage(this.store, {
        format: 'oci',
        architecture: 'arm64',
        variant: 'v8',
        os: 'linux',
        config: { Env: [BUSYBOX_PATH_ENV], Cmd: ['sh'] },
        layers: [layer],
        history: [{ created_by: 'ADD ARM64-PLACEHOLDER /' }],
      });
    });
  }

  /** For benchmarks: busybox + 4 layers of 50 MB pseudo-random (incompressible) data. */
  private largeManifest(): Promise<BuiltManifest> {
    return this.manifest('large', async () => {
      const layers: LayerBlob[] = [await this.busyboxLayer()];
      for (let i = 1; i <= LARGE_LAYERS; i++) {
        layers.push(
          await this.layer(`large-${i}`, async () => [
            { path: 'large', type: 'dir' },
            { path: `large/layer-${i}`, type: 'dir' },
            ...Array.from({ length: LARGE_CHUNKS_PER_LAYER }, (_, c): LayerEntry => ({
              path: `large/layer-${i}/chunk-${c}.bin`,
              type: 'file',
              content: pseudoRandomBytes(LARGE_CHUNK_BYTES, i * 1000 + c + 1),
            })),
          ]),
        );
      }
      return buildImage(this.store, {
        format: 'docker',
        architecture: 'amd64',
        os: 'linux',
        config: { Env: [BUSYBOX_PATH_ENV], Cmd: ['sh'] },
        layers,
        history: [
          BUSYBOX_HISTORY,
          ...Array.from({ length: LARGE_LAYERS }, (_, i) => ({ created_by: `ADD large/layer-${i + 1} # 50 MB pseudo-random` })),
        ],
      });
    });
  }
}

const BUSYBOX_HISTORY = { created_by: 'ADD rootfs / # busybox-static rootfs from rootfs-builder/busybox-rootfs.sh' };

const LARGE_LAYERS = 4;
const LARGE_CHUNKS_PER_LAYER = 5;
const LARGE_CHUNK_BYTES = 10_000_000;

/** xorshift32: cheap, seedable, and its output does not compress. */
export function pseudoRandomBytes(length: number, seed: number): Buffer {
  const words = new Uint32Array(Math.ceil(length / 4));
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  // Uint32Array is host-endian: fix the byte order so big-endian hosts produce the same bytes.
  if (os.endianness() === 'LE') return Buffer.from(words.buffer).subarray(0, length);
  const bytes = Buffer.alloc(words.length * 4);
  for (let i = 0; i < words.length; i++) bytes.writeUInt32LE(words[i], i * 4);
  return bytes.subarray(0, length);
}

function compileHello(): Buffer {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'paddock-seed-hello-'));
  try {
    const out = path.join(tmp, 'hello');
    // -s: no symbols or debug paths, so the binary does not depend on where it was built.
    execFileSync('musl-gcc', ['-static', '-Os', '-s', '-o', out, HELLO_SOURCE], { stdio: ['ignore', 'ignore', 'inherit'] });
    return readFileSync(out);
  } finally {
    rmSync(checkedDirectory(tmp), { recursive: true, force: true });
  }
}
