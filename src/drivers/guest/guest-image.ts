/**
 * Finds (and if needed builds) the guest kernel and initramfs. Both are built by scripts in the
 * repository (kernel/build.sh, rootfs-builder/build.sh) into a cache outside it; the scripts are
 * idempotent and print the cache directory, so calling them again costs a hash and a stat.
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { unavailable } from '../../errors';
import type { FsShareKind } from '../hypervisor/hypervisor';
import { logger } from '../../util/log';

const log = logger('guest-image');

export type GuestKernelKind = 'paddock' | 'debian-cloud';

export interface GuestImage {
  kernelPath: string;
  initrdPath: string;
  /** Version string of the guest kernel (uname -r inside the guest). */
  kernelRelease: string;
  kind: GuestKernelKind;
  /** The kernel finds virtio-mmio devices only through ACPI (no command-line devices). */
  needsAcpi: boolean;
  /** Directory sharing the guest kernel supports, in our order of preference. */
  fsShare: FsShareKind[];
}

export interface GuestImageOptions {
  /** Root of the Paddock source tree (holds kernel/ and rootfs-builder/). */
  sourceRoot: string;
  kind?: GuestKernelKind;
  /** Run the build scripts when nothing is cached (else fail with a hint). */
  build?: boolean;
}

export async function locateGuestImage(opts: GuestImageOptions): Promise<GuestImage> {
  const image = await locate(opts);
  // What we built is installed read-only, root's (files given through the environment are the user's).
  if (!(process.env.PADDOCK_KERNEL && process.env.PADDOCK_INITRD)) await sealReadOnly([image.kernelPath, image.initrdPath]);
  return image;
}

/** Guest kernel and initramfs: owned by root, mode 0444, so that no VMM (or anyone but root) can change them. */
export async function sealReadOnly(files: string[]): Promise<void> {
  for (const f of files) {
    const st = await fs.stat(f);
    if (st.uid !== 0 || st.gid !== 0) await fs.chown(f, 0, 0);
    if ((st.mode & 0o7777) !== 0o444) await fs.chmod(f, 0o444);
  }
}

async function locate(opts: GuestImageOptions): Promise<GuestImage> {
  const kind = opts.kind ?? 'paddock';
  const envKernel = process.env.PADDOCK_KERNEL;
  const envInitrd = process.env.PADDOCK_INITRD;
  if (envKernel && envInitrd) {
    return { kernelPath: envKernel, initrdPath: envInitrd, kernelRelease: 'custom', kind, needsAcpi: kind === 'debian-cloud', fsShare: kind === 'debian-cloud' ? ['virtio-fs'] : ['9p', 'virtio-fs'] };
  }
  const build = opts.build ?? true;
  if (kind === 'debian-cloud') {
    const dir = await runBuildScript(opts.sourceRoot, 'rootfs-builder/build.sh', ['--cloud-kernel'], build);
    return {
      kernelPath: path.join(dir, 'vmlinuz'),
      initrdPath: path.join(dir, 'initramfs.cpio'),
      kernelRelease: (await fs.readFile(path.join(dir, 'release'), 'utf8')).trim(),
      kind,
      // Debian's cloud kernel is built without VIRTIO_MMIO_CMDLINE_DEVICES, and without 9p.
      needsAcpi: true,
      fsShare: ['virtio-fs'],
    };
  }
  const initrdDir = await runBuildScript(opts.sourceRoot, 'rootfs-builder/build.sh', [], build);
  const kernelDir = await runBuildScript(opts.sourceRoot, 'kernel/build.sh', [], build);
  return {
    kernelPath: path.join(kernelDir, 'bzImage'),
    initrdPath: path.join(initrdDir, 'initramfs.cpio'),
    kernelRelease: (await fs.readFile(path.join(kernelDir, 'release'), 'utf8')).trim(),
    kind,
    needsAcpi: false,
    fsShare: ['9p', 'virtio-fs'],
  };
}

async function runBuildScript(root: string, script: string, args: string[], build: boolean): Promise<string> {
  const file = path.join(root, script);
  if (!existsSync(file)) throw unavailable(`${file} is missing: is sourceRoot the Paddock repository?`);
  const env = { ...process.env, ...(build ? {} : { PADDOCK_NO_BUILD: '1' }) };
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [file, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => {
      err += c;
      log.info(String(c).trimEnd());
    });
    p.on('error', reject);
    p.on('close', (code) => {
      const dir = out.trim().split('\n').pop() ?? '';
      if (code === 0 && dir) resolve(dir);
      else reject(unavailable(`${script} failed (exit ${code}): ${err.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}
