/**
 * VMM confinement (issue 8): what a QEMU process may do on the host if the guest breaks out of it.
 *
 * Each VMM is started through a small launch wrapper (one process, exec'd in place, so the PID the
 * daemon sees is QEMU's):
 *
 *   setpriv --pdeathsig KILL           dies with the daemon, from the first instruction on
 *   └ unshare --mount                  a private mount namespace ...
 *     └ sh -c SCRIPT                   ... joins the VM's own cgroup(s) (memory, cpu, pids), builds a
 *                                      tmpfs root holding only this VM's files (kernel and initramfs
 *                                      read-only, its shares, disks, sockets, /usr read-only, a
 *                                      minimal /dev), pivot_root's into it
 *       └ setpriv --reuid/--regid      a uid/gid of its own (no other process shares it: it cannot
 *                  --clear-groups       signal or ptrace other VMMs or the daemon), the capability
 *                  --bounding-set ...   set cut to what 9p passthrough needs, no_new_privs
 *         └ qemu ... -sandbox on,...   QEMU's own seccomp filter (no exec, no setuid, no
 *                                      obsolete syscalls, no scheduler/resource changes)
 *
 * Why not a capability-less uid: the container rootfs is shared over 9p with
 * security_model=passthrough, so QEMU itself creates files with the guest's owners and modes
 * (chown, mknod, setuid bits, any file of any owner opened for writing). Those need CAP_CHOWN,
 * CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID (and CAP_SETFCAP for file capabilities);
 * mapped-xattr would avoid them but changes the on-disk format that diff/commit/cp/export read.
 * So QEMU keeps exactly these, as ambient capabilities of an otherwise unprivileged uid; the mount
 * namespace is what keeps DAC_OVERRIDE from reaching anything but the VM's own files.
 *
 * Every measure is detected once (QemuHypervisor.open) and skipped with a logged reason where
 * the host lacks it; `docker info` lists the ones in force (HypervisorInfo.securityOptions).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync, lstatSync, promises as fs, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { logger } from '../../util/log';
import type { VmSpec } from './hypervisor';

const log = logger('vmm-confinement');

/**
 * What 9p with security_model=passthrough needs, measured by dropping one at a time (QEMU under a
 * uid of its own): without chown, dac_override or fowner no file can be created at all (QEMU
 * creates, then chowns to the guest's uid, then chmods a file it no longer owns; its run dir is
 * root's 0700); fsetid keeps setgid bits on files of groups QEMU is not in (chmod g+s); setfcap
 * lets `setcap` in the container work, as under dockerd. mknod is not kept: device nodes created
 * over 9p fail (ENXIO) with or without confinement today, and fifos/sockets do not need it.
 */
export const SHARE_CAPABILITIES = ['chown', 'dac_override', 'fowner', 'fsetid', 'setfcap'] as const;

/** QEMU's seccomp policy: everything QEMU 7.2 can deny without breaking what Paddock uses. */
export const SECCOMP_POLICY = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/** VMM memory beyond guest RAM: TCG translation cache, device state, 9p buffers (measured peak ~60 MiB at -m 128). */
export const VMM_MEMORY_OVERHEAD_BYTES = 192 * 1024 * 1024;
export const CPU_PERIOD_US = 100_000;
/** Host threads of one QEMU (vCPUs, main loop, RCU, 9p/thread-pool workers); spawn is denied anyway. */
export const VMM_PIDS_MAX = 512;

/** First uid/gid of the range handed out to VMMs, one per VM (none of them exists in /etc/passwd). */
export const VMM_UID_BASE = 0x50000000;
export const VMM_UID_RANGE = 1 << 20;

export interface ConfinementOptions {
  /** false: QEMU runs as before (root, all capabilities, no seccomp); default true. */
  enabled?: boolean;
  seccomp?: boolean;
  cgroups?: boolean;
  mountNamespace?: boolean;
  /** false: keep uid 0 and every capability, no no_new_privs (seccomp still sets it). */
  privileges?: boolean;
  /** 'per-vm': a uid/gid of its own per VMM (default); 'root': uid 0, capabilities still cut. */
  user?: 'per-vm' | 'root';
  /** Capabilities the VMM keeps (default SHARE_CAPABILITIES). */
  capabilities?: string[];
}

export type MeasureName = 'seccomp' | 'capabilities' | 'user' | 'cgroup' | 'mount-namespace';

