/**
 * Picks a hypervisor driver by name (`--hypervisor`). Each driver's open() checks that its
 * hypervisor can run here and otherwise answers one line naming what to install, which the daemon
 * prints before exiting.
 */
import { errorKind, invalid, unavailable } from '../../errors';
import { CloudHypervisorHypervisor } from './cloud-hypervisor';
import { FirecrackerHypervisor } from './firecracker';
import type { Hypervisor } from './hypervisor';
import { QemuHypervisor } from './qemu';
import { VirtualBoxHypervisor } from './virtualbox';
import { XenHypervisor } from './xen';

export interface HypervisorOpenOptions {
  runRoot: string;
  probeGuest?: { kernelPath: string; initrdPath: string };
}

const drivers: Record<string, (o: HypervisorOpenOptions) => Promise<Hypervisor>> = {
  qemu: (o) => QemuHypervisor.open(o),
  xen: (o) => XenHypervisor.open(o),
  virtualbox: (o) => VirtualBoxHypervisor.open(o),
  firecracker: (o) => FirecrackerHypervisor.open(o),
  'cloud-hypervisor': (o) => CloudHypervisorHypervisor.open(o),
};

export function hypervisorNames(): string[] {
  return Object.keys(drivers);
}

export async function openHypervisor(name: string, options: HypervisorOpenOptions): Promise<Hypervisor> {
  const open = drivers[name];
  if (!open) throw invalid(`unknown hypervisor "${name}"; available: ${hypervisorNames().join(', ')}`);
  try {
    return await open(options);
  } catch (err) {
    // One shape for every driver's "cannot run here" (QEMU's own message predates it).
    const message = (err as Error).message;
    if (errorKind(err) === 'unavailable' && !message.startsWith(`hypervisor "${name}"`)) {
      throw unavailable(`hypervisor "${name}" is not available: ${message}`, err);
    }
    throw err;
  }
}
