/**
 * VirtualBox driver, through `VBoxManage` (docs: the VirtualBox manual, chapter "VBoxManage":
 * createvm, modifyvm, storagectl, storageattach, sharedfolder, controlvm, unregistervm,
 * closemedium, createmedium) and `VBoxHeadless`, which runs the VM as a child of the daemon.
 *
 * - Boot: VirtualBox cannot boot a kernel directly, so each VM gets a small BIOS boot disk built
 *   by rootfs-builder/vbox-boot-disk.sh (syslinux on FAT: kernel, initramfs, command line) on
 *   SATA port 0. That disk has booted our kernel and agent under SeaBIOS (QEMU -M pc); it has not
 *   run under VirtualBox.
 * - Agent transport: the first serial port (COM1, 0x3F8 IRQ 4, ttyS0) in host-pipe *server*
 *   mode: VirtualBox listens on a unix socket in the VM's directory and the driver connects. The
 *   agent is told to use it with `paddock.channel=/dev/ttyS0` (it needs that option: README).
 *   The kernel console is COM2 (ttyS1) written to a file, which the driver tails.
 * - Shares: VirtualBox shared folders, mounted in the guest with the mainline vboxsf driver
 *   (kind 'vboxsf'; kernel/hypervisors.config enables VBOXGUEST and VBOXSF_FS). Transient
 *   shared folders can be added to a running VM.
 * - Disks: more SATA ports, hot-pluggable. Raw images get a VMDK "RawDisk" descriptor (VirtualBox
 *   does not open raw files as disks); a read-only disk is attached `immutable` (writes go to a
 *   differencing image that is discarded), which keeps the host file unchanged.
 * - NICs: none. VirtualBox's attachments (NAT, bridged, host-only, internal) connect neither to a
 *   tap opened by the VMM nor to a unix-stream switch port (`nicBackends` is empty).
 * - Lifecycle: controlvm pause/resume/poweroff. The agent powers off by rebooting: the VM is set
 *   to halt on reset (VBoxInternal/PDM/HaltOnReset), and the driver powers it off when the kernel
 *   console says "reboot:". Teardown unregisters the VM and closes (never deletes) the media it
 *   registered, then removes the VM's own directory; VMs of an earlier daemon are swept on open.
 *
 * Run here: never (VirtualBox is not in Debian 12 nor installable from the reachable registries);
 * the VBoxManage argument lists are unit-tested against the manual.
 */
import { existsSync, promises as fs } from 'node:fs';
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
  VmSpec,
} from './hypervisor';
import {
  abandonStart,
  ChildProcessVm,
  checkTag,
  checkVmId,
  commonKernelArgs,
  connectUnixRetry,
  CONSOLE_TAIL_BYTES,
  consoleFileTail,
  copyCapabilities,
  delay,
  driverUnavailable,
  isRunning,
  locateBinary,
  missingCapability,
  prepareRunRoot,
  refuseUnsupportedSpec,
  removeUnder,
  requireBinary,
  runTool,
  spawnVmm,
  type VmmChild,
} from './vmm-process';

const log = logger('virtualbox');
const DRIVER = 'virtualbox';
const VM_PREFIX = 'paddock-';
const CONTROLLER = 'SATA';
export const VBOX_AGENT_DEVICE = '/dev/ttyS0';
/** The kernel's line when it resets the machine, i.e. the agent's power-off. */
const REBOOT_LINE = /reboot: (Restarting system|machine restart)/;

export interface VirtualBoxOptions {
  runRoot: string;
  vboxManage?: string;
  vboxHeadless?: string;
  /** rootfs-builder/vbox-boot-disk.sh; found from the source tree when not given. */
  bootDiskScript?: string;
  startTimeoutMs?: number;
  host?: VirtualBoxHost;
}

export interface VirtualBoxHost {
  locate(name: string): string | null;
  /** The vboxdrv kernel module's device exists. */
  driverLoaded(): boolean;
}

const realHost: VirtualBoxHost = {
  locate: (n) => locateBinary(n),
  driverLoaded: () => existsSync('/dev/vboxdrv'),
};

export const virtualBoxCapabilities: HypervisorCapabilities = {
  fsShare: ['vboxsf'],
  hotplugDisk: true,
  hotplugNic: false,
  pause: true,
  nicBackends: [],
  snapshot: false,
  resizeMemory: false,
  resizeCpus: false,
};

export function virtualBoxVmName(vmId: string): string {
  return `${VM_PREFIX}${vmId}`;
}

