/**
 * Packs a directory in overlayfs form (a container's upper dir, or an unpacked layer) into an
 * OCI layer tar: overlayfs whiteouts go back to OCI ones (a 0/0 character device NAME →
 * `.wh.NAME`; `trusted.overlay.opaque=y` on a dir → `DIR/.wh..wh..opq`). Members come in sorted
 * order so the same tree always gives the same tar; hard links are kept as links.
 */
import { createReadStream, promises as fs, type BigIntStats } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { getAttribute } from '@napi-rs/xattr';
import tar from 'tar-stream';
import { OPAQUE_XATTR } from './layer-unpack';

export interface PackResult {
  /** The tar stream; `entries` resolves once it is complete. */
  stream: Readable;
  /** Number of members written (0 means an empty layer). */
  entries: Promise<number>;
}

export function packLayer(dir: string): PackResult {
  const pack = tar.pack();
  const entries = writeTree(pack, dir).then(
    (n) => {
      pack.finalize();
      return n;
    },
    (err) => {
      pack.destroy(err);
      throw err;
    },
  );
  entries.catch(() => undefined);
  return { stream: Readable.from(pack as AsyncIterable<Buffer>, { objectMode: false }), entries };
}

async function writeTree(pack: tar.Pack, root: string): Promise<number> {
  const seenInodes = new Map<string, string>();
  let count = 0;
  const add = (header: Partial<tar.Header> & { name: string }, body?: Buffer | Readable) =>
    new Promise<void>((resolve, reject) => {
      count++;
      if (body === undefined || Buffer.isBuffer(body)) {
        pack.entry(header, body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
        return;
      }
      const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
      body.on('error', reject);
      body.pipe(sink as unknown as NodeJS.WritableStream);
    });

  const walk = async (relDir: string): Promise<void> => {
    const names = (await fs.readdir(path.join(root, relDir))).sort();
    for (const name of names) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const abs = path.join(root, rel);
      const st = await fs.lstat(abs, { bigint: true });
      const common = {
        uid: Number(st.uid),
        gid: Number(st.gid),
        mtime: new Date(Number(st.mtimeMs)),
        mode: Number(st.mode) & 0o7777,
      };
      if (st.isDirectory()) {
        await add({ ...common, name: rel, type: 'directory' });
        const opaque = await getAttribute(abs, OPAQUE_XATTR).catch(() => null);
        if (opaque && opaque.toString() === 'y') {
          await add({ ...common, name: `${rel}/.wh..wh..opq`, type: 'file', size: 0, mode: common.mode & 0o777 });
        }
        await walk(rel);
      } else if (st.isCharacterDevice() && st.rdev === 0n) {
        const whiteout = relDir ? `${relDir}/.wh.${name}` : `.wh.${name}`;
        await add({ ...common, name: whiteout, type: 'file', size: 0, mode: 0 });
      } else if (st.isSymbolicLink()) {
        await add({ ...common, name: rel, type: 'symlink', linkname: await fs.readlink(abs) });
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1n ? seenInodes.get(key) : undefined;
        if (first) {
          await add({ ...common, name: rel, type: 'link', linkname: first });
          continue;
        }
        if (st.nlink > 1n) seenInodes.set(key, rel);
        await add({ ...common, name: rel, type: 'file', size: Number(st.size) }, createReadStream(abs));
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const { major, minor } = deviceNumbers(st);
        await add({ ...common, name: rel, type: st.isBlockDevice() ? 'block-device' : 'character-device', devmajor: major, devminor: minor });
      } else if (st.isFIFO()) {
        await add({ ...common, name: rel, type: 'fifo' });
      }
      // Sockets are not part of a filesystem image (Docker skips them too).
    }
  };
  await walk('');
  return count;
}

/** glibc's major()/minor() encoding of a dev_t. */
function deviceNumbers(st: BigIntStats): { major: number; minor: number } {
  const rdev = st.rdev;
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}
