/** PLACEHOLDER — container service (being written). */
import type { GuestImage } from '../../drivers/guest/guest-image';
import type { Hypervisor } from '../../drivers/hypervisor/hypervisor';
import type { EventBus } from '../events';
import type { ImageBackend } from '../image-backend';
import type { ContainerCounts } from '../system';

export interface ContainerServiceOptions {
  root: string;
  events: EventBus;
  images: ImageBackend;
  hypervisor: Hypervisor;
  guest: GuestImage;
  defaultMemoryMiB: number;
}

export class ContainerService {
  private constructor(readonly opts: ContainerServiceOptions) {}
  static async open(opts: ContainerServiceOptions): Promise<ContainerService> {
    return new ContainerService(opts);
  }
  async counts(): Promise<ContainerCounts> {
    return { total: 0, running: 0, paused: 0, stopped: 0 };
  }
  async usersOfImage(_imageId: string): Promise<Array<{ id: string; running: boolean }>> {
    return [];
  }
  async shutdown(): Promise<void> {}
}
