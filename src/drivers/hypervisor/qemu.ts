/**
 * QEMU hypervisor driver.
 *
 * Start-up path: the driver listens on two unix sockets (agent channel, QMP) in a private run
 * directory, starts QEMU whose chardevs connect to them, accepts both connections and then
 * deletes the run directory: from then on nothing of the VM exists on disk, so a crash of the
 * daemon cannot leave sockets or temp dirs behind. QEMU (and virtiofsd) run under
 * `setpriv --pdeathsig KILL`, so they die with the daemon instead of lingering as orphans.
 *
 * Machine: `-M microvm` (no PCI, no firmware tables, qboot) is the fastest here; `q35` is offered
 * for PCI hotplug of disks and NICs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { invalid, notImplemented, unavailable } from '../../errors';
import { logger } from '../../util/log';
import { chooseAccelerator, type Accelerator, type AcceleratorChoice } from './accelerator';
import type {
  DiskSpec,
  FsShareKind,
  Hypervisor,
  HypervisorCapabilities,
  HypervisorInfo,
  NicSpec,
  ShareSpec,
  Vm,
  VmExit,
  VmSpec,
  VmStats,
} from './hypervisor';
import { QmpClient } from './qmp';
import { openTemplateFiles, restoreTemplateState, saveTemplateState, templateArgs } from './qemu-template';
import { VmmConfinement, type ConfinementOptions, type VmmJail } from './vmm-confinement';
import { ConsoleBuffer, spawnWithParentDeath } from './vmm-process';

const log = logger('qemu');

export type QemuMachine = 'microvm' | 'q35';

export interface QemuOptions {
  /** Directory under which each VM gets a short-lived run dir for its sockets. */
  runRoot: string;
  binary?: string;
  machine?: QemuMachine;
  virtiofsdPath?: string;
  /** Kernel + initramfs used to prove that KVM can really boot our guest. */
  probeGuest?: { kernelPath: string; initrdPath: string };
  /** Seconds to wait for QEMU to connect its sockets. */
  startTimeoutMs?: number;
  /** How each QEMU process is confined (seccomp, capabilities, uid, cgroup, mount namespace); see vmm-confinement.ts. */
  confinement?: ConfinementOptions;
}

const CLOCK_TICKS_PER_SECOND = 100;

export class QemuHypervisor implements Hypervisor {
  private constructor(
    private readonly opts: Required<Omit<QemuOptions, 'probeGuest' | 'confinement'>>,
    private readonly version: string,
    private readonly accel: AcceleratorChoice,
  ) {}

  private confinement = VmmConfinement.disabled();

  static async open(options: QemuOptions): Promise<QemuHypervisor> {
    const binary = options.binary ?? findOnPath('qemu-system-x86_64');
    if (!binary) {
      throw unavailable('qemu-system-x86_64 not found: install it with `apt-get install qemu-system-x86`');
    }
    const version = await qemuVersion(binary);
    const confinement = await VmmConfinement.detect(binary, options.confinement);
    const opts = {
      runRoot: options.runRoot,
      binary,
      machine: options.machine ?? 'microvm',
      virtiofsdPath: options.virtiofsdPath ?? '/usr/lib/qemu/virtiofsd',
      startTimeoutMs: options.startTimeoutMs ?? 15000,
    };
    await fs.mkdir(opts.runRoot, { recursive: true, mode: 0o700 });
    let accel = await chooseAccelerator();
    if (accel.needsProbe) {
      if (!options.probeGuest) {
        accel = { accelerator: 'kvm', reason: `${accel.reason} (not probed: no guest given)`, needsProbe: false };
      } else {
        const probe = new QemuHypervisor(opts, version, { ...accel, needsProbe: false });
        probe.confinement = confinement;
        accel = await probe.probeKvm(options.probeGuest);
      }
    }
    log.info('accelerator chosen', { accelerator: accel.accelerator, reason: accel.reason, qemu: version });
    const hv = new QemuHypervisor(opts, version, accel);
    hv.confinement = confinement;
    return hv;
  }

  info(): HypervisorInfo {
    return {
      name: 'qemu',
      version: this.version,
      accelerator: this.accel.accelerator,
      acceleratorReason: this.accel.reason,
      securityOptions: this.confinement.securityOptions(),
    };
  }

