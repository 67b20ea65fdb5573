/**
 * Commit at the image service level: a container's overlayfs upper dir (with a whiteout and an
 * opaque dir) becomes a new layer whose tar carries OCI whiteouts, and whose rootfs, seen
 * through the new image's layerDirs in a real overlay mount, shows the container's changes.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { setAttributeSync } from '@napi-rs/xattr';
import tar from 'tar-stream';
import { EventBus, type DockerEvent } from '../../src/engine/events';
import { ImageService } from '../../src/engine/images/image-service';
import { makeTar } from './images-fixtures';

let base: string;
let images: ImageService;
let events: EventBus;
let parentId: string;

beforeEach(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'paddock-commit-'));
  events = new EventBus();
  images = await ImageService.open({ root: path.join(base, 'store'), events, insecureRegistries: [] });
  const rootfs = await makeTar([
    { name: 'etc/gone', content: 'deleted by the container' },
    { name: 'etc/kept', content: 'kept' },
    { name: 'var/cache/old', content: 'hidden by an opaque dir' },
  ]);
  parentId = await images.import({ source: Readable.from(rootfs), origin: '-', repo: 'base:1', changes: ['CMD ["sh"]', 'ENV A=1'] });
});

afterEach(async () => {
  execFileSync('sh', ['-c', `umount -l ${base}/merged 2>/dev/null || true`]);
  await fs.rm(base, { recursive: true, force: true });
});

/** An upper dir as overlayfs leaves it after `rm /etc/gone; rm -rf /var/cache; mkdir /var/cache; touch /var/cache/new; echo hi >/hello`. */
async function fakeUpperDir(): Promise<string> {
  const upper = path.join(base, 'upper');
  await fs.mkdir(path.join(upper, 'etc'), { recursive: true });
  execFileSync('mknod', [path.join(upper, 'etc/gone'), 'c', '0', '0']);
  await fs.mkdir(path.join(upper, 'var/cache'), { recursive: true });
  setAttributeSync(path.join(upper, 'var/cache'), 'trusted.overlay.opaque', 'y');
  await fs.writeFile(path.join(upper, 'var/cache/new'), 'new');
  await fs.writeFile(path.join(upper, 'hello'), 'hi\n');
  return upper;
}

async function tarMembers(blob: Readable): Promise<string[]> {
  const extract = tar.extract();
  const names: string[] = [];
  const feed = (async () => {
    for await (const c of blob.pipe(createGunzip())) extract.write(c as Buffer);
    (extract as unknown as { end(): void }).end();
  })();
  for await (const entry of extract) {
    names.push(entry.header.name);
    for await (const _ of entry) void _;
  }
  await feed;
  return names;
}

describe('commit', () => {
  it('turns the upper dir into a layer with OCI whiteouts, and a rootfs that shows the changes', async () => {
    const seen: DockerEvent[] = [];
    events.subscribe((e) => seen.push(e));
    const id = await images.commitContainer({
      containerId: 'f'.repeat(64),
      containerName: 'builder',
      imageId: parentId,
      upperDir: await fakeUpperDir(),
      containerConfig: { Cmd: ['sh'], Env: ['A=1', 'PATH=/bin'] },
      requestConfig: {},
      changes: ['LABEL stage=committed', 'CMD ["cat", "/hello"]'],
      repo: 'committed',
      tag: 'v1',
      author: 'Paddock Tests',
      comment: 'from a fake upper dir',
    });

    const inspect = images.inspect('committed:v1', '1.51') as Record<string, any>;
    expect(inspect.Id).toBe(id);
    expect(inspect.Parent).toBe(parentId);
    expect(inspect.Author).toBe('Paddock Tests');
    expect(inspect.Comment).toBe('from a fake upper dir');
    expect(inspect.Config.Cmd).toEqual(['cat', '/hello']);
    expect(inspect.Config.Env).toEqual(['A=1', 'PATH=/bin']);
    expect(inspect.Config.Labels).toEqual({ stage: 'committed' });
    expect(inspect.RootFS.Layers).toHaveLength(2);

    const record = images.store.layers.get(inspect.RootFS.Layers[1])!;
    const members = await tarMembers(images.store.contents.open(record.blobs[0].digest));
    expect(members).toEqual(expect.arrayContaining(['etc/.wh.gone', 'var/cache/.wh..wh..opq', 'var/cache/new', 'hello']));
    expect(members).not.toContain('etc/gone');

    const { layerDirs } = await images.resolve(id);
    for (const d of ['u', 'w', 'merged']) await fs.mkdir(path.join(base, d));
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${layerDirs.join(':')},upperdir=${base}/u,workdir=${base}/w`, `${base}/merged`]);
    const merged = path.join(base, 'merged');
    expect((await fs.readdir(path.join(merged, 'etc'))).sort()).toEqual(['kept']);
    expect(await fs.readdir(path.join(merged, 'var/cache'))).toEqual(['new']);
    expect(readFileSync(path.join(merged, 'hello'), 'utf8')).toBe('hi\n');

    const history = images.history(id);
    expect(history[0]).toMatchObject({ Id: id, Tags: ['committed:v1'], Comment: 'from a fake upper dir' });
    expect(history[1]).toMatchObject({ Id: parentId, Tags: ['base:1'] });
    expect(seen.map((e) => `${e.Type}:${e.Action}`)).toEqual(['image:tag', 'container:commit']);
    expect(seen[1].Actor.Attributes).toMatchObject({ imageID: id, imageRef: 'committed:v1', name: 'builder', comment: 'from a fake upper dir' });
  });

  it('adds no layer when the container changed nothing', async () => {
    const upper = path.join(base, 'empty-upper');
    await fs.mkdir(upper);
    const id = await images.commitContainer({
      containerId: 'e'.repeat(64),
      imageId: parentId,
      upperDir: upper,
      containerConfig: { Cmd: ['sh'] },
      requestConfig: {},
      changes: [],
    });
    const config = images.store.images.get(id)!.config;
    expect(config.rootfs.diff_ids).toHaveLength(1);
    expect(config.history!.at(-1)!.empty_layer).toBe(true);
    expect(images.inspect(id, '1.51').RepoTags).toEqual([]);
  });
});
