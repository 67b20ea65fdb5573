/**
 * Layer unpacking: OCI whiteouts become overlayfs whiteouts (checked with a real overlay
 * mount), hostile tars never write outside the layer dir, and packing a tree gives the OCI
 * whiteouts back.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { getAttributeSync } from '@napi-rs/xattr';
import tar from 'tar-stream';
import { packLayer } from '../../src/drivers/storage/layer-pack';
import { layerRelativePath, unpackLayer } from '../../src/drivers/storage/layer-unpack';
import { makeTar, type TarMember } from './images-fixtures';

type Member = TarMember;

async function readTar(stream: Readable): Promise<Array<{ name: string; type: string; size: number }>> {
  const extract = tar.extract();
  const out: Array<{ name: string; type: string; size: number }> = [];
  const feed = (async () => {
    for await (const c of stream) extract.write(c as Buffer);
    (extract as unknown as { end(): void }).end();
  })();
  for await (const entry of extract) {
    out.push({ name: entry.header.name, type: entry.header.type, size: entry.header.size });
    for await (const _ of entry) void _;
  }
  await feed;
  return out;
}

let base: string;
beforeEach(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'paddock-unpack-'));
});
afterEach(async () => {
  execFileSync('sh', ['-c', `umount -l ${base}/merged 2>/dev/null || true`]);
  await fs.rm(base, { recursive: true, force: true });
});

async function unpackInto(dir: string, members: Member[]) {
  await fs.mkdir(dir, { recursive: true });
  return unpackLayer(Readable.from(await makeTar(members)), dir);
}

describe('layerRelativePath', () => {
  it('roots absolute names at the layer and refuses relative escapes', () => {
    expect(layerRelativePath('./etc/passwd')).toBe('etc/passwd');
    expect(layerRelativePath('/etc/passwd')).toBe('etc/passwd');
    expect(layerRelativePath('/../../etc/passwd')).toBe('etc/passwd');
    expect(layerRelativePath('a/../b/')).toBe('b');
    expect(layerRelativePath('./')).toBe('');
    expect(() => layerRelativePath('../etc/passwd')).toThrow(/outside/);
    expect(() => layerRelativePath('a/../../x')).toThrow(/outside/);
  });
});

describe('unpackLayer', () => {
  it('turns .wh. files into 0/0 character devices and .wh..wh..opq into the opaque xattr', async () => {
    const dir = path.join(base, 'l');
    const result = await unpackInto(dir, [
      { name: 'a/', type: 'directory', mode: 0o755 },
      { name: 'a/.wh.b', content: '' },
      { name: 'd/', type: 'directory', mode: 0o755 },
      { name: 'd/.wh..wh..opq', content: '' },
      { name: 'd/y', content: 'yy' },
      { name: '.wh..wh.plnk', type: 'directory' },
    ]);
    const st = await fs.lstat(path.join(dir, 'a/b'));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe(0);
    expect(getAttributeSync(path.join(dir, 'd'), 'trusted.overlay.opaque')?.toString()).toBe('y');
    expect(existsSync(path.join(dir, 'a/.wh.b'))).toBe(false);
    expect(existsSync(path.join(dir, 'd/.wh..wh..opq'))).toBe(false);
    expect(existsSync(path.join(dir, '.wh..wh.plnk'))).toBe(false);
    expect(result.size).toBe(2);
  });

  it('gives overlayfs the layer semantics: whiteouts hide lower files, opaque dirs hide lower dirs', async () => {
    const lower = path.join(base, 'lower');
    const upperLayer = path.join(base, 'upperlayer');
    await unpackInto(lower, [
      { name: 'a/b', content: 'b' },
      { name: 'a/c', content: 'c' },
      { name: 'd/x', content: 'x' },
    ]);
    await unpackInto(upperLayer, [
      { name: 'a/.wh.b', content: '' },
      { name: 'd/.wh..wh..opq', content: '' },
      { name: 'd/y', content: 'y' },
    ]);
    for (const d of ['upper', 'work', 'merged']) await fs.mkdir(path.join(base, d));
    execFileSync('mount', [
      '-t', 'overlay', 'overlay', '-o',
      `lowerdir=${upperLayer}:${lower},upperdir=${base}/upper,workdir=${base}/work`,
      `${base}/merged`,
    ]);
    expect((await fs.readdir(path.join(base, 'merged/a'))).sort()).toEqual(['c']);
    expect((await fs.readdir(path.join(base, 'merged/d'))).sort()).toEqual(['y']);
  });

  it('applies owner, mode and device nodes as root', async () => {
    const dir = path.join(base, 'l');
    await unpackInto(dir, [
      { name: 'bin/tool', content: '#!/bin/sh\n', mode: 0o4755, uid: 1000, gid: 1001 },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'run/fifo', type: 'fifo', mode: 0o600 },
      { name: 'bin/link', type: 'link', linkname: 'bin/tool' },
    ]);
    const tool = await fs.stat(path.join(dir, 'bin/tool'));
    expect(tool.uid).toBe(1000);
    expect(tool.gid).toBe(1001);
    expect(tool.mode & 0o7777).toBe(0o4755);
    expect(tool.nlink).toBe(2);
    const nul = await fs.lstat(path.join(dir, 'dev/null'));
    expect(nul.isCharacterDevice()).toBe(true);
    expect(nul.rdev).toBe(0x103);
    expect((await fs.lstat(path.join(dir, 'run/fifo'))).isFIFO()).toBe(true);
  });

  it('refuses ../ members and writes nothing outside', async () => {
    const dir = path.join(base, 'l');
    await expect(unpackInto(dir, [{ name: '../escaped', content: 'x' }])).rejects.toThrow(/outside/);
    expect(existsSync(path.join(base, 'escaped'))).toBe(false);
  });

  it('keeps absolute member names inside the layer', async () => {
    const dir = path.join(base, 'l');
    await unpackInto(dir, [{ name: `/${base}/abs`, content: 'x' }]);
    expect(existsSync(path.join(base, 'abs'))).toBe(false);
    expect(readFileSync(path.join(dir, base, 'abs'), 'utf8')).toBe('x');
  });

  it('never writes through a symlink planted by the layer', async () => {
    const dir = path.join(base, 'l');
    const outside = path.join(base, 'outside');
    await fs.mkdir(outside);
    await expect(
      unpackInto(dir, [
        { name: 'evil', type: 'symlink', linkname: outside },
        { name: 'evil/pwned', content: 'x' },
      ]),
    ).rejects.toThrow(/symlink/);
    expect(await fs.readdir(outside)).toEqual([]);
  });

  it('replaces a symlink with a file instead of writing through it', async () => {
    const dir = path.join(base, 'l');
    const victim = path.join(base, 'victim');
    await fs.writeFile(victim, 'safe');
    await unpackInto(dir, [
      { name: 'f', type: 'symlink', linkname: victim },
      { name: 'f', content: 'new' },
    ]);
    expect(readFileSync(victim, 'utf8')).toBe('safe');
    expect(readFileSync(path.join(dir, 'f'), 'utf8')).toBe('new');
  });

  it('refuses hard links that leave the layer, directly or through a symlink', async () => {
    const victim = path.join(base, 'victim');
    await fs.writeFile(victim, 'secret');
    await expect(
      unpackInto(path.join(base, 'l1'), [{ name: 'h', type: 'link', linkname: '../victim' }]),
    ).rejects.toThrow(/outside/);
    await expect(
      unpackInto(path.join(base, 'l2'), [
        { name: 'up', type: 'symlink', linkname: base },
        { name: 'h', type: 'link', linkname: 'up/victim' },
      ]),
    ).rejects.toThrow(/not a directory/);
    expect((await fs.stat(victim)).nlink).toBe(1);
  });
});

describe('packLayer', () => {
  it('turns overlayfs whiteouts and opaque dirs back into OCI entries', async () => {
    const dir = path.join(base, 'l');
    await unpackInto(dir, [
      { name: 'a/.wh.b', content: '' },
      { name: 'd/.wh..wh..opq', content: '' },
      { name: 'd/y', content: 'yy' },
      { name: 'hl', content: 'z' },
      { name: 'hl2', type: 'link', linkname: 'hl' },
    ]);
    const { stream, entries } = packLayer(dir);
    const members = await readTar(stream);
    expect(await entries).toBe(members.length);
    const byName = Object.fromEntries(members.map((m) => [m.name.replace(/\/$/, ''), m]));
    expect(byName['a/.wh.b']).toMatchObject({ type: 'file', size: 0 });
    expect(byName['a/b']).toBeUndefined();
    expect(byName['d/.wh..wh..opq']).toMatchObject({ type: 'file' });
    expect(byName['d/y']).toMatchObject({ type: 'file', size: 2 });
    expect(byName['hl2']).toMatchObject({ type: 'link' });
  });

  it('packs an empty directory to a tar with no members', async () => {
    const dir = path.join(base, 'empty');
    await fs.mkdir(dir);
    const { stream, entries } = packLayer(dir);
    expect(await readTar(stream)).toEqual([]);
    expect(await entries).toBe(0);
  });
});
