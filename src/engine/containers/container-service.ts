/**
 * The container engine: Docker's container lifecycle on top of sandboxes (one VM each).
 *
 * State lives in one directory per container (config.json written atomically, the json-file
 * log, the writable layer). Running containers are tracked in memory; a daemon that restarts
 * finds their VMs gone (they die with it, see the QEMU driver) and records them as exited, then
 * applies restart policies — never a container lost or duplicated.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { AgentProcess, ProcessExit } from '../../drivers/agent/agent-client';
import { AgentRequestError } from '../../drivers/agent/agent-client';
import type { GuestImage } from '../../drivers/guest/guest-image';
import type { Hypervisor } from '../../drivers/hypervisor/hypervisor';
import { ObjectDirectory } from '../../drivers/storage/state-store';
import { mountOverlayRootfs, unmountOverlay } from '../../drivers/storage/overlay-rootfs';
import { conflict, invalid, notFound, notModified, PaddockError, unavailable } from '../../errors';
import { logger } from '../../util/log';
import type { EventBus } from '../events';
import type { ImageBackend } from '../image-backend';
import { Sandbox } from '../sandbox';
import type { ContainerCounts } from '../system';
import { mergeWithImage, normaliseHostConfig, refuseUnsupported, signalNumber, validateCreateRequest } from './config-merge';
import { diskUsage } from './container-fs';
import type { VolumeService } from '../volumes/volume-service';
import { ExecManager } from './exec';
import { HealthMonitor, probeCommand } from './health';
import { resolveMounts } from './mounts';
import { releaseStagedMounts, stageMounts } from '../../drivers/storage/mount-staging';
import { clearRuntimeNetworking, ContainerNetworking, emptyEndpoint, initialNetworks } from './container-networking';
import type { NetworkRecord, NetworkService } from '../networks/network-service';
import { resolveInRoot } from './scoped-path';
import { JsonLogWriter, matches, readLogEntries, type LogEntry, type LogQuery } from './json-log';
import { generateName, validateName } from './names';
import { resolveUser } from './users';
import { ZERO_TIME, type ContainerRecord, type HostConfig } from './types';

const log = logger('containers');

export interface ContainerServiceOptions {
  root: string;
  events: EventBus;
  images: ImageBackend;
  hypervisor: Hypervisor;
  guest: GuestImage;
  defaultMemoryMiB: number;
  volumes: VolumeService;
  networks: NetworkService;
}

/** Where an attached client's output goes; the API layer frames it. */
export interface AttachSinks {
  stdin: Readable | null;
  stdout?: (chunk: Buffer) => void;
  stderr?: (chunk: Buffer) => void;
}

interface Attachment extends AttachSinks {
  done: () => void;
}

/** A running container: its VM and main process. */
interface Runtime {
  sandbox: Sandbox;
  main: AgentProcess;
  log: JsonLogWriter;
  /** Set while the daemon itself is stopping or killing it. */
  stopping?: boolean;
  stdinAttached: boolean;
  health?: HealthMonitor;
  networking: ContainerNetworking | null;
}

export interface WaitResult {
  StatusCode: number;
  Error: { Message: string } | null;
}

export type WaitCondition = 'not-running' | 'next-exit' | 'removed';

export class ContainerService {
  private readonly store: ObjectDirectory<ContainerRecord>;
  /** Creations whose directory is not there yet (see create()). */
  private readonly creating: Map<string, Promise<void>>;
  private readonly records = new Map<string, ContainerRecord>();
  private readonly runtimes = new Map<string, Runtime>();
  private readonly attachments = new Map<string, Set<Attachment>>();
  private readonly lifecycle = new EventEmitter();
  /** Serialises state changes per container (start/stop/rm racing each other). */
  private readonly locks = new Map<string, Promise<unknown>>();
  readonly execs: ExecManager;
  private shuttingDown = false;

  private constructor(private readonly opts: ContainerServiceOptions) {
    this.store = new ObjectDirectory<ContainerRecord>(opts.root);
    this.creating = new Map();
    this.lifecycle.setMaxListeners(0);
    this.execs = new ExecManager(this, opts.events);
  }

  static async open(opts: ContainerServiceOptions): Promise<ContainerService> {
    const svc = new ContainerService(opts);
    opts.volumes.setUsageProbe((name) => svc.list().filter((r) => r.MountPoints?.some((m) => m.Name === name)).map((r) => r.Id));
    await svc.createInitLayer();
    await svc.load();
    return svc;
  }

  /**
   * Docker's "init layer": empty placeholders for what is mounted over the image at run time
   * (/etc/hosts, /etc/hostname, /etc/resolv.conf, /proc, /sys, /dev), shared by all containers
   * and placed between the image and the writable layer, so `docker diff` does not list them.
   */
  private get initLayer(): string {
    return path.join(path.dirname(this.opts.root), 'init-layer');
  }

  private async createInitLayer(): Promise<void> {
    const dir = this.initLayer;
    for (const d of ['etc', 'proc', 'sys', 'dev']) await fs.mkdir(path.join(dir, d), { recursive: true, mode: 0o755 });
    for (const f of ['etc/hostname', 'etc/hosts', 'etc/resolv.conf', '.dockerenv']) {
      await fs.writeFile(path.join(dir, f), '', { flag: 'a', mode: 0o644 });
    }
  }

  private async lowerDirs(record: ContainerRecord): Promise<string[]> {
    const image = await this.opts.images.resolve(record.Image);
    return [this.initLayer, ...image.layerDirs];
  }

  /** Image layers below the writable layer (for docker diff). */
  async imageLayerDirs(record: ContainerRecord): Promise<string[]> {
    return (await this.opts.images.resolve(record.Image)).layerDirs;
  }

  // ---------------------------------------------------------------- queries

  /** Finds a container by full ID, unique ID prefix or name (with or without '/'). */
  get(idOrName: string): ContainerRecord {
    const rec = this.find(idOrName);
    if (!rec) throw notFound(`No such container: ${idOrName}`);
    return rec;
  }

