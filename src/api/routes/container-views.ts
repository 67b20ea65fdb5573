/**
 * Docker's wire shapes for containers: `GET /containers/{id}/json` and the list entries of
 * `GET /containers/json`, plus the list filters. Pure functions over stored records.
 */
import path from 'node:path';
import type { ContainerService } from '../../engine/containers/container-service';
import { mountsView } from '../../engine/containers/mounts';
import { emptyEndpoint, networkMode } from '../../engine/containers/container-networking';
import type { ContainerRecord } from '../../engine/containers/types';
import { invalid } from '../../errors';

function networkSettings(record: ContainerRecord) {
  const mode = networkMode(record.HostConfig);
  // Records written before Paddock had networks carry none: show the mode's endpoint, empty.
  const networks = record.NetworkSettings?.Networks ?? { [mode]: emptyEndpoint('') };
  const primary = networks[mode] ?? Object.values(networks)[0];
  // dockerd fills the top-level address fields for the default bridge only (deprecated there).
  const top = mode === 'bridge' && primary ? primary : undefined;
  return {
    Bridge: '',
    SandboxID: record.State.Running ? record.Id : '',
    SandboxKey: '',
    Ports: record.NetworkSettings?.Ports ?? {},
    HairpinMode: false,
    LinkLocalIPv6Address: '',
    LinkLocalIPv6PrefixLen: 0,
    SecondaryIPAddresses: null,
    SecondaryIPv6Addresses: null,
    EndpointID: top?.EndpointID ?? '',
    Gateway: top?.Gateway ?? '',
    GlobalIPv6Address: '',
    GlobalIPv6PrefixLen: 0,
    IPAddress: top?.IPAddress ?? '',
    IPPrefixLen: top?.IPPrefixLen ?? 0,
    IPv6Gateway: '',
    MacAddress: top?.MacAddress ?? '',
    Networks: networks,
  };
}

/** `docker ps` PORTS: published bindings, and exposed ports without one. */
function listPorts(record: ContainerRecord): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const [key, bindings] of Object.entries(record.NetworkSettings?.Ports ?? {})) {
    const [port, proto] = key.split('/');
    if (!bindings?.length) out.push({ PrivatePort: Number(port), Type: proto });
    for (const b of bindings ?? []) out.push({ IP: b.HostIp, PrivatePort: Number(port), PublicPort: Number(b.HostPort), Type: proto });
  }
  return out;
}

export function inspectView(svc: ContainerService, record: ContainerRecord): Record<string, unknown> {
  const dir = svc.containerDir(record.Id);
  const rootfs = path.join(dir, 'rootfs');
  return {
    Id: record.Id,
    Created: record.Created,
    Path: record.Path,
    Args: record.Args,
    State: record.State,
    Image: record.Image,
    ResolvConfPath: path.join(dir, 'etc', 'resolv.conf'),
    HostnamePath: path.join(dir, 'etc', 'hostname'),
    HostsPath: path.join(dir, 'etc', 'hosts'),
    LogPath: svc.logPath(record.Id),
    Name: record.Name,
    RestartCount: record.RestartCount,
    Driver: 'overlay2',
    Platform: 'linux',
    MountLabel: '',
    ProcessLabel: '',
    AppArmorProfile: '',
    ExecIDs: null,
    HostConfig: record.HostConfig,
    GraphDriver: {
      Data: {
        MergedDir: path.join(rootfs, 'merged'),
        UpperDir: path.join(rootfs, 'upper'),
        WorkDir: path.join(rootfs, 'work'),
      },
      Name: 'overlay2',
    },
    Mounts: mountsView(record.MountPoints),
    Config: record.Config,
    NetworkSettings: networkSettings(record),
  };
}

export function listView(record: ContainerRecord): Record<string, unknown> {
  return {
    Id: record.Id,
    Names: [record.Name],
    Image: record.Config.Image ?? record.Image,
    ImageID: record.Image,
    // dockerd quotes the arguments that contain a space, and only those.
    Command: [record.Path, ...record.Args.map((a) => (a.includes(' ') ? `'${a}'` : a))].join(' '),
    Created: Math.floor(Date.parse(record.Created) / 1000),
    Ports: listPorts(record),
    Labels: record.Config.Labels ?? {},
    State: record.State.Status,
    Status: statusText(record),
    HostConfig: { NetworkMode: record.HostConfig.NetworkMode || 'default' },
    NetworkSettings: { Networks: networkSettings(record).Networks },
    Mounts: mountsView(record.MountPoints),
  };
}

