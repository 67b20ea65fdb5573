/**
 * Image endpoints end to end: the real docker CLI against Paddock, pulling from a real
 * distribution registry on 127.0.0.1 seeded with known images (so digests are known).
 */
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon';
import { startTestRegistry, type TestRegistry } from '../helpers/registry';
import { seedTestImages, type SeedName, type SeededImage } from '../helpers/seed-images';

jest.setTimeout(180_000);

let reg: TestRegistry;
let seeds: Record<SeedName, SeededImage>;
let td: TestDaemon;
let dataRoot: string;

beforeAll(async () => {
  reg = await startTestRegistry();
  seeds = await seedTestImages(reg, ['busybox', 'hello', 'layered', 'multiarch']);
  // Our own data root, so a second daemon can be started on it (restart test).
  dataRoot = mkdtempSync(path.join(os.tmpdir(), 'paddock-images-data-'));
  td = await startTestDaemon({ dataRoot });
});

afterAll(async () => {
  await td?.close();
  await reg?.stop();
  if (dataRoot) await fs.rm(dataRoot, { recursive: true, force: true });
});

async function docker(args: string[], expectCode = 0) {
  const r = await td.docker(args);
  if (r.code !== expectCode) throw new Error(`docker ${args.join(' ')} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return r;
}

describe('pull', () => {
  it('pulls with dockerd-style progress and ends with the registry digest', async () => {
    const r = await docker(['pull', seeds.busybox.ref]);
    expect(r.stdout).toContain('latest: Pulling from busybox');
    expect(r.stdout).toContain('Pull complete');
    expect(r.stdout).toContain(`Digest: ${seeds.busybox.manifestDigest}`);
    expect(r.stdout).toContain(`Status: Downloaded newer image for ${seeds.busybox.ref}`);
    const again = await docker(['pull', seeds.busybox.ref]);
    expect(again.stdout).toContain(`Status: Image is up to date for ${seeds.busybox.ref}`);
  });

  it('lists and inspects the image as dockerd does', async () => {
    const list = await docker(['images', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']);
    expect(list.stdout).toContain(`${reg.host}/busybox:latest ${seeds.busybox.configDigest.slice(7, 19)}`);
    const inspect = JSON.parse((await docker(['image', 'inspect', seeds.busybox.ref])).stdout)[0];
    expect(inspect.Id).toBe(seeds.busybox.configDigest);
    expect(inspect.RepoTags).toEqual([seeds.busybox.ref]);
    expect(inspect.RepoDigests).toEqual([`${reg.host}/busybox@${seeds.busybox.manifestDigest}`]);
    expect(inspect.RootFS.Layers).toHaveLength(seeds.busybox.layers);
    expect(inspect.Config.Cmd).toEqual(['sh']);
    expect(inspect.Size).toBeGreaterThan(1_000_000);
    const history = await docker(['history', '--no-trunc', '--format', '{{.ID}} {{.CreatedBy}}', seeds.busybox.ref]);
    expect(history.stdout).toContain(`${seeds.busybox.configDigest} ADD rootfs /`);
  });

  it('pulls layers with whiteouts and an opaque dir into a tree overlayfs shows right', async () => {
    await docker(['pull', seeds.layered.ref]);
    const image = await td.daemon.engine.images.resolve(seeds.layered.ref);
    expect(image.id).toBe(seeds.layered.configDigest);
    expect(image.layerDirs).toHaveLength(4);
    const base = mkdtempSync(path.join(os.tmpdir(), 'paddock-layered-'));
    try {
      for (const d of ['upper', 'work', 'merged']) await fs.mkdir(path.join(base, d));
      execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${image.layerDirs.join(':')},upperdir=${base}/upper,workdir=${base}/work`, `${base}/merged`]);
      try {
        const merged = path.join(base, 'merged');
        expect((await fs.readdir(path.join(merged, 'data'))).sort()).toEqual(['hardlink-a.txt', 'hardlink-b.txt', 'keep-link', 'keep.txt', 'private.txt']);
        expect(await fs.readdir(path.join(merged, 'opt/dir'))).toEqual(['b.txt']);
        expect((await fs.stat(path.join(merged, 'data/private.txt'))).mode & 0o777).toBe(0o600);
        expect(existsSync(path.join(merged, 'bin/busybox'))).toBe(true);
      } finally {
        execFileSync('umount', [`${base}/merged`]);
      }
    } finally {
      await fs.rm(base, { recursive: true, force: true });
    }
  });

  it('picks linux/amd64 from an index, or the platform asked for', async () => {
    const r = await docker(['pull', seeds.multiarch.ref]);
    expect(r.stdout).toContain(`Digest: ${seeds.multiarch.manifestDigest}`);
    const amd64 = seeds.multiarch.platforms!.find((p) => p.platform.architecture === 'amd64')!;
    const arm64 = seeds.multiarch.platforms!.find((p) => p.platform.architecture === 'arm64')!;
    expect(JSON.parse((await docker(['image', 'inspect', seeds.multiarch.ref])).stdout)[0].Id).toBe(amd64.configDigest);
    await docker(['pull', '--platform', 'linux/arm64', seeds.multiarch.ref]);
    const inspect = JSON.parse((await docker(['image', 'inspect', seeds.multiarch.ref])).stdout)[0];
    expect(inspect.Id).toBe(arm64.configDigest);
    expect(inspect.Architecture).toBe('arm64');
  });

  it('answers malformed references with 400 and unknown ones with 404', async () => {
    const bad = await td.request('POST', `/v1.51/images/create?fromImage=${encodeURIComponent(`${reg.host}/Busybox`)}&tag=latest`);
    expect(bad.status).toBe(400);
    expect(bad.json().message).toMatch(/invalid reference format/);
    expect((await td.request('GET', '/images/UPPER/json')).status).toBe(400);
    const missing = await td.request('GET', '/v1.51/images/nope/json');
    expect(missing.status).toBe(404);
    expect(missing.json()).toEqual({ message: 'No such image: nope:latest' });
    const noTag = await docker(['pull', `${reg.host}/busybox:nosuchtag`], 1);
    expect(noTag.stderr).toContain(`manifest for ${reg.host}/busybox:nosuchtag not found: manifest unknown`);
  });
});

