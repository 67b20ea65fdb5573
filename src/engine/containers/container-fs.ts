/**
 * The container's files, read and written from the host: `docker diff` (the overlayfs upper dir),
 * `docker cp` both ways (tar archives, scoped path resolution so nothing escapes the root) and
 * `docker export`. Tars are made and read with tar-stream.
 */
import { createReadStream, promises as fs, type Stats } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable, Writable } from 'node:stream';
import * as tar from 'tar-stream';
import { invalid, notFound } from '../../errors';
import { isWithin, resolveInRoot } from './scoped-path';

export interface Change {
  Path: string;
  /** 0 modified, 1 added, 2 deleted (Docker's ChangeType). */
  Kind: 0 | 1 | 2;
}

/** Lists changes of the writable layer relative to the image layers below it. */
export async function listChanges(upper: string, lowerDirs: string[]): Promise<Change[]> {
  const changes: Change[] = [];
  const existsBelow = async (rel: string) => {
    for (const d of lowerDirs) {
      try {
        await fs.lstat(path.join(d, rel));
        return true;
      } catch {
        // not in this layer
      }
    }
    return false;
  };
  const walk = async (rel: string) => {
    let names: string[];
    try {
      names = await fs.readdir(path.join(upper, rel));
    } catch {
      return;
    }
    for (const name of names.sort()) {
      const childRel = path.join(rel, name);
      const st = await fs.lstat(path.join(upper, childRel));
      if (st.isCharacterDevice() && st.rdev === 0) {
        changes.push({ Path: `/${childRel}`, Kind: 2 });
        continue;
      }
      changes.push({ Path: `/${childRel}`, Kind: (await existsBelow(childRel)) ? 0 : 1 });
      if (st.isDirectory()) await walk(childRel);
    }
  };
  await walk('');
  return changes;
}

/** Bytes of regular files under `dir` (hard links counted once), as `docker ps -s` reports. */
export async function diskUsage(dir: string): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    let names: string[];
    try {
      names = await fs.readdir(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = path.join(d, n);
      const st = await fs.lstat(p).catch(() => undefined);
      if (!st) continue;
      if (st.isDirectory()) await walk(p);
      else if (st.isFile() && !seen.has(`${st.dev}:${st.ino}`)) {
        seen.add(`${st.dev}:${st.ino}`);
        total += st.size;
      }
    }
  };
  await walk(dir);
  return total;
}

/** Go's os.FileMode bits, which `X-Docker-Container-Path-Stat` carries. */
function goFileMode(st: Stats): number {
  let mode = st.mode & 0o777;
  if (st.isDirectory()) mode |= 2 ** 31;
  if (st.isSymbolicLink()) mode |= 2 ** 27;
  if (st.isFIFO()) mode |= 2 ** 25;
  if (st.isSocket()) mode |= 2 ** 24;
  if (st.isCharacterDevice()) mode |= 2 ** 21 | 2 ** 26;
  if (st.isBlockDevice()) mode |= 2 ** 26;
  if (st.mode & 0o4000) mode |= 2 ** 23;
  if (st.mode & 0o2000) mode |= 2 ** 22;
  if (st.mode & 0o1000) mode |= 2 ** 20;
  return mode >>> 0;
}

export interface PathStat {
  name: string;
  size: number;
  mode: number;
  mtime: string;
  linkTarget: string;
}

/** Stats a container path (the final symlink is not followed, as dockerd's archive stat). */
export async function statPath(root: string, containerPath: string, containerId: string): Promise<{ hostPath: string; stat: PathStat }> {
  const hostPath = await resolveInRoot(root, containerPath, false);
  let st: Stats;
  try {
    st = await fs.lstat(hostPath);
  } catch {
    throw notFound(`Could not find the file ${containerPath} in container ${containerId}`);
  }
  const linkTarget = st.isSymbolicLink() ? await fs.readlink(hostPath) : '';
  return {
    hostPath,
    stat: {
      name: path.basename(containerPath) || '/',
      size: st.size,
      mode: goFileMode(st),
      mtime: st.mtime.toISOString(),
      linkTarget,
    },
  };
}

/** Writes a tar of `hostPath` (named `baseName` at the top) to `out`. */
export async function tarPath(root: string, hostPath: string, baseName: string, out: Writable): Promise<void> {
  const pack = tar.pack();
  // Observed at once: a client that hangs up mid-archive (`docker export c | head`) rejects this
  // while entries are still being added, and an unobserved rejection would end the daemon.
  const piping = pipeline(pack, out);
  let failed: unknown;
  piping.catch((err) => (failed = err));
  try {
    await addToTar(pack, root, hostPath, baseName);
    pack.finalize();
  } catch (err) {
    failed ??= err;
  }
  await piping.catch(() => undefined);
  if (failed) throw failed;
}

