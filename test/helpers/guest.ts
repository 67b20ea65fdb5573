/** Shared set-up for tests that boot real VMs: guest image, a busybox rootfs, the QEMU driver. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { locateGuestImage, type GuestImage } from '../../src/drivers/guest/guest-image';
import { QemuHypervisor } from '../../src/drivers/hypervisor/qemu';
import { mountOverlayRootfs, type ContainerRootfs } from '../../src/drivers/storage/overlay-rootfs';

/** The repository root, whether this runs from test/ (jest) or from dist/test/ (compiled). */
export const repoRoot = (() => {
  let dir = __dirname;
  while (!existsSync(path.join(dir, 'kernel/build.sh')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();

let guest: Promise<GuestImage> | undefined;
export function testGuestImage(): Promise<GuestImage> {
  guest ??= locateGuestImage({ sourceRoot: repoRoot });
  return guest;
}

let busybox: string | undefined;
/** A read-only busybox tree shared by every test in this process (the image's lower layer). */
export function busyboxRootfs(): string {
  if (!busybox) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-bb-'));
    execFileSync('bash', [path.join(repoRoot, 'rootfs-builder/busybox-rootfs.sh'), dir], { stdio: 'ignore' });
    busybox = dir;
  }
  return busybox;
}

export interface TestContainerDir {
  dir: string;
  rootfs: ContainerRootfs;
  cleanup(): Promise<void>;
}

/** A container rootfs: busybox below, a fresh writable layer on top. */
export async function makeContainerRootfs(): Promise<TestContainerDir> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-ctr-'));
  const rootfs = await mountOverlayRootfs(dir, [busyboxRootfs()]);
  return {
    dir,
    rootfs,
    cleanup: async () => {
      await rootfs.unmount();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

export async function removeBusyboxRootfs(): Promise<void> {
  if (busybox) await fs.rm(busybox, { recursive: true, force: true });
  busybox = undefined;
}

let switchBinary: string | undefined;
/** paddock-switch, built (once, cached by scripts/build-switch.sh) for tests that run networks. */
export function testSwitchBinary(): string {
  switchBinary ??= execFileSync('bash', [path.join(repoRoot, 'scripts/build-switch.sh')], { encoding: 'utf8' }).trim();
  return switchBinary;
}

export function testRunRoot(): string {
  return path.join(os.tmpdir(), `paddock-test-run-${process.pid}`);
}

export function openQemu(): Promise<QemuHypervisor> {
  return QemuHypervisor.open({ runRoot: testRunRoot() });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

export async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}
