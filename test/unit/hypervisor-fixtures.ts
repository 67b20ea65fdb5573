/** What the unit tests of the non-QEMU hypervisor drivers share: a VM spec, temp dirs, fake hosts, open() failures. */
import { mkdtempSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VmSpec } from '../../src/drivers/hypervisor/hypervisor';
import type { KvmHost } from '../../src/drivers/hypervisor/vmm-process';

/** A VM spec with the kernel and initramfs paths the plans are checked against. */
export function testSpec(spec: Pick<VmSpec, 'id' | 'memoryMiB' | 'vcpus'> & Partial<VmSpec>): VmSpec {
  return { kernelPath: '/k/bzImage', initrdPath: '/k/initramfs.cpio', ...spec };
}

/** A directory under the system temp dir, made now and removed after the enclosing describe. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  afterAll(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A KVM-only driver's host where `binary` is what every lookup finds (null: nothing). */
export function fakeKvmHost(binary: string | null, kvm: boolean): KvmHost {
  return { locate: () => binary, kvmUsable: async () => kvm };
}

/** The error a driver's open() rejects with when its hypervisor cannot run: unavailable, one line. */
export async function expectUnavailable(opening: Promise<unknown>, message: RegExp | string): Promise<Error> {
  const err = await opening.then(
    () => {
      throw new Error('open() succeeded where it should not');
    },
    (e: unknown) => e as Error & { kind?: string },
  );
  expect(err.kind).toBe('unavailable');
  if (typeof message === 'string') expect(err.message).toBe(message);
  else expect(err.message).toMatch(message);
  expect(err.message).not.toContain('\n');
  return err;
}
