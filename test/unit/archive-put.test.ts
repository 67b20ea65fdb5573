/**
 * `PUT /containers/{id}/archive` tars that try to reach the host (issue 8), beyond the cases in
 * container-paths.test.ts: hard links to host files (absolute, through a planted symlink),
 * block devices and FIFOs, setuid bits, and tars that are not tars at all (a 400, not a 500).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { makeTar } from '../helpers/tar';
import { extractInto } from '../../src/engine/containers/container-fs';

let base: string;
let root: string;
let hostFile: string;

beforeEach(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'paddock-archive-'));
  root = path.join(base, 'root');
  await fs.mkdir(root);
  hostFile = path.join(base, `host-secret-${randomBytes(4).toString('hex')}`);
  await fs.writeFile(hostFile, 'host only');
});
afterEach(() => fs.rm(base, { recursive: true, force: true }));

/** Every regular file under the root: none may be the host file's inode. */
async function inodesUnder(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await inodesUnder(p)));
    else if (e.isFile()) out.push((await fs.stat(p)).ino);
  }
  return out;
}

const hostInode = async () => (await fs.stat(hostFile)).ino;

describe('PUT archive: hard links', () => {
  it('never links to a host file named by its absolute path', async () => {
    const t = await makeTar([{ name: 'grab', type: 'link', linkname: hostFile }]);
    await extractInto(root, '/', Readable.from(t)).catch(() => undefined);
    expect((await fs.stat(hostFile)).nlink).toBe(1);
    expect(await inodesUnder(root)).not.toContain(await hostInode());
  });

  it('never links through a symlink planted by the same tar or by the image', async () => {
    await fs.symlink(path.dirname(hostFile), path.join(root, 'planted'));
    const t = await makeTar([
      { name: 'up', type: 'symlink', linkname: path.dirname(hostFile) },
      { name: 'grab1', type: 'link', linkname: `up/${path.basename(hostFile)}` },
      { name: 'grab2', type: 'link', linkname: `planted/${path.basename(hostFile)}` },
      { name: 'grab3', type: 'link', linkname: `../../../../..${hostFile}` },
    ]);
    await extractInto(root, '/', Readable.from(t)).catch(() => undefined);
    expect((await fs.stat(hostFile)).nlink).toBe(1);
    expect(await inodesUnder(root)).not.toContain(await hostInode());
    expect(readFileSync(hostFile, 'utf8')).toBe('host only');
  });
});

describe('PUT archive: special files and modes', () => {
  it('creates no block devices or FIFOs', async () => {
    const t = await makeTar([
      { name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 },
      { name: 'fifo', type: 'fifo' },
      { name: 'ok', content: 'fine' },
    ]);
    await extractInto(root, '/', Readable.from(t));
    expect(existsSync(path.join(root, 'sda'))).toBe(false);
    expect(existsSync(path.join(root, 'fifo'))).toBe(false);
    expect(readFileSync(path.join(root, 'ok'), 'utf8')).toBe('fine');
  });

  it('keeps setuid bits inside the container as dockerd does (the host side is 0700, see api-access)', async () => {
    for (const copyUidGid of [false, true]) {
      await extractInto(root, '/', Readable.from(await makeTar([{ name: 'su', content: '#!/bin/sh', mode: 0o4755, uid: 0, gid: 0 }])), { copyUidGid });
      expect((await fs.stat(path.join(root, 'su'))).mode & 0o7777).toBe(0o4755);
    }
  });
});

describe('PUT archive: bodies that are not tars', () => {
  it.each([
    ['garbage', Buffer.from('this is not a tar archive at all, just words '.repeat(40))],
    ['a truncated tar', Buffer.alloc(0)],
  ])('%s: refused as invalid input, nothing written', async (_what, body) => {
    const input = body.length ? body : (await makeTar([{ name: 'big', content: 'x'.repeat(5000) }])).subarray(0, 1000);
    await expect(extractInto(root, '/', Readable.from([input]))).rejects.toMatchObject({ kind: 'invalid' });
  });
});