export function virtualBoxKernelArgs(spec: VmSpec): string[] {
  return [
    'console=ttyS1',
    '8250.nr_uarts=2',
    `paddock.channel=${VBOX_AGENT_DEVICE}`,
    ...commonKernelArgs(),
    ...(spec.kernelArgs ?? []),
  ];
}

export interface VirtualBoxPaths {
  /** The VM's own directory (settings, boot disk, VMDK descriptors, console log, agent pipe). */
  vmDir: string;
  bootDisk: string;
  agentPipe: string;
  consoleLog: string;
}

export interface VirtualBoxPlan {
  /** VBoxManage argument lists, in order, that define and register the VM. */
  commands: string[][];
  /** Media the plan registers, to be closed (not deleted) at teardown. */
  media: string[];
}

/**
 * The VBoxManage calls for one VM. `major` is VirtualBox's major version: 7.0 renamed many
 * modifyvm options (--uartmode1 → --uart-mode1, --paravirtprovider → --paravirt-provider,
 * --audio → --audio-driver).
 */
export function virtualBoxPlan(spec: VmSpec, paths: VirtualBoxPaths, major: number): VirtualBoxPlan {
  if (spec.nics?.length) {
    throw missingCapability(DRIVER, 'nicBackends', 'attach a NIC: its attachments are neither a tap opened by the VMM nor a unix-stream port');
  }
  const name = virtualBoxVmName(spec.id);
  const v7 = major >= 7;
  const disks = spec.disks ?? [];
  const commands: string[][] = [
    ['createvm', '--name', name, '--basefolder', path.dirname(paths.vmDir), '--ostype', 'Linux_64', '--register'],
    [
      'modifyvm', name,
      '--memory', String(spec.memoryMiB),
      '--cpus', String(spec.vcpus),
      '--firmware', 'bios',
      '--ioapic', 'on',
      '--boot1', 'disk', '--boot2', 'none', '--boot3', 'none', '--boot4', 'none',
      v7 ? '--paravirt-provider' : '--paravirtprovider', 'kvm',
      v7 ? '--audio-driver' : '--audio', 'none',
      '--usb', 'off',
      '--nic1', 'none',
      '--uart1', '0x3F8', '4',
      v7 ? '--uart-mode1' : '--uartmode1', 'server', paths.agentPipe,
      '--uart2', '0x2F8', '3',
      v7 ? '--uart-mode2' : '--uartmode2', 'file', paths.consoleLog,
    ],
    // The agent's power-off is a reset; halt instead of booting again (the driver then powers off).
    ['setextradata', name, 'VBoxInternal/PDM/HaltOnReset', '1'],
    ['storagectl', name, '--name', CONTROLLER, '--add', 'sata', '--controller', 'IntelAhci', '--portcount', String(Math.min(30, disks.length + 5)), '--bootable', 'on'],
    ['storageattach', name, '--storagectl', CONTROLLER, '--port', '0', '--device', '0', '--type', 'hdd', '--medium', paths.bootDisk],
  ];
  const media = [paths.bootDisk];
  for (const [i, d] of disks.entries()) {
    const { commands: c, medium } = diskCommands(name, d, i + 1, paths.vmDir);
    commands.push(...c);
    media.push(medium);
  }
  for (const s of spec.shares ?? []) commands.push(shareCommand(name, s, false));
  return { commands, media };
}

/** VBoxManage calls that attach one disk on SATA `port`; raw images go through a VMDK descriptor. */
export function diskCommands(vmName: string, d: DiskSpec, port: number, vmDir: string): { commands: string[][]; medium: string } {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(d.id)) throw invalid(`invalid disk id ${JSON.stringify(d.id)}`);
  const commands: string[][] = [];
  let medium = d.hostPath;
  if ((d.format ?? 'raw') === 'raw') {
    medium = path.join(vmDir, `disk-${d.id}.vmdk`);
    commands.push(['createmedium', 'disk', '--filename', medium, '--format', 'VMDK', '--variant', 'RawDisk', '--property', `RawDrive=${d.hostPath}`]);
  }
  commands.push([
    'storageattach', vmName, '--storagectl', CONTROLLER, '--port', String(port), '--device', '0', '--type', 'hdd',
    '--medium', medium, '--hotpluggable', 'on', ...(d.readOnly ? ['--mtype', 'immutable'] : []),
  ]);
  return { commands, medium };
}

