/**
 * The image store without a registry: images imported from tarballs, shared layers stored once
 * and freed with their last image, state that survives a reopen, and crash leftovers (a pull
 * killed between storing its image and its tag, half-written blobs and layers) swept away.
 */
import { mkdtempSync, promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { EventBus } from '../../src/engine/events';
import { ImageService } from '../../src/engine/images/image-service';
import { makeTar } from './images-fixtures';

let root: string;
let events: EventBus;

beforeEach(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'paddock-store-'));
  events = new EventBus();
});
afterEach(() => fs.rm(root, { recursive: true, force: true }));

const open = () => ImageService.open({ root, events, insecureRegistries: [] });

async function importTar(images: ImageService, repo: string, files: Record<string, string>): Promise<string> {
  const tar = await makeTar(Object.entries(files).map(([name, content]) => ({ name, content })));
  return images.import({ source: Readable.from(tar), origin: '-', repo, changes: ['CMD ["sh"]'] });
}

const layerDirs = () => readdirSync(path.join(root, 'layers')).filter((n) => !n.startsWith('.'));

describe('image store', () => {
  it('stores a layer shared by two images once and frees it with the last one', async () => {
    const images = await open();
    const a = await importTar(images, 'one:v1', { 'etc/x': 'same bytes' });
    await images.tag(a, 'two', 'v2');
    expect(layerDirs()).toHaveLength(1);
    const other = await importTar(images, 'three:v3', { 'etc/y': 'other bytes' });
    expect(layerDirs()).toHaveLength(2);

    expect(await images.remove('one:v1', { force: false, noprune: false })).toEqual([{ Untagged: 'one:v1' }]);
    expect(layerDirs()).toHaveLength(2);
    const removed = await images.remove('two:v2', { force: false, noprune: false });
    expect(removed).toEqual(expect.arrayContaining([{ Untagged: 'two:v2' }, { Deleted: a }]));
    expect(layerDirs()).toHaveLength(1);
    expect((await images.resolve('three:v3')).id).toBe(other);
    // Containers get short lower-dir paths (overlayfs takes all of them in one 4 KiB option).
    const [dir] = (await images.resolve('three:v3')).layerDirs;
    expect(dir).toMatch(new RegExp(`^${root}/l/[a-f0-9]{12}$`));
    expect(await fs.realpath(dir)).toMatch(new RegExp(`^${root}/layers/[a-f0-9]{64}/diff$`));
    expect(readdirSync(path.join(root, 'l'))).toEqual([path.basename(dir)]);
    // Only the remaining image's config, its layer blob and nothing else stays in the content store.
    expect(readdirSync(path.join(root, 'blobs/sha256'))).toHaveLength(2);
  });

  it('keeps images, tags and tag times across a reopen', async () => {
    const first = await open();
    const id = await importTar(first, 'keep:me', { f: 'x' });
    await first.tag('keep:me', 'again', null);
    const inspect = first.inspect('again', '1.51');
    const reopened = await open();
    expect(reopened.inspect('again:latest', '1.51')).toEqual(inspect);
    expect((await reopened.resolve('keep:me')).id).toBe(id);
    expect((inspect.Metadata as { LastTagTime: string }).LastTagTime).not.toBe('0001-01-01T00:00:00Z');
  });

  it('forgets an image whose pull died before its tag was written, and sweeps half-written files', async () => {
    const first = await open();
    const id = await importTar(first, 'victim:1', { f: 'x' });
    // Rewind to the moment between "image stored" and "tag written": the record is still pending.
    const recordFile = path.join(root, 'images', id.slice(7), 'image.json');
    const record = JSON.parse(await fs.readFile(recordFile, 'utf8'));
    await fs.writeFile(recordFile, JSON.stringify({ ...record, state: 'pending' }));
    await fs.writeFile(path.join(root, 'repositories.json'), JSON.stringify({ Repositories: {} }));
    // And leave the debris a kill leaves: a staging layer, a partial blob.
    await fs.mkdir(path.join(root, 'layers', '.staging-abc.creating', 'diff'), { recursive: true });
    await fs.writeFile(path.join(root, 'ingest', 'partial'), 'half a blob');

    const reopened = await open();
    expect(await reopened.list({ all: true, filters: {}, apiVersion: '1.51' })).toEqual([]);
    await expect(reopened.resolve(id)).rejects.toThrow(/No such image/);
    expect(readdirSync(path.join(root, 'layers'))).toEqual([]);
    expect(readdirSync(path.join(root, 'ingest'))).toEqual([]);
    expect(readdirSync(path.join(root, 'blobs/sha256'))).toEqual([]);
  });

  it('keeps a pending image that a tag already points at', async () => {
    const first = await open();
    const id = await importTar(first, 'survivor:1', { f: 'y' });
    const recordFile = path.join(root, 'images', id.slice(7), 'image.json');
    const record = JSON.parse(await fs.readFile(recordFile, 'utf8'));
    await fs.writeFile(recordFile, JSON.stringify({ ...record, state: 'pending' }));
    const reopened = await open();
    expect((await reopened.resolve('survivor:1')).id).toBe(id);
  });

  it('refuses tags dockerd refuses, with its words', async () => {
    const images = await open();
    await importTar(images, 'src:1', { f: 'w' });
    await expect(images.tag('src:1', 'sha256', null)).rejects.toThrow('refusing to create an ambiguous tag using digest algorithm as name');
    await expect(images.tag('src:1', 'x', 'bad tag')).rejects.toThrow('invalid tag format');
    await expect(images.tag('src:1', null, null)).rejects.toThrow('invalid reference format');
    await expect(images.tag('nope:1', 'x', null)).rejects.toThrow('No such image: nope:1');
  });

  it('publishes image events in dockerd shape', async () => {
    const images = await open();
    const seen: string[] = [];
    events.subscribe((e) => seen.push(`${e.Type}:${e.Action}:${e.Actor.Attributes.name}`));
    const id = await importTar(images, 'ev:1', { f: 'z' });
    await images.tag('ev:1', 'ev2', 'x');
    await images.remove(id, { force: true, noprune: false });
    expect(seen).toEqual([
      'image:tag:ev:1',
      `image:import:${id}`,
      'image:tag:ev2:x',
      `image:untag:${id}`,
      `image:untag:${id}`,
      `image:delete:${id}`,
    ]);
  });
});