async function addToTar(pack: tar.Pack, root: string, hostPath: string, name: string): Promise<void> {
  if (pack.destroyed) throw new Error('archive stream closed');
  if (!isWithin(root, hostPath)) return;
  const st = await fs.lstat(hostPath);
  const header: Partial<tar.Header> & { name: string } = {
    name,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    mtime: st.mtime,
  };
  if (st.isDirectory()) {
    // Directory members end in '/', as in the archives dockerd writes.
    await entry(pack, { ...header, name: name.endsWith('/') ? name : `${name}/`, type: 'directory' });
    for (const child of (await fs.readdir(hostPath)).sort()) {
      await addToTar(pack, root, path.join(hostPath, child), `${name}/${child}`);
    }
  } else if (st.isSymbolicLink()) {
    await entry(pack, { ...header, type: 'symlink', linkname: await fs.readlink(hostPath) });
  } else if (st.isFile()) {
    const stream = pack.entry({ ...header, type: 'file', size: st.size });
    await pipeline(createReadStream(hostPath), stream);
    if (pack.destroyed) throw new Error('archive stream closed');
  } else if (st.isFIFO()) {
    await entry(pack, { ...header, type: 'fifo' });
  } else if (st.isCharacterDevice() || st.isBlockDevice()) {
    await entry(pack, {
      ...header,
      type: st.isCharacterDevice() ? 'character-device' : 'block-device',
      devmajor: Math.floor(st.rdev / 256),
      devminor: st.rdev % 256,
    });
  }
}

function entry(pack: tar.Pack, header: Partial<tar.Header> & { name: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    // A destroyed pack never calls back: settle on its close instead of hanging.
    const onClose = () => reject(new Error('archive stream closed'));
    pack.once('close', onClose);
    pack.entry(header, (err) => {
      pack.off('close', onClose);
      if (err) reject(err);
      else resolve();
    });
  });
}

/**
 * Extracts a tar into `containerDir` of the container. Every entry is resolved inside the root:
 * `../`, absolute names and symlinks in the tar or the image cannot reach outside it.
 */
export async function extractInto(
  root: string,
  containerDir: string,
  input: Readable,
  opts: { noOverwriteDirNonDir?: boolean; copyUidGid?: boolean } = {},
): Promise<void> {
  const base = await resolveInRoot(root, containerDir);
  let st: Stats;
  try {
    st = await fs.stat(base);
  } catch {
    throw notFound(`Could not find the file ${containerDir} in container`);
  }
  if (!st.isDirectory()) throw invalid('extraction point is not a directory');
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      // A tar cut off inside a member fails that member's stream too: without a listener that
      // is an unhandled 'error' event (an uncaught exception in the daemon).
      stream.on('error', (err: Error) => reject(invalid(`Error processing tar file: ${err.message}`)));
      applyEntry(root, containerDir, header, stream as unknown as Readable, opts)
        .then(() => next(), (err) => {
          stream.resume();
          reject(err);
        });
    });
    extract.on('finish', resolve);
    // A body that is not a (whole) tar is the client's error, as dockerd's "Error processing tar file".
    extract.on('error', (err: Error) => reject(invalid(`Error processing tar file: ${err.message}`)));
  });
  input.pipe(extract);
  await done;
}

async function applyEntry(
  root: string,
  containerDir: string,
  header: tar.Header,
  stream: Readable,
  opts: { noOverwriteDirNonDir?: boolean; copyUidGid?: boolean },
): Promise<void> {
  const rel = path.posix.normalize(`/${header.name}`); // a leading ../ cannot climb above '/'
  const target = await resolveInRoot(root, path.posix.join(containerDir, rel), false);
  if (!isWithin(root, target) || target === root) {
    stream.resume();
    return;
  }
  await fs.mkdir(path.dirname(target), { recursive: true });
  const existing = await fs.lstat(target).catch(() => undefined);
  if (existing && opts.noOverwriteDirNonDir && existing.isDirectory() !== (header.type === 'directory')) {
    stream.resume();
    throw invalid(`cannot overwrite ${existing.isDirectory() ? 'directory' : 'non-directory'} "${rel}" with ${header.type}`);
  }
  const mode = (header.mode ?? 0o644) & 0o7777;
  switch (header.type) {
    case 'directory':
      if (existing && !existing.isDirectory()) await fs.rm(target, { force: true });
      await fs.mkdir(target, { recursive: true, mode });
      await fs.chmod(target, mode);
      stream.resume();
      break;
    case 'file':
    case 'contiguous-file': {
      if (existing) await fs.rm(target, { recursive: true, force: true });
      const fh = await fs.open(target, 'wx', mode);
      try {
        for await (const chunk of stream) await fh.write(chunk as Buffer);
      } finally {
        await fh.close();
      }
      await fs.chmod(target, mode);
      break;
    }
    case 'symlink':
      if (existing) await fs.rm(target, { recursive: true, force: true });
      await fs.symlink(header.linkname ?? '', target);
      stream.resume();
      break;
    case 'link': {
      const source = await resolveInRoot(root, path.posix.join(containerDir, path.posix.normalize(`/${header.linkname ?? ''}`)), false);
      stream.resume();
      if (!isWithin(root, source)) return;
      if (existing) await fs.rm(target, { recursive: true, force: true });
      await fs.link(source, target);
      break;
    }
    default:
      // Devices, FIFOs and the like are not created from a user's copy.
      stream.resume();
      return;
  }
  if (opts.copyUidGid !== false && header.type !== 'link') {
    await fs.lchown(target, header.uid ?? 0, header.gid ?? 0).catch(() => undefined);
    // chown clears setuid/setgid: set the mode again, as tar (and dockerd) do after chown.
    if (header.type !== 'symlink' && mode & 0o6000) await fs.chmod(target, mode);
  }
  if (header.mtime && header.type !== 'symlink' && header.type !== 'link') {
    await fs.utimes(target, header.mtime, header.mtime).catch(() => undefined);
  }
}
