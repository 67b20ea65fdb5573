/**
 * A stand-in image store for container tests that should not depend on a registry: it knows
 * one image, "busybox", whose only layer is the busybox tree from rootfs-builder.
 */
import { notFound, notImplemented } from '../../src/errors';
import type { CommitRequest, ImageBackend, ImageRecord } from '../../src/engine/image-backend';
import { busyboxRootfs } from './guest';

export const FAKE_BUSYBOX_ID = 'sha256:' + 'b'.repeat(64);

export class FakeImages implements ImageBackend {
  private readonly image: ImageRecord = {
    id: FAKE_BUSYBOX_ID,
    repoTags: ['busybox:latest'],
    repoDigests: [],
    created: '2024-01-01T00:00:00Z',
    architecture: 'amd64',
    os: 'linux',
    size: 0,
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'] },
    layerDirs: [busyboxRootfs()],
  };

  async resolve(ref: string): Promise<ImageRecord> {
    if (['busybox', 'busybox:latest', FAKE_BUSYBOX_ID].includes(ref)) return this.image;
    throw notFound(`No such image: ${ref}`);
  }

  async commit(_req: CommitRequest): Promise<ImageRecord> {
    throw notImplemented('commit');
  }

  async count(): Promise<number> {
    return 1;
  }

  setUsageProbe(): void {}
}
