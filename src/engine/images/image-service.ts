/**
 * PLACEHOLDER — the image service (registry pulls, content store, image endpoints' logic).
 * Being written; until then images cannot be resolved.
 */
import { notFound, notImplemented } from '../../errors';
import type { EventBus } from '../events';
import type { CommitRequest, ImageBackend, ImageRecord } from '../image-backend';

export interface ImageServiceOptions {
  /** Root of the image store (blobs, layers, image metadata). */
  root: string;
  events: EventBus;
  insecureRegistries: string[];
}

export class ImageService implements ImageBackend {
  private constructor(readonly opts: ImageServiceOptions) {}

  static async open(opts: ImageServiceOptions): Promise<ImageService> {
    return new ImageService(opts);
  }

  async resolve(ref: string): Promise<ImageRecord> {
    throw notFound(`No such image: ${ref}`);
  }

  async commit(_req: CommitRequest): Promise<ImageRecord> {
    throw notImplemented('commit is not implemented yet');
  }

  async count(): Promise<number> {
    return 0;
  }

  setUsageProbe(_probe: (imageId: string) => Promise<Array<{ id: string; running: boolean }>>): void {}
}