export interface Measure {
  name: MeasureName;
  enabled: boolean;
  /** What is enforced, or why it is skipped. */
  detail: string;
}

export interface CgroupController {
  /** 'memory' | 'cpu' | 'pids' on v1; 'unified' on v2. */
  controller: string;
  version: 1 | 2;
  /** Directory under which this daemon creates one cgroup per VM (…/paddock/d<pid>). */
  parent: string;
}

/** Limits of the VMM's cgroup, derived from the VM's size and the container's HostConfig. */
export interface VmmLimits {
  memoryBytes: number;
  /** null: no CPU quota. */
  cpuQuotaUs: number | null;
  cpuPeriodUs: number;
  pidsMax: number;
}

export function deriveLimits(spec: Pick<VmSpec, 'memoryMiB' | 'vcpus' | 'limits'>): VmmLimits {
  const l = spec.limits ?? {};
  const memoryBytes = l.memoryBytes ?? spec.memoryMiB * 1024 * 1024 + VMM_MEMORY_OVERHEAD_BYTES;
  const cpuPeriodUs = l.cpuPeriodUs ?? CPU_PERIOD_US;
  // Without a container CPU limit: the vCPUs plus one core for QEMU's own threads.
  const cpuQuotaUs = l.cpuQuotaUs === undefined ? (spec.vcpus + 1) * cpuPeriodUs : l.cpuQuotaUs;
  return { memoryBytes, cpuQuotaUs, cpuPeriodUs, pidsMax: VMM_PIDS_MAX };
}

/** The container's HostConfig limits as VmSpec.limits (the hook the engine calls). */
export function limitsFromHostConfig(hc: { NanoCpus?: number; CpuQuota?: number; CpuPeriod?: number }): VmSpec['limits'] {
  if (hc.NanoCpus) return { cpuQuotaUs: Math.max(1000, Math.round((hc.NanoCpus * CPU_PERIOD_US) / 1e9)), cpuPeriodUs: CPU_PERIOD_US };
  if (hc.CpuQuota && hc.CpuQuota > 0) return { cpuQuotaUs: hc.CpuQuota, cpuPeriodUs: hc.CpuPeriod || CPU_PERIOD_US };
  return undefined;
}

export interface Bind {
  path: string;
  readOnly: boolean;
  kind: 'dir' | 'file';
}

export interface JailPlan {
  /** Empty directory on the host that becomes the tmpfs root of the VMM's mount namespace. */
  root: string;
  /** Top-level symlinks recreated inside (merged-/usr systems: bin -> usr/bin, ...). */
  links: Array<[name: string, target: string]>;
  binds: Bind[];
  /** Device nodes bound into the jail's /dev. */
  devices: string[];
}

/** Everything the launch wrapper does, decided; buildLaunch turns it into an argv. */
export interface LaunchPlan {
  setpriv: string | null;
  unshare: string | null;
  pivotRoot: string;
  umount: string;
  mount: string;
  sh: string;
  cgroupProcs: string[];
  jail: JailPlan | null;
  user: { uid: number; gid: number } | null;
  /** Capabilities kept; null: no change. */
  capabilities: string[] | null;
}

