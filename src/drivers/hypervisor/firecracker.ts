/**
 * Firecracker driver: one `firecracker --api-sock` process per VM, configured through its REST API
 * on that unix socket (docs: https://github.com/firecracker-microvm/firecracker/blob/main/src/firecracker/swagger/firecracker.yaml
 * and docs/getting-started.md), then started with the InstanceStart action.
 *
 * - Agent transport: virtio-vsock, hybrid (unix socket) on the host; the agent listens on vsock
 *   port 1024 when it finds no virtio-serial port (Firecracker has none). docs/vsock.md.
 * - No directory sharing at all (no 9p, no virtio-fs): the container rootfs has to be a block
 *   device, so `fsShare` is empty and a VM asked for shares is refused naming that capability.
 * - No hotplug; pause/resume through PATCH /vm; no VM templates yet (Firecracker can snapshot,
 *   this driver does not use it).
 * - The guest's power-off is the agent's reboot: `reboot=k` makes it an i8042 reset, on which
 *   Firecracker exits (docs/api_requests/actions.md, "SendCtrlAltDel" and reboot notes).
 * - x86 Firecracker boots an uncompressed ELF vmlinux; kernel/build.sh caches one beside bzImage.
 *
 * Run here: never (no Firecracker on these machines, and no usable KVM); the plan is unit-tested
 * against the API description and the conformance suite runs it where the binary exists.
 */
import type net from 'node:net';
import path from 'node:path';
import { invalid } from '../../errors';
import { logger } from '../../util/log';
import type {
  DiskSpec,
  Hypervisor,
  HypervisorCapabilities,
  HypervisorInfo,
  NicSpec,
  Vm,
  VmSpec,
} from './hypervisor';
import {
  abandonStart,
  bootOverApi,
  ChildProcessVm,
  checkVmId,
  commonKernelArgs,
  copyCapabilities,
  elfKernelFor,
  makeRunDir,
  missingCapability,
  openKvmVmm,
  refuseUnsupportedSpec,
  removeUnder,
  spawnVmm,
  UnixHttpClient,
  writePidFile,
  type ApiCall,
  type KvmHost,
  type KvmVmmOptions,
  type VmmChild,
} from './vmm-process';

const log = logger('firecracker');
const DRIVER = 'firecracker';
export { AGENT_VSOCK_PORT } from './vmm-process';
/** Any CID ≥ 3 works: each VM's vsock is private to its own unix socket. */
const GUEST_CID = 3;

export interface FirecrackerOptions extends KvmVmmOptions {
  startTimeoutMs?: number;
  /** For tests: how binaries and /dev/kvm are looked up. */
  host?: FirecrackerHost;
}

export type FirecrackerHost = KvmHost;

export interface FirecrackerPaths {
  vsockSocket: string;
}

export const firecrackerCapabilities: HypervisorCapabilities = {
  fsShare: [],
  hotplugDisk: false,
  hotplugNic: false,
  pause: true,
  // host_dev_name: Firecracker opens an existing tap device; it has no socket backend.
  nicBackends: ['tap'],
  // The VMM can save and restore VMs, but this driver does not implement Paddock's template
  // contract (VmSpec.template, Vm.saveTemplate) yet.
  snapshot: false,
  resizeMemory: false,
  resizeCpus: false,
};

/** Guest kernel command line under Firecracker (serial console on ttyS0 goes to its stdout). */
export function firecrackerKernelArgs(spec: VmSpec): string {
  return ['console=ttyS0', 'reboot=k', 'pci=off', '8250.nr_uarts=1', ...commonKernelArgs(), ...(spec.kernelArgs ?? [])].join(' ');
}

/**
 * The API calls that configure and boot one VM, in order. Pure: the unit tests compare it with
 * the swagger's schemas (MachineConfiguration, BootSource, Drive, NetworkInterface, Vsock,
 * InstanceActionInfo).
 */
export function firecrackerPlan(spec: VmSpec, kernelImagePath: string, paths: FirecrackerPaths): ApiCall[] {
  if (spec.shares?.length) {
    throw missingCapability(DRIVER, 'fsShare', 'share host directories (no 9p or virtio-fs); give the VM a block-device rootfs instead');
  }
  const calls: ApiCall[] = [
    { method: 'PUT', path: '/machine-config', body: { vcpu_count: spec.vcpus, mem_size_mib: spec.memoryMiB, smt: false } },
    {
      method: 'PUT',
      path: '/boot-source',
      body: { kernel_image_path: kernelImagePath, initrd_path: spec.initrdPath, boot_args: firecrackerKernelArgs(spec) },
    },
  ];
  for (const d of spec.disks ?? []) calls.push(driveCall(d));
  for (const n of spec.nics ?? []) calls.push(nicCall(n));
  calls.push({ method: 'PUT', path: '/vsock', body: { guest_cid: GUEST_CID, uds_path: paths.vsockSocket } });
  calls.push({ method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } });
  return calls;
}

