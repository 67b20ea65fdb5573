/**
 * The test registry fixture and its seed images, checked over plain HTTP the way a puller sees
 * them, and against Debian's real dockerd as the reference for image IDs and RepoDigests.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, promises as fs, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { extract } from 'tar-stream';
import { MEDIA_TYPES } from '../helpers/image-builder';
import { referenceDockerdUnavailable, startReferenceDockerd, type ReferenceDockerd } from '../helpers/reference-dockerd';
import { registryRequest, removeTree, startTestRegistry, type HttpResult, type TestRegistry } from '../helpers/registry';
import { BUSYBOX_PATH_ENV, DEFAULT_SEEDS, seedTestImages, type SeedName, type SeededImage } from '../helpers/seed-images';

jest.setTimeout(120_000);

const ACCEPT_ALL_MANIFESTS = [
  MEDIA_TYPES.docker.manifest,
  MEDIA_TYPES.docker.manifestList,
  MEDIA_TYPES.oci.manifest,
  MEDIA_TYPES.oci.index,
].join(', ');

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function getManifest(reg: TestRegistry, repo: string, reference: string): Promise<{ res: HttpResult; json: any }> {
  const res = await registryRequest(reg, 'GET', `/v2/${repo}/manifests/${reference}`, { headers: { Accept: ACCEPT_ALL_MANIFESTS } });
  expect(res.status).toBe(200);
  return { res, json: JSON.parse(res.body.toString()) };
}

/** Fetches a blob and checks it against its descriptor (digest and size). */
async function getBlob(reg: TestRegistry, repo: string, desc: { digest: string; size: number }): Promise<Buffer> {
  const res = await registryRequest(reg, 'GET', `/v2/${repo}/blobs/${desc.digest}`);
  expect(res.status).toBe(200);
  expect(sha256(res.body)).toBe(desc.digest);
  expect(res.body.length).toBe(desc.size);
  return res.body;
}

interface TarEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  mtime: number;
  linkname: string | null;
  content: Buffer;
}

function untar(tar: Buffer): Promise<TarEntry[]> {
  return new Promise((resolve, reject) => {
    const out: TarEntry[] = [];
    const ex = extract();
    ex.on('entry', (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        out.push({
          name: h.name,
          type: h.type ?? 'file',
          mode: h.mode ?? 0,
          uid: h.uid ?? -1,
          gid: h.gid ?? -1,
          uname: h.uname ?? '',
          gname: h.gname ?? '',
          mtime: h.mtime?.getTime() ?? 0,
          linkname: h.linkname ?? null,
          content: Buffer.concat(chunks),
        });
        next();
      });
      stream.resume();
    });
    ex.on('finish', () => resolve(out));
    ex.on('error', reject);
    ex.end(tar);
  });
}

/** A single-platform image as a puller sees it: manifest, config, and every layer unpacked. */
async function pullImage(reg: TestRegistry, repo: string, reference: string) {
  const { res, json: manifest } = await getManifest(reg, repo, reference);
  const config = JSON.parse((await getBlob(reg, repo, manifest.config)).toString());
  const layers: TarEntry[][] = [];
  for (const [i, desc] of (manifest.layers as Array<{ digest: string; size: number }>).entries()) {
    const gz = await getBlob(reg, repo, desc);
    const tar = zlib.gunzipSync(gz);
    // The config's diff_ids are the digests of the uncompressed layers.
    expect(sha256(tar)).toBe(config.rootfs.diff_ids[i]);
    layers.push(await untar(tar));
  }
  return { res, manifest, config, layers };
}

