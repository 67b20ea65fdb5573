/**
 * Xen driver, through the `xl` toolstack (docs: xl(1), xl.cfg(5), xl-disk-configuration(5),
 * xen-pv-channel(7) in xen-project/xen docs/man).
 *
 * - Guest: a PVH domain booting our kernel directly (`type="pvh"`, `kernel=` the ELF vmlinux
 *   with its PVH note, `ramdisk=`, `cmdline=`); the console is hvc0.
 * - Agent transport: a PV channel named `paddock.agent` with `connection=socket`: the backend
 *   (QEMU in dom0) listens on a unix socket in the VM's run dir and the driver connects. In the
 *   guest the channel is the second PV console, /dev/hvc1; the agent is told so with
 *   `paddock.channel=/dev/hvc1` (it needs that option: see the README's driver section).
 * - Shares: Xen 9pfs (`p9=[…]`, QEMU backend, `security_model=none`). The guest mounts them with
 *   `trans=xen`, not virtio, hence the share kind '9p-xen'. Xen 9pfs has no read-only export,
 *   so a read-only share is refused rather than enforced only by the guest.
 * - Disks: xen-blkfront (`disk=[…]`, vdev xvda…), hot-added with `xl block-attach`.
 * - NICs: none. xl's vif backend is a netback interface that Xen creates itself, so it can be
 *   neither a tap the network layer created nor a unix-stream socket (`nicBackends` is empty).
 * - Lifecycle: `xl create -F` stays in the foreground until the domain dies and is the VM's
 *   process here; pause/unpause/destroy; `on_reboot="destroy"` turns the agent's power-off
 *   (a reboot) into the end of the domain. Stats come from `xl list`.
 * - A domain outlives a killed daemon (xl dies with it through pdeathsig, the domain does not),
 *   so open() destroys domains named `paddock-*` left by an earlier daemon.
 *
 * Run here: never (no Xen hypervisor on these machines; xen-utils installs but `xl` cannot reach
 * a hypervisor); the generated configuration is unit-tested against xl.cfg(5).
 */
import { promises as fs } from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { invalid } from '../../errors';
import { logger } from '../../util/log';
import type {
  DiskSpec,
  Hypervisor,
  HypervisorCapabilities,
  HypervisorInfo,
  ShareSpec,
  Vm,
  VmExit,
  VmSpec,
  VmStats,
} from './hypervisor';
import {
  abandonStart,
  ChildProcessVm,
  checkTag,
  checkVmId,
  commonKernelArgs,
  connectUnixRetry,
  consoleFileTail,
  copyCapabilities,
  driverUnavailable,
  elfKernelFor,
  isRunning,
  locateBinary,
  makeRunDir,
  missingCapability,
  prepareRunRoot,
  refuseUnsupportedSpec,
  removeUnder,
  requireBinary,
  runTool,
  spawnVmm,
  writePidFile,
  type VmmChild,
} from './vmm-process';

const log = logger('xen');
const DRIVER = 'xen';
export const XEN_AGENT_CHANNEL = 'paddock.agent';
/** The first PV console is hvc0 (the kernel console); the first channel is the next one. */
export const XEN_AGENT_DEVICE = '/dev/hvc1';
const DOMAIN_PREFIX = 'paddock-';

export interface XenOptions {
  runRoot: string;
  xlPath?: string;
  startTimeoutMs?: number;
  /** Destroy `paddock-*` domains of an earlier daemon on open (default true). */
  sweep?: boolean;
  host?: XenHost;
}

export interface XenHost {
  locate(name: string): string | null;
  /** Contents of /proc/xen/capabilities, or null when absent (not running on Xen). */
  xenCapabilities(): Promise<string | null>;
}

const realHost: XenHost = {
  locate: (n) => locateBinary(n),
  xenCapabilities: () => fs.readFile('/proc/xen/capabilities', 'utf8').catch(() => null),
};

export const xenCapabilities: HypervisorCapabilities = {
  fsShare: ['9p-xen'],
  hotplugDisk: true,
  hotplugNic: false,
  pause: true,
  nicBackends: [],
  // The VMM can save and restore VMs, but this driver does not implement Paddock's template
  // contract (VmSpec.template, Vm.saveTemplate) yet.
  snapshot: false,
  resizeMemory: false,
  resizeCpus: false,
};

export function xenDomainName(vmId: string): string {
  return `${DOMAIN_PREFIX}${vmId}`.slice(0, 64);
}

