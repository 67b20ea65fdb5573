/**
 * The hypervisor driver interface. QEMU implements it today; Xen, VirtualBox, Firecracker and
 * Cloud Hypervisor implement the same contract. The engine asks a driver for capabilities, never
 * for its name, and adapts (e.g. a block-device rootfs where a driver cannot share directories).
 */
import type { Duplex } from 'node:stream';

/**
 * '9p' is 9p over virtio; '9p-xen' is 9p over Xen's 9pfs transport (mounted with trans=xen);
 * 'vboxsf' is VirtualBox's shared folders (mainline vboxsf driver).
 */
export type FsShareKind = '9p' | 'virtio-fs' | '9p-xen' | 'vboxsf';

export interface HypervisorCapabilities {
  /** Directory sharing mechanisms, in the driver's order of preference. */
  fsShare: FsShareKind[];
  /** Devices can be added to a running VM. */
  hotplugDisk: boolean;
  hotplugNic: boolean;
  pause: boolean;
  /** NIC backends the driver can attach, in order of preference. */
  nicBackends: Array<NicBackend['kind']>;
  /** The VM can be saved and restored (VM templates). */
  snapshot: boolean;
  resizeMemory: boolean;
  resizeCpus: boolean;
}

export interface HypervisorInfo {
  name: string;
  version: string;
  /** 'kvm', 'tcg', 'xen', ...: what actually runs guest code. */
  accelerator: string;
  /** Why this accelerator was chosen (shown in logs and `docker info`). */
  acceleratorReason: string;
  /** Confinement of the VMM processes in force, as `docker info` SecurityOptions entries. */
  securityOptions?: string[];
}

export interface ShareSpec {
  /** Mount tag the guest uses to find the share. */
  tag: string;
  hostPath: string;
  readOnly?: boolean;
  kind?: FsShareKind;
}

export interface DiskSpec {
  id: string;
  hostPath: string;
  readOnly?: boolean;
  format?: 'raw' | 'qcow2';
}

/**
 * One virtual NIC. Paddock gives a VM at most one NIC, a trunk: every network the container is on
 * is an 802.1Q VLAN on it, so `docker network connect` on a running container needs no device
 * hotplug (see src/drivers/network/). The backend is where the NIC's frames go.
 */
export interface NicSpec {
  id: string;
  mac: string;
  backend: NicBackend;
}

export type NicBackend =
  /** A unix stream socket on which Paddock's switch listens; frames carry a 4-byte big-endian length (QEMU's `-netdev stream`). */
  | { kind: 'unix-stream'; path: string }
  /** A host tap device (created by the network layer, in the daemon's network namespace). */
  | { kind: 'tap'; name: string };

export interface VmSpec {
  /** Unique, filesystem-safe name of the VM (the container ID). */
  id: string;
  kernelPath: string;
  initrdPath: string;
  /** Extra kernel command line arguments. */
  kernelArgs?: string[];
  memoryMiB: number;
  vcpus: number;
  /**
   * Describe devices with ACPI tables. Off by default (faster boot: our kernel takes virtio-mmio
   * devices from its command line); Debian's cloud kernel cannot, so it needs tables.
   */
  acpi?: boolean;
  shares?: ShareSpec[];
  disks?: DiskSpec[];
  nics?: NicSpec[];
  /**
   * VM templates (capability `snapshot`; src/engine/vm-templates.ts). 'boot': the guest's RAM lives
   * in `<dir>/memory` so that `Vm.saveTemplate` can save the VM there. 'restore': the VM starts from
   * what was saved in `dir` instead of booting; the spec must have the template's memory, vCPUs,
   * kernel and device shape, with its own share paths, sockets and NIC backend.
   */
  template?: { mode: 'boot' | 'restore'; dir: string };
  /**
   * Host-side limits of the VMM process (its cgroup), e.g. from the container's HostConfig.
   * Absent fields are derived from memoryMiB and vcpus; cpuQuotaUs null means no CPU quota.
   */
  limits?: { memoryBytes?: number; cpuQuotaUs?: number | null; cpuPeriodUs?: number };
}

export interface VmExit {
  /** Process exit code of the VMM, or null when it was killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Last lines of the guest console, for error messages. */
  consoleTail: string;
}

export interface VmStats {
  /** Host memory used by the VMM process (resident set), bytes. */
  rssBytes: number;
  /** CPU time of the VMM process, nanoseconds. */
  cpuNanos: number;
}

export interface Vm {
  readonly id: string;
  /** Host PID of the VMM process. */
  readonly pid: number;
  /** The byte stream to the guest agent (transport chosen by the driver). */
  readonly agentChannel: Duplex;
  /** Settles when the VMM process has exited and its resources are released. */
  readonly exited: Promise<VmExit>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Ends the VMM now (SIGKILL); resolves once it has exited and been cleaned up. */
  kill(): Promise<VmExit>;
  stats(): Promise<VmStats>;
  addShare(share: ShareSpec): Promise<void>;
  addDisk(disk: DiskSpec): Promise<void>;
  addNic(nic: NicSpec): Promise<void>;
  /** Recent guest console output (kernel messages). */
  consoleTail(): string;
  /** VM templates: pauses a VM started with `template.mode` 'boot' and saves it into its template dir. */
  saveTemplate?(): Promise<void>;
  /** Milliseconds of the VMM's start-up steps (e.g. spawn, restore), for the start-latency breakdown. */
  startTimings?: Record<string, number>;
}

export interface Hypervisor {
  info(): HypervisorInfo;
  capabilities(): HypervisorCapabilities;
  /** Starts a VM; resolves once the VMM runs and the agent channel is connected. */
  create(spec: VmSpec): Promise<Vm>;
}
