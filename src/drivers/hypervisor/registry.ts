/** Picks a hypervisor driver by name (`--hypervisor`); each driver says what to install if absent. */
import { invalid } from '../../errors';
import type { Hypervisor } from './hypervisor';
import { QemuHypervisor } from './qemu';

export interface HypervisorOpenOptions {
  runRoot: string;
  probeGuest?: { kernelPath: string; initrdPath: string };
}

const drivers: Record<string, (o: HypervisorOpenOptions) => Promise<Hypervisor>> = {
  qemu: (o) => QemuHypervisor.open(o),
};

export function hypervisorNames(): string[] {
  return Object.keys(drivers);
}

export async function openHypervisor(name: string, options: HypervisorOpenOptions): Promise<Hypervisor> {
  const open = drivers[name];
  if (!open) throw invalid(`unknown hypervisor "${name}"; available: ${hypervisorNames().join(', ')}`);
  return open(options);
}