/** POSIX shell single-quoting. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function jailScript(plan: LaunchPlan, jail: JailPlan): string[] {
  const R = (p: string) => `"$R"${shq(p)}`;
  const { mount } = plan;
  const binds = [...jail.binds].sort((a, b) => a.path.split('/').length - b.path.split('/').length || a.path.localeCompare(b.path));
  // Every mount point is made in the empty tmpfs before anything is bound (so nothing is ever
  // created or truncated in a host directory), with one mkdir; ': >' is a shell builtin. Each
  // exec costs ~1-2 ms here, so the script keeps to one per mount.
  const dirs = new Set<string>(['/proc', '/oldroot', '/dev']);
  for (const b of binds) dirs.add(b.kind === 'dir' ? b.path : path.posix.dirname(b.path));
  const lines = [
    `R=${shq(jail.root)}`,
    `${mount} -t tmpfs -o mode=0755,size=1m,nosuid,nodev paddock-vmm "$R"`,
  ];
  for (const [name, target] of jail.links) lines.push(`ln -s ${shq(target)} ${R('/' + name)}`);
  lines.push(`mkdir -p ${[...dirs].map(R).join(' ')}`);
  for (const b of binds) if (b.kind === 'file') lines.push(`: > ${R(b.path)}`);
  lines.push(`${mount} -t tmpfs -o mode=0755,size=64k,nosuid,noexec paddock-dev "$R/dev"`);
  const devDirs = [...new Set(jail.devices.map((d) => path.posix.dirname(d)))].filter((d) => d !== '/dev');
  if (devDirs.length) lines.push(`mkdir -p ${devDirs.map(R).join(' ')}`);
  for (const d of jail.devices) lines.push(`: > ${R(d)}`);
  for (const b of binds) {
    // util-linux binds, then remounts with the options (read-only) in one command.
    // Recursive: a share may hold mounts of its own (a container's staged volumes and binds).
    lines.push(`${mount} ${b.kind === 'dir' ? '--rbind' : '--bind'} ${b.readOnly ? '-o ro,nosuid,nodev ' : ''}${shq(b.path)} ${R(b.path)}`);
  }
  for (const d of jail.devices) lines.push(`${mount} --bind ${shq(d)} ${R(d)}`);
  lines.push(
    // QEMU's 9p server changes modes through /proc/self/fd/N (fchmodat has no NOFOLLOW), and
    // umount(8) reads /proc/self/mountinfo. Where the kernel allows it (5.8+), this proc shows
    // nothing but processes, and of those only the ones the VMM's own uid may ptrace: itself.
    `${mount} -t proc -o nosuid,nodev,noexec,hidepid=invisible,subset=pid proc "$R/proc" 2>/dev/null || ${mount} -t proc -o nosuid,nodev,noexec,hidepid=2 proc "$R/proc"`,
    `${mount} -o remount,bind,ro "$R"`,
    `cd "$R"`,
    `${plan.pivotRoot} . oldroot`,
    `${plan.umount} -l /oldroot`,
    'cd /',
  );
  return lines;
}

/** The wrapper's argv for one VMM; `binary args` is what runs in the end, under the same PID. */
export function buildLaunch(plan: LaunchPlan, binary: string, args: string[]): { command: string; argv: string[] } {
  const inner: string[] = [];
  if (plan.setpriv && (plan.user || plan.capabilities)) {
    inner.push(plan.setpriv);
    if (plan.user) inner.push(`--reuid=${plan.user.uid}`, `--regid=${plan.user.gid}`, '--clear-groups');
    if (plan.capabilities) {
      const set = ['-all', ...plan.capabilities.map((c) => `+${c}`)].join(',');
      // A non-root uid keeps capabilities only as ambient ones (which need them inheritable);
      // uid 0 gets its permitted set from the bounding set at exec.
      if (plan.user && plan.capabilities.length) inner.push(`--inh-caps=${set}`, `--ambient-caps=${set}`);
      else inner.push('--inh-caps=-all');
      inner.push(`--bounding-set=${set}`);
    }
    inner.push('--no-new-privs', '--pdeathsig', 'KILL', '--');
  }
  inner.push(binary, ...args);

  const script: string[] = [];
  for (const f of plan.cgroupProcs) script.push(`echo $$ > ${shq(f)}`);
  if (plan.jail) script.push(...jailScript(plan, plan.jail));

  let argv: string[];
  if (script.length === 0) {
    argv = inner;
  } else {
    argv = [plan.sh, '-e', '-c', [...script, 'exec "$@"'].join('\n'), 'paddock-vmm', ...inner];
    if (plan.jail && plan.unshare) argv = [plan.unshare, '--mount', '--propagation', 'private', '--', ...argv];
  }
  if (plan.setpriv) argv = [plan.setpriv, '--pdeathsig', 'KILL', '--', ...argv];
  return { command: argv[0], argv: argv.slice(1) };
}

/** Absolute host paths named in a QEMU argv (option values, JSON strings), except -append's. */
export function pathsInArgs(args: string[]): string[] {
  const out = new Set<string>();
  const add = (v: string) => {
    const m = /^(?:file:|unix:)?(\/.*)$/.exec(v);
    if (m) out.add(m[1]);
  };
  const walk = (v: unknown) => {
    if (typeof v === 'string') add(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-append' || a === '-name') {
      i++;
      continue;
    }
    if (a.startsWith('-') && !a.startsWith('-/')) continue;
    if (a.startsWith('{')) {
      try {
        walk(JSON.parse(a));
        continue;
      } catch {
        // not JSON after all
      }
    }
    // QEMU option syntax: k=v pairs separated by ',', a literal comma written twice.
    for (const part of a.replace(/,,/g, '\0').split(',')) {
      const v = part.includes('=') ? part.slice(part.indexOf('=') + 1) : part;
      add(v.replace(/\0/g, ','));
    }
  }
  return [...out];
}