describe('tag and rmi', () => {
  it('untags by name and refuses to delete an ID with tags in several repositories', async () => {
    await docker(['pull', seeds.hello.ref]);
    await docker(['tag', seeds.hello.ref, 'hello-copy:v1']);
    const ids = (await docker(['images', '-q', '--no-trunc', 'hello-copy'])).stdout.trim();
    expect(ids).toBe(seeds.hello.configDigest);
    const conflict = await docker(['rmi', seeds.hello.configDigest.slice(7, 19)], 1);
    expect(conflict.stderr).toContain(
      `conflict: unable to delete ${seeds.hello.configDigest.slice(7, 19)} (must be forced) - image is referenced in multiple repositories`,
    );
    expect((await docker(['rmi', 'hello-copy:v1'])).stdout).toContain('Untagged: hello-copy:v1');
    const removed = await docker(['rmi', seeds.hello.ref]);
    expect(removed.stdout).toContain(`Untagged: ${seeds.hello.ref}`);
    expect(removed.stdout).toContain(`Deleted: ${seeds.hello.configDigest}`);
    expect((await td.request('GET', `/images/${seeds.hello.configDigest}/json`)).status).toBe(404);
  });

  it('refuses to remove an image a container uses, unless forced', async () => {
    await docker(['pull', seeds.hello.ref]);
    await td.daemon.engine.images.setUsageProbe(async (id) => (id === seeds.hello.configDigest ? [{ id: 'c'.repeat(64), running: false }] : []));
    try {
      const byName = await docker(['rmi', seeds.hello.ref], 1);
      expect(byName.stderr).toContain(
        `conflict: unable to remove repository reference "${seeds.hello.ref}" (must force) - container cccccccccccc is using its referenced image ${seeds.hello.configDigest.slice(7, 19)}`,
      );
      const forced = await docker(['rmi', '-f', seeds.hello.ref]);
      expect(forced.stdout).toContain(`Untagged: ${seeds.hello.ref}`);
      // The container keeps its image (and layers) though the image no longer lists.
      expect((await td.request('GET', `/images/${seeds.hello.configDigest}/json`)).status).toBe(404);
      const stillThere = await td.daemon.engine.images.resolve(seeds.hello.configDigest);
      expect(existsSync(stillThere.layerDirs[0])).toBe(true);
    } finally {
      td.daemon.engine.images.setUsageProbe(async () => []);
    }
  });
});

