/**
 * Named volumes with the `local` driver: a directory per volume under the data root
 * (`<root>/<name>/_data`), metadata written atomically beside it. Containers mount them (and
 * host bind mounts) into their VM as extra shared directories.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ObjectDirectory } from '../../drivers/storage/state-store';
import { conflict, invalid, notFound } from '../../errors';
import type { EventBus } from '../events';

export interface VolumeRecord {
  Name: string;
  Driver: 'local';
  Mountpoint: string;
  CreatedAt: string;
  Labels: Record<string, string>;
  Scope: 'local';
  Options: Record<string, string> | null;
  /** Created for an anonymous `-v /path` or an image VOLUME (removed by `rm -v`, pruned by default). */
  Anonymous?: boolean;
}

export interface CreateVolumeRequest {
  Name?: string;
  Driver?: string;
  DriverOpts?: Record<string, string> | null;
  Labels?: Record<string, string> | null;
}

const VALID_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

export class VolumeService {
  private readonly store: ObjectDirectory<VolumeRecord>;
  private readonly volumes = new Map<string, VolumeRecord>();
  private usage: (name: string) => string[] = () => [];

  private constructor(
    private readonly root: string,
    private readonly events: EventBus,
  ) {
    this.store = new ObjectDirectory<VolumeRecord>(root, 'volume.json');
  }

  private readonly creating = new Map<string, Promise<VolumeRecord>>();

  static async open(opts: { root: string; events: EventBus }): Promise<VolumeService> {
    const svc = new VolumeService(opts.root, opts.events);
    await fs.mkdir(opts.root, { recursive: true });
    await svc.store.sweep();
    for (const name of await svc.store.ids()) {
      const v = await svc.store.read(name).catch(() => undefined);
      if (v) svc.volumes.set(name, v);
    }
    return svc;
  }

  /** Which containers (IDs) use a volume: for in-use refusals. */
  setUsageProbe(probe: (name: string) => string[]): void {
    this.usage = probe;
  }

  async create(req: CreateVolumeRequest = {}, anonymous = false): Promise<VolumeRecord> {
    if (req.Driver && req.Driver !== 'local') throw notFound(`plugin "${req.Driver}" not found`);
    const name = req.Name || randomBytes(32).toString('hex');
    // The name becomes a directory (plus temp affixes while created): keep it under NAME_MAX.
    if (name.length > 200) throw invalid(`create ${name.slice(0, 40)}...: volume name is longer than 200 characters`);
    if (!VALID_NAME.test(name)) {
      throw invalid(`create ${name}: "${name}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`);
    }
    const existing = this.volumes.get(name);
    if (existing) return existing; // dockerd: creating an existing volume returns it
    // Two creates of one name at once: the second gets the first's volume, not a rename error.
    const pending = this.creating.get(name);
    if (pending) return pending;
    const created = this.createNew(name, req, anonymous).finally(() => this.creating.delete(name));
    this.creating.set(name, created);
    return created;
  }

  private async createNew(name: string, req: CreateVolumeRequest, anonymous: boolean): Promise<VolumeRecord> {
    const record: VolumeRecord = {
      Name: name,
      Driver: 'local',
      Mountpoint: path.join(this.store.dirOf(name), '_data'),
      CreatedAt: new Date().toISOString(),
      Labels: req.Labels ?? {},
      Scope: 'local',
      Options: req.DriverOpts && Object.keys(req.DriverOpts).length ? req.DriverOpts : null,
      ...(anonymous ? { Anonymous: true } : {}),
    };
    const dir = await this.store.create(name, record);
    await fs.mkdir(path.join(dir, '_data'), { recursive: true, mode: 0o755 });
    this.volumes.set(name, record);
    this.events.publish('volume', 'create', name, { driver: 'local' });
    return record;
  }

  get(name: string): VolumeRecord {
    const v = this.volumes.get(name);
    if (!v) throw notFound(`get ${name}: no such volume`);
    return v;
  }

  find(name: string): VolumeRecord | undefined {
    return this.volumes.get(name);
  }

  list(filters: Record<string, string[]> = {}): VolumeRecord[] {
    for (const k of Object.keys(filters)) {
      if (!['name', 'label', 'dangling', 'driver'].includes(k)) throw invalid(`invalid filter '${k}'`);
    }
    return [...this.volumes.values()].filter((v) => {
      if (filters.name && !filters.name.some((n) => v.Name.includes(n))) return false;
      if (filters.driver && !filters.driver.includes(v.Driver)) return false;
      if (filters.label && !filters.label.every((l) => (l.includes('=') ? v.Labels[l.slice(0, l.indexOf('='))] === l.slice(l.indexOf('=') + 1) : l in v.Labels))) return false;
      if (filters.dangling) {
        const dangling = this.usage(v.Name).length === 0;
        if (!filters.dangling.some((d) => ['1', 'true'].includes(d) === dangling)) return false;
      }
      return true;
    });
  }

  async remove(name: string, force = false): Promise<void> {
    const v = this.volumes.get(name);
    if (!v) {
      if (force) return;
      throw notFound(`get ${name}: no such volume`);
    }
    const users = this.usage(name);
    if (users.length) throw conflict(`remove ${name}: volume is in use - [${users.join(', ')}]`);
    this.volumes.delete(name);
    await this.store.remove(name);
    this.events.publish('volume', 'destroy', name, { driver: 'local' });
  }

  /** Removes unused volumes: anonymous ones only unless `all=true` (dockerd 23+). */
  async prune(filters: Record<string, string[]> = {}): Promise<{ VolumesDeleted: string[]; SpaceReclaimed: number }> {
    const all = (filters.all ?? []).some((a) => ['1', 'true'].includes(a));
    const deleted: string[] = [];
    for (const v of [...this.volumes.values()]) {
      if (!all && !v.Anonymous) continue;
      if (this.usage(v.Name).length) continue;
      if (filters.label && !filters.label.every((l) => l in v.Labels || v.Labels[l.split('=')[0]] === l.split('=')[1])) continue;
      await this.remove(v.Name).catch(() => undefined);
      if (!this.volumes.has(v.Name)) deleted.push(v.Name);
    }
    return { VolumesDeleted: deleted, SpaceReclaimed: 0 };
  }

  count(): number {
    return this.volumes.size;
  }
}