/** xvda, xvdb, … xvdz, xvdaa … */
export function xenVdev(index: number): string {
  let s = '';
  let n = index;
  do {
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return `xvd${s}`;
}

/**
 * xl.cfg strings are double-quoted; device specs are comma-separated KEY=VALUE lists whose values
 * may contain none of `,` `=` `"` (xl.cfg(5), channel and p9 sections).
 */
function specValue(what: string, value: string): string {
  if (/[,="\n\\]/.test(value)) throw invalid(`${what} ${JSON.stringify(value)} cannot be written in an xl device spec (no , = " or newlines)`);
  return value;
}

function quoted(what: string, value: string): string {
  if (/["\n\\]/.test(value)) throw invalid(`${what} ${JSON.stringify(value)} cannot be written in an xl config string`);
  return `"${value}"`;
}

export function xenKernelArgs(spec: VmSpec): string {
  return ['console=hvc0', `paddock.channel=${XEN_AGENT_DEVICE}`, ...commonKernelArgs(), ...(spec.kernelArgs ?? [])].join(' ');
}

/** One xl disk spec; `target=` last, as xl-disk-configuration(5) requires. */
export function xenDiskSpec(d: DiskSpec, vdev: string): string {
  if (/["\n]/.test(d.hostPath)) throw invalid(`disk path ${JSON.stringify(d.hostPath)} cannot be written in an xl disk spec`);
  return `format=${d.format ?? 'raw'}, vdev=${vdev}, access=${d.readOnly ? 'ro' : 'rw'}, target=${d.hostPath}`;
}

export function xenP9Spec(s: ShareSpec): string {
  checkTag(s.tag);
  if ((s.kind ?? '9p-xen') !== '9p-xen') {
    throw missingCapability(DRIVER, `fsShare[${s.kind}]`, `share a directory over ${s.kind} (only Xen 9pfs, kind 9p-xen)`);
  }
  if (s.readOnly) {
    throw missingCapability(DRIVER, 'read-only fsShare', `export ${s.hostPath} read-only: Xen 9pfs has no read-only mode, and a guest-side ro mount is no barrier`);
  }
  return `tag=${s.tag}, security_model=none, path=${specValue('share path', s.hostPath)}`;
}

/** The xl.cfg text for one VM (pure; unit-tested against xl.cfg(5)). */
export function xenConfig(spec: VmSpec, kernel: string, agentSocket: string): string {
  if (spec.nics?.length) {
    throw missingCapability(DRIVER, 'nicBackends', 'attach a NIC: a netback vif is neither a Paddock tap nor a unix-stream socket');
  }
  const list = (items: string[]) => `[ ${items.map((i) => quoted('device spec', i)).join(', ')} ]`;
  const lines = [
    `name = ${quoted('name', xenDomainName(spec.id))}`,
    'type = "pvh"',
    `kernel = ${quoted('kernel', kernel)}`,
    `ramdisk = ${quoted('ramdisk', spec.initrdPath)}`,
    `cmdline = ${quoted('cmdline', xenKernelArgs(spec))}`,
    `memory = ${spec.memoryMiB}`,
    `maxmem = ${spec.memoryMiB}`,
    `vcpus = ${spec.vcpus}`,
    // The agent powers off by rebooting; every way out ends the domain.
    'on_poweroff = "destroy"',
    'on_reboot = "destroy"',
    'on_crash = "destroy"',
    `channel = ${list([`name=${XEN_AGENT_CHANNEL}, connection=socket, path=${specValue('agent socket', agentSocket)}`])}`,
  ];
  const disks = (spec.disks ?? []).map((d, i) => xenDiskSpec(d, xenVdev(i)));
  if (disks.length) lines.push(`disk = ${list(disks)}`);
  const shares = (spec.shares ?? []).map(xenP9Spec);
  if (shares.length) lines.push(`p9 = ${list(shares)}`);
  return `${lines.join('\n')}\n`;
}

export interface XlListEntry {
  name: string;
  id: number;
  memMiB: number;
  vcpus: number;
  state: string;
  cpuSeconds: number;
}

/** Parses `xl list` table output (format in xl(1), `list`). */
export function parseXlList(text: string): XlListEntry[] {
  const out: XlListEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const m = /^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+([\d.]+)\s*$/.exec(line.trim());
    if (m) out.push({ name: m[1], id: Number(m[2]), memMiB: Number(m[3]), vcpus: Number(m[4]), state: m[5], cpuSeconds: Number(m[6]) });
  }
  return out;
}

export class XenHypervisor implements Hypervisor {
  private constructor(
    private readonly opts: { runRoot: string; xl: string; startTimeoutMs: number },
    private readonly version: string,
  ) {}

  static async open(options: XenOptions): Promise<XenHypervisor> {
    const host = options.host ?? realHost;
    const xl = requireBinary(DRIVER, options.xlPath, (n) => host.locate(n), 'xl', 'apt-get install xen-utils-4.17 qemu-system-xen');
    const caps = await host.xenCapabilities();
    if (caps === null || !caps.includes('control_d')) {
      throw driverUnavailable(
        DRIVER,
        caps === null ? 'this host is not running on Xen (/proc/xen/capabilities is missing)' : 'this host is a Xen guest, not dom0',
        'apt-get install xen-system-amd64, reboot into Xen and run paddockd in dom0',
      );
    }
    const runRoot = await prepareRunRoot(options.runRoot, DRIVER, true);
    const info = await runTool(xl, ['info']).catch(() => ({ stdout: '' }));
    const version = /^xen_version\s*:\s*(\S+)/m.exec(info.stdout)?.[1] ?? 'unknown';
    const hv = new XenHypervisor({ runRoot, xl, startTimeoutMs: options.startTimeoutMs ?? 30000 }, version);
    if (options.sweep ?? true) await hv.destroyLeftovers();
    return hv;
  }

  info(): HypervisorInfo {
    return { name: DRIVER, version: this.version, accelerator: 'xen', acceleratorReason: 'PVH domain under the Xen hypervisor' };
  }

  capabilities(): HypervisorCapabilities {
    return copyCapabilities(xenCapabilities);
  }

  private async destroyLeftovers(): Promise<void> {
    const list = await runTool(this.opts.xl, ['list']).catch(() => ({ stdout: '' }));
    for (const d of parseXlList(list.stdout).filter((e) => e.name.startsWith(DOMAIN_PREFIX))) {
      log.warn('destroying a domain left by an earlier daemon', { domain: d.name });
      await runTool(this.opts.xl, ['destroy', d.name]).catch(() => undefined);
    }
  }

  async create(spec: VmSpec): Promise<Vm> {
    checkVmId(spec.id);
    refuseUnsupportedSpec(DRIVER, spec);
    const kernel = await elfKernelFor(DRIVER, spec.kernelPath);
    const runDir = await makeRunDir(this.opts.runRoot, spec.id);
    const agentSocket = path.join(runDir, 'agent.sock');
    const cfgPath = path.join(runDir, 'domain.cfg');
    const name = xenDomainName(spec.id);
    const cleanup = () => removeUnder(this.opts.runRoot, runDir);
    let vmm: VmmChild | undefined;
    try {
      await fs.writeFile(cfgPath, xenConfig(spec, kernel, agentSocket));
      vmm = spawnVmm(this.opts.xl, ['create', '-F', cfgPath]);
      await writePidFile(runDir, vmm.proc);
      const agent = await connectUnixRetry(agentSocket, this.opts.startTimeoutMs, vmm.proc);
      return new XenVm(spec.id, vmm, agent, cleanup, this.opts.xl, name, (spec.disks ?? []).length);
    } catch (err) {
      await runTool(this.opts.xl, ['destroy', name]).catch(() => undefined);
      await abandonStart(vmm, cleanup);
      throw err;
    }
  }
}

class XenVm extends ChildProcessVm implements Vm {
  constructor(
    id: string,
    vmm: VmmChild,
    agent: net.Socket,
    cleanup: () => Promise<void>,
    private readonly xl: string,
    private readonly domain: string,
    private diskCount: number,
  ) {
    super(id, vmm, agent, cleanup);
  }

  async pause(): Promise<void> {
    await runTool(this.xl, ['pause', this.domain]);
  }

  async resume(): Promise<void> {
    await runTool(this.xl, ['unpause', this.domain]);
  }

  /** The domain, not xl, is the VM: destroy it, and xl -F then exits by itself. */
  override async kill(): Promise<VmExit> {
    if (isRunning(this.proc)) {
      await runTool(this.xl, ['destroy', this.domain]).catch(() => undefined);
      if (isRunning(this.proc)) this.proc.kill('SIGKILL');
    }
    return this.exited;
  }

  /** The domain's memory and CPU time (xl list), not xl's own process. */
  override async stats(): Promise<VmStats> {
    const { stdout } = await runTool(this.xl, ['list', this.domain]);
    const e = parseXlList(stdout).find((d) => d.name === this.domain);
    if (!e) throw invalid(`domain ${this.domain} is not running`);
    return { rssBytes: e.memMiB * 1024 * 1024, cpuNanos: Math.round(e.cpuSeconds * 1e9) };
  }

  async addShare(): Promise<void> {
    throw missingCapability(DRIVER, 'hotplug of shares', 'add a 9pfs share to a running domain');
  }

  async addDisk(disk: DiskSpec): Promise<void> {
    await runTool(this.xl, ['block-attach', this.domain, xenDiskSpec(disk, xenVdev(this.diskCount))]);
    this.diskCount++;
  }

  async addNic(): Promise<void> {
    throw missingCapability(DRIVER, 'nicBackends', 'attach a NIC');
  }

  /** xenconsoled writes guest consoles to files when XENCONSOLED_TRACE=guest; else xl's output. */
  override consoleTail(): string {
    return consoleFileTail(`/var/log/xen/console/guest-${this.domain}.log`) ?? super.consoleTail();
  }
}
