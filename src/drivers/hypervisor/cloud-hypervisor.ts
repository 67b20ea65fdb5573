/**
 * Cloud Hypervisor driver: one `cloud-hypervisor --api-socket path=…` process per VM, given its
 * whole configuration in PUT /api/v1/vm.create and started with PUT /api/v1/vm.boot
 * (docs: vmm/src/api/openapi/cloud-hypervisor.yaml and docs/api.md in cloud-hypervisor/cloud-hypervisor).
 *
 * - Agent transport: virtio-vsock, hybrid (unix socket + `CONNECT 1024\n`), docs/vsock.md.
 * - Directory sharing: virtio-fs only (one virtiofsd per share; guest memory is `shared` so that
 *   vhost-user works, which also allows adding shares to a running VM with vm.add-fs).
 * - Hotplug of disks (vm.add-disk), NICs (vm.add-net, tap only) and shares; pause/resume;
 *   no VM templates yet (vm.snapshot exists; the driver does not use it).
 * - A guest reboot restarts the VM in Cloud Hypervisor, while our agent "powers off" by
 *   rebooting (QEMU runs with -no-reboot). The driver reads Cloud Hypervisor's event monitor
 *   (`--event-monitor fd=3`, pretty-printed JSON events) and ends the VMM on `vm`/`rebooting`.
 * - x86 Cloud Hypervisor boots an ELF vmlinux (PVH entry); kernel/build.sh caches one.
 *
 * Run here: never (not installable from the reachable registries, no usable KVM); the request
 * list is unit-tested against the OpenAPI schemas.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { invalid } from '../../errors';
import { logger } from '../../util/log';
import type {
  DiskSpec,
  Hypervisor,
  HypervisorCapabilities,
  HypervisorInfo,
  NicSpec,
  ShareSpec,
  Vm,
  VmSpec,
} from './hypervisor';
import {
  abandonStart,
  bootOverApi,
  ChildProcessVm,
  checkTag,
  checkVmId,
  commonKernelArgs,
  delay,
  elfKernelFor,
  isRunning,
  makeRunDir,
  missingCapability,
  once,
  openKvmVmm,
  refuseUnsupportedSpec,
  removeUnder,
  spawnVmm,
  spawnWithParentDeath,
  UnixHttpClient,
  waitForPath,
  writePidFile,
  type ApiCall,
  type KvmHost,
  type KvmVmmOptions,
  type VmmChild,
} from './vmm-process';

const log = logger('cloud-hypervisor');
const DRIVER = 'cloud-hypervisor';
const GUEST_CID = 3;
const API = '/api/v1';

export interface CloudHypervisorOptions extends KvmVmmOptions {
  /** virtiofsd for shares; found on PATH or in Debian's locations when not given. */
  virtiofsdPath?: string;
  startTimeoutMs?: number;
  host?: CloudHypervisorHost;
}

export type CloudHypervisorHost = KvmHost;

/** Debian's Rust virtiofsd (package virtiofsd) first, then QEMU's C one (qemu-system-common 7.2). */
export function findVirtiofsd(locate: (n: string) => string | null): string | null {
  return locate('virtiofsd') ?? locate('/usr/libexec/virtiofsd') ?? locate('/usr/lib/qemu/virtiofsd');
}

export function cloudHypervisorCapabilities(haveVirtiofsd: boolean): HypervisorCapabilities {
  return {
    fsShare: haveVirtiofsd ? ['virtio-fs'] : [],
    hotplugDisk: true,
    hotplugNic: true,
    pause: true,
    // NetConfig.tap opens (or creates) a tap; vhost-user-net would need a vhost-user switch.
    nicBackends: ['tap'],
    // vm.snapshot / vm.restore exist, but this driver does not implement Paddock's template
    // contract (VmSpec.template, Vm.saveTemplate) yet.
    snapshot: false,
    // Possible with hotplug_size / max_vcpus headroom, which this driver does not reserve.
    resizeMemory: false,
    resizeCpus: false,
  };
}

export function cloudHypervisorKernelArgs(spec: VmSpec): string {
  return ['console=ttyS0', 'reboot=k', '8250.nr_uarts=1', ...commonKernelArgs(), ...(spec.kernelArgs ?? [])].join(' ');
}

export interface CloudHypervisorPaths {
  vsockSocket: string;
  /** virtiofsd socket of each share, by tag. */
  fsSockets: Record<string, string>;
}

/** The VmConfig body of vm.create (schema VmConfig of the OpenAPI description). */
export function cloudHypervisorVmConfig(spec: VmSpec, kernel: string, paths: CloudHypervisorPaths): Record<string, unknown> {
  const config: Record<string, unknown> = {
    cpus: { boot_vcpus: spec.vcpus, max_vcpus: spec.vcpus },
    // shared: vhost-user devices (virtiofsd) map guest memory; on from the start so that shares
    // can also be added later.
    memory: { size: spec.memoryMiB * 1024 * 1024, shared: true },
    payload: { kernel, initramfs: spec.initrdPath, cmdline: cloudHypervisorKernelArgs(spec) },
    serial: { mode: 'Tty' },
    console: { mode: 'Off' },
    rng: { src: '/dev/urandom' },
    vsock: { cid: GUEST_CID, socket: paths.vsockSocket, id: 'agent' },
  };
  if (spec.disks?.length) config.disks = spec.disks.map(diskConfig);
  if (spec.nics?.length) config.net = spec.nics.map(netConfig);
  if (spec.shares?.length) config.fs = spec.shares.map((s) => fsConfig(s, paths.fsSockets[s.tag]));
  return config;
}

