/**
 * A sandbox is one container's VM: hypervisor + guest kernel + agent, with the container's root
 * filesystem shared in and set up the way a Docker container expects (/proc, /sys, a small /dev,
 * /dev/pts, /dev/shm). Processes (the container's main process and every exec) run chrooted
 * into that root by the agent.
 *
 * It knows nothing of HTTP or of Docker's JSON; the container engine builds on it.
 */
import type { AgentInfo, AgentProcess, MountRequest, ProcessSpec } from '../drivers/agent/agent-client';
import { AgentConnection, withTimeout } from '../drivers/agent/agent-client';
import type { GuestImage } from '../drivers/guest/guest-image';
import type { FsShareKind, Hypervisor, NicSpec, Vm, VmExit, VmSpec } from '../drivers/hypervisor/hypervisor';
import { unavailable } from '../errors';
import { logger } from '../util/log';
import { reportSandboxTimings } from './start-timings';

const log = logger('sandbox');

/** Where the container's root is mounted inside the guest. */
export const CONTAINER_ROOT = '/container';
const ROOTFS_TAG = 'rootfs';
const ETC_TAG = 'etcfiles';
const ETC_GUEST_DIR = '/run/paddock/etc';
const MOUNTS_TAG = 'mounts';
const MOUNTS_GUEST_DIR = '/run/paddock/mounts';

// mount(2) flags
const MS_RDONLY = 0x1;
const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;
const MS_REMOUNT = 0x20;
const MS_BIND = 0x1000;

export interface SandboxSpec {
  id: string;
  /** Host directory that becomes the container's '/'. */
  rootfsDir: string;
  memoryMiB?: number;
  vcpus?: number;
  /** Directory sharing mechanism for the rootfs; defaults to the driver's first choice. */
  shareKind?: FsShareKind;
  /** Time allowed from VMM start to the agent's READY. */
  bootTimeoutMs?: number;
  hostname?: string;
  /**
   * A host directory of files that Docker bind-mounts into every container (hostname, hosts,
   * resolv.conf): shared once and each file bound over /etc/<name>, so the container's own
   * writable layer stays untouched, as with dockerd.
   */
  etcFiles?: { dir: string; files: string[] };
  /**
   * Volumes and bind mounts, staged under one host directory (drivers/storage/mount-staging.ts):
   * one shared directory whatever their number; each entry is bound to its container path.
   */
  mounts?: { hostDir: string; entries: Array<{ name: string; target: string; readOnly?: boolean }> };
  /** tmpfs mounts inside the guest (`--tmpfs`), with their mount options. */
  tmpfs?: Array<{ target: string; options: string; readOnly?: boolean }>;
  /** The VM's one NIC: a trunk carrying every network of the container as a VLAN. */
  nic?: NicSpec;
  /** Host-side limits of the VMM (its cgroup): the container's CPU quota. */
  limits?: VmSpec['limits'];
}

export interface SandboxTimings {
  vmmStartMs: number;
  agentReadyMs: number;
  rootfsReadyMs: number;
}

/** Guest mount of a share, per sharing mechanism; options measured in bench/ (see README). */
function shareMount(kind: FsShareKind, tag: string, target: string, readOnly = false): MountRequest {
  const flags = readOnly ? MS_RDONLY : 0;
  return kind === '9p'
    ? { source: tag, target, fsType: '9p', flags, data: 'trans=virtio,version=9p2000.L,msize=524288,cache=mmap' }
    : { source: tag, target, fsType: 'virtiofs', flags };
}

