/**
 * The fallback guest kernel: Debian's prebuilt linux-image-cloud-amd64 (virtio as modules, which
 * the agent loads; no 9p, so the rootfs goes over virtio-fs; no command-line virtio-mmio devices,
 * so the VM gets ACPI tables).
 */
import { locateGuestImage } from '../../src/drivers/guest/guest-image';
import { Sandbox } from '../../src/engine/sandbox';
import { makeContainerRootfs, openQemu, readAll, removeBusyboxRootfs, repoRoot } from '../helpers/guest';

jest.setTimeout(300_000);

afterAll(() => removeBusyboxRootfs());

test('a container runs on Debian\'s cloud kernel', async () => {
  const guest = await locateGuestImage({ sourceRoot: repoRoot, kind: 'debian-cloud' });
  expect(guest.kernelRelease).toMatch(/-cloud-amd64$/);
  const qemu = await openQemu();
  const ctr = await makeContainerRootfs();
  const sb = await Sandbox.start(qemu, guest, { id: 'cloud-kernel', rootfsDir: ctr.rootfs.merged });
  try {
    const p = await sb.exec({ args: ['sh', '-c', 'uname -r; echo written > /from-cloud'], env: ['PATH=/bin'] });
    const [out, exit] = await Promise.all([readAll(p.stdout), p.exited]);
    expect(exit.exitCode).toBe(0);
    expect(out.trim()).toBe(guest.kernelRelease);
  } finally {
    await sb.kill();
    await ctr.cleanup();
  }
});