  find(idOrName: string): ContainerRecord | undefined {
    if (!idOrName) return undefined;
    const exact = this.records.get(idOrName);
    if (exact) return exact;
    const name = idOrName.replace(/^\//, '');
    for (const r of this.records.values()) if (r.Name === `/${name}`) return r;
    const matches = [...this.records.values()].filter((r) => r.Id.startsWith(idOrName));
    if (matches.length > 1) throw invalid(`Multiple IDs found with provided prefix: ${idOrName}`);
    return matches[0];
  }

  list(): ContainerRecord[] {
    return [...this.records.values()].sort((a, b) => (a.Created < b.Created ? 1 : -1));
  }

  containerDir(id: string): string {
    return this.store.dirOf(id);
  }

  logPath(id: string): string {
    return path.join(this.containerDir(id), `${id}-json.log`);
  }

  runtime(id: string): Runtime | undefined {
    return this.runtimes.get(id);
  }

  /** The running sandbox of a container, or a 409 in dockerd's words. */
  requireRunning(idOrName: string): { record: ContainerRecord; runtime: Runtime } {
    const record = this.get(idOrName);
    const runtime = this.runtimes.get(record.Id);
    if (!runtime || !record.State.Running) throw conflict(`Container ${record.Id} is not running`);
    return { record, runtime };
  }

  async counts(): Promise<ContainerCounts> {
    const all = [...this.records.values()];
    const running = all.filter((r) => r.State.Running && !r.State.Paused).length;
    const paused = all.filter((r) => r.State.Paused).length;
    return { total: all.length, running, paused, stopped: all.length - running - paused };
  }

  async usersOfImage(imageId: string): Promise<Array<{ id: string; running: boolean }>> {
    return [...this.records.values()].filter((r) => r.Image === imageId).map((r) => ({ id: r.Id, running: r.State.Running }));
  }

  // ---------------------------------------------------------------- create / remove

  async create(body: unknown, name?: string): Promise<{ Id: string; Warnings: string[] }> {
    const req = validateCreateRequest(body);
    refuseUnsupported(req);
    let wanted = name ? validateName(name) : undefined;
    if (wanted) this.assertNameFree(wanted);
    const image = await this.opts.images.resolve(req.Image!);
    const id = randomBytes(32).toString('hex');
    const merged = mergeWithImage(req, image, id);
    const mountPoints = await resolveMounts(req, image.config?.Volumes, this.opts.volumes, (ref) => this.get(ref));
    const networks = initialNetworks(req, this.opts.networks);
    wanted ??= generateName((n) => this.find(n) !== undefined);
    const record: ContainerRecord = {
      Id: id,
      Name: `/${wanted}`,
      Created: new Date().toISOString(),
      Path: merged.path,
      Args: merged.args,
      Config: { ...merged.config, Image: req.Image },
      HostConfig: merged.hostConfig,
      Image: image.id,
      State: {
        Status: 'created',
        Running: false,
        Paused: false,
        Restarting: false,
        OOMKilled: false,
        Dead: false,
        Pid: 0,
        ExitCode: 0,
        Error: '',
        StartedAt: ZERO_TIME,
        FinishedAt: ZERO_TIME,
      },
      RestartCount: 0,
      NetworkingConfig: req.NetworkingConfig ?? null,
      NetworkSettings: { Networks: networks, Ports: {} },
      MountPoints: mountPoints,
      Platform: 'linux',
    };
    // The name is claimed before the first await that could interleave another create.
    this.assertNameFree(wanted);
    this.records.set(id, record);
    // Until its directory exists, writes of this record (an update or rename sent right after
    // the name became visible) wait: they would otherwise fail, or make the directory first
    // and break this create.
    const created = this.store.create(id, record);
    this.creating.set(id, created.then(() => undefined, () => undefined));
    try {
      await created;
    } catch (err) {
      this.records.delete(id);
      throw err;
    } finally {
      this.creating.delete(id);
    }
    this.publish(record, 'create');
    return { Id: id, Warnings: [] };
  }

  async remove(idOrName: string, opts: { force?: boolean; volumes?: boolean } = {}): Promise<void> {
    const record = this.get(idOrName);
    await this.withLock(record.Id, async () => {
      if (record.State.Running || this.runtimes.has(record.Id)) {
        if (!opts.force) {
          const what = record.State.Paused ? 'paused' : 'running';
          throw conflict(
            `cannot remove container "${record.Name}": container is ${what}: stop the container before removing or force remove`,
          );
        }
        await this.killRuntime(record, 9);
      }
      // Detached, as dockerd's overlay2 driver does (MNT_DETACH): a cp or export still reading
      // the tree must not make rm fail with "target is busy".
      await this.unmountRootfs(record.Id, true);
      this.records.delete(record.Id);
      await this.store.remove(record.Id);
      // Clients attached to a container that never ran (a failed --rm start) are done too.
      for (const a of this.attachments.get(record.Id) ?? []) a.done();
      this.attachments.delete(record.Id);
      this.publish(record, 'destroy');
      this.lifecycle.emit(`removed:${record.Id}`);
      if (opts.volumes) {
        // `rm -v`: the container's anonymous volumes go with it (named ones stay).
        for (const m of record.MountPoints ?? []) {
          if (m.Type === 'volume' && m.Name && this.opts.volumes.find(m.Name)?.Anonymous) {
            await this.opts.volumes.remove(m.Name).catch(() => undefined);
          }
        }
      }
    });
  }

  async rename(idOrName: string, newName: string): Promise<void> {
    const record = this.get(idOrName);
    const wanted = validateName(newName);
    if (record.Name === `/${wanted}`) throw invalid('Renaming a container with the same name as its current name');
    this.assertNameFree(wanted);
    const oldName = record.Name;
    record.Name = `/${wanted}`;
    await this.persist(record);
    this.publish(record, 'rename', { oldName });
  }

  async update(idOrName: string, body: Partial<HostConfig>): Promise<{ Warnings: string[] }> {
    const record = this.get(idOrName);
    const running = record.State.Running;
    const resizes = ['Memory', 'MemorySwap', 'NanoCpus', 'CpuShares', 'CpuQuota', 'CpuPeriod', 'CpusetCpus'].filter(
      (k) => (body as Record<string, unknown>)[k] !== undefined && (body as Record<string, unknown>)[k] !== 0,
    );
    if (running && resizes.length) {
      const caps = this.opts.hypervisor.capabilities();
      if (!caps.resizeMemory || !caps.resizeCpus) {
        throw invalid(
          `Cannot update ${resizes.join(', ')} of a running container: the ${this.opts.hypervisor.info().name} driver cannot resize a running VM; stop the container first`,
        );
      }
    }
    const next = { ...record.HostConfig, ...body };
    if (body.RestartPolicy && record.HostConfig.AutoRemove && body.RestartPolicy.Name && body.RestartPolicy.Name !== 'no') {
      throw invalid('Restart policy cannot be updated because AutoRemove is enabled for the container');
    }
    record.HostConfig = normaliseHostConfig(next as HostConfig);
    await this.persist(record);
    this.publish(record, 'update');
    return { Warnings: [] };
  }

  async prune(): Promise<{ ContainersDeleted: string[]; SpaceReclaimed: number }> {
    const deleted: string[] = [];
    for (const r of [...this.records.values()]) {
      if (r.State.Running) continue;
      await this.remove(r.Id).catch(() => undefined);
      if (!this.records.has(r.Id)) deleted.push(r.Id);
    }
    return { ContainersDeleted: deleted, SpaceReclaimed: 0 };
  }

  // ---------------------------------------------------------------- networks

  /** `docker network connect`: on a running container, a new interface appears at once. */
  async connectNetwork(
    networkRef: string,
    containerRef: string,
    requested: { Aliases?: string[] | null; Links?: string[] | null; IPAMConfig?: { IPv4Address?: string } | null },
  ): Promise<void> {
    const n = this.opts.networks.get(networkRef);
    const record = this.get(containerRef);
    await this.withLock(record.Id, async () => {
      if (n.Driver !== 'bridge') throw invalid('container cannot be disconnected from host network or connected to host network');
      const current = record.NetworkSettings?.Networks ?? {};
      if (Object.values(current).some((s) => this.opts.networks.find(s.NetworkID)?.Driver === 'null')) {
        throw invalid('container cannot be connected to multiple networks with one of the networks in private (none) mode');
      }
      if (current[n.Name]) throw new PaddockError('forbidden', `endpoint with name ${record.Name.slice(1)} already exists in network ${n.Name}`);
      if ((requested.Aliases?.length || requested.IPAMConfig?.IPv4Address) && this.opts.networks.isDefaultBridge(n)) {
        throw invalid('network-scoped alias is supported only for containers in user defined networks');
      }
      const settings = { IPAMConfig: requested.IPAMConfig ?? null, Aliases: requested.Aliases ?? null, Links: requested.Links ?? null };
      const runtime = this.runtimes.get(record.Id);
      record.NetworkSettings ??= { Networks: {}, Ports: {} };
      if (runtime?.networking) await runtime.networking.connect(n, settings);
      else if (runtime) throw unavailable(`container ${record.Name.slice(1)} runs without networking and cannot join ${n.Name}; restart it after connecting`);
      else record.NetworkSettings.Networks[n.Name] = emptyEndpoint(n.Id, settings);
      await this.persist(record);
      this.opts.events.publish('network', 'connect', n.Id, { container: record.Id, name: n.Name, type: n.Driver });
    });
  }

  async disconnectNetwork(networkRef: string, containerRef: string, force: boolean): Promise<void> {
    const n = this.opts.networks.find(networkRef);
    const record = force ? this.find(containerRef) : this.get(containerRef);
    if (!record) return;
    if (!n) {
      if (force) return;
      throw notFound(`network ${networkRef} not found`);
    }
    await this.withLock(record.Id, async () => {
      const nets = record.NetworkSettings?.Networks ?? {};
      if (!nets[n.Name]) throw new PaddockError('forbidden', `container ${record.Id} is not connected to network ${n.Name}`);
      if (n.Driver !== 'bridge') throw invalid('container cannot be disconnected from host network or connected to host network');
      await this.runtimes.get(record.Id)?.networking?.disconnect(n);
      delete nets[n.Name];
      await this.persist(record);
      this.opts.events.publish('network', 'disconnect', n.Id, { container: record.Id, name: n.Name, type: n.Driver });
    });
  }

  /** Networks containers (running or not) are configured for, for `network prune` and views. */
  usesNetwork(n: NetworkRecord): boolean {
    return [...this.records.values()].some((r) => Object.values(r.NetworkSettings?.Networks ?? {}).some((s) => s.NetworkID === n.Id));
  }

  // ---------------------------------------------------------------- start / stop

  async start(idOrName: string): Promise<void> {
    const record = this.get(idOrName);
    await this.withLock(record.Id, () => this.startLocked(record));
  }

  private async startLocked(record: ContainerRecord): Promise<void> {
    if (record.State.Paused) throw conflict('cannot start a paused container, try unpause instead');
    if (record.State.Running) throw notModified();
    const id = record.Id;
    let sandbox: Sandbox | undefined;
    let networking: ContainerNetworking | null = null;
    try {
      const dir = this.containerDir(id);
      const rootfs = await mountOverlayRootfs(path.join(dir, 'rootfs'), await this.lowerDirs(record));
      networking = await ContainerNetworking.prepare(record, this.opts.networks);
      const etcDir = await this.writeEtcFiles(record, networking);
      const user = await resolveUser(rootfs.merged, record.Config.User ?? '');
      const memoryMiB = record.HostConfig.Memory
        ? Math.max(64, Math.ceil(record.HostConfig.Memory / (1024 * 1024)))
        : this.opts.defaultMemoryMiB;
      const vcpus = record.HostConfig.NanoCpus ? Math.max(1, Math.ceil(record.HostConfig.NanoCpus / 1e9)) : 1;
      const points = [...(record.MountPoints ?? [])].sort((a, b) => a.Destination.split('/').length - b.Destination.split('/').length);
      for (const m of points) if (m.Type === 'volume') await copyUpIfEmpty(rootfs.merged, m.Destination, m.Source);
      const shared = points.filter((m) => m.Type !== 'tmpfs');
      const staged = await stageMounts(this.mountStagingDir(id), shared.map((m) => ({ hostPath: m.Source, readOnly: !m.RW })));
      sandbox = await Sandbox.start(this.opts.hypervisor, this.opts.guest, {
        id,
        rootfsDir: rootfs.merged,
        memoryMiB,
        vcpus,
        hostname: record.Config.Hostname,
        etcFiles: { dir: etcDir, files: ['hostname', 'hosts', 'resolv.conf'] },
        mounts: { hostDir: this.mountStagingDir(id), entries: staged.map((m, i) => ({ name: m.name, target: shared[i].Destination, readOnly: !shared[i].RW })) },
        tmpfs: points.filter((m) => m.Type === 'tmpfs').map((m) => ({ target: m.Destination, options: m.TmpfsOptions ?? '', readOnly: !m.RW })),
        nic: networking?.nic,
        limits: cpuLimits(record.HostConfig),
      });
      await networking?.activate(sandbox.agent);
      const logWriter = new JsonLogWriter(this.logPath(id));
      await logWriter.init();
      const tty = Boolean(record.Config.Tty);
      const [rows, cols] = record.HostConfig.ConsoleSize ?? [0, 0];
      let main: AgentProcess;
      try {
        main = await sandbox.startMain({
          args: [record.Path, ...record.Args],
          env: [...this.processEnv(record), ...this.legacyLinkEnv(record)],
          cwd: record.Config.WorkingDir || '/',
          uid: user.uid,
          gid: user.gid,
          groups: user.groups,
          tty,
          rows: rows || undefined,
          cols: cols || undefined,
          openStdin: Boolean(record.Config.OpenStdin),
        });
      } catch (err) {
        await logWriter.close();
        throw execError(err, record.Path);
      }
      const runtime: Runtime = { sandbox, main, log: logWriter, stdinAttached: false, networking };
      this.runtimes.set(id, runtime);
      this.wireOutput(record, runtime);
      record.State = {
        ...record.State,
        Status: 'running',
        Running: true,
        Paused: false,
        Restarting: false,
        OOMKilled: false,
        Dead: false,
        Pid: sandbox.vm.pid,
        ExitCode: 0,
        Error: '',
        StartedAt: new Date().toISOString(),
        FinishedAt: ZERO_TIME,
      };
      record.ManuallyStopped = false;
      runtime.health = this.startHealthMonitor(record, runtime, user);
      await this.persist(record);
      this.publish(record, 'start');
      void this.watchExit(record, runtime);
    } catch (err) {
      if (sandbox) await sandbox.kill();
      await networking?.release().catch(() => undefined);
      this.runtimes.delete(id);
      await this.unmountRootfs(id).catch(() => undefined);
      const message = err instanceof Error ? err.message : String(err);
      record.State = {
        ...record.State,
        Status: record.State.StartedAt === ZERO_TIME ? 'created' : 'exited',
        Running: false,
        Pid: 0,
        ExitCode: err instanceof PaddockError && /not found|no such file/i.test(message) ? 127 : 128,
        Error: message,
      };
      await this.persist(record).catch(() => undefined);
      if (record.HostConfig.AutoRemove) {
        // As dockerd: a --rm container that cannot start is removed (the CLI waits for that).
        setImmediate(() => void this.remove(record.Id, { force: true }).catch(() => undefined));
      }
      throw err;
    }
  }

  private startHealthMonitor(record: ContainerRecord, runtime: Runtime, user: { uid: number; gid: number; groups: number[] }): HealthMonitor | undefined {
    const command = probeCommand(record.Config.Healthcheck);
    if (!command || !record.Config.Healthcheck) {
      delete record.State.Health;
      return undefined;
    }
    const monitor = new HealthMonitor(command, record.Config.Healthcheck, {
      run: (spec) => runtime.sandbox.exec(spec),
      processSpec: { env: this.processEnv(record), cwd: record.Config.WorkingDir || '/', uid: user.uid, gid: user.gid, groups: user.groups },
      update: (health, changed) => {
        if (this.runtimes.get(record.Id) !== runtime) return;
        record.State.Health = health;
        void this.persist(record).catch(() => undefined);
        if (changed) this.publish(record, `health_status: ${health.Status}`);
      },
    });
    record.State.Health = monitor.health;
    return monitor;
  }

  private processEnv(record: ContainerRecord): string[] {
    const env = [...(record.Config.Env ?? [])];
    const has = (k: string) => env.some((e) => e.startsWith(`${k}=`));
    if (!has('PATH')) env.unshift('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
    if (!has('HOSTNAME')) env.push(`HOSTNAME=${record.Config.Hostname}`);
    if (record.Config.Tty && !has('TERM')) env.push('TERM=xterm');
    if (!has('HOME')) env.push('HOME=/root');
    return env;
  }

  /**
   * The environment of legacy links on the default bridge (`--link db:database` gives
   * DATABASE_PORT_5432_TCP_ADDR and the like, DATABASE_NAME, DATABASE_ENV_*), as dockerd sets it
   * for the main process.
   */
  private legacyLinkEnv(record: ContainerRecord): string[] {
    const env: string[] = [];
    for (const { target, alias, ip } of this.legacyLinks(record)) {
      const prefix = alias.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
      const ports = Object.keys(target.Config.ExposedPorts ?? {})
        .map((k) => {
          const [port, proto = 'tcp'] = k.split('/');
          return { port: Number(port), proto };
        })
        .sort((a, b) => a.port - b.port);
      if (ports[0]) env.push(`${prefix}_PORT=${ports[0].proto}://${ip}:${ports[0].port}`);
      for (const { port, proto } of ports) {
        const p = `${prefix}_PORT_${port}_${proto.toUpperCase()}`;
        env.push(`${p}=${proto}://${ip}:${port}`, `${p}_ADDR=${ip}`, `${p}_PORT=${port}`, `${p}_PROTO=${proto}`);
      }
      env.push(`${prefix}_NAME=${record.Name}/${alias}`);
      for (const e of target.Config.Env ?? []) {
        const eq = e.indexOf('=');
        const key = e.slice(0, eq);
        if (eq > 0 && !['HOME', 'HOSTNAME', 'PATH'].includes(key)) env.push(`${prefix}_ENV_${key}=${e.slice(eq + 1)}`);
      }
    }
    return env;
  }

  /** /etc/hostname, /etc/hosts and /etc/resolv.conf as dockerd writes them. */
  private async writeEtcFiles(record: ContainerRecord, networking: ContainerNetworking | null): Promise<string> {
    const dir = path.join(this.containerDir(record.Id), 'etc');
    await fs.mkdir(dir, { recursive: true });
    const hostname = record.Config.Hostname ?? record.Id.slice(0, 12);
    const extraHosts = (record.HostConfig.ExtraHosts ?? []).map((h) => {
      const [name, ip] = h.split(':', 2).length === 2 ? [h.slice(0, h.indexOf(':')), h.slice(h.indexOf(':') + 1)] : [h, ''];
      return `${ip}\t${name}`;
    });
    const address = networking?.primaryAddress();
    const hosts = [
      '127.0.0.1\tlocalhost',
      '::1\tlocalhost ip6-localhost ip6-loopback',
      'fe00::0\tip6-localnet',
      'ff00::0\tip6-mcastprefix',
      'ff02::1\tip6-allnodes',
      'ff02::2\tip6-allrouters',
      ...extraHosts,
      ...this.legacyLinkHosts(record),
      address ? `${address}\t${hostname}` : `127.0.1.1\t${hostname}`,
      '',
    ].join('\n');
    await fs.writeFile(path.join(dir, 'hostname'), `${hostname}\n`);
    await fs.writeFile(path.join(dir, 'hosts'), hosts);
    await fs.writeFile(path.join(dir, 'resolv.conf'), await resolvConf(record.HostConfig, Boolean(networking)));
    return dir;
  }

  /**
   * `--link name:alias` on the default bridge: /etc/hosts lines for the linked containers, which
   * must be running (dockerd's rule and wording).
   */
  private legacyLinkHosts(record: ContainerRecord): string[] {
    return this.legacyLinks(record).map(({ target, alias, ip }) => `${ip}\t${alias} ${target.Id.slice(0, 12)} ${target.Name.slice(1)}`);
  }

  /** The containers `--link` names, with their aliases and default-bridge addresses. */
  private legacyLinks(record: ContainerRecord): Array<{ target: ContainerRecord; alias: string; ip: string }> {
    const links: Array<{ target: ContainerRecord; alias: string; ip: string }> = [];
    for (const link of record.HostConfig.Links ?? []) {
      const [targetRef, aliasPath] = link.split(':');
      const target = this.find(targetRef.replace(/^\//, ''));
      const alias = (aliasPath ?? targetRef).split('/').pop()!;
      if (!target || !target.State.Running) {
        throw conflict(`Cannot link to a non running container: ${targetRef.startsWith('/') ? targetRef : `/${targetRef}`} AS ${record.Name}/${alias}`);
      }
      const ip = target.NetworkSettings?.Networks?.bridge?.IPAddress;
      if (ip) links.push({ target, alias, ip });
    }
    return links;
  }

  private wireOutput(record: ContainerRecord, runtime: Runtime): void {
    const { main, log: logWriter } = runtime;
    const fanOut = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
      logWriter.write(stream, chunk);
      for (const a of this.attachments.get(record.Id) ?? []) a[stream]?.(chunk);
    };
    main.stdout.on('data', fanOut('stdout'));
    main.stderr.on('data', fanOut('stderr'));
    for (const a of this.attachments.get(record.Id) ?? []) this.connectStdin(record, runtime, a);
  }

  /** Pipes an attachment's stdin into the main process (the first one that offers stdin). */
  private connectStdin(record: ContainerRecord, runtime: Runtime, a: Attachment): void {
    if (!a.stdin || !record.Config.OpenStdin || runtime.stdinAttached) return;
    runtime.stdinAttached = true;
    const stdin = runtime.main.stdin;
    a.stdin.on('data', (chunk: Buffer) => {
      if (!stdin.writableEnded) stdin.write(chunk);
    });
    a.stdin.on('end', () => {
      runtime.stdinAttached = false;
      if (record.Config.StdinOnce && !stdin.writableEnded) stdin.end();
    });
    a.stdin.on('error', () => (runtime.stdinAttached = false));
    a.stdin.resume(); // reading the request body may have paused the connection
  }

  private async watchExit(record: ContainerRecord, runtime: Runtime): Promise<void> {
    const { main, sandbox } = runtime;
    let exit: ProcessExit;
    try {
      exit = await main.exited;
      // Let the last output reach the log and the attached clients before they are closed.
      await Promise.all([ended(main.stdout), ended(main.stderr)]);
    } catch {
      // The VM went away under the process (killed, or crashed): SIGKILL semantics.
      exit = { exitCode: 137, signal: 9 };
    }
    runtime.health?.stop();
    await runtime.log.close();
    await sandbox.kill();
    await runtime.networking?.release().catch((err) => log.warn('network release failed', { id: record.Id, error: String(err) }));
    this.runtimes.delete(record.Id);
    this.execs.containerStopped(record.Id);
    await this.unmountRootfs(record.Id).catch(() => undefined);
    for (const a of this.attachments.get(record.Id) ?? []) a.done();
    this.attachments.delete(record.Id);
    record.State = exitedState(record.State, exit.exitCode);
    if (!this.records.has(record.Id)) {
      // Removed (rm -f) while it ran.
      this.publish(record, 'die', { exitCode: String(exit.exitCode) });
      this.lifecycle.emit(`exit:${record.Id}`, exit.exitCode);
      return;
    }
    await this.persist(record).catch((err) => log.error('persist failed', { id: record.Id, error: String(err) }));
    this.publish(record, 'die', { exitCode: String(exit.exitCode), execDuration: String(durationSeconds(record)) });
    this.lifecycle.emit(`exit:${record.Id}`, exit.exitCode);
    if (runtime.stopping || this.shuttingDown) return;
    if (record.HostConfig.AutoRemove) {
      await this.remove(record.Id, { force: true }).catch((err) => log.warn('auto-remove failed', { id: record.Id, error: String(err) }));
      return;
    }
    this.maybeRestart(record, exit.exitCode);
  }

  private maybeRestart(record: ContainerRecord, exitCode: number): void {
    const policy = record.HostConfig.RestartPolicy ?? { Name: 'no' };
    const should =
      policy.Name === 'always' ||
      (policy.Name === 'unless-stopped' && !record.ManuallyStopped) ||
      (policy.Name === 'on-failure' &&
        exitCode !== 0 &&
        (!policy.MaximumRetryCount || record.RestartCount < policy.MaximumRetryCount));
    if (!should) return;
    // dockerd's back-off: 100 ms doubling, capped (we cap at 10 s).
    const delay = Math.min(10_000, 100 * 2 ** Math.min(record.RestartCount, 7));
    record.State.Restarting = true;
    record.State.Status = 'restarting';
    setTimeout(() => {
      if (!this.records.has(record.Id) || record.State.Running || this.shuttingDown || record.ManuallyStopped) {
        record.State.Restarting = false;
        return;
      }
      record.RestartCount++;
      this.start(record.Id).catch((err) => {
        record.State.Restarting = false;
        log.warn('restart failed', { id: record.Id, error: String(err) });
      });
    }, delay).unref();
  }

  async stop(idOrName: string, opts: { timeoutSeconds?: number; signal?: string } = {}): Promise<void> {
    const record = this.get(idOrName);
    await this.withLock(record.Id, async () => {
      record.ManuallyStopped = true;
      if (record.State.Restarting) record.State.Restarting = false;
      const runtime = this.runtimes.get(record.Id);
      if (!runtime || !record.State.Running) {
        await this.persist(record);
        throw notModified();
      }
      await this.stopRuntime(record, runtime, opts);
      this.publish(record, 'stop');
    });
  }

  private async stopRuntime(record: ContainerRecord, runtime: Runtime, opts: { timeoutSeconds?: number; signal?: string }): Promise<void> {
    runtime.stopping = true;
    const timeout = opts.timeoutSeconds ?? record.Config.StopTimeout ?? 10;
    const signal = signalNumber(opts.signal ?? record.Config.StopSignal, 15);
    if (record.State.Paused) await runtime.sandbox.vm.resume().catch(() => undefined);
    const exited = this.nextExit(record.Id);
    if (signal !== 9 && timeout !== 0) {
      this.publish(record, 'kill', { signal: String(signal) });
      runtime.main.signal(signal);
      const gone = await Promise.race([exited.then(() => true), sleep(timeout < 0 ? 2 ** 31 - 1 : timeout * 1000).then(() => false)]);
      if (gone) return;
    }
    this.publish(record, 'kill', { signal: '9' });
    await runtime.sandbox.kill();
    await exited;
  }

  async kill(idOrName: string, signalName?: string): Promise<void> {
    const record = this.get(idOrName);
    const signal = signalNumber(signalName, 9);
    const runtime = this.runtimes.get(record.Id);
    if (!runtime || !record.State.Running) {
      throw conflict(`Cannot kill container: ${idOrName}: Container ${record.Id} is not running`);
    }
    this.publish(record, 'kill', { signal: String(signal) });
    if (signal === 9) {
      const exited = this.nextExit(record.Id);
      await runtime.sandbox.kill();
      await exited;
    } else runtime.main.signal(signal);
  }

  private async killRuntime(record: ContainerRecord, signal: number): Promise<void> {
    const runtime = this.runtimes.get(record.Id);
    if (!runtime) return;
    runtime.stopping = true;
    this.publish(record, 'kill', { signal: String(signal) });
    const exited = this.nextExit(record.Id);
    await runtime.sandbox.kill();
    await exited;
  }

  async restart(idOrName: string, opts: { timeoutSeconds?: number; signal?: string } = {}): Promise<void> {
    const record = this.get(idOrName);
    await this.withLock(record.Id, async () => {
      const runtime = this.runtimes.get(record.Id);
      if (runtime && record.State.Running) await this.stopRuntime(record, runtime, opts);
      await this.startLocked(record);
    });
    this.publish(record, 'restart');
  }

  async pause(idOrName: string): Promise<void> {
    const { record, runtime } = this.requireRunning(idOrName);
    if (record.State.Paused) throw conflict(`Container ${record.Id} is already paused`);
    await runtime.sandbox.vm.pause();
    record.State.Paused = true;
    record.State.Status = 'paused';
    await this.persist(record);
    this.publish(record, 'pause');
  }

  async unpause(idOrName: string): Promise<void> {
    const record = this.get(idOrName);
    const runtime = this.runtimes.get(record.Id);
    if (!runtime || !record.State.Paused) throw conflict(`Container ${record.Id} is not paused`);
    await runtime.sandbox.vm.resume();
    record.State.Paused = false;
    record.State.Status = 'running';
    await this.persist(record);
    this.publish(record, 'unpause');
  }

  /** Resolves with the exit code once `condition` holds. */
  wait(idOrName: string, condition: WaitCondition = 'not-running'): { ready: Promise<void>; result: Promise<WaitResult> } {
    const record = this.get(idOrName);
    if (!['not-running', 'next-exit', 'removed'].includes(condition)) {
      throw invalid(`invalid condition: "${condition}"`);
    }
    const id = record.Id;
    const result = new Promise<WaitResult>((resolve) => {
      if (condition === 'not-running' && !record.State.Running && !record.State.Restarting) {
        resolve({ StatusCode: record.State.ExitCode, Error: null });
        return;
      }
      if (condition === 'removed') {
        this.lifecycle.once(`removed:${id}`, () => resolve({ StatusCode: record.State.ExitCode, Error: null }));
        return;
      }
      this.lifecycle.once(`exit:${id}`, (code: number) => resolve({ StatusCode: code, Error: null }));
    });
    return { ready: Promise.resolve(), result };
  }

  async resize(idOrName: string, rows: number, cols: number): Promise<void> {
    const { record, runtime } = this.requireRunning(idOrName);
    if (!record.Config.Tty) return; // dockerd ignores resizes of non-TTY containers
    runtime.main.resize(rows, cols);
    this.publish(record, 'resize', { height: String(rows), width: String(cols) });
  }

  // ---------------------------------------------------------------- attach / logs

  /**
   * Attaches a client. Works before start (docker run attaches first); resolves when the
   * attachment ends: the container exits or the client goes away.
   */
  attach(idOrName: string, sinks: AttachSinks): Promise<void> {
    const record = this.get(idOrName);
    return new Promise<void>((resolve) => {
      let finished = false;
      const attachment: Attachment = {
        ...sinks,
        done: () => {
          if (finished) return;
          finished = true;
          this.attachments.get(record.Id)?.delete(attachment);
          resolve();
        },
      };
      if (!this.attachments.has(record.Id)) this.attachments.set(record.Id, new Set());
      this.attachments.get(record.Id)!.add(attachment);
      const runtime = this.runtimes.get(record.Id);
      if (runtime) this.connectStdin(record, runtime, attachment);
      else if (!record.State.Restarting && record.State.Status !== 'created') {
        // Attaching to a stopped container returns at once, as with dockerd.
        attachment.done();
      }
      this.publish(record, 'attach');
    });
  }

  /** Detaches a client's attachment without touching the container. */
  detachAll(idOrName: string, sinks: AttachSinks): void {
    const record = this.find(idOrName);
    if (!record) return;
    for (const a of this.attachments.get(record.Id) ?? []) if (a.stdin === sinks.stdin && a.stdout === sinks.stdout) a.done();
  }

  async logs(
    idOrName: string,
    q: LogQuery & { follow: boolean },
    onEntry: (e: LogEntry) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const record = this.get(idOrName);
    const file = this.logPath(record.Id);
    const runtime = this.runtimes.get(record.Id);
    const live: Array<[LogEntry, number]> = [];
    const onLive = (e: LogEntry, at: number) => live.push([e, at]);
    const writer = q.follow ? runtime?.log : undefined;
    writer?.on('entry', onLive);
    const upTo = writer ? writer.offset : Infinity;
    try {
      for (const e of await readLogEntries(file, q, upTo)) onEntry(e);
      if (!writer || signal.aborted) return;
      writer.off('entry', onLive);
      for (const [e, at] of live) if (at >= upTo && matches(e, { ...q, tail: undefined })) onEntry(e);
      const forward = (e: LogEntry) => {
        if (matches(e, { ...q, tail: undefined })) onEntry(e);
      };
      writer.on('entry', forward);
      await new Promise<void>((resolve) => {
        const done = () => {
          writer.off('entry', forward);
          resolve();
        };
        this.lifecycle.once(`exit:${record.Id}`, done);
        signal.addEventListener('abort', () => {
          this.lifecycle.off(`exit:${record.Id}`, done);
          done();
        });
      });
    } finally {
      writer?.off('entry', onLive);
    }
  }

  // ---------------------------------------------------------------- daemon lifecycle

  /** Stops every VM (the daemon is going away); containers are recorded as exited. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    await Promise.all(
      [...this.runtimes.keys()].map(async (id) => {
        const record = this.records.get(id);
        const runtime = this.runtimes.get(id);
        if (!record || !runtime) return;
        await this.stopRuntime(record, runtime, { timeoutSeconds: 2 }).catch(() => undefined);
      }),
    );
  }

  private async load(): Promise<void> {
    await fs.mkdir(this.opts.root, { recursive: true });
    await this.store.sweep();
    const toRestart: ContainerRecord[] = [];
    for (const id of await this.store.ids()) {
      const record = await this.store.read(id).catch(() => undefined);
      if (!record) continue;
      this.records.set(id, record);
      if (record.State.Running || record.State.Restarting) {
        // Its VM died with the previous daemon (QEMU runs with a parent-death signal), and its
        // addresses and published ports with it.
        record.State = exitedState(record.State, 137);
        clearRuntimeNetworking(record);
        await this.persist(record);
        toRestart.push(record);
      } else if (record.State.Status === 'exited' && ['always', 'unless-stopped'].includes(record.HostConfig.RestartPolicy?.Name ?? '')) {
        if (!record.ManuallyStopped) toRestart.push(record);
      }
      await this.unmountRootfs(id).catch(() => undefined);
    }
    for (const record of toRestart) {
      const policy = record.HostConfig.RestartPolicy?.Name;
      if (policy === 'always' || (policy === 'unless-stopped' && !record.ManuallyStopped)) {
        this.start(record.Id).catch((err) => log.warn('restart on daemon start failed', { id: record.Id, error: String(err) }));
      }
    }
  }

  // ---------------------------------------------------------------- helpers

  async persist(record: ContainerRecord): Promise<void> {
    await this.creating.get(record.Id);
    if (!this.records.has(record.Id)) return;
    await this.store.write(record.Id, record).catch((err: NodeJS.ErrnoException) => {
      // Removed while this write was under way (rm racing update/rename): as if it came after.
      if (err.code === 'ENOENT' && !this.records.has(record.Id)) return;
      throw err;
    });
  }

  /** The container's rootfs on the host, mounted on demand (docker cp, export, diff). */
  async mountedRootfs(record: ContainerRecord): Promise<{ merged: string; upper: string }> {
    try {
      return await mountOverlayRootfs(path.join(this.containerDir(record.Id), 'rootfs'), await this.lowerDirs(record));
    } catch (err) {
      // Removed while cp/export/diff was on its way (its directory is gone): say so, not a 500.
      if (!this.records.has(record.Id)) throw notFound(`No such container: ${record.Id}`);
      throw err;
    }
  }

  /** What `docker commit` needs: the writable layer, the config, and a way to pause meanwhile. */
  async commitInfo(idOrName: string) {
    const record = this.get(idOrName);
    const { Hostname: _h, Domainname: _d, AttachStdin: _ai, AttachStdout: _ao, AttachStderr: _ae, Tty: _t, OpenStdin: _o, StdinOnce: _s, Image: _i, ...config } =
      record.Config;
    return {
      id: record.Id,
      name: record.Name,
      imageId: record.Image,
      upperDir: this.upperDir(record),
      config,
      labels: record.Config.Labels ?? {},
      pause: async () => {
        const runtime = this.runtimes.get(record.Id);
        if (!runtime || record.State.Paused) return async () => undefined;
        // Freeze the VM so the layer is read at one instant, as dockerd freezes the cgroup.
        await runtime.sandbox.vm.pause();
        return async () => {
          if (this.runtimes.get(record.Id) === runtime && !record.State.Paused) await runtime.sandbox.vm.resume();
        };
      },
    };
  }

  /** `SizeRw` (the writable layer) and `SizeRootFs` (with the image), for `docker ps -s`. */
  async sizes(record: ContainerRecord): Promise<{ SizeRw: number; SizeRootFs: number }> {
    const [rw, image] = await Promise.all([diskUsage(this.upperDir(record)), this.opts.images.resolve(record.Image).catch(() => undefined)]);
    return { SizeRw: rw, SizeRootFs: rw + (image?.size ?? 0) };
  }

  upperDir(record: ContainerRecord): string {
    return path.join(this.containerDir(record.Id), 'rootfs', 'upper');
  }

  /** Everything the host mounted for a run of the container: its overlay and its staged mounts. */
  private async unmountRootfs(id: string, lazy = false): Promise<void> {
    await releaseStagedMounts(this.mountStagingDir(id));
    await unmountOverlay(path.join(this.containerDir(id), 'rootfs', 'merged'), lazy);
  }

  /** Outside the container's own directory, which is deleted recursively on rm. */
  private mountStagingDir(id: string): string {
    return path.join(path.dirname(this.opts.root), 'mounts', id);
  }

  /** Settles when the container's current run has ended (and its state is recorded). */
  private nextExit(id: string): Promise<void> {
    return new Promise((resolve) => this.lifecycle.once(`exit:${id}`, () => resolve()));
  }

  private assertNameFree(name: string): void {
    const holder = [...this.records.values()].find((r) => r.Name === `/${name}`);
    if (holder) {
      throw conflict(
        `Conflict. The container name "/${name}" is already in use by container "${holder.Id}". You have to remove (or rename) that container to be able to reuse that name.`,
      );
    }
  }

  publish(record: ContainerRecord, action: string, extra: Record<string, string> = {}): void {
    this.opts.events.publish('container', action, record.Id, {
      ...(record.Config.Labels ?? {}),
      image: record.Config.Image ?? record.Image,
      name: record.Name.replace(/^\//, ''),
      ...extra,
    });
  }

  private async withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    this.locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id);
    }
  }
}

/**
 * A new (empty) volume mounted over a directory of the image starts with that directory's
 * content, as dockerd does; the path is resolved inside the container's root.
 */
async function copyUpIfEmpty(mergedRoot: string, destination: string, volumeDir: string): Promise<void> {
  if ((await fs.readdir(volumeDir).catch(() => ['?'])).length > 0) return;
  const source = await resolveInRoot(mergedRoot, destination);
  const st = await fs.stat(source).catch(() => undefined);
  if (!st?.isDirectory()) return;
  await fs.cp(source, volumeDir, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
}

function exitedState(state: ContainerRecord['State'], exitCode: number): ContainerRecord['State'] {
  return { ...state, Status: 'exited', Running: false, Paused: false, Restarting: false, Pid: 0, ExitCode: exitCode, FinishedAt: new Date().toISOString() };
}

/** `--cpus` / `--cpu-quota` as a CFS quota for the VMM's cgroup (100 ms periods, as Docker's). */
function cpuLimits(hc: HostConfig): { cpuQuotaUs: number; cpuPeriodUs: number } | undefined {
  const period = 100_000;
  if (hc.NanoCpus) return { cpuQuotaUs: Math.max(1000, Math.round((hc.NanoCpus * period) / 1e9)), cpuPeriodUs: period };
  if (hc.CpuQuota && hc.CpuQuota > 0) return { cpuQuotaUs: hc.CpuQuota, cpuPeriodUs: hc.CpuPeriod || period };
  return undefined;
}

/** dockerd's wording for a command that cannot be run, so the CLI maps it to 126/127. */
function execError(err: unknown, command: string): Error {
  if (err instanceof AgentRequestError) {
    const prefix = 'failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process:';
    if (err.errno === 2) {
      return new PaddockError('invalid', `${prefix} exec: "${command}": executable file not found in $PATH: unknown`);
    }
    if (err.errno === 13) {
      return new PaddockError('invalid', `${prefix} exec: "${command}": permission denied: unknown`);
    }
    return new PaddockError('internal', `${prefix} ${err.message}: unknown`);
  }
  return err instanceof Error ? err : unavailable(String(err));
}

/**
 * resolv.conf as dockerd writes it for user-defined networks: the embedded resolver at
 * 127.0.0.11, which in Paddock answers for every networked container (the agent relays it to
 * the daemon, which forwards other names to --dns or the host's resolvers). Without a network,
 * the host's servers as Docker copies them.
 */
async function resolvConf(hc: HostConfig, networked: boolean): Promise<string> {
  const lines: string[] = [];
  let hostConf = '';
  try {
    hostConf = await fs.readFile('/etc/resolv.conf', 'utf8');
  } catch {
    // no host resolver configuration
  }
  const servers = networked
    ? ['127.0.0.11']
    : hc.Dns?.length
      ? hc.Dns
      : hostConf
          .split('\n')
          .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
          .filter((s): s is string => Boolean(s) && !s!.startsWith('127.') && s !== '::1');
  for (const s of servers) lines.push(`nameserver ${s}`);
  const search = hc.DnsSearch?.length ? hc.DnsSearch : hostConf.split('\n').find((l) => l.startsWith('search '))?.slice(7).trim().split(/\s+/);
  if (search?.length) lines.push(`search ${search.join(' ')}`);
  const options = [...(networked ? ['ndots:0'] : []), ...(hc.DnsOptions ?? [])];
  if (options.length) lines.push(`options ${options.join(' ')}`);
  return lines.join('\n') + '\n';
}

function ended(stream: Readable): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
}

function durationSeconds(r: ContainerRecord): number {
  return Math.max(0, Math.round((Date.parse(r.State.FinishedAt) - Date.parse(r.State.StartedAt)) / 1000));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
