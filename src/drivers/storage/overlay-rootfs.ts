/**
 * A container's root filesystem on the host: the image's read-only layers under a per-container
 * writable layer, joined by the host kernel's overlayfs. The guest sees the merged directory
 * (shared into the VM); the writable layer stays a plain host directory, so `docker diff`,
 * `commit`, `cp` and `export` read changes without asking the guest.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { internal, invalid } from '../../errors';

const run = promisify(execFile);

export interface ContainerRootfs {
  /** What the container sees as '/'. */
  merged: string;
  /** The container's own changes (overlayfs upper dir, with whiteouts). */
  upper: string;
  unmount(): Promise<void>;
}

/**
 * Mounts `lowerDirs` (top-most first) with a writable layer under `containerDir`
 * (creating upper/, work/ and merged/ there). Idempotent: an existing mount is reused.
 */
export async function mountOverlayRootfs(containerDir: string, lowerDirs: string[]): Promise<ContainerRootfs> {
  if (!path.isAbsolute(containerDir) || path.resolve(containerDir) === '/') throw invalid(`bad container dir ${containerDir}`);
  if (lowerDirs.length === 0) throw invalid('an overlay rootfs needs at least one lower layer');
  for (const d of lowerDirs) if (d.includes(':') || d.includes(',')) throw invalid(`layer path ${d} contains ':' or ','`);
  const upper = path.join(containerDir, 'upper');
  const work = path.join(containerDir, 'work');
  const merged = path.join(containerDir, 'merged');
  await Promise.all([upper, work, merged].map((d) => fs.mkdir(d, { recursive: true, mode: 0o755 })));
  if (!(await isMountPoint(merged))) {
    const options = `lowerdir=${lowerDirs.join(':')},upperdir=${upper},workdir=${work}`;
    try {
      await run('mount', ['-t', 'overlay', 'overlay', '-o', options, merged]);
    } catch (err) {
      throw internal(`mounting the container rootfs failed: ${(err as { stderr?: string }).stderr ?? err}`, err);
    }
  }
  return {
    merged,
    upper,
    unmount: () => unmountOverlay(merged),
  };
}

/** Unmounts a container rootfs if it is mounted (lazily by default: nothing can keep it busy). */
export async function unmountOverlay(merged: string, lazy = true): Promise<void> {
  if (await isMountPoint(merged)) await run('umount', lazy ? ['-l', merged] : [merged]);
}

export async function isMountPoint(dir: string): Promise<boolean> {
  const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const target = path.resolve(dir);
  return mounts.split('\n').some((line) => line.split(' ')[4] === target);
}