describe('save, load, push', () => {
  it('round-trips images through docker save | docker load', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-save-'));
    try {
      const tarPath = path.join(dir, 'images.tar');
      await docker(['save', '-o', tarPath, seeds.busybox.ref, seeds.layered.ref]);
      const members = execFileSync('tar', ['-tf', tarPath], { encoding: 'utf8' }).split('\n');
      expect(members).toEqual(expect.arrayContaining(['manifest.json', 'index.json', 'oci-layout', 'repositories', `blobs/sha256/${seeds.layered.configDigest.slice(7)}`]));
      await docker(['rmi', seeds.layered.ref]);
      expect((await td.request('GET', `/images/${seeds.layered.configDigest}/json`)).status).toBe(404);
      const loaded = await td.docker(['load', '-i', tarPath]);
      expect(loaded.code).toBe(0);
      expect(loaded.stdout).toContain(`Loaded image: ${seeds.layered.ref}`);
      expect(JSON.parse((await docker(['image', 'inspect', seeds.layered.ref])).stdout)[0].Id).toBe(seeds.layered.configDigest);

      // A plain OCI layout (no manifest.json) loads too, named by its index annotations.
      const layout = path.join(dir, 'layout');
      await fs.mkdir(layout);
      execFileSync('tar', ['-xf', tarPath, '-C', layout]);
      execFileSync('tar', ['-cf', path.join(dir, 'oci.tar'), '-C', layout, 'blobs', 'index.json', 'oci-layout']);
      await docker(['rmi', seeds.layered.ref]);
      const oci = await docker(['load', '-i', path.join(dir, 'oci.tar')]);
      expect(oci.stdout).toContain(`Loaded image: ${seeds.layered.ref}`);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('pushes to the registry, and the pushed image pulls back with the same ID', async () => {
    const target = `${reg.host}/pushed/layered:v1`;
    await docker(['tag', seeds.layered.ref, target]);
    const pushed = await docker(['push', target]);
    expect(pushed.stdout).toContain(`The push refers to repository [${reg.host}/pushed/layered]`);
    const digest = /v1: digest: (sha256:[a-f0-9]{64}) size: \d+/.exec(pushed.stdout)?.[1];
    expect(digest).toBeDefined();
    await docker(['rmi', target]);
    const pulled = await docker(['pull', target]);
    expect(pulled.stdout).toContain(`Digest: ${digest}`);
    expect(JSON.parse((await docker(['image', 'inspect', target])).stdout)[0].Id).toBe(seeds.layered.configDigest);
    const allTags = await docker(['pull', '--all-tags', `${reg.host}/pushed/layered`]);
    expect(allTags.stdout).toContain('v1: Pulling from pushed/layered');
    expect(allTags.stdout).toContain(`Status: Image is up to date for ${reg.host}/pushed/layered`);
  });
});

describe('registry auth', () => {
  it('pulls from an htpasswd registry only after docker login', async () => {
    const authReg = await startTestRegistry({ auth: { username: 'paddock', password: 's3cret' } });
    try {
      const authSeeds = await seedTestImages(authReg, ['hello']);
      const anonymous = await docker(['pull', authSeeds.hello.ref], 1);
      expect(anonymous.stderr).toContain('no basic auth credentials');
      const badLogin = await td.docker(['login', '-u', 'paddock', '--password-stdin', authReg.host], { input: 'wrong\n' });
      expect(badLogin.code).not.toBe(0);
      expect(badLogin.stderr).toContain('401 Unauthorized');
      const login = await td.docker(['login', '-u', 'paddock', '--password-stdin', authReg.host], { input: 's3cret\n' });
      expect(login.stdout).toContain('Login Succeeded');
      const pulled = await docker(['pull', authSeeds.hello.ref]);
      expect(pulled.stdout).toContain(`Digest: ${authSeeds.hello.manifestDigest}`);
    } finally {
      await authReg.stop();
    }
  });
});

describe('import, prune, filters, API versions', () => {
  it('imports a root filesystem tarball with --change and --message', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-import-'));
    try {
      await fs.mkdir(path.join(dir, 'root/bin'), { recursive: true });
      await fs.writeFile(path.join(dir, 'root/bin/hi'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
      execFileSync('tar', ['-C', path.join(dir, 'root'), '-czf', path.join(dir, 'rootfs.tgz'), '.']);
      const r = await docker(['import', '--change', 'CMD ["/bin/hi"]', '--change', 'ENV MODE=imported', '-m', 'from a tarball', path.join(dir, 'rootfs.tgz'), 'imported:v1']);
      const id = r.stdout.trim();
      expect(id).toMatch(/^sha256:[a-f0-9]{64}$/);
      const inspect = JSON.parse((await docker(['image', 'inspect', 'imported:v1'])).stdout)[0];
      expect(inspect.Id).toBe(id);
      expect(inspect.Config.Cmd).toEqual(['/bin/hi']);
      expect(inspect.Config.Env).toEqual(['MODE=imported']);
      expect(inspect.Comment).toBe('from a tarball');
      const history = JSON.parse((await td.request('GET', '/images/imported:v1/history')).body);
      expect(history).toEqual([expect.objectContaining({ Id: id, Comment: 'from a tarball', Tags: ['imported:v1'] })]);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('prunes dangling images, then every unused one with -a', async () => {
    const empty = (content: string) => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-prune-'));
      execFileSync('sh', ['-c', `echo ${content} > ${dir}/f && tar -C ${dir} -cf ${dir}.tar f`]);
      return `${dir}.tar`;
    };
    const first = (await docker(['import', empty('one'), 'prunable:v1'])).stdout.trim();
    await docker(['import', empty('two'), 'prunable:v1']); // the first one is dangling now
    const dangling = JSON.parse((await td.request('GET', `/images/json?filters=${encodeURIComponent('{"dangling":["true"]}')}`)).body);
    expect(dangling.map((i: { Id: string }) => i.Id)).toEqual([first]);
    const pruned = await docker(['image', 'prune', '-f']);
    expect(pruned.stdout).toContain(`deleted: ${first}`);
    expect((await td.request('GET', `/images/${first}/json`)).status).toBe(404);
    expect((await td.request('GET', '/images/prunable:v1/json')).status).toBe(200);

    // -a: every image no container uses, tagged or not (on a daemon of its own).
    const fresh = await startTestDaemon();
    try {
      const kept = (await fresh.docker(['import', empty('three'), 'in-use:v1'])).stdout.trim();
      const gone = (await fresh.docker(['import', empty('four'), 'unused:v1'])).stdout.trim();
      fresh.daemon.engine.images.setUsageProbe(async (id) => (id === kept ? [{ id: 'd'.repeat(64), running: true }] : []));
      const all = await fresh.docker(['image', 'prune', '-a', '-f']);
      expect(all.stdout).toContain('untagged: unused:v1');
      expect(all.stdout).toContain(`deleted: ${gone}`);
      expect(all.stdout).not.toContain(kept);
      expect((await fresh.docker(['images', '--format', '{{.Repository}}:{{.Tag}}'])).stdout.trim()).toBe('in-use:v1');
    } finally {
      await fresh.close();
    }
  });

  it('filters the list by label, reference and before/since', async () => {
    const list = async (filters: object) =>
      JSON.parse((await td.request('GET', `/images/json?filters=${encodeURIComponent(JSON.stringify(filters))}`)).body) as Array<{ Id: string; RepoTags: string[] }>;
    expect((await list({ label: ['org.paddock.test=layered'] })).map((i) => i.Id)).toEqual([seeds.layered.configDigest]);
    expect((await list({ reference: ['*/layered'] })).flatMap((i) => i.RepoTags)).toEqual([seeds.layered.ref]);
    expect(await list({ since: ['imported:v1'] })).toEqual(expect.arrayContaining([expect.objectContaining({ RepoTags: ['prunable:v1'] })]));
    expect((await list({ before: ['imported:v1'] })).map((i) => i.Id)).toContain(seeds.busybox.configDigest);
    const bad = await td.request('GET', `/images/json?filters=${encodeURIComponent('{"nope":["x"]}')}`);
    expect(bad.status).toBe(400);
    expect(bad.json().message).toBe("invalid filter 'nope'");
  });

  it('shapes answers per API version', async () => {
    const old = (await td.request('GET', '/v1.41/images/json')).json()[0];
    const current = (await td.request('GET', '/v1.51/images/json')).json()[0];
    expect(old.VirtualSize).toBe(old.Size);
    expect(old.Containers).toBe(-1);
    expect(current.VirtualSize).toBeUndefined();
    expect(current.Containers).toBe(0);
    const oldInspect = (await td.request('GET', `/v1.41/images/${seeds.busybox.ref}/json`)).json();
    const newInspect = (await td.request('GET', `/v1.51/images/${seeds.busybox.ref}/json`)).json();
    expect(oldInspect.ContainerConfig).toBeDefined();
    expect(oldInspect.Config.Hostname).toBe('');
    expect(newInspect.ContainerConfig).toBeUndefined();
    expect(newInspect.Config.Hostname).toBeUndefined();
  });

  it('inspects a distribution reference without pulling it', async () => {
    const r = await td.request('GET', `/distribution/${seeds.multiarch.ref}/json`);
    expect(r.status).toBe(200);
    expect(r.json().Descriptor).toEqual({ mediaType: seeds.multiarch.mediaType, digest: seeds.multiarch.manifestDigest, size: expect.any(Number) });
    expect(r.json().Platforms).toEqual(expect.arrayContaining([expect.objectContaining({ os: 'linux', architecture: 'amd64' })]));
  });

  it('publishes image events as dockerd does', async () => {
    const since = (Date.now() / 1000).toFixed(3);
    await docker(['tag', seeds.busybox.ref, 'evented:1']);
    await docker(['rmi', 'evented:1']);
    const until = (Date.now() / 1000 + 0.001).toFixed(3);
    const lines = (await td.request('GET', `/events?since=${since}&until=${until}&filters=${encodeURIComponent('{"type":["image"]}')}`)).body
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((e) => `${e.Action} ${e.Actor.ID} ${e.Actor.Attributes.name}`)).toEqual([
      `tag ${seeds.busybox.configDigest} evented:1`,
      `untag ${seeds.busybox.configDigest} ${seeds.busybox.configDigest}`,
    ]);
  });
});

describe('integrity and durability', () => {
  it('fails a pull whose blob does not match its digest, and stores nothing of it', async () => {
    const badReg = await startTestRegistry();
    // A daemon of its own: this one's store already holds the layer under test.
    const fresh = await startTestDaemon();
    try {
      const badSeeds = await seedTestImages(badReg, ['hello']);
      const manifest = JSON.parse(
        execFileSync('cat', [registryBlobPath(badReg, badSeeds.hello.manifestDigest)], { encoding: 'utf8' }),
      ) as { layers: Array<{ digest: string }> };
      const layerFile = registryBlobPath(badReg, manifest.layers[0].digest);
      const original = await fs.readFile(layerFile);
      const corrupted = Buffer.from(original);
      corrupted[corrupted.length - 20] ^= 0xff;
      await fs.writeFile(layerFile, corrupted);
      const r = await fresh.docker(['pull', badSeeds.hello.ref]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`filesystem layer verification failed for digest ${manifest.layers[0].digest}`);
      expect((await fresh.docker(['images', '-q'])).stdout.trim()).toBe('');
      const store = path.join(fresh.dataRoot, 'image');
      for (const dir of ['layers', 'ingest', 'images']) expect(entries(path.join(store, dir))).toEqual([]);
    } finally {
      await fresh.close();
      await badReg.stop();
    }
  });

  it('stops a pull when the client goes away, leaving nothing behind', async () => {
    // A registry front that serves blobs a trickle at a time, so the pull is still downloading.
    let blobClosed!: () => void;
    let blobOpened!: () => void;
    const blobGone = new Promise<void>((resolve) => (blobClosed = resolve));
    const blobStarted = new Promise<void>((resolve) => (blobOpened = resolve));
    const proxy = http.createServer((req, res) => {
      const upstream = http.request({ host: '127.0.0.1', port: Number(reg.host.split(':')[1]), path: req.url, method: req.method, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        // Manifests and the config pass; layer blobs trickle.
        const isLayer = /\/blobs\/sha256:/.test(req.url ?? '') && !(req.url ?? '').includes(seeds.hello.configDigest);
        if (!isLayer || req.method !== 'GET') return void up.pipe(res);
        up.once('data', (chunk: Buffer) => {
          res.write(chunk.subarray(0, 512));
          blobOpened();
        });
        res.on('close', () => {
          up.destroy();
          blobClosed();
        });
      });
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const fresh = await startTestDaemon();
    try {
      const host = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      const req = http.request({ socketPath: fresh.socketPath, method: 'POST', path: `/images/create?fromImage=${host}/hello&tag=latest` }, (res) =>
        res.resume(),
      );
      req.on('error', () => undefined);
      req.end();
      await blobStarted;
      req.destroy(); // the client goes away mid-download
      // The daemon hangs up on the registry: the download was abandoned.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([blobGone, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the download went on')), 20_000)))]);
      clearTimeout(timer);
      await new Promise((r) => setTimeout(r, 200));
      expect((await fresh.docker(['images', '-q'])).stdout.trim()).toBe('');
      const store = path.join(fresh.dataRoot, 'image');
      for (const dir of ['layers', 'ingest', 'images']) expect(entries(path.join(store, dir))).toEqual([]);
    } finally {
      await fresh.close();
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    }
  });

  it('keeps images across a daemon restart', async () => {
    const before = (await docker(['images', '--no-trunc', '-q'])).stdout.trim().split('\n').sort();
    await td.close();
    td = await startTestDaemon({ dataRoot });
    const after = (await docker(['images', '--no-trunc', '-q'])).stdout.trim().split('\n').sort();
    expect(after).toEqual(before);
    const inspect = JSON.parse((await docker(['image', 'inspect', seeds.busybox.ref])).stdout)[0];
    expect(inspect.RepoDigests).toEqual([`${reg.host}/busybox@${seeds.busybox.manifestDigest}`]);
  });

  it('keeps an image removed with force for the container using it, across a restart, until it is gone', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'paddock-hidden-'));
    let daemon = await startTestDaemon({ dataRoot: root });
    try {
      expect((await daemon.docker(['pull', seeds.hello.ref])).code).toBe(0);
      daemon.daemon.engine.images.setUsageProbe(async () => [{ id: 'a'.repeat(64), running: false }]);
      expect((await daemon.docker(['rmi', '-f', seeds.hello.ref])).code).toBe(0);
      expect((await daemon.docker(['images', '-q'])).stdout.trim()).toBe('');
      await daemon.close();
      daemon = await startTestDaemon({ dataRoot: root });
      // Still there for its container (by full ID), though no longer listed...
      const hidden = await daemon.daemon.engine.images.resolve(seeds.hello.configDigest);
      expect(existsSync(hidden.layerDirs[0])).toBe(true);
      expect((await daemon.request('GET', `/images/${seeds.hello.configDigest}/json`)).status).toBe(404);
      // ...until no container uses it: then the next collection frees it.
      daemon.daemon.engine.images.setUsageProbe(async () => []);
      await daemon.docker(['image', 'prune', '-f']);
      await expect(daemon.daemon.engine.images.resolve(seeds.hello.configDigest)).rejects.toThrow(/No such image/);
      expect(existsSync(hidden.layerDirs[0])).toBe(false);
    } finally {
      await daemon.close();
      await fs.rm(root, { recursive: true, force: true });
    }
  });

  it('downloads a layer once when two pulls want it at the same time', async () => {
    const fresh = await startTestDaemon();
    try {
      const [a, b] = await Promise.all([fresh.docker(['pull', seeds.layered.ref]), fresh.docker(['pull', seeds.layered.ref])]);
      expect([a.code, b.code]).toEqual([0, 0]);
      expect(entries(path.join(fresh.dataRoot, 'image/layers'))).toHaveLength(seeds.layered.layers);
      expect(entries(path.join(fresh.dataRoot, 'image/blobs/sha256'))).toHaveLength(seeds.layered.layers + 2); // + config, manifest
    } finally {
      await fresh.close();
    }
  });
});

function entries(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

function registryBlobPath(r: TestRegistry, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(r.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}
