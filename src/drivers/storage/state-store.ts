/**
 * Durable JSON state: one directory per object, each file written atomically (temp file, fsync,
 * rename, fsync of the directory), so the daemon can be killed at any instant and a reader only
 * ever sees the old or the new version of a file, never half of one.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600, createDir = true): Promise<void> {
  const dir = path.dirname(file);
  if (createDir) await fs.mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

export async function writeJsonAtomic(file: string, value: unknown, createDir = true): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 1), 0o600, createDir);
}

export async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * A directory of objects, each in `<root>/<id>/<file>`. Creation is atomic too: an object is
 * assembled in a temp directory and renamed into place, so listing never shows half an object.
 */
export class ObjectDirectory<T> {
  constructor(
    readonly root: string,
    private readonly file = 'config.json',
  ) {}

  dirOf(id: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/.test(id)) throw new Error(`bad object id ${id}`);
    return path.join(this.root, id);
  }

  async ids(): Promise<string[]> {
    try {
      return (await fs.readdir(this.root)).filter((n) => !n.startsWith('.'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  async read(id: string): Promise<T | undefined> {
    return readJson<T>(path.join(this.dirOf(id), this.file));
  }

  /**
   * Updates an existing object. Its directory is never created here: a write racing remove()
   * would otherwise bring back a removed object as a directory holding only this file.
   */
  async write(id: string, value: T): Promise<void> {
    await writeJsonAtomic(path.join(this.dirOf(id), this.file), value, false);
  }

  /** Creates the object's directory and first state in one rename. */
  async create(id: string, value: T): Promise<string> {
    await fs.mkdir(this.root, { recursive: true });
    const tmp = path.join(this.root, `.${id}.${randomBytes(4).toString('hex')}.creating`);
    await fs.mkdir(tmp);
    await writeJsonAtomic(path.join(tmp, this.file), value);
    await fs.rename(tmp, this.dirOf(id));
    await fsyncDir(this.root);
    return this.dirOf(id);
  }

  /** Removes an object: renamed away first (atomic), then deleted at leisure. */
  async remove(id: string): Promise<void> {
    const dir = this.dirOf(id);
    const doomed = path.join(this.root, `.${id}.${randomBytes(4).toString('hex')}.removing`);
    try {
      await fs.rename(dir, doomed);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    await fsyncDir(this.root);
    await fs.rm(doomed, { recursive: true, force: true });
  }

  /** Deletes leftovers of creations and removals interrupted by a crash. */
  async sweep(): Promise<void> {
    let names: string[] = [];
    try {
      names = await fs.readdir(this.root);
    } catch {
      return;
    }
    for (const n of names) {
      if (n.startsWith('.') && (n.endsWith('.creating') || n.endsWith('.removing') || n.endsWith('.tmp'))) {
        await fs.rm(path.join(this.root, n), { recursive: true, force: true });
        continue;
      }
      // A kill during write() leaves its temp file inside the object's directory.
      let inner: string[] = [];
      try {
        inner = await fs.readdir(path.join(this.root, n));
      } catch {
        continue; // not a directory
      }
      for (const m of inner) {
        if (m.startsWith('.') && m.endsWith('.tmp')) await fs.rm(path.join(this.root, n, m), { force: true });
      }
    }
  }
}