export interface HostSupport {
  setpriv: string | null;
  unshare: string | null;
  pivotRoot: string | null;
  mount: string | null;
  umount: string | null;
  sh: string | null;
  /** null when usable, else why not. */
  seccompUnavailable: string | null;
  mountNamespaceUnavailable: string | null;
  cgroups: CgroupController[];
  cgroupUnavailable: string | null;
  links: Array<[string, string]>;
  rootDirs: string[];
}

export interface PrepareInput {
  spec: VmSpec;
  runDir: string;
  accelerator: string;
}

/** One VM's confinement: how to launch its VMM, and what to undo when it has exited. */
export class VmmJail {
  constructor(
    readonly plan: LaunchPlan,
    readonly limits: VmmLimits | null,
    readonly cgroupDirs: string[],
    private readonly seccomp: boolean,
    /** Plans the mount namespace once the QEMU argv is known (every host path it names is bound). */
    private readonly planJail: ((args: string[]) => JailPlan) | null = null,
  ) {}

  /** QEMU arguments of the confinement (-sandbox). */
  qemuArgs(): string[] {
    return this.seccomp ? ['-sandbox', SECCOMP_POLICY] : [];
  }

  /** `extraFds` are inherited from fd 3 on (a VM template's state file, qemu-template.ts). */
  spawn(binary: string, args: string[], extraFds: number[] = []): ChildProcess {
    const plan = this.planJail ? { ...this.plan, jail: this.planJail(args) } : this.plan;
    const { command, argv } = buildLaunch(plan, binary, [...args, ...this.qemuArgs()]);
    return spawn(command, argv, { stdio: ['pipe', 'pipe', 'pipe', ...extraFds] });
  }