describe('seeded test registry', () => {
  let reg: TestRegistry;
  let images: Record<SeedName, SeededImage>;

  beforeAll(async () => {
    reg = await startTestRegistry();
    images = await seedTestImages(reg);
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test('listens on 127.0.0.1 and seeds exactly the default images under their own names', async () => {
    expect(reg.host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(Object.keys(images).sort()).toEqual([...DEFAULT_SEEDS].sort());
    const catalog = await registryRequest(reg, 'GET', '/v2/_catalog');
    expect(JSON.parse(catalog.body.toString()).repositories.sort()).toEqual([...DEFAULT_SEEDS].sort());
    for (const img of Object.values(images)) {
      expect(img.ref).toBe(`${reg.host}/${img.repo}:latest`);
      expect(img.repo).toBe(img.name);
      const tags = await registryRequest(reg, 'GET', `/v2/${img.repo}/tags/list`);
      expect(JSON.parse(tags.body.toString()).tags).toEqual(['latest']);
    }
  });

  test('each tag resolves to the reported manifest digest and media type', async () => {
    for (const img of Object.values(images)) {
      const { res } = await getManifest(reg, img.repo, img.tag);
      expect(res.headers['docker-content-digest']).toBe(img.manifestDigest);
      expect(sha256(res.body)).toBe(img.manifestDigest);
      expect(res.headers['content-type']).toBe(img.mediaType);
      // By digest too, as a puller resolving RepoDigests does.
      const byDigest = await getManifest(reg, img.repo, img.manifestDigest);
      expect(byDigest.res.body.equals(res.body)).toBe(true);
    }
  });

  test('busybox: Docker schema 2, one deterministic busybox layer, the agreed config', async () => {
    const img = images.busybox;
    const { manifest, config, layers } = await pullImage(reg, 'busybox', 'latest');
    expect(img.mediaType).toBe(MEDIA_TYPES.docker.manifest);
    expect(manifest.mediaType).toBe(MEDIA_TYPES.docker.manifest);
    expect(manifest.config.mediaType).toBe(MEDIA_TYPES.docker.config);
    expect(manifest.config.digest).toBe(img.configDigest);
    expect(manifest.layers.map((l: any) => l.mediaType)).toEqual([MEDIA_TYPES.docker.layer]);
    expect(img.layers).toBe(1);
    expect(config.architecture).toBe('amd64');
    expect(config.os).toBe('linux');
    expect(config.config.Env).toEqual([BUSYBOX_PATH_ENV]);
    expect(config.config.Cmd).toEqual(['sh']);
    expect(config.history).toHaveLength(1);
    expect(config.rootfs).toEqual({ type: 'layers', diff_ids: [expect.stringMatching(/^sha256:[0-9a-f]{64}$/)] });

    const entries = layers[0];
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get('bin/busybox')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(byName.get('bin/sh')).toMatchObject({ type: 'symlink', linkname: 'busybox' });
    expect(byName.get('tmp/')).toMatchObject({ type: 'directory', mode: 0o1777 });
    expect(byName.get('etc/passwd')?.content.toString()).toMatch(/^root:x:0:0:/);
    // What makes the digest reproducible: sorted names, one mtime, root with no names.
    const names = entries.map((e) => e.name);
    expect(names).toEqual([...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    for (const e of entries) {
      expect(e).toMatchObject({ uid: 0, gid: 0, uname: '', gname: '', mtime: Date.parse('2024-01-01T00:00:00Z') });
    }
  });

  test('layer gzip headers carry no name and no timestamp', async () => {
    const { json: manifest } = await getManifest(reg, 'busybox', 'latest');
    const gz = await getBlob(reg, 'busybox', manifest.layers[0]);
    expect(gz.subarray(0, 3)).toEqual(Buffer.from([0x1f, 0x8b, 8]));
    expect(gz[3]).toBe(0); // FLG: no FNAME, FCOMMENT, FEXTRA
    expect(gz.readUInt32LE(4)).toBe(0); // MTIME
  });

  test('busybox-oci: same content with OCI media types, hence the same image ID', async () => {
    const oci = await pullImage(reg, 'busybox-oci', 'latest');
    const docker = await getManifest(reg, 'busybox', 'latest');
    expect(images['busybox-oci'].mediaType).toBe(MEDIA_TYPES.oci.manifest);
    expect(oci.manifest.mediaType).toBe(MEDIA_TYPES.oci.manifest);
    expect(oci.manifest.config.mediaType).toBe(MEDIA_TYPES.oci.config);
    expect(oci.manifest.layers.map((l: any) => l.mediaType)).toEqual([MEDIA_TYPES.oci.layer]);
    expect(oci.manifest.layers[0].digest).toBe(docker.json.layers[0].digest);
    expect(images['busybox-oci'].configDigest).toBe(images.busybox.configDigest);
    expect(images['busybox-oci'].manifestDigest).not.toBe(images.busybox.manifestDigest);
  });

  test('hello: one layer holding a static binary that prints its greeting and argv', async () => {
    const { config, layers } = await pullImage(reg, 'hello', 'latest');
    expect(images.hello.layers).toBe(1);
    expect(config.config.Cmd).toEqual(['/hello']);
    expect(layers[0].map((e) => e.name)).toEqual(['hello']);
    const hello = layers[0][0];
    expect(hello.mode).toBe(0o755);
    expect(hello.content.subarray(0, 4)).toEqual(Buffer.from('\x7fELF', 'latin1'));
    // Static, so it runs here as it would in any rootfs.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-hello-'));
    try {
      const bin = path.join(dir, 'hello');
      writeFileSync(bin, hello.content, { mode: 0o755 });
      const out = execFileSync(bin, ['one', 'two words'], { encoding: 'utf8' });
      expect(out).toBe(`Hello from Paddock!\nargv[0]=${bin}\nargv[1]=one\nargv[2]=two words\n`);
    } finally {
      await removeTree(dir);
    }
  });

  test('layered: whiteout, opaque dir, links and the full config the container tests read', async () => {
    const { config, layers, manifest } = await pullImage(reg, 'layered', 'latest');
    const { json: busybox } = await getManifest(reg, 'busybox', 'latest');
    expect(images.layered.layers).toBe(4);
    expect(manifest.layers[0].digest).toBe(busybox.layers[0].digest);

    const files = (i: number) => new Map(layers[i].map((e) => [e.name, e]));
    const l2 = files(1);
    expect(l2.get('data/keep.txt')?.content.toString()).toBe('kept from layer 2\n');
    expect(l2.has('data/remove-me.txt')).toBe(true);
    expect(l2.has('opt/dir/a.txt')).toBe(true);
    const l3 = files(2);
    expect(l3.get('data/.wh.remove-me.txt')).toMatchObject({ type: 'file', content: Buffer.alloc(0) });
    expect(l3.get('opt/dir/.wh..wh..opq')).toMatchObject({ type: 'file', content: Buffer.alloc(0) });
    expect(l3.get('opt/dir/b.txt')?.content.toString()).toBe('added by layer 3\n');
    expect(l3.has('opt/dir/a.txt')).toBe(false);
    const l4 = files(3);
    expect(l4.get('data/hardlink-b.txt')).toMatchObject({ type: 'link', linkname: 'data/hardlink-a.txt' });
    expect(l4.get('data/keep-link')).toMatchObject({ type: 'symlink', linkname: 'keep.txt' });
    expect(l4.get('data/private.txt')?.mode).toBe(0o600);
    expect(l4.get('usr/local/bin/layered-hello')?.mode).toBe(0o755);

    expect(config.config).toEqual({
      User: '',
      ExposedPorts: { '80/tcp': {} },
      Env: [BUSYBOX_PATH_ENV, 'LAYERED=yes', 'GREETING=hello world'],
      Entrypoint: ['/bin/sh', '-c'],
      Cmd: ['cat keep.txt'],
      Volumes: { '/vol': {} },
      WorkingDir: '/data',
      Labels: { 'org.paddock.test': 'layered', 'org.paddock.layers': '4' },
      StopSignal: 'SIGUSR1',
    });
    // Config-only steps appear in the history without a layer, as in Dockerfile builds.
    expect(config.history.filter((h: any) => !h.empty_layer)).toHaveLength(4);
    expect(config.history.filter((h: any) => h.empty_layer)).toHaveLength(2);
  });

  test('multiarch: an OCI index with linux/amd64 (busybox) and linux/arm64 entries', async () => {
    const img = images.multiarch;
    const { json: index } = await getManifest(reg, 'multiarch', 'latest');
    expect(index.mediaType).toBe(MEDIA_TYPES.oci.index);
    expect(img.mediaType).toBe(MEDIA_TYPES.oci.index);
    const platforms = index.manifests.map((m: any) => `${m.platform.os}/${m.platform.architecture}`);
    expect(platforms).toEqual(['linux/amd64', 'linux/arm64']);
    const amd64 = index.manifests[0];
    expect(amd64.digest).toBe(images['busybox-oci'].manifestDigest);
    expect(img.configDigest).toBe(images.busybox.configDigest);
    expect(img.platforms?.map((p) => p.manifestDigest)).toEqual(index.manifests.map((m: any) => m.digest));
    // Every child is pullable from the multiarch repository itself, by digest.
    for (const child of index.manifests) {
      const pulled = await pullImage(reg, 'multiarch', child.digest);
      expect(sha256(pulled.res.body)).toBe(child.digest);
      expect(pulled.res.body.length).toBe(child.size);
      expect(pulled.config.architecture).toBe(child.platform.architecture);
      expect(pulled.config.os).toBe('linux');
    }
  });

  test('seeding again, even from an empty build cache, gives identical digests', async () => {
    const cacheRoot = mkdtempSync(path.join(os.tmpdir(), 'paddock-seed-cache-'));
    const second = await startTestRegistry();
    try {
      const again = await seedTestImages(second, [...DEFAULT_SEEDS], { cacheRoot });
      const fromCache = await seedTestImages(second);
      for (const name of DEFAULT_SEEDS) {
        const strip = (i: SeededImage) => ({ ...i, ref: undefined });
        expect(strip(again[name])).toEqual(strip(images[name]));
        expect(strip(fromCache[name])).toEqual(strip(images[name]));
      }
    } finally {
      await second.stop();
      await removeTree(cacheRoot);
    }
  });

  test('unknown seed names are refused', async () => {
    await expect(seedTestImages(reg, ['busybox', 'nope' as SeedName])).rejects.toThrow(/unknown seed image.*nope/);
  });
});

describe('test registry with htpasswd auth', () => {
  const auth = { username: 'paddock', password: 'tr1cky:pass word' };
  let reg: TestRegistry;
  let busybox: SeededImage;

  beforeAll(async () => {
    reg = await startTestRegistry({ auth });
    busybox = (await seedTestImages(reg, ['busybox'])).busybox;
  });
  afterAll(async () => {
    await reg?.stop();
  });

  test('refuses anonymous pulls with a Basic challenge', async () => {
    for (const p of ['/v2/', '/v2/busybox/manifests/latest', `/v2/busybox/blobs/${busybox.configDigest}`]) {
      const res = await registryRequest(reg, 'GET', p, { anonymous: true });
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Basic realm="/);
    }
  });

  test('refuses a wrong password', async () => {
    const wrong = { host: reg.host, auth: { ...auth, password: 'wrong' } };
    expect((await registryRequest(wrong, 'GET', '/v2/busybox/manifests/latest')).status).toBe(401);
  });

  test('serves the seeded image to the right credentials', async () => {
    const res = await registryRequest(reg, 'GET', '/v2/busybox/manifests/latest', { headers: { Accept: MEDIA_TYPES.docker.manifest } });
    expect(res.status).toBe(200);
    expect(res.headers['docker-content-digest']).toBe(busybox.manifestDigest);
  });
});

test('a registry on a given storage dir keeps its content across restarts, and stop() leaves the dir', async () => {
  const storageDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-reg-storage-'));
  try {
    const first = await startTestRegistry({ storageDir });
    const { hello } = await seedTestImages(first, ['hello']);
    await first.stop();
    await expect(fs.stat(path.join(storageDir, 'docker/registry/v2/repositories/hello'))).resolves.toBeTruthy();
    const second = await startTestRegistry({ storageDir });
    try {
      const res = await registryRequest(second, 'GET', '/v2/hello/manifests/latest', { headers: { Accept: MEDIA_TYPES.docker.manifest } });
      expect(res.headers['docker-content-digest']).toBe(hello.manifestDigest);
    } finally {
      await second.stop();
    }
  } finally {
    await removeTree(storageDir);
  }
});

test('a given port is used as is', async () => {
  const probe = await startTestRegistry();
  const port = Number(probe.host.split(':')[1]);
  await probe.stop();
  const reg = await startTestRegistry({ port });
  try {
    expect(reg.host).toBe(`127.0.0.1:${port}`);
    expect((await registryRequest(reg, 'GET', '/v2/')).status).toBe(200);
  } finally {
    await reg.stop();
  }
});

// ---------------------------------------------------------------------------------------------
// Reference: Debian's dockerd pulls the same images and must report the IDs and RepoDigests we
// computed, which are what Paddock has to report too.

const dockerdUnavailable = referenceDockerdUnavailable() ?? mountNamespaceUnavailable();
if (dockerdUnavailable) {
  console.warn(
    `\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n` +
      `!! SKIPPING the reference dockerd comparison: ${dockerdUnavailable}\n` +
      `!! Image IDs and RepoDigests are NOT being checked against real Docker.\n` +
      `!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n`,
  );
}

/** The reference dockerd runs in its own mount namespace; some sandboxes forbid creating one. */
function mountNamespaceUnavailable(): string | undefined {
  if (process.env.PADDOCK_SKIP_REFERENCE_DOCKERD) return 'PADDOCK_SKIP_REFERENCE_DOCKERD is set';
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'true'], { stdio: 'ignore' });
  return r.status === 0 ? undefined : 'cannot create a mount namespace (unshare --mount failed)';
}

(dockerdUnavailable ? describe.skip : describe)('reference dockerd agrees with the seeded digests', () => {
  let reg: TestRegistry;
  let images: Record<SeedName, SeededImage>;
  let refd: ReferenceDockerd;

  beforeAll(async () => {
    reg = await startTestRegistry();
    images = await seedTestImages(reg);
    refd = await startReferenceDockerd({ insecureRegistries: [reg.host] });
  });
  afterAll(async () => {
    await refd?.stop();
    await reg?.stop();
  });

  test.each(['busybox', 'busybox-oci', 'hello', 'layered', 'multiarch'] as const)(
    'docker pull %s: Id is the config digest, RepoDigests has the manifest digest',
    async (name) => {
      const img = images[name];
      const pull = await refd.docker(['pull', img.ref]);
      expect(pull.stderr).toBe('');
      expect(pull.code).toBe(0);
      expect(pull.stdout).toContain(`Digest: ${img.manifestDigest}`);
      const inspect = await refd.docker(['image', 'inspect', img.ref]);
      expect(inspect.code).toBe(0);
      const [info] = JSON.parse(inspect.stdout);
      expect(info.Id).toBe(img.configDigest);
      expect(info.RepoDigests).toContain(`${reg.host}/${img.repo}@${img.manifestDigest}`);
      expect(info.RepoTags).toContain(img.ref);
      expect(info.RootFS.Layers).toHaveLength(img.layers);
      expect(info.Architecture).toBe('amd64');
    },
  );
});