export function statusText(r: ContainerRecord, now = Date.now()): string {
  const s = r.State;
  if (s.Restarting) return `Restarting (${s.ExitCode}) ${humanDuration(now - Date.parse(s.FinishedAt))} ago`;
  if (s.Running) {
    const health = s.Health && s.Health.Status !== 'none' ? ` (${s.Health.Status === 'starting' ? 'health: starting' : s.Health.Status})` : '';
    return `Up ${humanDuration(now - Date.parse(s.StartedAt))}${s.Paused ? ' (Paused)' : health}`;
  }
  if (s.Status === 'created') return 'Created';
  if (s.Status === 'dead') return 'Dead';
  return `Exited (${s.ExitCode}) ${humanDuration(now - Date.parse(s.FinishedAt))} ago`;
}

/** Go's units.HumanDuration, which the docker CLI shows in `ps`. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.floor(seconds / 60);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(minutes / 60);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  // go-units counts years from the truncated (not rounded) hours.
  return `${Math.floor(Math.floor(ms / 3.6e6) / 24 / 365)} years`;
}

const LIST_FILTERS = ['id', 'name', 'label', 'status', 'exited', 'ancestor', 'before', 'since', 'health', 'network', 'volume', 'is-task', 'publish', 'expose'];
const STATUSES = ['created', 'restarting', 'running', 'removing', 'paused', 'exited', 'dead'];

export function filterContainers(
  svc: ContainerService,
  records: ContainerRecord[],
  filters: Record<string, string[]>,
  all: boolean,
): ContainerRecord[] {
  for (const key of Object.keys(filters)) if (!LIST_FILTERS.includes(key)) throw invalid(`invalid filter '${key}'`);
  for (const st of filters.status ?? []) {
    if (!STATUSES.includes(st)) throw invalid(`invalid filter 'status=${st}'`);
  }
  const ref = (k: string) => (filters[k]?.length ? svc.get(filters[k][0]) : undefined);
  const before = ref('before');
  const since = ref('since');
  const showAll = all || Boolean(filters.status || filters.exited || before || since);
  const exitCodes = (filters.exited ?? []).map((v) => {
    if (!/^-?\d+$/.test(v)) throw invalid(`strconv.Atoi: parsing "${v}": invalid syntax`);
    return Number(v);
  });
  return records.filter((r) => {
    if (!showAll && !r.State.Running) return false;
    const f = filters;
    if (f.id && !f.id.some((id) => r.Id.startsWith(id))) return false;
    if (f.name && !f.name.some((n) => new RegExp(n).test(r.Name.slice(1)) || new RegExp(n).test(r.Name))) return false;
    if (f.status && !f.status.includes(r.State.Paused ? 'paused' : r.State.Status)) return false;
    if (f.exited && (r.State.Running || !exitCodes.includes(r.State.ExitCode) || r.State.Status === 'created')) return false;
    if (f.label) {
      const labels = r.Config.Labels ?? {};
      const ok = f.label.every((l) => {
        const eq = l.indexOf('=');
        return eq < 0 ? l in labels : labels[l.slice(0, eq)] === l.slice(eq + 1);
      });
      if (!ok) return false;
    }
    if (f.ancestor && !f.ancestor.some((a) => withTag(a) === withTag(r.Config.Image ?? '') || a === r.Image || r.Image.startsWith(`sha256:${a}`) || r.Image.startsWith(a))) return false;
    if (f.health && !f.health.includes(r.State.Health?.Status ?? 'none')) return false;
    if (f.network) {
      const nets = Object.entries(r.NetworkSettings?.Networks ?? { [networkMode(r.HostConfig)]: { NetworkID: '' } });
      if (!f.network.some((want) => nets.some(([name, s]) => name === want || (s.NetworkID && s.NetworkID.startsWith(want))))) return false;
    }
    if (before && r.Created >= before.Created) return false;
    if (since && r.Created <= since.Created) return false;
    return true;
  });
}

/** "busybox" and "busybox:latest" name the same image; a digest reference stays as it is. */
function withTag(ref: string): string {
  if (!ref || ref.includes('@')) return ref;
  const lastPart = ref.slice(ref.lastIndexOf('/') + 1);
  return lastPart.includes(':') ? ref : `${ref}:latest`;
}