  capabilities(): HypervisorCapabilities {
    const pci = this.opts.machine === 'q35';
    const fsShare: FsShareKind[] = ['9p'];
    if (existsSync(this.opts.virtiofsdPath)) fsShare.push('virtio-fs');
    return {
      fsShare,
      hotplugDisk: pci,
      hotplugNic: pci,
      pause: true,
      nicBackends: ['unix-stream', 'tap'],
      snapshot: true,
      resizeMemory: false,
      resizeCpus: false,
    };
  }

  get accelerator(): Accelerator {
    return this.accel.accelerator;
  }

  async create(spec: VmSpec): Promise<Vm> {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(spec.id)) throw invalid(`invalid VM id ${JSON.stringify(spec.id)}`);
    const runDir = await fs.mkdtemp(path.join(this.opts.runRoot, `vm-${spec.id.slice(0, 12)}-`));
    const helpers: ChildProcess[] = [];
    const servers: net.Server[] = [];
    let qemu: ChildProcess | undefined;
    let jail: VmmJail | undefined;
    let templateFiles: Awaited<ReturnType<typeof openTemplateFiles>> | undefined;
    const t0 = performance.now();
    try {
      const agentAccept = listenOnce(path.join(runDir, 'agent.sock'), servers);
      const qmpAccept = listenOnce(path.join(runDir, 'qmp.sock'), servers);
      jail = await this.confinement.prepare({ spec, runDir, accelerator: this.accel.accelerator });
      const shareArgs = await this.shareArgs(spec.shares ?? [], runDir, helpers, jail);
      const args = this.commandLine(spec, runDir, shareArgs);
      log.debug('starting qemu', { id: spec.id, args: args.join(' ') });
      templateFiles = await openTemplateFiles(spec);
      qemu = jail.spawn(this.opts.binary, args, templateFiles.fds);
      await templateFiles.close();
      const console = new ConsoleBuffer();
      qemu.stdout?.on('data', (c: Buffer) => console.append(c));
      qemu.stderr?.on('data', (c: Buffer) => console.append(c));
      const vmmJail = jail;
      const early = exitPromise(qemu, console).then(async (e) => (await vmmJail.release(), e));
      const [agentSocket, qmpSocket] = await Promise.race([
        Promise.all([agentAccept, qmpAccept]),
        early.then((e) => {
          throw unavailable(`qemu exited during start (code ${e.code}, signal ${e.signal}): ${e.consoleTail.trim()}`);
        }),
        delay(this.opts.startTimeoutMs).then(() => {
          throw unavailable(`qemu did not connect its sockets within ${this.opts.startTimeoutMs} ms`);
        }),
      ]);
      for (const s of servers) s.close();
      const qmp = new QmpClient(qmpSocket);
      await qmp.handshake();
      const t1 = performance.now();
      const restored = spec.template?.mode === 'restore' ? await restoreTemplateState(qmp) : undefined;
      // Everything is connected: the run dir has served its purpose (a VM template's once it is saved).
      if (spec.template?.mode !== 'boot') await fs.rm(runDir, { recursive: true, force: true });
      const vm = new QemuVm(spec, qemu, helpers, agentSocket, qmp, console, this.opts.machine, early);
      if (spec.template?.mode === 'boot') vm.templateRunDir = runDir;
      vm.startTimings = { spawnToConnectedMs: t1 - t0, ...(restored ? { restoreLoadMs: restored.loadMs, restoreContMs: restored.contMs } : {}) };
      return vm;
    } catch (err) {
      await templateFiles?.close().catch(() => undefined);
      for (const s of servers) s.close();
      qemu?.kill('SIGKILL');
      if (!qemu) await jail?.release(); // else released once QEMU has exited
      for (const h of helpers) h.kill('SIGKILL');
      await fs.rm(runDir, { recursive: true, force: true });
      throw err;
    }
  }

  private commandLine(spec: VmSpec, runDir: string, shareArgs: string[]): string[] {
    const microvm = this.opts.machine === 'microvm';
    const dev = (name: string) => (microvm ? `${name}-device` : `${name}-pci`);
    const kvm = this.accel.accelerator === 'kvm';
    const usesVirtioFs = shareArgs.some((a) => a.startsWith('vhost-user-fs'));
    const memId = 'ram0';
    const machine = microvm
      ? // acpi=off: the kernel gets the virtio-mmio devices on its command line, no tables to parse.
        // rtc=on (without it the guest boots ~1.8 s slower under TCG); our kernel leaves out the
        // rtc_cmos driver so that IRQ 8 stays free for the fifth virtio-mmio transport.
        `microvm,acpi=${spec.acpi ? 'on' : 'off'},x-option-roms=off,rtc=on${usesVirtioFs || spec.template ? `,memory-backend=${memId}` : ''}`
      : `q35,${usesVirtioFs || spec.template ? `memory-backend=${memId}` : ''}`.replace(/,$/, '');
    const cmdline = [
      'console=ttyS0',
      'quiet',
      'panic=-1',
      // No ACPI power-off on microvm: the agent resets, reboot=t makes that a triple fault and
      // -no-reboot turns it into QEMU exiting.
      'reboot=t',
      'tsc=reliable',
      'no_timer_check',
      'random.trust_cpu=on',
      '8250.nr_uarts=1',
      'rdinit=/init',
      ...(kvm ? [] : [`tsc_early_khz=${hostTscKhz()}`]),
      ...(spec.kernelArgs ?? []),
    ].join(' ');
    const args = [
      '-name', `paddock-${spec.id.slice(0, 12)}`,
      '-machine', machine,
      '-accel', kvm ? 'kvm' : 'tcg',
      '-cpu', kvm ? 'host' : 'max',
      '-m', `${spec.memoryMiB}M`,
      '-smp', String(spec.vcpus),
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', spec.kernelPath,
      '-initrd', spec.initrdPath,
      '-append', cmdline,
      '-chardev', 'stdio,id=con,signal=off',
      '-serial', 'chardev:con',
      '-chardev', `socket,id=qmp,path=${path.join(runDir, 'qmp.sock')}`,
      '-mon', 'chardev=qmp,mode=control',
      '-chardev', `socket,id=agent,path=${path.join(runDir, 'agent.sock')}`,
      '-device', dev('virtio-serial'),
      '-device', 'virtserialport,chardev=agent,name=paddock.agent',
      '-device', dev('virtio-rng'),
    ];
    if (usesVirtioFs) {
      args.push('-object', `memory-backend-memfd,id=${memId},size=${spec.memoryMiB}M,share=on`);
      if (microvm) args.push('-global', 'virtio-mmio.force-legacy=false');
    }
    for (const d of spec.disks ?? []) {
      args.push(
        '-blockdev', blockdevJson(d),
        '-device', `${dev('virtio-blk')},drive=${d.id},id=dev-${d.id}`,
      );
    }
    for (const n of spec.nics ?? []) {
      args.push(
        '-netdev', netdevOption(n),
        '-device', `${dev('virtio-net')},netdev=${n.id},mac=${n.mac},id=dev-${n.id}`,
      );
    }
    args.push(...shareArgs);
    args.push(...templateArgs(spec, memId, usesVirtioFs));
    return args;
  }

  /** QEMU arguments for shares (flag, value pairs); starts one virtiofsd per virtio-fs share. */
  private async shareArgs(shares: ShareSpec[], runDir: string, helpers: ChildProcess[], jail?: VmmJail): Promise<string[]> {
    const out: string[] = [];
    const microvm = this.opts.machine === 'microvm';
    for (const [i, share] of shares.entries()) {
      if (!/^[A-Za-z0-9_.-]{1,31}$/.test(share.tag)) throw invalid(`invalid share tag ${share.tag}`);
      const kind = share.kind ?? '9p';
      if (kind === '9p') {
        const ro = share.readOnly ? ',readonly=on' : '';
        // multidevs=remap: a share may span several host filesystems (staged volumes and binds);
        // remapped inode numbers keep files on different devices from colliding in the guest.
        out.push('-fsdev', `local,id=fs${i},path=${escapeOpt(share.hostPath)},security_model=passthrough,multidevs=remap${ro}`);
        out.push('-device', `${microvm ? 'virtio-9p-device' : 'virtio-9p-pci'},fsdev=fs${i},mount_tag=${share.tag}`);
      } else {
        if (!existsSync(this.opts.virtiofsdPath)) {
          throw notImplemented(`virtio-fs needs ${this.opts.virtiofsdPath} (apt-get install qemu-system-common)`);
        }
        const sock = path.join(runDir, `fs${i}.sock`);
        const args = [`--socket-path=${sock}`, '-o', `source=${share.hostPath}`, '-o', 'cache=auto', '-o', 'no_posix_lock'];
        if (share.readOnly) args.push('-o', 'readonly');
        const d = jail ? jail.spawnHelper(this.opts.virtiofsdPath, args) : spawnWithParentDeath(this.opts.virtiofsdPath, args);
        d.stdout?.resume();
        d.stderr?.resume();
        helpers.push(d);
        await waitForPath(sock, 5000);
        out.push('-chardev', `socket,id=vfs${i},path=${sock}`);
        out.push('-device', `${microvm ? 'vhost-user-fs-device' : 'vhost-user-fs-pci'},chardev=vfs${i},tag=${share.tag}`);
      }
    }
    return out;
  }

  /** Boots the guest under KVM once; falls back to TCG if it does not reach the agent. */
  private async probeKvm(guest: { kernelPath: string; initrdPath: string }): Promise<AcceleratorChoice> {
    const { AgentConnection } = await import('../agent/agent-client');
    let vm: Vm | undefined;
    try {
      vm = await this.create({ id: `kvm-probe-${process.pid}`, ...guest, memoryMiB: 128, vcpus: 1 });
      const agent = new AgentConnection(vm.agentChannel);
      await agent.waitReady(10000);
      return { accelerator: 'kvm', reason: '/dev/kvm is usable (a probe VM booted)', needsProbe: false };
    } catch (err) {
      return {
        accelerator: 'tcg',
        reason: `a probe VM did not boot under KVM (${(err as Error).message}); using TCG`,
        needsProbe: false,
      };
    } finally {
      await vm?.kill();
    }
  }
}