/** A shared folder; `--transient` adds it to a running VM (it then lasts until power-off). */
export function shareCommand(vmName: string, s: ShareSpec, running: boolean): string[] {
  checkTag(s.tag);
  if ((s.kind ?? 'vboxsf') !== 'vboxsf') {
    throw missingCapability(DRIVER, `fsShare[${s.kind}]`, `share a directory over ${s.kind} (only vboxsf)`);
  }
  return [
    'sharedfolder', 'add', vmName, '--name', s.tag, '--hostpath', s.hostPath,
    ...(s.readOnly ? ['--readonly'] : []),
    ...(running ? ['--transient'] : []),
  ];
}

/** Teardown: unregister (settings file kept, removed with the directory) and close our media. */
export function virtualBoxTeardown(vmName: string, media: string[]): string[][] {
  return [['unregistervm', vmName], ...media.map((m) => ['closemedium', 'disk', m])];
}

/** The repository's rootfs-builder/vbox-boot-disk.sh, from src/… or dist/src/…. */
function defaultBootDiskScript(): string {
  let dir = __dirname;
  while (path.dirname(dir) !== dir) {
    const candidate = path.join(dir, 'rootfs-builder', 'vbox-boot-disk.sh');
    if (existsSync(candidate)) return candidate;
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '../../../rootfs-builder/vbox-boot-disk.sh');
}

export class VirtualBoxHypervisor implements Hypervisor {
  private constructor(
    private readonly opts: { runRoot: string; vboxManage: string; vboxHeadless: string; bootDiskScript: string; startTimeoutMs: number },
    private readonly version: string,
  ) {}

  static async open(options: VirtualBoxOptions): Promise<VirtualBoxHypervisor> {
    const host = options.host ?? realHost;
    const remedy = 'install VirtualBox 7 from virtualbox.org (not packaged in Debian 12) and load its vboxdrv module';
    const vboxManage = requireBinary(DRIVER, options.vboxManage, (n) => host.locate(n), 'VBoxManage', remedy);
    const vboxHeadless = requireBinary(DRIVER, options.vboxHeadless, (n) => host.locate(n), 'VBoxHeadless', remedy);
    if (!host.driverLoaded()) throw driverUnavailable(DRIVER, '/dev/vboxdrv is missing', 'run `/sbin/vboxconfig` or `modprobe vboxdrv`');
    // No pid-file sweep: VM dirs are named after their VMs and go with them in sweepLeftovers().
    const runRoot = await prepareRunRoot(options.runRoot, DRIVER, false);
    const version = (await runTool(vboxManage, ['--version']).catch(() => ({ stdout: 'unknown' }))).stdout.trim();
    const hv = new VirtualBoxHypervisor(
      {
        runRoot,
        vboxManage,
        vboxHeadless,
        bootDiskScript: options.bootDiskScript ?? defaultBootDiskScript(),
        startTimeoutMs: options.startTimeoutMs ?? 30000,
      },
      version,
    );
    await hv.sweepLeftovers();
    return hv;
  }

  private get major(): number {
    return Number(/^(\d+)/.exec(this.version)?.[1] ?? 7);
  }

  info(): HypervisorInfo {
    return {
      name: DRIVER,
      version: this.version,
      accelerator: 'vbox',
      acceleratorReason: 'VirtualBox picks VT-x/AMD-V (or its own execution manager) itself',
    };
  }

  capabilities(): HypervisorCapabilities {
    return copyCapabilities(virtualBoxCapabilities);
  }

