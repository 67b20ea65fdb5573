/**
 * Unpacks an image layer tar into a directory usable as an overlayfs lower dir.
 *
 * - OCI/AUFS whiteouts become overlayfs whiteouts: `.wh.NAME` → a 0/0 character device NAME,
 *   `.wh..wh..opq` → `trusted.overlay.opaque=y` on its directory.
 * - Nothing is ever written outside `dest`: relative `..` escapes are refused (as Docker
 *   refuses them), absolute names are taken relative to the layer root, no path is followed
 *   through a symlink (every parent is checked with lstat), files are opened with O_NOFOLLOW
 *   after whatever stood at their path was removed, and hard links must name a target inside
 *   the layer reached without symlinks.
 * - Ownership, modes, times and (non-overlay) xattrs are applied as root would.
 * Node has no mknod, so device nodes and whiteouts are created in one batch by mknod(1).
 */
import { execFile } from 'node:child_process';
import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { setAttribute } from '@napi-rs/xattr';
import tar from 'tar-stream';
import { invalid } from '../../errors';

const run = promisify(execFile);

export const OPAQUE_XATTR = 'trusted.overlay.opaque';
const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';

export interface UnpackResult {
  /** Bytes of regular files (hard links counted once): dockerd's size of an applied layer. */
  size: number;
  entries: number;
}

/** A layer tried to reach outside its directory. */
export class BreakoutError extends Error {}

/**
 * The cleaned path of a tar member relative to the layer root, or '' for the root itself.
 * Absolute names are rooted at the layer (Docker's filepath.Join); relative ones that climb out
 * with `..` are refused.
 */
export function layerRelativePath(name: string): string {
  if (name.includes('\0')) throw new BreakoutError(`invalid tar member name ${JSON.stringify(name)}`);
  const rooted = name.startsWith('/');
  const cleaned = path.posix.normalize(rooted ? name : `./${name}`);
  if (!rooted && (cleaned === '..' || cleaned.startsWith('../'))) {
    throw new BreakoutError(`${JSON.stringify(name)} is outside of the layer root`);
  }
  const rel = cleaned.replace(/^\/+/, '').replace(/\/+$/, '');
  return rel === '.' ? '' : rel;
}

type TarHeader = Omit<tar.Header, 'pax'> & { pax?: Record<string, string> | null };

interface DeferredOp {
  args: string[];
}

export async function unpackLayer(input: Readable, dest: string): Promise<UnpackResult> {
  const unpacker = new Unpacker(dest);
  const extract = tar.extract();
  // tar-stream speaks streamx, not node streams: feed it by hand, with backpressure.
  const feeding = feed(input, extract);
  feeding.catch(() => undefined); // awaited below; this only keeps an early failure from going unhandled
  try {
    for await (const entry of extract) {
      await unpacker.entry(entry.header as TarHeader, entry as unknown as Readable);
    }
    await feeding;
  } catch (err) {
    input.destroy();
    extract.destroy();
    await feeding.catch(() => undefined);
    throw err;
  }
  await unpacker.finish();
  return { size: unpacker.size, entries: unpacker.entries };
}

class Unpacker {
  size = 0;
  entries = 0;
  /** Relative dirs known to be real directories (not symlinks) inside dest. */
  private readonly safeDirs = new Set<string>(['']);
  private readonly dirTimes: Array<[string, Date]> = [];
  private readonly deferred: DeferredOp[] = [];
  /** Paths whose node is created later in the mknod batch (hard links to them wait too). */
  private readonly pendingNodes = new Set<string>();

  constructor(private readonly dest: string) {}

  private abs(rel: string): string {
    return rel === '' ? this.dest : path.join(this.dest, rel);
  }