class QemuVm implements Vm {
  readonly pid: number;
  readonly exited: Promise<VmExit>;

  constructor(
    private readonly spec: VmSpec,
    private readonly proc: ChildProcess,
    private readonly helpers: ChildProcess[],
    readonly agentChannel: net.Socket,
    private readonly qmp: QmpClient,
    private readonly console: ConsoleBuffer,
    private readonly machine: QemuMachine,
    processExit: Promise<VmExit>,
  ) {
    this.pid = proc.pid ?? 0;
    this.exited = processExit.then(async (exit) => {
      for (const h of this.helpers) h.kill('SIGKILL');
      await Promise.all(this.helpers.map((h) => (h.exitCode === null && h.signalCode === null ? once(h, 'exit') : undefined)));
      if (this.templateRunDir) await fs.rm(this.templateRunDir, { recursive: true, force: true });
      this.qmp.close();
      this.agentChannel.destroy();
      return exit;
    });
  }

  get id(): string {
    return this.spec.id;
  }

  async pause(): Promise<void> {
    await this.qmp.execute('stop');
  }

  async resume(): Promise<void> {
    await this.qmp.execute('cont');
  }

  startTimings?: Record<string, number>;
  /** A VM template's run dir: kept until the VM is saved (qemu-template.ts). */
  templateRunDir?: string;