function checkDeviceId(id: string): void {
  if (!/^[A-Za-z0-9_]{1,64}$/.test(id)) throw invalid(`firecracker device ids are letters, digits and _: ${JSON.stringify(id)}`);
}

function driveCall(d: DiskSpec): ApiCall {
  checkDeviceId(d.id);
  if ((d.format ?? 'raw') !== 'raw') throw invalid(`firecracker attaches raw disk images only; ${d.hostPath} is ${d.format}`);
  return {
    method: 'PUT',
    path: `/drives/${d.id}`,
    // The agent mounts disks itself: none is the kernel's root device (the initramfs is).
    body: { drive_id: d.id, path_on_host: d.hostPath, is_root_device: false, is_read_only: Boolean(d.readOnly) },
  };
}

function nicCall(n: NicSpec): ApiCall {
  checkDeviceId(n.id);
  if (n.backend.kind !== 'tap') {
    throw missingCapability(DRIVER, `nicBackends[${n.backend.kind}]`, `attach a NIC to a ${n.backend.kind} backend (only tap)`);
  }
  return {
    method: 'PUT',
    path: `/network-interfaces/${n.id}`,
    body: { iface_id: n.id, guest_mac: n.mac, host_dev_name: n.backend.name },
  };
}

/** Firecracker's --id: alphanumerics and hyphens, at most 64 characters. */
export function firecrackerInstanceId(vmId: string): string {
  return `paddock-${vmId}`.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 64);
}

export class FirecrackerHypervisor implements Hypervisor {
  private constructor(
    private readonly opts: { runRoot: string; binary: string; startTimeoutMs: number },
    private readonly version: string,
  ) {}

  static async open(options: FirecrackerOptions): Promise<FirecrackerHypervisor> {
    const { binary, runRoot, version } = await openKvmVmm(DRIVER, options, {
      binaryRemedy: 'not packaged in Debian: put the release binary from github.com/firecracker-microvm/firecracker/releases on PATH',
      kvmRemedy: 'Firecracker runs only on KVM: load kvm_intel or kvm_amd',
      versionPattern: /Firecracker v?(\S+)/i,
    });
    return new FirecrackerHypervisor({ runRoot, binary, startTimeoutMs: options.startTimeoutMs ?? 15000 }, version);
  }

  info(): HypervisorInfo {
    return { name: DRIVER, version: this.version, accelerator: 'kvm', acceleratorReason: 'Firecracker runs only on KVM' };
  }

  capabilities(): HypervisorCapabilities {
    return copyCapabilities(firecrackerCapabilities);
  }

  async create(spec: VmSpec): Promise<Vm> {
    checkVmId(spec.id);
    refuseUnsupportedSpec(DRIVER, spec);
    const kernel = await elfKernelFor(DRIVER, spec.kernelPath);
    // Unlike QEMU's, this run dir lives as long as the VM: the API socket serves pause/resume.
    const runDir = await makeRunDir(this.opts.runRoot, spec.id);
    const apiSocket = path.join(runDir, 'api.sock');
    const paths = { vsockSocket: path.join(runDir, 'vsock.sock') };
    const cleanup = () => removeUnder(this.opts.runRoot, runDir);
    let vmm: VmmChild | undefined;
    try {
      const plan = firecrackerPlan(spec, kernel, paths);
      vmm = spawnVmm(this.opts.binary, ['--api-sock', apiSocket, '--id', firecrackerInstanceId(spec.id)]);
      await writePidFile(runDir, vmm.proc);
      const api = new UnixHttpClient(apiSocket, 'firecracker');
      const agent = await bootOverApi(api, plan, paths.vsockSocket, this.opts.startTimeoutMs, vmm.proc);
      log.debug('firecracker VM started', { id: spec.id, pid: vmm.proc.pid });
      return new FirecrackerVm(spec.id, vmm, agent, cleanup, api);
    } catch (err) {
      await abandonStart(vmm, cleanup);
      throw err;
    }
  }
}

class FirecrackerVm extends ChildProcessVm implements Vm {
  constructor(id: string, vmm: VmmChild, agent: net.Socket, cleanup: () => Promise<void>, private readonly api: UnixHttpClient) {
    super(id, vmm, agent, cleanup);
  }

  async pause(): Promise<void> {
    await this.api.call({ method: 'PATCH', path: '/vm', body: { state: 'Paused' } });
  }

  async resume(): Promise<void> {
    await this.api.call({ method: 'PATCH', path: '/vm', body: { state: 'Resumed' } });
  }

  async addShare(): Promise<void> {
    throw missingCapability(DRIVER, 'fsShare', 'share host directories');
  }

  async addDisk(): Promise<void> {
    throw missingCapability(DRIVER, 'hotplugDisk', 'add a disk to a running VM');
  }

  async addNic(): Promise<void> {
    throw missingCapability(DRIVER, 'hotplugNic', 'add a NIC to a running VM');
  }
}