/** vm.create then vm.boot. */
export function cloudHypervisorPlan(spec: VmSpec, kernel: string, paths: CloudHypervisorPaths): ApiCall[] {
  return [
    { method: 'PUT', path: `${API}/vm.create`, body: cloudHypervisorVmConfig(spec, kernel, paths) },
    { method: 'PUT', path: `${API}/vm.boot` },
  ];
}

function checkDeviceId(id: string): void {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw invalid(`invalid device id ${JSON.stringify(id)}`);
}

export function diskConfig(d: DiskSpec): Record<string, unknown> {
  checkDeviceId(d.id);
  // Cloud Hypervisor detects raw vs qcow2 from the image itself.
  return { id: d.id, path: d.hostPath, readonly: Boolean(d.readOnly) };
}

export function netConfig(n: NicSpec): Record<string, unknown> {
  checkDeviceId(n.id);
  if (n.backend.kind !== 'tap') {
    throw missingCapability(DRIVER, `nicBackends[${n.backend.kind}]`, `attach a NIC to a ${n.backend.kind} backend (only tap)`);
  }
  return { id: n.id, tap: n.backend.name, mac: n.mac };
}

export function fsConfig(s: ShareSpec, socket: string | undefined): Record<string, unknown> {
  checkTag(s.tag);
  if ((s.kind ?? 'virtio-fs') !== 'virtio-fs') {
    throw missingCapability(DRIVER, `fsShare[${s.kind}]`, `share a directory over ${s.kind} (only virtio-fs)`);
  }
  if (!socket) throw invalid(`no virtiofsd socket for share ${s.tag}`);
  return { tag: s.tag, socket, num_queues: 1, queue_size: 1024, id: `fs-${s.tag}` };
}

/** virtiofsd arguments: the Rust daemon and QEMU's C daemon spell their options differently. */
export function virtiofsdArgs(binary: string, socket: string, share: ShareSpec): string[] {
  if (binary.endsWith('/usr/lib/qemu/virtiofsd')) {
    return [`--socket-path=${socket}`, '-o', `source=${share.hostPath}`, '-o', 'cache=auto', '-o', 'no_posix_lock', ...(share.readOnly ? ['-o', 'readonly'] : [])];
  }
  return [`--socket-path=${socket}`, `--shared-dir=${share.hostPath}`, '--cache=auto', '--sandbox=none', ...(share.readOnly ? ['--readonly'] : [])];
}

/**
 * Splits Cloud Hypervisor's event stream (serde_json pretty-printed objects, one after another)
 * into complete JSON texts; the incomplete remainder is returned for the next chunk.
 */
export function splitJsonObjects(text: string): { objects: string[]; rest: string } {
  const objects: string[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  let escaped = false;
  let consumed = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === '\\') escaped = true;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{') {
      if (depth === 0) start = i;
      depth++;
    } else if (c === '}' && depth > 0) {
      depth--;
      if (depth === 0) {
        objects.push(text.slice(start, i + 1));
        consumed = i + 1;
      }
    }
  }
  return { objects, rest: depth > 0 ? text.slice(start) : text.slice(consumed).trimStart() };
}

/** Calls `onEvent` with each {source, event} the monitor reports. */
export function watchEvents(stream: Readable, onEvent: (source: string, event: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const { objects, rest } = splitJsonObjects(pending + chunk);
    pending = rest;
    for (const o of objects) {
      try {
        const e = JSON.parse(o) as { source?: string; event?: string };
        if (e.source && e.event) onEvent(e.source, e.event);
      } catch {
        // not an event
      }
    }
  });
}

export class CloudHypervisorHypervisor implements Hypervisor {
  private constructor(
    private readonly opts: { runRoot: string; binary: string; virtiofsd: string | null; startTimeoutMs: number },
    private readonly version: string,
  ) {}

  static async open(options: CloudHypervisorOptions): Promise<CloudHypervisorHypervisor> {
    const { host, binary, runRoot, version } = await openKvmVmm(DRIVER, options, {
      binaryRemedy: 'not packaged in Debian 12: put the static release binary from github.com/cloud-hypervisor/cloud-hypervisor/releases on PATH',
      kvmRemedy: 'Cloud Hypervisor needs KVM (or MSHV): load kvm_intel or kvm_amd',
      versionPattern: /cloud-hypervisor v?(\S+)/i,
    });
    const virtiofsd = options.virtiofsdPath ?? findVirtiofsd((n) => host.locate(n));
    return new CloudHypervisorHypervisor({ runRoot, binary, virtiofsd, startTimeoutMs: options.startTimeoutMs ?? 15000 }, version);
  }