  async saveTemplate(): Promise<void> {
    const runDir = this.templateRunDir;
    if (this.spec.template?.mode !== 'boot' || !runDir) throw invalid(`VM ${this.id} was not booted as a template`);
    try {
      await saveTemplateState(this.qmp, runDir, this.spec.template.dir);
    } finally {
      this.templateRunDir = undefined;
      await fs.rm(runDir, { recursive: true, force: true });
    }
  }

  async kill(): Promise<VmExit> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    return this.exited;
  }

  async stats(): Promise<VmStats> {
    try {
      const [stat, status] = await Promise.all([
        fs.readFile(`/proc/${this.pid}/stat`, 'utf8'),
        fs.readFile(`/proc/${this.pid}/status`, 'utf8'),
      ]);
      // Fields after the command name (which may contain spaces) start at ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ticks = Number(fields[11]) + Number(fields[12]);
      const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      return { rssBytes: rssKb * 1024, cpuNanos: (ticks * 1e9) / CLOCK_TICKS_PER_SECOND };
    } catch (err) {
      throw unavailable(`VM ${this.id} is not running`, err);
    }
  }

  async addShare(): Promise<void> {
    throw notImplemented('the qemu driver cannot add a shared directory to a running VM (capability: hotplug of shares)');
  }

  async addDisk(disk: DiskSpec): Promise<void> {
    this.requirePci('disks');
    await this.qmp.execute('blockdev-add', JSON.parse(blockdevJson(disk)));
    await this.qmp.execute('device_add', { driver: 'virtio-blk-pci', drive: disk.id, id: `dev-${disk.id}` });
  }

  async addNic(nic: NicSpec): Promise<void> {
    this.requirePci('NICs');
    await this.qmp.execute('netdev_add', netdevQmp(nic));
    await this.qmp.execute('device_add', { driver: 'virtio-net-pci', netdev: nic.id, mac: nic.mac, id: `dev-${nic.id}` });
  }

  consoleTail(): string {
    return this.console.text();
  }

  private requirePci(what: string): void {
    if (this.machine !== 'q35') {
      throw notImplemented(`hotplug of ${what} needs the q35 machine (capability: hotplug); this VM uses ${this.machine}`);
    }
  }
}

