/**
 * Turns `-v`, `--mount`, `--tmpfs`, `--volumes-from` and image VOLUMEs into the container's mount
 * points, as dockerd does: an absolute source is a bind mount, a name is a named volume
 * (created if missing), a bare destination is an anonymous volume; later sources win per path.
 */
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { invalid } from '../../errors';
import type { VolumeService } from '../volumes/volume-service';
import type { ContainerRecord, CreateContainerRequest, MountPoint } from './types';

interface MountRequest {
  Type?: string;
  Source?: string;
  Target?: string;
  ReadOnly?: boolean;
  TmpfsOptions?: { SizeBytes?: number; Mode?: number };
}

export async function resolveMounts(
  req: CreateContainerRequest,
  imageVolumes: Record<string, object> | null | undefined,
  volumes: VolumeService,
  otherContainer: (ref: string) => ContainerRecord,
): Promise<MountPoint[]> {
  const hc = req.HostConfig ?? {};
  const byDest = new Map<string, MountPoint>();
  const checkDestination = (dest: string) => {
    if (!path.posix.isAbsolute(dest)) throw invalid(`invalid mount config: mount path must be absolute: ${dest}`);
    if (dest === '/') throw invalid('invalid specification: destination can\'t be \'/\'');
  };
  const add = (m: MountPoint) => {
    checkDestination(m.Destination);
    byDest.set(path.posix.normalize(m.Destination), m);
  };
  const volumeMount = async (name: string | undefined, dest: string, rw: boolean, anonymous: boolean): Promise<MountPoint> => {
    const v = await volumes.create(name ? { Name: name } : {}, anonymous);
    return { Type: 'volume', Name: v.Name, Source: v.Mountpoint, Destination: dest, Driver: 'local', Mode: rw ? 'z' : 'ro', RW: rw, Propagation: '' };
  };

  for (const from of hc.VolumesFrom ?? []) {
    const [ref, mode] = from.split(':');
    const other = otherContainer(ref);
    for (const m of other.MountPoints ?? []) add({ ...m, RW: mode === 'ro' ? false : m.RW });
  }
  // Anonymous volumes: the image's VOLUMEs and the request's Config.Volumes.
  for (const dest of Object.keys({ ...(imageVolumes ?? {}), ...(req.Volumes ?? {}) })) {
    if (!byDest.has(dest)) add(await volumeMount(undefined, dest, true, true));
  }
  for (const bind of hc.Binds ?? []) {
    const parts = bind.split(':');
    if (parts.length < 2 || parts.length > 3) throw invalid(`invalid volume specification: '${bind}'`);
    const [source, dest, opts = ''] = parts;
    const options = opts.split(',').filter(Boolean);
    const rw = !options.includes('ro');
    checkDestination(dest); // before anything is created on the host
    if (path.posix.isAbsolute(source)) {
      // As dockerd does for -v: a missing host directory is created.
      if (!existsSync(source)) await fs.mkdir(source, { recursive: true });
      add({ Type: 'bind', Source: source, Destination: dest, Mode: opts, RW: rw, Propagation: 'rprivate' });
    } else add(await volumeMount(source, dest, rw, false));
  }
  for (const raw of (hc.Mounts ?? []) as MountRequest[]) {
    const dest = raw.Target ?? '';
    if (raw.Type === 'bind') {
      if (!raw.Source || !existsSync(raw.Source)) throw invalid(`invalid mount config for type "bind": bind source path does not exist: ${raw.Source}`);
      add({ Type: 'bind', Source: raw.Source, Destination: dest, Mode: '', RW: !raw.ReadOnly, Propagation: 'rprivate' });
    } else if (raw.Type === 'volume') {
      add(await volumeMount(raw.Source || undefined, dest, !raw.ReadOnly, !raw.Source));
    } else if (raw.Type === 'tmpfs') {
      const o = raw.TmpfsOptions ?? {};
      const opts = [o.SizeBytes ? `size=${o.SizeBytes}` : '', o.Mode ? `mode=${o.Mode.toString(8)}` : ''].filter(Boolean).join(',');
      add({ Type: 'tmpfs', Source: '', Destination: dest, Mode: '', RW: !raw.ReadOnly, Propagation: '', TmpfsOptions: opts });
    } else throw invalid(`invalid mount config: mount type unknown: "${raw.Type}"`);
  }
  for (const [dest, opts] of Object.entries(hc.Tmpfs ?? {})) {
    add({ Type: 'tmpfs', Source: '', Destination: dest, Mode: '', RW: !opts.split(',').includes('ro'), Propagation: '', TmpfsOptions: opts });
  }
  return [...byDest.values()];
}

/** inspect's `Mounts`. */
export function mountsView(points: MountPoint[] | undefined): Array<Record<string, unknown>> {
  return (points ?? []).map((m) => ({
    Type: m.Type,
    ...(m.Name ? { Name: m.Name } : {}),
    Source: m.Source,
    Destination: m.Destination,
    ...(m.Driver ? { Driver: m.Driver } : {}),
    Mode: m.Mode,
    RW: m.RW,
    Propagation: m.Propagation,
  }));
}