  /**
   * A helper of this VM (virtiofsd): it joins the VM's cgroups and dies with the daemon, and
   * keeps its own sandbox (virtiofsd pivot_roots into the shared directory, drops capabilities
   * and installs its own seccomp filter), which needs the privileges ours would take away.
   */
  spawnHelper(binary: string, args: string[]): ChildProcess {
    const plan: LaunchPlan = { ...this.plan, jail: null, user: null, capabilities: null };
    const { command, argv } = buildLaunch(plan, binary, args);
    return spawn(command, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  }

  /**
   * Removes the VM's cgroups once QEMU has exited. Whatever is still inside (its virtiofsd) is
   * this VM's and is killed first, as cgroup.kill would.
   */
  async release(): Promise<void> {
    await Promise.all(this.cgroupDirs.map((d) => removeCgroup(d, true)));
  }
}

async function removeCgroup(dir: string, killLeft = false): Promise<void> {
  if (killLeft) {
    const left = (await fs.readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
    for (const pid of left) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (let i = 0; ; i++) {
    try {
      await fs.rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (i >= 40) {
        log.warn('cgroup left behind', { dir, error: (err as Error).message });
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

let cgroupSeq = 0;

export class VmmConfinement {
  private constructor(
    private readonly opts: Required<ConfinementOptions>,
    readonly host: HostSupport,
    readonly measures: Measure[],
  ) {}

  static disabled(): VmmConfinement {
    const opts = { ...defaults(), enabled: false };
    return new VmmConfinement(opts, emptyHost(), []);
  }

  static async detect(qemuBinary: string, options: ConfinementOptions = {}): Promise<VmmConfinement> {
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    // Operators' (and tests') switch, e.g. to tell whether a failure comes from confinement:
    // 'off', or measures to leave out: '-seccomp,-cgroup,-mountns,-privileges'.
    for (const word of (process.env.PADDOCK_VMM_CONFINEMENT ?? '').split(',').map((w) => w.trim())) {
      if (word === 'off') given.enabled = false;
      if (word === '-seccomp') given.seccomp = false;
      if (word === '-cgroup') given.cgroups = false;
      if (word === '-mountns') given.mountNamespace = false;
      if (word === '-privileges') given.privileges = false;
    }
    const opts = { ...defaults(), ...given } as Required<ConfinementOptions>;
    if (!opts.enabled) {
      log.warn('VMM confinement is off: QEMU runs as root with every capability and no seccomp filter');
      return VmmConfinement.disabled();
    }
    const host = await detectHost(qemuBinary, opts);
    const measures = describe(opts, host);
    for (const m of measures) (m.enabled ? log.info : log.warn)(`${m.name}: ${m.enabled ? 'on' : 'skipped'}`, { detail: m.detail });
    return new VmmConfinement(opts, host, measures);
  }

  private on(name: MeasureName): boolean {
    return this.measures.some((m) => m.name === name && m.enabled);
  }

  /** `docker info` SecurityOptions entries, as dockerd writes its own (name=…,key=value). */
  securityOptions(): string[] {
    const out: string[] = [];
    if (this.on('seccomp')) out.push('name=seccomp,profile=qemu-sandbox');
    const parts: string[] = [];
    if (this.on('user')) parts.push('user=per-vm');
    if (this.on('capabilities')) parts.push(`caps=${this.opts.capabilities.join('+') || 'none'}`, 'no-new-privs');
    if (this.on('cgroup')) parts.push(`cgroup=v${this.host.cgroups[0]?.version}`);
    if (this.on('mount-namespace')) parts.push('mountns');
    if (parts.length) out.push(`name=vmm-confinement,${parts.join(',')}`);
    return out;
  }

  /** Sets up one VM's cgroups and plans its wrapper; call before spawning its QEMU. */
  async prepare(input: PrepareInput): Promise<VmmJail> {
    const { spec, runDir } = input;
    const h = this.host;
    if (!this.opts.enabled) {
      return new VmmJail(basePlan(h, { setpriv: h.setpriv }), null, [], false);
    }
    const cgroupDirs: string[] = [];
    const procs: string[] = [];
    let limits: VmmLimits | null = null;
    if (this.on('cgroup')) {
      limits = deriveLimits(spec);
      const name = `${spec.id.slice(0, 64)}.${++cgroupSeq}`;
      try {
        for (const c of h.cgroups) {
          const dir = path.join(c.parent, name);
          await fs.mkdir(dir);
          cgroupDirs.push(dir);
          await writeLimits(dir, c, limits);
          procs.push(path.join(dir, 'cgroup.procs'));
        }
      } catch (err) {
        await Promise.all(cgroupDirs.map((d) => removeCgroup(d)));
        throw err;
      }
    }
    const caps = this.on('capabilities') ? [...this.opts.capabilities] : null;
    if (caps && (spec.nics ?? []).some((n) => n.backend.kind === 'tap') && !caps.includes('net_admin')) {
      // Attaching to a tap device that another uid owns is TUNSETIFF under CAP_NET_ADMIN.
      caps.push('net_admin');
    }
    let planJail: ((args: string[]) => JailPlan) | null = null;
    if (this.on('mount-namespace')) {
      const root = path.join(runDir, 'root');
      await fs.mkdir(root, { mode: 0o700 });
      planJail = (args) => jailFor(h, input, root, args);
    }
    const user = this.on('user') ? allocateUser() : null;
    const plan = basePlan(h, { setpriv: h.setpriv, cgroupProcs: procs, user, capabilities: caps });
    return new VmmJail(plan, limits, cgroupDirs, this.on('seccomp'), planJail);
  }
}

function defaults(): Required<ConfinementOptions> {
  return {
    enabled: true,
    seccomp: true,
    cgroups: true,
    mountNamespace: true,
    privileges: true,
    user: 'per-vm',
    capabilities: [...SHARE_CAPABILITIES],
  };
}

function emptyHost(): HostSupport {
  return {
    setpriv: findTool('setpriv'),
    unshare: null,
    pivotRoot: null,
    mount: null,
    umount: null,
    sh: null,
    seccompUnavailable: 'confinement disabled',
    mountNamespaceUnavailable: 'confinement disabled',
    cgroups: [],
    cgroupUnavailable: 'confinement disabled',
    links: [],
    rootDirs: [],
  };
}

function basePlan(h: HostSupport, p: Partial<LaunchPlan>): LaunchPlan {
  return {
    setpriv: null,
    unshare: h.unshare,
    pivotRoot: h.pivotRoot ?? 'pivot_root',
    umount: h.umount ?? 'umount',
    mount: h.mount ?? 'mount',
    sh: h.sh ?? '/bin/sh',
    cgroupProcs: [],
    jail: null,
    user: null,
    capabilities: null,
    ...p,
  };
}

function allocateUser(): { uid: number; gid: number } {
  const id = VMM_UID_BASE + randomInt(VMM_UID_RANGE);
  return { uid: id, gid: id };
}

function jailFor(h: HostSupport, input: PrepareInput, root: string, args: string[]): JailPlan {
  const { spec, runDir, accelerator } = input;
  const binds = new Map<string, Bind>();
  const add = (p: string, readOnly: boolean, orParent = false) => {
    let st;
    try {
      st = statSync(p);
    } catch {
      // Not there yet: a file QEMU is to create (e.g. a template's RAM file) needs its directory.
      const dir = path.dirname(p);
      if (orParent && dir !== '/' && !binds.has(dir)) add(dir, readOnly);
      return;
    }
    const prev = binds.get(p);
    binds.set(p, { path: p, readOnly: prev ? prev.readOnly && readOnly : readOnly, kind: st.isDirectory() ? 'dir' : 'file' });
  };
  for (const d of h.rootDirs) add(`/${d}`, true);
  if (existsSync('/etc/ld.so.cache')) add('/etc/ld.so.cache', true);
  add(runDir, false);
  add(spec.kernelPath, true);
  add(spec.initrdPath, true);
  for (const s of spec.shares ?? []) add(s.hostPath, Boolean(s.readOnly));
  for (const d of spec.disks ?? []) add(d.hostPath, Boolean(d.readOnly));
  for (const n of spec.nics ?? []) if (n.backend.kind === 'unix-stream') add(n.backend.path, false);
  const known = new Set(binds.keys());
  for (const p of pathsInArgs(args)) {
    if (known.has(p) || isWithin(p, runDir) || h.rootDirs.some((d) => isWithin(p, `/${d}`)) || isWithin(p, '/dev')) continue;
    add(p, false, true);
  }
  const devices = ['/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom'];
  if (accelerator === 'kvm') devices.push('/dev/kvm');
  if ((spec.nics ?? []).some((n) => n.backend.kind === 'tap')) devices.push('/dev/net/tun');
  return { root, links: h.links, binds: [...binds.values()], devices: devices.filter((d) => existsSync(d)) };
}

function isWithin(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

async function writeLimits(dir: string, c: CgroupController, l: VmmLimits): Promise<void> {
  const w = (file: string, value: string) => fs.writeFile(path.join(dir, file), value);
  if (c.version === 2) {
    await w('memory.max', String(l.memoryBytes));
    if (existsSync(path.join(dir, 'memory.swap.max'))) await w('memory.swap.max', '0');
    await w('cpu.max', `${l.cpuQuotaUs ?? 'max'} ${l.cpuPeriodUs}`);
    await w('pids.max', String(l.pidsMax));
  } else if (c.controller === 'memory') {
    await w('memory.limit_in_bytes', String(l.memoryBytes));
  } else if (c.controller === 'cpu') {
    await w('cpu.cfs_period_us', String(l.cpuPeriodUs));
    await w('cpu.cfs_quota_us', String(l.cpuQuotaUs ?? -1));
  } else if (c.controller === 'pids') {
    await w('pids.max', String(l.pidsMax));
  }
}

function describe(opts: Required<ConfinementOptions>, h: HostSupport): Measure[] {
  const m: Measure[] = [];
  m.push(
    !opts.seccomp
      ? { name: 'seccomp', enabled: false, detail: 'turned off by configuration' }
      : h.seccompUnavailable
        ? { name: 'seccomp', enabled: false, detail: h.seccompUnavailable }
        : { name: 'seccomp', enabled: true, detail: `-sandbox ${SECCOMP_POLICY}` },
  );
  m.push(
    !opts.privileges
      ? { name: 'capabilities', enabled: false, detail: 'turned off by configuration' }
      : h.setpriv
      ? { name: 'capabilities', enabled: true, detail: `bounding/effective set ${opts.capabilities.join(',') || '(none)'}, no_new_privs` }
      : { name: 'capabilities', enabled: false, detail: 'setpriv (util-linux) not found' },
  );
  m.push(
    opts.user !== 'per-vm' || !opts.privileges
      ? { name: 'user', enabled: false, detail: 'configured to keep uid 0' }
      : !h.setpriv
        ? { name: 'user', enabled: false, detail: 'setpriv (util-linux) not found' }
        : { name: 'user', enabled: true, detail: `one uid/gid per VMM from ${VMM_UID_BASE}+[0,${VMM_UID_RANGE})` },
  );
  m.push(
    !opts.cgroups
      ? { name: 'cgroup', enabled: false, detail: 'turned off by configuration' }
      : h.cgroupUnavailable
        ? { name: 'cgroup', enabled: false, detail: h.cgroupUnavailable }
        : { name: 'cgroup', enabled: true, detail: h.cgroups.map((c) => `${c.controller}:${c.parent}`).join(' ') },
  );
  m.push(
    !opts.mountNamespace
      ? { name: 'mount-namespace', enabled: false, detail: 'turned off by configuration' }
      : h.mountNamespaceUnavailable
        ? { name: 'mount-namespace', enabled: false, detail: h.mountNamespaceUnavailable }
        : { name: 'mount-namespace', enabled: true, detail: `pivot_root into a tmpfs with ${h.rootDirs.map((d) => `/${d}`).join(' ')} read-only and the VM's own files` },
  );
  return m;
}

function findTool(name: string): string | null {
  for (const dir of ['/usr/bin', '/usr/sbin', '/bin', '/sbin', '/usr/local/bin', '/usr/local/sbin']) {
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

async function detectHost(qemuBinary: string, opts: Required<ConfinementOptions>): Promise<HostSupport> {
  const h: HostSupport = {
    setpriv: findTool('setpriv'),
    unshare: findTool('unshare'),
    pivotRoot: findTool('pivot_root'),
    mount: findTool('mount'),
    umount: findTool('umount'),
    sh: existsSync('/bin/sh') ? '/bin/sh' : findTool('sh'),
    seccompUnavailable: null,
    mountNamespaceUnavailable: null,
    cgroups: [],
    cgroupUnavailable: null,
    links: [],
    rootDirs: [],
  };
  if (opts.seccomp) h.seccompUnavailable = probeSeccomp(qemuBinary);
  if (opts.cgroups) {
    try {
      h.cgroups = await setUpCgroupParents();
    } catch (err) {
      h.cgroupUnavailable = (err as Error).message;
    }
  }
  if (opts.mountNamespace) h.mountNamespaceUnavailable = probeMountNamespace(h, qemuBinary);
  return h;
}

/** Null when QEMU accepts SECCOMP_POLICY (it runs a machine-less QEMU under it and quits over QMP). */
function probeSeccomp(qemuBinary: string): string | null {
  if (!/^Seccomp:/m.test(safeRead('/proc/self/status'))) return 'the kernel has no seccomp (no Seccomp: in /proc/self/status)';
  const r = spawnSync(
    qemuBinary,
    ['-machine', 'none', '-nodefaults', '-no-user-config', '-display', 'none', '-sandbox', SECCOMP_POLICY, '-qmp', 'stdio'],
    { input: '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n', timeout: 10_000, encoding: 'utf8' },
  );
  if (r.status === 0) return null;
  const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').pop();
  return `QEMU refuses -sandbox ${SECCOMP_POLICY}: ${why}`;
}

function probeMountNamespace(h: HostSupport, qemuBinary: string): string | null {
  for (const [k, v] of Object.entries({ unshare: h.unshare, pivot_root: h.pivotRoot, mount: h.mount, umount: h.umount, sh: h.sh })) {
    if (!v) return `${k} not found`;
  }
  // /usr read-only is the jail's whole userland: every program the wrapper runs after pivot_root
  // (setpriv, umount, QEMU and their libraries) must live there.
  for (const name of ['usr', 'bin', 'sbin', 'lib', 'lib64', 'lib32', 'libx32']) {
    try {
      const st = lstatSync(`/${name}`);
      if (st.isSymbolicLink()) h.links.push([name, readlinkSync(`/${name}`)]);
      else if (st.isDirectory()) h.rootDirs.push(name);
    } catch {
      // absent
    }
  }
  for (const tool of [qemuBinary, h.setpriv, h.umount]) {
    if (!tool) continue;
    let real: string;
    try {
      real = realpathSync(tool);
    } catch {
      return `${tool} cannot be resolved`;
    }
    if (!h.rootDirs.some((d) => isWithin(real, `/${d}`))) return `${real} is outside ${h.rootDirs.map((d) => `/${d}`).join(', ')}`;
  }
  const r = spawnSync(h.unshare!, ['--mount', '--propagation', 'private', '--', h.sh!, '-c', 'true'], { timeout: 5000 });
  if (r.status !== 0) return `unshare --mount failed: ${String(r.stderr ?? r.error?.message).trim()}`;
  return null;
}

/** The cgroup hierarchies a VM joins: v2 if it has the memory controller, else v1 memory/cpu/pids. */
export interface CgroupHost {
  mounts: string;
  selfCgroup: string;
  readControllers(dir: string): string | null;
}

export function cgroupParents(host: CgroupHost, daemonPid: number): Array<{ controller: string; version: 1 | 2; own: string; base: string }> {
  const mounts = host.mounts.split('\n').map((l) => l.split(' ')).filter((f) => f.length >= 4);
  const self = host.selfCgroup
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [, , ctrls, p] = /^(\d+):([^:]*):(.*)$/.exec(l) ?? [];
      return { ctrls: (ctrls ?? '').split(','), path: p ?? '/' };
    });
  const v2 = mounts.find((f) => f[2] === 'cgroup2');
  const v2own = self.find((s) => s.ctrls.length === 1 && s.ctrls[0] === '')?.path;
  if (v2 && v2own !== undefined) {
    const ctrls = host.readControllers(v2[1]) ?? '';
    if (/\bmemory\b/.test(ctrls)) {
      return [{ controller: 'unified', version: 2, own: path.join(v2[1], v2own), base: path.join(v2[1], v2own, 'paddock', `d${daemonPid}`) }];
    }
  }
  const out: Array<{ controller: string; version: 1 | 2; own: string; base: string }> = [];
  for (const controller of ['memory', 'cpu', 'pids']) {
    const m = mounts.find((f) => f[2] === 'cgroup' && f[3].split(',').includes(controller));
    const s = self.find((x) => x.ctrls.includes(controller));
    if (!m || !s) continue;
    const own = path.join(m[1], s.path);
    out.push({ controller, version: 1, own, base: path.join(own, 'paddock', `d${daemonPid}`) });
  }
  return out;
}

async function setUpCgroupParents(): Promise<CgroupController[]> {
  const parents = cgroupParents(
    {
      mounts: safeRead('/proc/self/mounts'),
      selfCgroup: safeRead('/proc/self/cgroup'),
      readControllers: (d) => (existsSync(path.join(d, 'cgroup.controllers')) ? safeRead(path.join(d, 'cgroup.controllers')) : null),
    },
    process.pid,
  );
  if (!parents.some((p) => p.controller === 'memory' || p.controller === 'unified')) {
    throw new Error('no cgroup v2 hierarchy with the memory controller and no cgroup v1 memory hierarchy is mounted');
  }
  for (const p of parents) {
    const top = path.dirname(p.base);
    await fs.mkdir(top, { recursive: true });
    await sweepStale(top);
    await fs.mkdir(p.base, { recursive: true });
    if (p.version === 2) {
      // Controllers reach a child only if every ancestor delegates them; a non-root cgroup that
      // holds processes (the daemon's own) cannot: the kernel answers EBUSY and we report it.
      for (const dir of [p.own, top, p.base]) {
        const want = ['memory', 'cpu', 'pids'].filter((c) => new RegExp(`\\b${c}\\b`).test(safeRead(path.join(dir, 'cgroup.controllers'))));
        try {
          await fs.writeFile(path.join(dir, 'cgroup.subtree_control'), want.map((c) => `+${c}`).join(' '));
        } catch (err) {
          throw new Error(`cannot delegate ${want.join(',')} below ${dir}: ${(err as Error).message}`);
        }
      }
    }
  }
  return parents.map((p) => ({ controller: p.controller, version: p.version, parent: p.base }));
}

/** Removes the cgroups of daemons that are gone (their VMMs died with them: pdeathsig). */
async function sweepStale(top: string): Promise<void> {
  let entries: string[] = [];
  try {
    entries = await fs.readdir(top);
  } catch {
    return;
  }
  for (const e of entries) {
    const pid = /^d(\d+)$/.exec(e)?.[1];
    if (!pid || isAlive(Number(pid))) continue;
    const dir = path.join(top, e);
    for (const child of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (child.isDirectory()) await fs.rmdir(path.join(dir, child.name)).catch(() => undefined);
    }
    await fs.rmdir(dir).catch(() => undefined);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function safeRead(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}