function blockdevJson(d: DiskSpec): string {
  return JSON.stringify({
    'node-name': d.id,
    driver: d.format ?? 'raw',
    'read-only': Boolean(d.readOnly),
    file: { driver: 'file', filename: d.hostPath, 'read-only': Boolean(d.readOnly) },
  });
}

/** QEMU's option parser splits on ','; a literal comma is written twice. */
function escapeOpt(value: string): string {
  return value.replace(/,/g, ',,');
}

/** `-netdev` value for a NIC backend. */
function netdevOption(nic: NicSpec): string {
  return nic.backend.kind === 'tap'
    ? `tap,id=${nic.id},ifname=${nic.backend.name},script=no,downscript=no`
    : `stream,id=${nic.id},server=off,addr.type=unix,addr.path=${escapeOpt(nic.backend.path)}`;
}

function netdevQmp(nic: NicSpec): Record<string, unknown> {
  return nic.backend.kind === 'tap'
    ? { type: 'tap', id: nic.id, ifname: nic.backend.name, script: 'no', downscript: 'no' }
    : { type: 'stream', id: nic.id, server: false, addr: { type: 'unix', path: nic.backend.path } };
}

function exitPromise(proc: ChildProcess, console: ConsoleBuffer): Promise<VmExit> {
  return new Promise((resolve) => {
    proc.on('error', (err) => {
      console.append(Buffer.from(String(err)));
    });
    proc.on('close', (code, signal) => resolve({ code, signal, consoleTail: console.text() }));
  });
}

function listenOnce(socketPath: string, servers: net.Server[]): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ pauseOnConnect: false }, (sock) => {
      server.close();
      resolve(sock);
    });
    servers.push(server);
    server.on('error', reject);
    server.listen(socketPath);
  });
}

async function waitForPath(p: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(p)) {
    if (Date.now() > deadline) throw unavailable(`${p} did not appear within ${timeoutMs} ms`);
    await delay(5);
  }
}

function once(proc: ChildProcess, event: string): Promise<void> {
  return new Promise((resolve) => proc.once(event, () => resolve()));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

export function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  for (const dir of ['/usr/sbin', '/sbin', '/usr/bin']) {
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

async function qemuVersion(binary: string): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn(binary, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.on('error', () => resolve('unknown'));
    p.on('close', () => resolve(/version (\S+)/.exec(out)?.[1] ?? 'unknown'));
  });
}

let tscKhz: number | undefined;

/**
 * Under TCG, microvm guests spin in TSC calibration unless told the frequency; the host's own is
 * what TCG's virtual TSC ticks at.
 */
function hostTscKhz(): number {
  if (tscKhz === undefined) {
    // /proc/cpuinfo's "cpu MHz" is the TSC rate here; os.cpus() reports a scaled frequency.
    let mhz = 0;
    try {
      mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 0);
    } catch {
      // not Linux procfs
    }
    tscKhz = Math.round((mhz || os.cpus()[0]?.speed || 2000) * 1000);
  }
  return tscKhz;
}