/** What Docker puts into a container besides its image: kernel filesystems and a minimal /dev. */
function containerMounts(): MountRequest[] {
  const r = (p: string) => `${CONTAINER_ROOT}${p}`;
  const devices = ['null', 'zero', 'full', 'random', 'urandom', 'tty'];
  return [
    { source: 'proc', target: r('/proc'), fsType: 'proc', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC },
    { source: 'sysfs', target: r('/sys'), fsType: 'sysfs', flags: MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC },
    { source: 'cgroup2', target: r('/sys/fs/cgroup'), fsType: 'cgroup2', flags: MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC },
    { source: 'tmpfs', target: r('/dev'), fsType: 'tmpfs', flags: MS_NOSUID, data: 'mode=755,size=65536k' },
    ...devices.map((d) => ({ source: `/dev/${d}`, target: r(`/dev/${d}`), flags: MS_BIND })),
    { source: '/dev/pts', target: r('/dev/pts'), flags: MS_BIND },
    { source: 'shm', target: r('/dev/shm'), fsType: 'tmpfs', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC, data: 'mode=1777,size=65536k' },
  ];
}

const containerSymlinks: Array<[string, string]> = [
  ['pts/ptmx', '/dev/ptmx'],
  ['/proc/self/fd', '/dev/fd'],
  ['/proc/self/fd/0', '/dev/stdin'],
  ['/proc/self/fd/1', '/dev/stdout'],
  ['/proc/self/fd/2', '/dev/stderr'],
];

export class Sandbox {
  private constructor(
    readonly id: string,
    readonly vm: Vm,
    readonly agent: AgentConnection,
    readonly agentInfo: AgentInfo,
    readonly timings: SandboxTimings,
  ) {}

  /** Boots the VM and prepares the container root; the sandbox is ready for processes. */
  static async start(hypervisor: Hypervisor, guest: GuestImage, spec: SandboxSpec): Promise<Sandbox> {
    const caps = hypervisor.capabilities();
    // The first mechanism both the guest kernel and the driver support (9p is measured fastest).
    const shareKind = spec.shareKind ?? guest.fsShare.find((k) => caps.fsShare.includes(k));
    if (!shareKind || !caps.fsShare.includes(shareKind) || !guest.fsShare.includes(shareKind)) {
      throw unavailable(
        `no directory sharing in common: the ${hypervisor.info().name} driver offers ${caps.fsShare.join(', ') || 'none'}, the ${guest.kind} guest kernel ${guest.fsShare.join(', ')}`,
      );
    }
    const t0 = performance.now();
    const vm = await hypervisor.create({
      id: spec.id,
      kernelPath: guest.kernelPath,
      initrdPath: guest.initrdPath,
      memoryMiB: spec.memoryMiB ?? 128,
      vcpus: spec.vcpus ?? 1,
      acpi: guest.needsAcpi,
      shares: [
        { tag: ROOTFS_TAG, hostPath: spec.rootfsDir, kind: shareKind },
        ...(spec.etcFiles ? [{ tag: ETC_TAG, hostPath: spec.etcFiles.dir, kind: shareKind, readOnly: false }] : []),
        ...(spec.mounts?.entries.length ? [{ tag: MOUNTS_TAG, hostPath: spec.mounts.hostDir, kind: shareKind }] : []),
      ],
      nics: spec.nic ? [spec.nic] : [],
      limits: spec.limits,
    });
    const t1 = performance.now();
    const agent = new AgentConnection(vm.agentChannel);
    try {
      const bootTimeout = spec.bootTimeoutMs ?? 60000;
      const info = await Promise.race([
        agent.waitReady(bootTimeout),
        vm.exited.then((e) => {
          throw unavailable(`VM exited before its agent was ready: ${summariseExit(e)}`);
        }),
      ]);
      const t2 = performance.now();
      // The host's clock, to the millisecond (the CMOS clock has seconds; VM clones need it too).
      await agent.setTime(new Date());
      await agent.mount(shareMount(shareKind, ROOTFS_TAG, CONTAINER_ROOT));
      const tRootfs = performance.now();
      // Sent together (the agent handles requests in order): one wait instead of one per request.
      await Promise.all([
        ...containerMounts().map((m) => agent.mount(m)),
        ...containerSymlinks.map(([text, target]) => agent.symlink(text, `${CONTAINER_ROOT}${target}`)),
      ]);
      if (spec.etcFiles) {
        await agent.mount(shareMount(shareKind, ETC_TAG, ETC_GUEST_DIR));
        for (const f of spec.etcFiles.files) {
          await agent.mount({ source: `${ETC_GUEST_DIR}/${f}`, target: `${CONTAINER_ROOT}/etc/${f}`, flags: MS_BIND });
        }
      }
      if (spec.mounts?.entries.length) {
        await agent.mount(shareMount(shareKind, MOUNTS_TAG, MOUNTS_GUEST_DIR));
        for (const m of spec.mounts.entries) {
          const target = `${CONTAINER_ROOT}${m.target}`;
          await agent.mount({ source: `${MOUNTS_GUEST_DIR}/${m.name}`, target, flags: MS_BIND });
          // Read-only on the host already; the guest's view says so too (mount shows ro).
          if (m.readOnly) await agent.mount({ source: 'none', target, flags: MS_BIND | MS_REMOUNT | MS_RDONLY });
        }
      }
      for (const t of spec.tmpfs ?? []) {
        await agent.mount({
          source: 'tmpfs',
          target: `${CONTAINER_ROOT}${t.target}`,
          fsType: 'tmpfs',
          flags: MS_NOSUID | MS_NODEV | (t.readOnly ? MS_RDONLY : 0),
          data: t.options.split(',').filter((o) => o && o !== 'ro' && o !== 'rw').join(','),
        });
      }
      if (spec.hostname) await agent.setHostname(spec.hostname);
      const t3 = performance.now();
      const timings = { vmmStartMs: t1 - t0, agentReadyMs: t2 - t0, rootfsReadyMs: t3 - t0 };
      log.debug('sandbox ready', { id: spec.id, ...timings });
      reportSandboxTimings(spec.id, { ...vm.startTimings, ...timings, clockAndRootfsMountMs: tRootfs - t2, otherMountsMs: t3 - tRootfs });
      return new Sandbox(spec.id, vm, agent, info, timings);
    } catch (err) {
      agent.close();
      await vm.kill();
      throw err;
    }
  }

