/**
 * Container files seen from the host: scoped path resolution (absolute links and `..` stay in
 * the root), User resolution against the container's own passwd/group, `docker diff` over an
 * overlay upper dir with whiteouts, and `docker cp` both ways without escaping the root.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import tar from 'tar-stream';
import { makeTar } from '../helpers/tar';
import { extractInto, listChanges, statPath, tarPath } from '../../src/engine/containers/container-fs';
import { isWithin, resolveInRoot } from '../../src/engine/containers/scoped-path';
import { resolveUser } from '../../src/engine/containers/users';
import { PaddockError } from '../../src/errors';

let base: string;
let root: string;

beforeEach(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'paddock-paths-'));
  root = path.join(base, 'root');
  await fs.mkdir(root);
});
afterEach(() => fs.rm(base, { recursive: true, force: true }));

async function tree(files: Record<string, string | { link: string } | { dir: true }>, at = root): Promise<void> {
  for (const [name, what] of Object.entries(files)) {
    const p = path.join(at, name);
    await fs.mkdir(path.dirname(p), { recursive: true });
    if (typeof what === 'string') await fs.writeFile(p, what);
    else if ('link' in what) await fs.symlink(what.link, p);
    else await fs.mkdir(p, { recursive: true });
  }
}

async function readTar(buf: Buffer): Promise<Array<{ name: string; type: string; linkname?: string | null; content: string }>> {
  const out: Array<{ name: string; type: string; linkname?: string | null; content: string }> = [];
  const ex = tar.extract();
  await new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        out.push({ name: h.name, type: h.type ?? 'file', linkname: h.linkname, content: Buffer.concat(chunks).toString() });
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
    ex.end(buf);
  });
  return out;
}

describe('resolveInRoot', () => {
  beforeEach(() =>
    tree({
      'etc/passwd': 'root:x:0:0::/:/bin/sh\n',
      data: { link: '/etc' },
      'a/b/up': { link: '../../..' },
      'a/b/far': { link: '../../../../../../../../' },
      rootlink: { link: '/' },
      chain1: { link: 'chain2' },
      chain2: { link: '/data' },
      loop1: { link: 'loop2' },
      loop2: { link: 'loop1' },
      'usr/bin/sh': 'binary',
      'bin': { link: 'usr/bin' },
    }),
  );
  const r = (p: string, followFinal?: boolean) => resolveInRoot(root, p, followFinal);

  it('resolves absolute symlinks from the container root, not the host root', async () => {
    expect(await r('/data/passwd')).toBe(path.join(root, 'etc/passwd'));
    expect(await r('/data')).toBe(path.join(root, 'etc'));
    expect(await r('/rootlink/etc/passwd')).toBe(path.join(root, 'etc/passwd'));
    expect(await r('/chain1/passwd')).toBe(path.join(root, 'etc/passwd'));
  });

  it('never lets .. climb above the root, in the path or in a link', async () => {
    expect(await r('/../../../etc/passwd')).toBe(path.join(root, 'etc/passwd'));
    expect(await r('/a/b/up/etc/passwd')).toBe(path.join(root, 'etc/passwd'));
    expect(await r('/a/b/far/etc')).toBe(path.join(root, 'etc'));
    expect(await r('/a/../../a/b')).toBe(path.join(root, 'a/b'));
    expect(await r('a/b/up/../..')).toBe(root);
  });

  it('follows relative links from their own directory', async () => {
    expect(await r('/bin/sh')).toBe(path.join(root, 'usr/bin/sh'));
  });

  it('leaves the final link alone when asked (lstat-like use)', async () => {
    expect(await r('/data', false)).toBe(path.join(root, 'data'));
    expect(await r('/data/passwd', false)).toBe(path.join(root, 'etc/passwd'));
  });

  it('resolves missing components as plain names', async () => {
    expect(await r('/does/not/exist')).toBe(path.join(root, 'does/not/exist'));
    expect(await r('/data/new-file')).toBe(path.join(root, 'etc/new-file'));
    expect(await r('')).toBe(root);
    expect(await r('/./a/./b/.')).toBe(path.join(root, 'a/b'));
  });

  it('gives up on link loops', async () => {
    await expect(r('/loop1/x')).rejects.toThrow('too many levels of symbolic links in /loop1/x');
  });

  it('never resolves outside the root, whatever the input', async () => {
    for (const p of ['/data', '/a/b/up', '/a/b/far/..', '/rootlink/..', '/chain1/../..', '../../../../tmp']) {
      expect(isWithin(root, await r(p))).toBe(true);
    }
  });
});

describe('isWithin', () => {
  it('is true for the root and below, false elsewhere', () => {
    expect(isWithin('/r', '/r')).toBe(true);
    expect(isWithin('/r', '/r/a/b')).toBe(true);
    expect(isWithin('/r', '/r2')).toBe(false);
    expect(isWithin('/r', '/')).toBe(false);
    expect(isWithin('/r', '/r/../etc')).toBe(false);
  });

  // A file whose name starts with ".." (legal, e.g. "..data" that Kubernetes' atomic writer
  // creates) is inside the root; the prefix test makes `docker cp` skip it both ways.
  test('counts a child named "..foo" as inside', () => {
    expect(isWithin('/r', '/r/..foo')).toBe(true);
  });
});

describe('resolveUser', () => {
  beforeEach(() =>
    tree({
      'etc/passwd': [
        'root:x:0:0:root:/root:/bin/sh',
        '# a comment',
        'daemon:x:1:1::/:/bin/false',
        'alice:x:1000:1000::/home/alice:/bin/sh',
        'bob:x:1001:100::/home/bob:/bin/sh',
        '',
      ].join('\n'),
      'etc/group': ['root:x:0:', 'wheel:x:10:alice,bob', 'users:x:100:', 'staff:x:50:alice', 'alice:x:1000:', ''].join('\n'),
    }),
  );

  it('is root with no user', async () => {
    expect(await resolveUser(root, '')).toEqual({ uid: 0, gid: 0, groups: [0] });
  });

  it('finds a user by name, with primary and supplementary groups', async () => {
    expect(await resolveUser(root, 'alice')).toEqual({ uid: 1000, gid: 1000, groups: [1000, 10, 50] });
    expect(await resolveUser(root, 'bob')).toEqual({ uid: 1001, gid: 100, groups: [100, 10] });
  });

  it('finds a user by uid, and takes an unknown uid as is with gid 0', async () => {
    expect(await resolveUser(root, '1000')).toEqual({ uid: 1000, gid: 1000, groups: [1000, 10, 50] });
    expect(await resolveUser(root, '4242')).toEqual({ uid: 4242, gid: 0, groups: [0] });
  });

  it('takes uid:gid numerically, known or not', async () => {
    expect(await resolveUser(root, '4242:4343')).toEqual({ uid: 4242, gid: 4343, groups: [4343] });
    expect((await resolveUser(root, '1001:50')).gid).toBe(50);
  });

  it('takes name:group with the group looked up by name', async () => {
    const u = await resolveUser(root, 'bob:users');
    expect([u.uid, u.gid]).toEqual([1001, 100]);
  });

  it("refuses unknown users and groups with runc's messages", async () => {
    const e = await resolveUser(root, 'mallory').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(PaddockError);
    expect((e as PaddockError).kind).toBe('invalid');
    expect((e as Error).message).toBe('unable to find user mallory: no matching entries in passwd file');
    await expect(resolveUser(root, 'alice:nogroup')).rejects.toThrow('unable to find group nogroup: no matching entries in group file');
  });

  it('reads passwd through the container root (a hostile /etc link stays inside)', async () => {
    await fs.rm(path.join(root, 'etc'), { recursive: true });
    await tree({ 'real/passwd': 'eve:x:7:7::/:/bin/sh\n', etc: { link: '/real' } });
    expect(await resolveUser(root, 'eve')).toEqual({ uid: 7, gid: 7, groups: [7] });
    // The host's root user is not visible through an /etc -> ../../../etc link.
    await fs.rm(path.join(root, 'etc'));
    await fs.symlink('../../../../../../etc', path.join(root, 'etc'));
    await expect(resolveUser(root, 'daemon')).rejects.toThrow(/unable to find user daemon/);
  });

  it('works without passwd and group files for numeric users', async () => {
    await fs.rm(path.join(root, 'etc'), { recursive: true });
    expect(await resolveUser(root, '33:33')).toEqual({ uid: 33, gid: 33, groups: [33] });
    await expect(resolveUser(root, 'www-data')).rejects.toThrow(/unable to find user www-data/);
  });

  // runc (moby/sys/user GetExecUser) fills supplementary groups only in the implicit form:
  // `-u alice:users` runs with groups [users] alone, not alice's wheel and staff.
  test('gives no supplementary groups when the group is explicit, as runc does', async () => {
    expect(await resolveUser(root, 'alice:users')).toEqual({ uid: 1000, gid: 100, groups: [100] });
  });
});

describe('listChanges', () => {
  let upper: string;
  let lower1: string;
  let lower2: string;

  beforeEach(async () => {
    upper = path.join(base, 'upper');
    lower1 = path.join(base, 'lower1');
    lower2 = path.join(base, 'lower2');
    await tree({ 'etc/passwd': 'p', 'etc/hosts': 'h', 'bin/sh': 'sh', 'var/log/old.log': 'x' }, lower2);
    await tree({ 'usr/lib/libc.so': 'c', 'opt/tool': 't' }, lower1);
    await tree({ 'etc/passwd': 'changed', 'etc/newfile': 'n', 'tmp/a': 'a', 'usr/lib/libc.so': 'patched' }, upper);
    // Whiteouts: overlayfs marks deletions with 0/0 character devices.
    await fs.mkdir(path.join(upper, 'bin'));
    execFileSync('mknod', [path.join(upper, 'bin/sh'), 'c', '0', '0']);
    await fs.mkdir(path.join(upper, 'var'));
    execFileSync('mknod', [path.join(upper, 'var/log'), 'c', '0', '0']);
    execFileSync('mknod', [path.join(upper, 'opt'), 'c', '0', '0']);
  });

  it('reports added, modified and deleted paths, depth first in name order', async () => {
    expect(await listChanges(upper, [lower1, lower2])).toEqual([
      { Path: '/bin', Kind: 0 },
      { Path: '/bin/sh', Kind: 2 },
      { Path: '/etc', Kind: 0 },
      { Path: '/etc/newfile', Kind: 1 },
      { Path: '/etc/passwd', Kind: 0 },
      { Path: '/opt', Kind: 2 },
      { Path: '/tmp', Kind: 1 },
      { Path: '/tmp/a', Kind: 1 },
      { Path: '/usr', Kind: 0 },
      { Path: '/usr/lib', Kind: 0 },
      { Path: '/usr/lib/libc.so', Kind: 0 },
      { Path: '/var', Kind: 0 },
      { Path: '/var/log', Kind: 2 },
    ]);
  });

  it('counts a real device node (not 0/0) as an added file', async () => {
    execFileSync('mknod', [path.join(upper, 'tmp/null'), 'c', '1', '3']);
    const changes = await listChanges(upper, [lower2]);
    expect(changes).toContainEqual({ Path: '/tmp/null', Kind: 1 });
  });

  it('is empty for an empty or missing upper dir', async () => {
    const empty = path.join(base, 'empty');
    await fs.mkdir(empty);
    expect(await listChanges(empty, [lower1])).toEqual([]);
    expect(await listChanges(path.join(base, 'missing'), [lower1])).toEqual([]);
  });
});

describe('statPath', () => {
  beforeEach(async () => {
    await tree({ 'etc/passwd': 'hello', data: { link: '/etc' }, 'srv/dir': { dir: true } });
    await fs.chmod(path.join(root, 'etc/passwd'), 0o640);
    await fs.chmod(path.join(root, 'srv/dir'), 0o755);
  });
  const DIR = 2 ** 31;
  const LINK = 2 ** 27;

  it("describes files, dirs and links with Go's FileMode bits", async () => {
    const f = await statPath(root, '/etc/passwd', 'c1');
    expect(f.hostPath).toBe(path.join(root, 'etc/passwd'));
    expect(f.stat).toMatchObject({ name: 'passwd', size: 5, mode: 0o640, linkTarget: '' });
    expect(Number.isNaN(Date.parse(f.stat.mtime))).toBe(false);
    expect((await statPath(root, '/srv/dir', 'c1')).stat.mode).toBe(DIR + 0o755);
    const l = await statPath(root, '/data', 'c1');
    expect(l.stat).toMatchObject({ name: 'data', mode: LINK + 0o777, linkTarget: '/etc' });
    expect((await statPath(root, '/', 'c1')).stat.name).toBe('/');
  });

  it('follows links in the middle of the path, inside the root', async () => {
    const s = await statPath(root, '/data/passwd', 'c1');
    expect(s.hostPath).toBe(path.join(root, 'etc/passwd'));
  });

  it('sets the setuid, setgid, sticky, fifo and device bits', async () => {
    await tree({ 'bin/su': 'x', 'tmpdir': { dir: true } });
    await fs.chmod(path.join(root, 'bin/su'), 0o4755);
    await fs.chmod(path.join(root, 'tmpdir'), 0o1777);
    execFileSync('mkfifo', [path.join(root, 'fifo')]);
    execFileSync('mknod', [path.join(root, 'null'), 'c', '1', '3']);
    await fs.chmod(path.join(root, 'null'), 0o666);
    await tree({ sgid: 'x' });
    await fs.chmod(path.join(root, 'sgid'), 0o2755);
    expect((await statPath(root, '/bin/su', 'c')).stat.mode).toBe(2 ** 23 + 0o755);
    expect((await statPath(root, '/sgid', 'c')).stat.mode).toBe(2 ** 22 + 0o755);
    expect((await statPath(root, '/tmpdir', 'c')).stat.mode).toBe(DIR + 2 ** 20 + 0o777);
    expect((await statPath(root, '/fifo', 'c')).stat.mode & 2 ** 25).toBe(2 ** 25);
    expect((await statPath(root, '/null', 'c')).stat.mode).toBe(2 ** 26 + 2 ** 21 + 0o666);
  });

  it("answers not-found with dockerd's message", async () => {
    const e = await statPath(root, '/nope', 'abc123').catch((x: unknown) => x);
    expect((e as PaddockError).kind).toBe('not-found');
    expect((e as Error).message).toBe('Could not find the file /nope in container abc123');
  });
});

describe('extractInto', () => {
  const marker = () => `paddock-escape-${randomBytes(6).toString('hex')}`;

  it('keeps ../ and absolute names inside the root', async () => {
    const name = marker();
    const t = await makeTar([
      { name: `../../${name}`, content: 'climbed' },
      { name: `/abs-${name}`, content: 'absolute' },
      { name: `sub/../../../${name}-2`, content: 'sneaky' },
    ]);
    await extractInto(root, '/', Readable.from(t));
    expect(readFileSync(path.join(root, name), 'utf8')).toBe('climbed');
    expect(readFileSync(path.join(root, `abs-${name}`), 'utf8')).toBe('absolute');
    expect(readFileSync(path.join(root, `${name}-2`), 'utf8')).toBe('sneaky');
    for (const dir of [base, path.dirname(base), '/']) {
      expect(existsSync(path.join(dir, name))).toBe(false);
      expect(existsSync(path.join(dir, `${name}-2`))).toBe(false);
    }
  });

  it('writes through a symlink to / from the same tar into the root, not the host', async () => {
    const name = marker();
    const t = await makeTar([
      { name: 'evil', type: 'symlink', linkname: '/' },
      { name: `evil/etc/${name}`, content: 'gotcha' },
      { name: 'rel', type: 'symlink', linkname: '../../../../../../../../tmp' },
      { name: `rel/${name}`, content: 'gotcha too' },
    ]);
    await extractInto(root, '/', Readable.from(t));
    expect(existsSync(`/etc/${name}`)).toBe(false);
    expect(existsSync(path.join('/tmp', name))).toBe(false);
    expect(readFileSync(path.join(root, 'etc', name), 'utf8')).toBe('gotcha');
    expect(readFileSync(path.join(root, 'tmp', name), 'utf8')).toBe('gotcha too');
    expect(await fs.readlink(path.join(root, 'evil'))).toBe('/');
  });

  it("writes through the image's own symlinks (/data -> /etc) inside the root", async () => {
    await tree({ data: { link: '/etc' }, 'etc/keep': 'k' });
    const name = marker();
    await extractInto(root, '/data', Readable.from(await makeTar([{ name, content: 'via link' }])));
    expect(readFileSync(path.join(root, 'etc', name), 'utf8')).toBe('via link');
    expect(existsSync(path.join('/etc', name))).toBe(false);
  });

  it('keeps hard links inside the root', async () => {
    const t = await makeTar([
      { name: 'data.txt', content: 'shared' },
      { name: 'hl', type: 'link', linkname: '../../../data.txt' },
    ]);
    await extractInto(root, '/', Readable.from(t));
    const [a, b] = await Promise.all([fs.stat(path.join(root, 'data.txt')), fs.stat(path.join(root, 'hl'))]);
    expect(b.ino).toBe(a.ino);
  });

  it('applies modes and replaces a symlink with a file instead of writing through it', async () => {
    const outside = path.join(base, 'outside.txt');
    await fs.writeFile(outside, 'untouched');
    await tree({ victim: { link: outside } });
    const t = await makeTar([
      { name: 'victim', content: 'replaced', mode: 0o600 },
      { name: 'dir', type: 'directory', mode: 0o750 },
      { name: 'dir/x.sh', content: '#!/bin/sh', mode: 0o755 },
    ]);
    await extractInto(root, '/', Readable.from(t));
    expect(readFileSync(outside, 'utf8')).toBe('untouched');
    expect((await fs.lstat(path.join(root, 'victim'))).isFile()).toBe(true);
    expect(readFileSync(path.join(root, 'victim'), 'utf8')).toBe('replaced');
    expect((await fs.stat(path.join(root, 'victim'))).mode & 0o7777).toBe(0o600);
    expect((await fs.stat(path.join(root, 'dir'))).mode & 0o7777).toBe(0o750);
    expect((await fs.stat(path.join(root, 'dir/x.sh'))).mode & 0o7777).toBe(0o755);
  });

  it('refuses to replace a directory with a file when asked not to', async () => {
    await tree({ 'd/inner': 'x' });
    const t = await makeTar([{ name: 'd', content: 'file now' }]);
    await expect(extractInto(root, '/', Readable.from(t), { noOverwriteDirNonDir: true })).rejects.toThrow(
      'cannot overwrite directory "/d" with file',
    );
    expect(readFileSync(path.join(root, 'd/inner'), 'utf8')).toBe('x');
  });

  it('refuses a missing extraction point and one that is not a directory', async () => {
    await tree({ file: 'x' });
    const t = await makeTar([{ name: 'a', content: 'a' }]);
    await expect(extractInto(root, '/missing', Readable.from(t))).rejects.toMatchObject({ kind: 'not-found' });
    await expect(extractInto(root, '/file', Readable.from(t))).rejects.toMatchObject({
      kind: 'invalid',
      message: 'extraction point is not a directory',
    });
  });

  it('does not create device nodes from a copy', async () => {
    const t = await makeTar([
      { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 },
      { name: 'ok', content: 'fine' },
    ]);
    await extractInto(root, '/', Readable.from(t));
    expect(existsSync(path.join(root, 'null'))).toBe(false);
    expect(readFileSync(path.join(root, 'ok'), 'utf8')).toBe('fine');
  });

  // See isWithin: a member named "..foo" is a legal name inside the destination; dockerd extracts it.
  test('extracts a member whose name starts with ".."', async () => {
    await extractInto(root, '/', Readable.from(await makeTar([{ name: '..foo', content: 'dots' }])));
    expect(readFileSync(path.join(root, '..foo'), 'utf8')).toBe('dots');
  });
});

describe('tarPath', () => {
  async function tarOf(hostPath: string, baseName: string) {
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    await tarPath(root, hostPath, baseName, out);
    return readTar(Buffer.concat(chunks));
  }

  it('archives a tree under the given base name, links as links', async () => {
    await tree({ 'srv/a.txt': 'A', 'srv/sub/b.txt': 'B', 'srv/up': { link: '/etc' } });
    const entries = await tarOf(path.join(root, 'srv'), 'srv');
    expect(entries.map((e) => [e.name.replace(/\/$/, ''), e.type])).toEqual([
      ['srv', 'directory'],
      ['srv/a.txt', 'file'],
      ['srv/sub', 'directory'],
      ['srv/sub/b.txt', 'file'],
      ['srv/up', 'symlink'],
    ]);
    expect(entries.find((e) => e.name === 'srv/a.txt')?.content).toBe('A');
    expect(entries.find((e) => e.name === 'srv/up')?.linkname).toBe('/etc');
  });

  it('archives nothing outside the root', async () => {
    await fs.writeFile(path.join(base, 'secret'), 's');
    expect(await tarOf(path.join(base, 'secret'), 'secret')).toEqual([]);
  });

  // See isWithin: `docker cp c:/..data -` gives an empty archive here.
  test('archives a file whose name starts with ".."', async () => {
    await tree({ '..data': 'x' });
    expect((await tarOf(path.join(root, '..data'), '..data')).map((e) => e.name)).toEqual(['..data']);
  });
});