  info(): HypervisorInfo {
    return { name: DRIVER, version: this.version, accelerator: 'kvm', acceleratorReason: 'Cloud Hypervisor runs on KVM' };
  }

  capabilities(): HypervisorCapabilities {
    return cloudHypervisorCapabilities(Boolean(this.opts.virtiofsd && existsSync(this.opts.virtiofsd)));
  }

  async create(spec: VmSpec): Promise<Vm> {
    checkVmId(spec.id);
    refuseUnsupportedSpec(DRIVER, spec);
    if (spec.shares?.length && !this.capabilities().fsShare.length) {
      throw missingCapability(DRIVER, 'fsShare', 'share host directories without virtiofsd (apt-get install virtiofsd)');
    }
    const kernel = await elfKernelFor(DRIVER, spec.kernelPath);
    const runDir = await makeRunDir(this.opts.runRoot, spec.id);
    const helpers: ChildProcess[] = [];
    const cleanup = async () => {
      for (const h of helpers) if (isRunning(h)) h.kill('SIGKILL');
      await Promise.all(helpers.map((h) => (isRunning(h) ? once(h, 'exit') : undefined)));
      await removeUnder(this.opts.runRoot, runDir);
    };
    let vmm: VmmChild | undefined;
    try {
      const fsSockets: Record<string, string> = {};
      for (const share of spec.shares ?? []) {
        fsSockets[share.tag] = await startVirtiofsd(this.opts.virtiofsd!, runDir, share, helpers);
      }
      const paths = { vsockSocket: path.join(runDir, 'vsock.sock'), fsSockets };
      const plan = cloudHypervisorPlan(spec, kernel, paths);
      const apiSocket = path.join(runDir, 'api.sock');
      vmm = spawnVmm(this.opts.binary, ['--api-socket', `path=${apiSocket}`, '--event-monitor', 'fd=3'], ['pipe']);
      const proc = vmm.proc;
      await writePidFile(runDir, proc);
      const api = new UnixHttpClient(apiSocket, 'cloud-hypervisor');
      watchEvents(proc.stdio[3] as Readable, (source, event) => {
        if (source === 'vm' && event === 'rebooting') {
          // The agent's power-off: end the VMM instead of booting the guest again.
          log.debug('guest rebooted: ending the VMM', { id: spec.id });
          void api.call({ method: 'PUT', path: `${API}/vmm.shutdown` }).catch(() => undefined);
          void delay(2000).then(() => isRunning(proc) && proc.kill('SIGKILL'));
        }
      });
      const agent = await bootOverApi(api, plan, paths.vsockSocket, this.opts.startTimeoutMs, proc);
      return new CloudHypervisorVm(spec.id, vmm, agent, cleanup, api, this.opts.virtiofsd, runDir, helpers);
    } catch (err) {
      await abandonStart(vmm, cleanup);
      throw err;
    }
  }
}

async function startVirtiofsd(binary: string, runDir: string, share: ShareSpec, helpers: ChildProcess[]): Promise<string> {
  checkTag(share.tag);
  const socket = path.join(runDir, `fs-${share.tag}.sock`);
  const d = spawnWithParentDeath(binary, virtiofsdArgs(binary, socket, share));
  d.stdout?.resume();
  d.stderr?.resume();
  helpers.push(d);
  await waitForPath(socket, 5000, d);
  return socket;
}

class CloudHypervisorVm extends ChildProcessVm implements Vm {
  constructor(
    id: string,
    vmm: VmmChild,
    agent: net.Socket,
    cleanup: () => Promise<void>,
    private readonly api: UnixHttpClient,
    private readonly virtiofsd: string | null,
    private readonly runDir: string,
    private readonly helpers: ChildProcess[],
  ) {
    super(id, vmm, agent, cleanup);
  }

  async pause(): Promise<void> {
    await this.api.call({ method: 'PUT', path: `${API}/vm.pause` });
  }

  async resume(): Promise<void> {
    await this.api.call({ method: 'PUT', path: `${API}/vm.resume` });
  }

  async addShare(share: ShareSpec): Promise<void> {
    if (!this.virtiofsd) throw missingCapability(DRIVER, 'fsShare', 'share host directories without virtiofsd');
    const socket = await startVirtiofsd(this.virtiofsd, this.runDir, share, this.helpers);
    await this.api.call({ method: 'PUT', path: `${API}/vm.add-fs`, body: fsConfig(share, socket) });
  }

  async addDisk(disk: DiskSpec): Promise<void> {
    await this.api.call({ method: 'PUT', path: `${API}/vm.add-disk`, body: diskConfig(disk) });
  }

  async addNic(nic: NicSpec): Promise<void> {
    await this.api.call({ method: 'PUT', path: `${API}/vm.add-net`, body: netConfig(nic) });
  }
}