  async entry(h: TarHeader, body: Readable): Promise<void> {
    this.entries++;
    let rel: string;
    try {
      rel = layerRelativePath(h.name);
    } catch (err) {
      body.resume();
      throw err;
    }
    if (rel === '') {
      body.resume();
      return; // the layer root itself: its metadata belongs to the layer below
    }
    const base = path.posix.basename(rel);
    const parent = path.posix.dirname(rel) === '.' ? '' : path.posix.dirname(rel);
    await this.ensureDir(parent);

    if (base.startsWith(WHITEOUT_PREFIX)) {
      body.resume();
      await this.whiteout(parent, base, h);
      return;
    }
    const abs = this.abs(rel);
    switch (h.type) {
      case 'directory':
        body.resume();
        await this.directory(rel, h);
        return;
      case 'file':
      case 'contiguous-file':
      case undefined:
      case null:
        await this.removeExisting(rel);
        await this.writeFile(abs, body, h);
        this.size += h.size ?? 0;
        break;
      case 'symlink':
        body.resume();
        await this.removeExisting(rel);
        await fs.symlink(h.linkname ?? '', abs);
        break;
      case 'link': {
        body.resume();
        const target = layerRelativePath(h.linkname ?? '');
        if (target === '') throw new BreakoutError(`hard link ${h.name} points at the layer root`);
        const targetParent = path.posix.dirname(target) === '.' ? '' : path.posix.dirname(target);
        await this.assertNoSymlinks(targetParent);
        await this.removeExisting(rel);
        if (this.pendingNodes.has(target)) {
          this.deferred.push({ args: ['l', this.abs(target), abs] });
          this.pendingNodes.add(rel);
        } else {
          await fs.link(this.abs(target), abs);
        }
        return; // a hard link shares its target's metadata
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        body.resume();
        await this.removeExisting(rel);
        const kind = h.type === 'fifo' ? 'p' : h.type === 'block-device' ? 'b' : 'c';
        this.deferNode(rel, kind, h.devmajor ?? 0, h.devminor ?? 0, h.mode ?? 0o600, h.uid ?? 0, h.gid ?? 0);
        return;
      }
      default:
        body.resume();
        return;
    }
    await fs.lchown(abs, h.uid ?? 0, h.gid ?? 0);
    if (h.type !== 'symlink') await fs.chmod(abs, (h.mode ?? 0o644) & 0o7777);
    await this.xattrs(abs, h);
    if (h.mtime) await fs.lutimes(abs, h.mtime, h.mtime);
  }

  private async directory(rel: string, h: TarHeader): Promise<void> {
    const abs = this.abs(rel);
    const st = await lstatOrUndefined(abs);
    if (st && !st.isDirectory()) await this.removeExisting(rel);
    if (!st || !st.isDirectory()) await fs.mkdir(abs, { mode: 0o700 });
    this.safeDirs.add(rel);
    await fs.lchown(abs, h.uid ?? 0, h.gid ?? 0);
    await fs.chmod(abs, (h.mode ?? 0o755) & 0o7777);
    await this.xattrs(abs, h);
    if (h.mtime) this.dirTimes.push([abs, h.mtime]);
  }

