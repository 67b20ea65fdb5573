/**
 * Volumes and bind mounts of a container, gathered under one host directory by bind mounts, so
 * that the VM receives all of them through ONE shared directory. microvm has eight virtio-mmio
 * transports and five are taken (agent channel, rng, rootfs, /etc files, NIC): one device per
 * mount would cap a container at three. The guest then bind-mounts each entry to its target.
 *
 * Read-only mounts are read-only on the host side (a remount of the bind), so a guest that
 * remounts its view read-write still cannot write. Cleanup never deletes recursively: every entry
 * is unmounted and then removed with rmdir/unlink, which fail rather than descend into a mount
 * that is still there (a volume's data must never be at risk from a cleanup).
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { unavailable } from '../../errors';

const run = promisify(execFile);

export interface StagedMount {
  /** Entry name inside the staging directory. */
  name: string;
  hostPath: string;
  readOnly: boolean;
  kind: 'dir' | 'file';
}

async function mountCmd(args: string[]): Promise<void> {
  try {
    await run('mount', args);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw unavailable(`mount ${args.join(' ')}: ${(e.stderr || e.message).trim()}`);
  }
}

/** Binds each host path to `<dir>/<i>`; on failure, what was bound is released again. */
export async function stageMounts(dir: string, mounts: Array<{ hostPath: string; readOnly?: boolean }>): Promise<StagedMount[]> {
  if (!path.isAbsolute(dir) || dir === '/') throw unavailable(`refusing mount staging dir ${dir}`);
  await releaseStagedMounts(dir);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const staged: StagedMount[] = [];
  try {
    for (const [i, m] of mounts.entries()) {
      const st = await fs.stat(m.hostPath);
      const entry = path.join(dir, String(i));
      const kind = st.isDirectory() ? 'dir' : 'file';
      if (kind === 'dir') await fs.mkdir(entry);
      else await fs.writeFile(entry, '', { flag: 'wx' });
      await mountCmd(['--bind', m.hostPath, entry]);
      staged.push({ name: String(i), hostPath: m.hostPath, readOnly: Boolean(m.readOnly), kind });
      // Private: later mounts inside the source do not show up, as with Docker's rprivate default.
      await mountCmd(['--make-private', entry]);
      if (m.readOnly) await mountCmd(['-o', 'remount,bind,ro', entry]);
    }
  } catch (err) {
    await releaseStagedMounts(dir);
    throw err;
  }
  return staged;
}

/** Unmounts and removes every entry (and the directory); safe to call when nothing is staged. */
export async function releaseStagedMounts(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const entry = path.join(dir, name);
    // Lazy: a VM that still holds it open does not keep the host mount alive in our namespace.
    await run('umount', ['-l', entry]).catch(() => undefined);
    await fs.rmdir(entry).catch(() => fs.unlink(entry).catch(() => undefined));
  }
  await fs.rmdir(dir).catch(() => undefined);
}