  private main?: AgentProcess;

  /**
   * Starts the container's main process: PID 1 of its own PID namespace with its own /proc, so
   * that, as under Docker, it sees only the container's processes and gets PID 1's signal rules.
   */
  async startMain(spec: ProcessSpec): Promise<AgentProcess> {
    this.main = await this.agent.start({ ...spec, root: CONTAINER_ROOT, pidNamespace: 'new' });
    return this.main;
  }

  /** Starts a process inside the container (chrooted into its root, in the main one's PID namespace). */
  exec(spec: ProcessSpec): Promise<AgentProcess> {
    const running = this.main && !this.main.finished;
    return this.agent.start({ ...spec, root: CONTAINER_ROOT, ...(running ? { pidNamespace: { joinProcess: this.main!.id } } : {}) });
  }

  /**
   * Powers the VM off through the agent, falling back to killing the VMM if the guest does not
   * go within `timeoutMs`.
   */
  async stop(timeoutMs = 5000): Promise<VmExit> {
    try {
      // The guest may power off before its answer is read: a closed channel is success too.
      await withTimeout(
        Promise.race([this.agent.shutdown(), this.vm.exited]),
        timeoutMs,
        'agent did not acknowledge shutdown',
      ).catch(() => undefined);
      return await withTimeout(this.vm.exited, timeoutMs, 'VM did not power off');
    } catch {
      return this.vm.kill();
    }
  }

  kill(): Promise<VmExit> {
    this.agent.close();
    return this.vm.kill();
  }
}

function summariseExit(e: VmExit): string {
  const tail = e.consoleTail.trim().split('\n').slice(-8).join('\n');
  return `code ${e.code}, signal ${e.signal}; console:\n${tail}`;
}