  /** VMs of a daemon that died: their VBoxHeadless died with it (pdeathsig), their registration did not. */
  private async sweepLeftovers(): Promise<void> {
    const { stdout } = await runTool(this.opts.vboxManage, ['list', 'vms']).catch(() => ({ stdout: '' }));
    for (const m of stdout.matchAll(/^"([^"]+)"/gm)) {
      if (!m[1].startsWith(VM_PREFIX)) continue;
      log.warn('removing a VM left by an earlier daemon', { vm: m[1] });
      await runTool(this.opts.vboxManage, ['controlvm', m[1], 'poweroff']).catch(() => undefined);
      await runTool(this.opts.vboxManage, ['unregistervm', m[1]]).catch(() => undefined);
      await removeUnder(this.opts.runRoot, path.join(this.opts.runRoot, m[1])).catch(() => undefined);
    }
  }

  async create(spec: VmSpec): Promise<Vm> {
    checkVmId(spec.id);
    refuseUnsupportedSpec(DRIVER, spec);
    const name = virtualBoxVmName(spec.id);
    // createvm --basefolder B makes B/<name>/; that directory is the VM's, whole.
    const vmDir = path.join(this.opts.runRoot, name);
    const paths: VirtualBoxPaths = {
      vmDir,
      bootDisk: path.join(vmDir, 'boot.vdi'),
      agentPipe: path.join(vmDir, 'agent.sock'),
      consoleLog: path.join(vmDir, 'console.log'),
    };
    const plan = virtualBoxPlan(spec, paths, this.major);
    const vbox = (args: string[]) => runTool(this.opts.vboxManage, args);
    let registered = false;
    const teardown = async () => {
      if (registered) for (const c of virtualBoxTeardown(name, plan.media)) await vbox(c).catch(() => undefined);
      await removeUnder(this.opts.runRoot, vmDir);
    };
    let vmm: VmmChild | undefined;
    try {
      await removeUnder(this.opts.runRoot, vmDir);
      await fs.mkdir(vmDir, { recursive: true, mode: 0o700 });
      await runTool('bash', [this.opts.bootDiskScript, spec.kernelPath, spec.initrdPath, paths.bootDisk, ...virtualBoxKernelArgs(spec)], 120_000);
      for (const c of plan.commands) {
        await vbox(c);
        if (c[0] === 'createvm') registered = true;
      }
      vmm = spawnVmm(this.opts.vboxHeadless, ['--startvm', name, '--vrde', 'off']);
      const agent = await connectUnixRetry(paths.agentPipe, this.opts.startTimeoutMs, vmm.proc);
      const vm = new VirtualBoxVm(spec.id, vmm, agent, teardown, this.opts.vboxManage, name, paths, plan.media, (spec.disks ?? []).length);
      vm.watchConsole();
      return vm;
    } catch (err) {
      await abandonStart(vmm, teardown);
      throw err;
    }
  }
}

class VirtualBoxVm extends ChildProcessVm implements Vm {
  private consoleOffset = 0;
  private consoleText = '';
  private poweringOff = false;

  constructor(
    id: string,
    vmm: VmmChild,
    agent: net.Socket,
    cleanup: () => Promise<void>,
    private readonly vboxManage: string,
    private readonly name: string,
    private readonly paths: VirtualBoxPaths,
    private readonly media: string[],
    private diskCount: number,
  ) {
    super(id, vmm, agent, cleanup);
  }

  /** Tails COM2's log file: console text for errors, and the guest's reset as its power-off. */
  watchConsole(): void {
    const poll = async () => {
      while (isRunning(this.proc)) {
        try {
          const fh = await fs.open(this.paths.consoleLog, 'r');
          try {
            const { size } = await fh.stat();
            if (size > this.consoleOffset) {
              const buf = Buffer.alloc(size - this.consoleOffset);
              await fh.read(buf, 0, buf.length, this.consoleOffset);
              this.consoleOffset = size;
              this.consoleText = (this.consoleText + buf.toString('utf8')).slice(-CONSOLE_TAIL_BYTES);
            }
          } finally {
            await fh.close();
          }
        } catch {
          // not created yet
        }
        if (!this.poweringOff && REBOOT_LINE.test(this.consoleText)) {
          this.poweringOff = true;
          await runTool(this.vboxManage, ['controlvm', this.name, 'poweroff']).catch(() => undefined);
        }
        await delay(200);
      }
    };
    void poll();
  }

  async pause(): Promise<void> {
    await runTool(this.vboxManage, ['controlvm', this.name, 'pause']);
  }

  async resume(): Promise<void> {
    await runTool(this.vboxManage, ['controlvm', this.name, 'resume']);
  }

  async addShare(share: ShareSpec): Promise<void> {
    await runTool(this.vboxManage, shareCommand(this.name, share, true));
  }

  async addDisk(disk: DiskSpec): Promise<void> {
    const { commands, medium } = diskCommands(this.name, disk, this.diskCount + 1, this.paths.vmDir);
    for (const c of commands) await runTool(this.vboxManage, c);
    // Closed (never deleted) at teardown, like the media of the plan.
    this.media.push(medium);
    this.diskCount++;
  }

  async addNic(): Promise<void> {
    throw missingCapability(DRIVER, 'nicBackends', 'attach a NIC');
  }

  override consoleTail(): string {
    if (this.consoleText) return this.consoleText;
    return consoleFileTail(this.paths.consoleLog) ?? super.consoleTail();
  }
}