  private async whiteout(parent: string, base: string, h: TarHeader): Promise<void> {
    if (base === OPAQUE_MARKER) {
      await setAttribute(this.abs(parent), OPAQUE_XATTR, 'y');
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX)) return; // AUFS bookkeeping (.wh..wh.plnk etc.)
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === '' || name === '.' || name === '..') throw new BreakoutError(`invalid whiteout ${h.name}`);
    const rel = parent ? `${parent}/${name}` : name;
    await this.removeExisting(rel);
    this.deferNode(rel, 'c', 0, 0, 0, h.uid ?? 0, h.gid ?? 0);
  }

  private deferNode(rel: string, kind: 'c' | 'b' | 'p', major: number, minor: number, mode: number, uid: number, gid: number): void {
    const perm = (mode & 0o7777).toString(8);
    this.deferred.push({ args: ['m', this.abs(rel), kind, String(major), String(minor), perm, `${uid}:${gid}`] });
    this.pendingNodes.add(rel);
  }

  private async writeFile(abs: string, body: Readable, h: TarHeader): Promise<void> {
    const fh = await fs.open(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      let written = 0;
      for await (const chunk of body) {
        await fh.write(chunk as Buffer);
        written += (chunk as Buffer).length;
      }
      if (written !== (h.size ?? 0)) throw invalid(`truncated layer: ${h.name} has ${written} of ${h.size} bytes`);
    } finally {
      await fh.close();
    }
  }

  private async xattrs(abs: string, h: TarHeader): Promise<void> {
    if (!h.pax || h.type === 'symlink') return;
    for (const [key, value] of Object.entries(h.pax)) {
      if (!key.startsWith('SCHILY.xattr.')) continue;
      const name = key.slice('SCHILY.xattr.'.length);
      // overlayfs reads trusted.overlay.* as instructions (redirects, metacopy): never from a layer.
      if (name.startsWith('trusted.overlay.')) continue;
      await setAttribute(abs, name, Buffer.from(String(value), 'utf8')).catch(() => undefined);
    }
  }

  /** mkdir -p for a parent path inside dest, refusing to pass through anything but directories. */
  private async ensureDir(rel: string): Promise<void> {
    if (this.safeDirs.has(rel)) return;
    const parts = rel.split('/');
    let current = '';
    for (const part of parts) {
      current = current ? `${current}/${part}` : part;
      if (this.safeDirs.has(current)) continue;
      const st = await lstatOrUndefined(this.abs(current));
      if (!st) {
        this.cancelPendingNode(current);
        await fs.mkdir(this.abs(current), { mode: 0o755 });
      } else if (st.isSymbolicLink()) {
        throw new BreakoutError(`refusing to write through symlink ${current}`);
      } else if (!st.isDirectory()) {
        throw invalid(`layer member under ${current}, which is not a directory`);
      }
      this.safeDirs.add(current);
    }
  }

  /** Like ensureDir, but creates nothing: every component must exist and be a directory. */
  private async assertNoSymlinks(rel: string): Promise<void> {
    if (rel === '' || this.safeDirs.has(rel)) return;
    let current = '';
    for (const part of rel.split('/')) {
      current = current ? `${current}/${part}` : part;
      if (this.safeDirs.has(current)) continue;
      const st = await lstatOrUndefined(this.abs(current));
      if (!st || !st.isDirectory()) throw new BreakoutError(`hard link target under ${current}, which is not a directory`);
      this.safeDirs.add(current);
    }
  }

  private async removeExisting(rel: string): Promise<void> {
    this.cancelPendingNode(rel);
    const abs = this.abs(rel);
    const st = await lstatOrUndefined(abs);
    if (!st) return;
    if (st.isDirectory()) {
      await fs.rm(abs, { recursive: true, force: true });
      for (const d of [...this.safeDirs]) if (d === rel || d.startsWith(rel + '/')) this.safeDirs.delete(d);
    } else {
      await fs.unlink(abs);
    }
  }

  /** A later member replaces a node still waiting for the mknod batch. */
  private cancelPendingNode(rel: string): void {
    if (!this.pendingNodes.delete(rel)) return;
    const abs = this.abs(rel);
    for (let i = this.deferred.length - 1; i >= 0; i--) {
      const [op, a, b] = this.deferred[i].args;
      if ((op === 'm' && a === abs) || (op === 'l' && b === abs)) this.deferred.splice(i, 1);
    }
  }

  async finish(): Promise<void> {
    await runDeferred(this.deferred);
    // Directory times last: creating anything inside a directory moves its mtime.
    for (const [abs, mtime] of this.dirTimes.reverse()) await fs.lutimes(abs, mtime, mtime).catch(() => undefined);
  }
}

const BATCH_SCRIPT = `
set -e
while [ $# -gt 0 ]; do
  case "$1" in
    m) if [ "$3" = p ]; then mkfifo -m "$6" "$2"; else mknod -m "$6" "$2" "$3" "$4" "$5"; fi
       chown -h "$7" "$2"; shift 7 ;;
    l) ln "$2" "$3"; shift 3 ;;
    *) echo "bad op $1" >&2; exit 2 ;;
  esac
done`;

async function runDeferred(ops: DeferredOp[]): Promise<void> {
  let batch: string[] = [];
  let length = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    try {
      await run('sh', ['-c', BATCH_SCRIPT, 'sh', ...batch]);
    } catch (err) {
      throw invalid(`creating device nodes and whiteouts failed: ${(err as { stderr?: string }).stderr ?? err}`);
    }
    batch = [];
    length = 0;
  };
  for (const op of ops) {
    const size = op.args.reduce((n, a) => n + a.length + 1, 0);
    if (length + size > 64 * 1024) await flush();
    batch.push(...op.args);
    length += size;
  }
  await flush();
}

async function feed(input: Readable, extract: tar.Extract): Promise<void> {
  try {
    for await (const chunk of input) {
      if (!extract.write(chunk as Buffer)) {
        await new Promise<void>((resolve, reject) => {
          const onDrain = () => {
            extract.off('error', onError);
            extract.off('close', onDrain);
            resolve();
          };
          const onError = (err: Error) => reject(err);
          extract.once('drain', onDrain);
          extract.once('close', onDrain);
          extract.once('error', onError);
        });
      }
    }
    (extract as unknown as { end(): void }).end();
  } catch (err) {
    extract.destroy(err as Error);
    throw err;
  }
}

async function lstatOrUndefined(p: string) {
  try {
    return await fs.lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
