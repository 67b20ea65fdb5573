/**
 * Chooses what runs guest code for QEMU: KVM where it can really run our kernel, TCG otherwise.
 *
 * Why not just "use KVM if /dev/kvm opens": some hosts (these build machines among them) expose
 * /dev/kvm through kvm_pvm, a software nested-virtualisation module that cannot run an ordinary
 * guest kernel (the guest hangs, `-cpu host` aborts). We detect that module, and where /dev/kvm
 * looks real the QEMU driver confirms it with a boot probe before trusting it.
 */
import { constants, promises as fs } from 'node:fs';

export type Accelerator = 'kvm' | 'tcg';

export interface AcceleratorChoice {
  accelerator: Accelerator;
  reason: string;
  /** KVM looked usable but has not been proven by a boot yet. */
  needsProbe: boolean;
}

export interface AcceleratorHost {
  env: NodeJS.ProcessEnv;
  canOpenKvm(): Promise<boolean>;
  hasModule(name: string): Promise<boolean>;
}

export const realHost: AcceleratorHost = {
  env: process.env,
  async canOpenKvm() {
    try {
      await fs.access('/dev/kvm', constants.R_OK | constants.W_OK);
      return true;
    } catch {
      return false;
    }
  },
  async hasModule(name) {
    try {
      await fs.access(`/sys/module/${name}`);
      return true;
    } catch {
      return false;
    }
  },
};

export async function chooseAccelerator(host: AcceleratorHost = realHost): Promise<AcceleratorChoice> {
  const forced = host.env.PADDOCK_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') {
    return { accelerator: forced, reason: `forced by PADDOCK_ACCEL=${forced}`, needsProbe: false };
  }
  if (!(await host.canOpenKvm())) {
    return { accelerator: 'tcg', reason: '/dev/kvm is missing or not accessible', needsProbe: false };
  }
  if (await host.hasModule('kvm_pvm')) {
    return {
      accelerator: 'tcg',
      reason: '/dev/kvm is provided by kvm_pvm (software nested virtualisation), which cannot run an ordinary guest kernel',
      needsProbe: false,
    };
  }
  return { accelerator: 'kvm', reason: '/dev/kvm is usable', needsProbe: true };
}
