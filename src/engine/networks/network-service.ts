/**
 * Docker networks: the predefined `bridge`, `host` and `none`, and user-defined bridge networks
 * with their IPAM, persisted like every other object. While containers run, their endpoints
 * (address, MAC, VLAN on the VM's trunk NIC, aliases) live here too: they answer the
 * containers' DNS questions and fill `docker network inspect`.
 *
 * The frames themselves are the network fabric's business (src/drivers/network); this service
 * only tells it which networks exist and which VM VLAN belongs to which.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { hostResolvers } from '../../drivers/network/dns-responder';
import type { NetworkFabric } from '../../drivers/network/fabric';
import { ObjectDirectory } from '../../drivers/storage/state-store';
import { conflict, invalid, notFound, PaddockError } from '../../errors';
import { logger } from '../../util/log';
import type { EventBus } from '../events';
import { allocate, contains, defaultPools, firstHost, formatCidr, intToIp, ipToInt, macForIp, overlaps, parseCidr, type Cidr } from './ipam';

const log = logger('networks');

export interface IpamConfig {
  Subnet: string;
  IPRange?: string;
  Gateway?: string;
}

export interface NetworkRecord {
  Name: string;
  Id: string;
  Created: string;
  Scope: 'local';
  Driver: 'bridge' | 'host' | 'null';
  EnableIPv4: boolean;
  EnableIPv6: boolean;
  IPAM: { Driver: 'default'; Options: Record<string, string> | null; Config: IpamConfig[] };
  Internal: boolean;
  Attachable: boolean;
  Ingress: boolean;
  ConfigFrom: { Network: string };
  ConfigOnly: boolean;
  Options: Record<string, string>;
  Labels: Record<string, string>;
}

/** A container's settings on one network, in inspect's `NetworkSettings.Networks` shape. */
export interface EndpointSettings {
  IPAMConfig: { IPv4Address?: string; IPv6Address?: string } | null;
  Links: string[] | null;
  Aliases: string[] | null;
  MacAddress: string;
  DriverOpts: Record<string, string> | null;
  NetworkID: string;
  EndpointID: string;
  Gateway: string;
  IPAddress: string;
  IPPrefixLen: number;
  IPv6Gateway: string;
  GlobalIPv6Address: string;
  GlobalIPv6PrefixLen: number;
  DNSNames: string[] | null;
}

export interface CreateNetworkRequest {
  Name?: string;
  Driver?: string;
  Internal?: boolean;
  Attachable?: boolean;
  Ingress?: boolean;
  EnableIPv6?: boolean;
  IPAM?: { Driver?: string; Config?: IpamConfig[] | null; Options?: Record<string, string> | null } | null;
  Options?: Record<string, string> | null;
  Labels?: Record<string, string> | null;
  CheckDuplicate?: boolean;
  ConfigOnly?: boolean;
  ConfigFrom?: unknown;
  Scope?: string;
}

/** A running container's presence on a network. */
export interface LiveEndpoint {
  containerId: string;
  /** Container name without the leading slash. */
  containerName: string;
  networkId: string;
  endpointId: string;
  ip: number;
  mac: string;
  vlan: number;
  ifname: string;
  /** Names other containers on the network resolve to this one. */
  dnsNames: string[];
  /** This container's own names for others (`--link target:alias` on a user network). */
  links: Array<{ target: string; alias: string }>;
}

const PREDEFINED = ['bridge', 'host', 'none'];
const DEFAULT_BRIDGE_OPTIONS = {
  'com.docker.network.bridge.default_bridge': 'true',
  'com.docker.network.bridge.enable_icc': 'true',
  'com.docker.network.bridge.enable_ip_masquerade': 'true',
  'com.docker.network.bridge.host_binding_ipv4': '0.0.0.0',
  'com.docker.network.bridge.name': 'docker0',
  'com.docker.network.driver.mtu': '1500',
};

export class NetworkService {
  private readonly store: ObjectDirectory<NetworkRecord>;
  private readonly networks = new Map<string, NetworkRecord>();
  /** networkId → containerId → endpoint. */
  private readonly live = new Map<string, Map<string, LiveEndpoint>>();

  private constructor(
    private readonly root: string,
    private readonly events: EventBus,
    readonly fabric: NetworkFabric | null,
    private readonly defaultDns: string[] | null,
  ) {
    this.store = new ObjectDirectory<NetworkRecord>(root, 'network.json');
  }

  static async open(opts: { root: string; events: EventBus; fabric: NetworkFabric | null; dns?: string[] }): Promise<NetworkService> {
    const svc = new NetworkService(opts.root, opts.events, opts.fabric, opts.dns ?? null);
    await fs.mkdir(opts.root, { recursive: true });
    await svc.store.sweep();
    for (const id of await svc.store.ids()) {
      const n = await svc.store.read(id).catch(() => undefined);
      if (n) svc.networks.set(n.Id, n);
    }
    for (const name of PREDEFINED) if (!svc.byName(name)) await svc.createPredefined(name);
    for (const n of svc.networks.values()) {
      // A service reopened over a fabric that already has its networks (an in-process restart).
      await svc.addToFabric(n).catch((err) => {
        if (!/network exists/.test(String(err))) throw err;
      });
    }
    return svc;
  }

  // ------------------------------------------------------------------ networks

  list(filters: Record<string, string[]> = {}): NetworkRecord[] {
    const out = [...this.networks.values()].filter((n) => matchesFilters(n, filters, this.live.get(n.Id)?.size ?? 0));
    return out.sort((a, b) => a.Name.localeCompare(b.Name));
  }

  /** By full ID, name, or unique ID prefix; Docker's lookup order. */
  get(ref: string): NetworkRecord {
    const n = this.find(ref);
    if (!n) throw notFound(`network ${ref} not found`);
    return n;
  }

  find(ref: string): NetworkRecord | undefined {
    if (!ref) return undefined;
    const byId = this.networks.get(ref);
    if (byId) return byId;
    const named = this.byName(ref);
    if (named) return named;
    const prefixed = [...this.networks.values()].filter((n) => n.Id.startsWith(ref));
    return prefixed.length === 1 ? prefixed[0] : undefined;
  }

  private byName(name: string): NetworkRecord | undefined {
    return [...this.networks.values()].find((n) => n.Name === name);
  }

  isPredefined(n: NetworkRecord): boolean {
    return PREDEFINED.includes(n.Name);
  }

  /** The default bridge has no name resolution (as in Docker): only links, through /etc/hosts. */
  isDefaultBridge(n: NetworkRecord): boolean {
    return n.Name === 'bridge';
  }

  inspectView(n: NetworkRecord): Record<string, unknown> {
    const containers: Record<string, unknown> = {};
    for (const ep of this.live.get(n.Id)?.values() ?? []) {
      containers[ep.containerId] = {
        Name: ep.containerName,
        EndpointID: ep.endpointId,
        MacAddress: ep.mac,
        IPv4Address: `${intToIp(ep.ip)}/${this.subnetOf(n)?.prefix ?? 16}`,
        IPv6Address: '',
      };
    }
    return { ...n, Containers: containers };
  }

  async create(body: CreateNetworkRequest): Promise<{ Id: string; Warning: string }> {
    if (!body || typeof body !== 'object') throw invalid('invalid network config');
    const name = body.Name ?? '';
    if (!name) throw invalid('network name must not be empty');
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name)) throw invalid(`invalid network name "${name}"`);
    const driver = body.Driver || 'bridge';
    if (driver === 'host' || driver === 'null') throw new PaddockError('forbidden', `only one instance of "${driver}" network is allowed`);
    if (driver !== 'bridge') throw notFound(`plugin "${driver}" not found`);
    if (this.byName(name)) throw conflict(`network with name ${name} already exists`);
    if (body.IPAM?.Driver && body.IPAM.Driver !== 'default') throw notFound(`plugin "${body.IPAM.Driver}" not found`);
    const config = this.ipamConfig(body.IPAM?.Config ?? []);
    const record: NetworkRecord = {
      Name: name,
      Id: randomBytes(32).toString('hex'),
      Created: new Date().toISOString(),
      Scope: 'local',
      Driver: 'bridge',
      EnableIPv4: true,
      EnableIPv6: Boolean(body.EnableIPv6),
      IPAM: { Driver: 'default', Options: body.IPAM?.Options ?? {}, Config: config },
      Internal: Boolean(body.Internal),
      Attachable: Boolean(body.Attachable),
      Ingress: false,
      ConfigFrom: { Network: '' },
      ConfigOnly: false,
      Options: body.Options ?? {},
      Labels: body.Labels ?? {},
    };
    await this.addToFabric(record);
    try {
      await this.store.create(record.Id, record);
    } catch (err) {
      await this.fabric?.removeNetwork(record.Id).catch(() => undefined);
      throw err;
    }
    this.networks.set(record.Id, record);
    this.events.publish('network', 'create', record.Id, { name: record.Name, type: record.Driver });
    return { Id: record.Id, Warning: '' };
  }

  async remove(ref: string): Promise<void> {
    const n = this.get(ref);
    if (this.isPredefined(n)) throw new PaddockError('forbidden', `${n.Name} is a pre-defined network and cannot be removed`);
    if (this.live.get(n.Id)?.size) {
      throw new PaddockError('forbidden', `error while removing network: network ${n.Name} id ${n.Id} has active endpoints`);
    }
    await this.store.remove(n.Id);
    this.networks.delete(n.Id);
    await this.fabric?.removeNetwork(n.Id).catch((err) => log.warn('switch: remove network', { error: String(err) }));
    this.events.publish('network', 'destroy', n.Id, { name: n.Name, type: n.Driver });
  }

  /** Removes user-defined networks no container uses (`inUse`: names/IDs containers refer to). */
  async prune(filters: Record<string, string[]>, inUse: (n: NetworkRecord) => boolean): Promise<{ NetworksDeleted: string[] }> {
    const deleted: string[] = [];
    for (const n of this.list()) {
      if (this.isPredefined(n) || this.live.get(n.Id)?.size || inUse(n)) continue;
      if (!matchesPruneFilters(n, filters)) continue;
      await this.remove(n.Id).catch(() => undefined);
      if (!this.networks.has(n.Id)) deleted.push(n.Name);
    }
    return { NetworksDeleted: deleted };
  }

  // ------------------------------------------------------------------ endpoints

  subnetOf(n: NetworkRecord): Cidr | undefined {
    const c = n.IPAM.Config[0];
    return c ? parseCidr(c.Subnet) : undefined;
  }

  gatewayOf(n: NetworkRecord): string | undefined {
    const c = n.IPAM.Config[0];
    return c ? c.Gateway ?? intToIp(firstHost(parseCidr(c.Subnet))) : undefined;
  }

  endpointsOf(containerId: string): LiveEndpoint[] {
    const out: LiveEndpoint[] = [];
    for (const eps of this.live.values()) {
      const ep = eps.get(containerId);
      if (ep) out.push(ep);
    }
    return out.sort((a, b) => a.vlan - b.vlan);
  }

  /**
   * Gives a starting (or running) container an address on a network. `taken` VLAN ids and
   * interface names are the container's other endpoints'.
   */
  allocateEndpoint(
    n: NetworkRecord,
    container: { id: string; name: string },
    settings: Pick<EndpointSettings, 'IPAMConfig' | 'Aliases' | 'Links'>,
  ): LiveEndpoint {
    const subnet = this.subnetOf(n);
    if (!subnet || n.Driver !== 'bridge') throw invalid(`network ${n.Name} has no addresses to give`);
    const eps = this.live.get(n.Id) ?? new Map<string, LiveEndpoint>();
    if (eps.has(container.id)) throw new PaddockError('forbidden', `endpoint with name ${container.name} already exists in network ${n.Name}`);
    const taken = new Set([...eps.values()].map((e) => e.ip));
    const gateway = this.gatewayOf(n);
    if (gateway) taken.add(ipToInt(gateway));
    let ip: number | null;
    const wanted = settings.IPAMConfig?.IPv4Address;
    if (wanted) {
      if (this.isDefaultBridge(n)) throw invalid('user specified IP address is supported on user defined networks only');
      ip = ipToInt(wanted);
      if (!contains(subnet, ip)) throw invalid(`no configured subnet contains IP address ${wanted}`);
      if (taken.has(ip)) throw new PaddockError('forbidden', `Address already in use`);
    } else {
      const rangeText = n.IPAM.Config[0]?.IPRange;
      ip = allocate(subnet, taken, rangeText ? parseCidr(rangeText) : subnet);
      if (ip === null) throw unavailableAddress(n);
    }
    const mine = this.endpointsOf(container.id);
    let vlan = 1;
    while (mine.some((e) => e.vlan === vlan)) vlan++;
    let index = 0;
    while (mine.some((e) => e.ifname === `eth${index}`)) index++;
    const userDefined = !this.isDefaultBridge(n);
    const shortId = container.id.slice(0, 12);
    const aliases = (settings.Aliases ?? []).filter((a) => a !== shortId);
    const ep: LiveEndpoint = {
      containerId: container.id,
      containerName: container.name,
      networkId: n.Id,
      endpointId: randomBytes(32).toString('hex'),
      ip,
      mac: macForIp(ip),
      vlan,
      ifname: `eth${index}`,
      dnsNames: userDefined ? unique([container.name, ...aliases, shortId]) : [],
      links: userDefined ? parseLinks(settings.Links ?? []) : [],
    };
    eps.set(container.id, ep);
    this.live.set(n.Id, eps);
    return ep;
  }

  releaseEndpoint(networkId: string, containerId: string): void {
    this.live.get(networkId)?.delete(containerId);
  }

  /** The settings inspect shows for a live endpoint. */
  settingsFor(n: NetworkRecord, ep: LiveEndpoint, requested: Pick<EndpointSettings, 'IPAMConfig' | 'Aliases' | 'Links'>): EndpointSettings {
    const userDefined = !this.isDefaultBridge(n);
    const shortId = ep.containerId.slice(0, 12);
    const aliases = userDefined ? unique([...(requested.Aliases ?? []).filter((a) => a !== shortId), shortId]) : null;
    return {
      IPAMConfig: requested.IPAMConfig ?? null,
      Links: requested.Links?.length ? requested.Links : null,
      // API < 1.45 clients (docker-compose 1.29) look for the short ID among the aliases.
      Aliases: aliases,
      MacAddress: ep.mac,
      DriverOpts: null,
      NetworkID: n.Id,
      EndpointID: ep.endpointId,
      Gateway: this.gatewayOf(n) ?? '',
      IPAddress: intToIp(ep.ip),
      IPPrefixLen: this.subnetOf(n)?.prefix ?? 0,
      IPv6Gateway: '',
      GlobalIPv6Address: '',
      GlobalIPv6PrefixLen: 0,
      DNSNames: userDefined ? ep.dnsNames : null,
    };
  }

  /**
   * Names a container can resolve through 127.0.0.11: every container name, alias and short
   * ID on the user-defined networks it shares, `name.network`, and its own links there.
   * Null when the name is not ours (the caller asks upstream).
   */
  lookup(containerId: string, name: string): string[] | null {
    const found: string[] = [];
    for (const mine of this.endpointsOf(containerId)) {
      const n = this.networks.get(mine.networkId);
      if (!n || this.isDefaultBridge(n)) continue;
      const peers = [...(this.live.get(n.Id)?.values() ?? [])];
      const suffix = `.${n.Name.toLowerCase()}`;
      const bare = name.endsWith(suffix) ? name.slice(0, -suffix.length) : name;
      const link = mine.links.find((l) => l.alias.toLowerCase() === bare);
      for (const peer of peers) {
        const names = peer.dnsNames.map((d) => d.toLowerCase());
        if (names.includes(bare) || (link && (peer.containerName === link.target || peer.containerId.startsWith(link.target)))) {
          found.push(intToIp(peer.ip));
        }
      }
    }
    return found.length ? unique(found) : null;
  }

  /**
   * PTR answers: a running container's address gives its name; loopback and the addresses of
   * any of our networks are ours (answered "no such name", never asked upstream).
   */
  reverseLookup(ip: string): string | 'nxdomain' | null {
    let n: number;
    try {
      n = ipToInt(ip);
    } catch {
      return null;
    }
    for (const eps of this.live.values()) {
      for (const ep of eps.values()) if (ep.ip === n) return ep.containerName;
    }
    if (ip.startsWith('127.')) return 'nxdomain';
    for (const net of this.networks.values()) {
      const subnet = this.subnetOf(net);
      if (subnet && contains(subnet, n)) return 'nxdomain';
    }
    return null;
  }

  /** Upstream resolvers for names that are not containers': --dns of the daemon, else the host's. */
  upstreamResolvers(): string[] {
    return this.defaultDns ?? hostResolvers();
  }

  // ------------------------------------------------------------------ internals

  private ipamConfig(requested: IpamConfig[]): IpamConfig[] {
    const used = [...this.networks.values()].map((n) => this.subnetOf(n)).filter((c): c is Cidr => Boolean(c));
    if (requested.length === 0) {
      for (const pool of defaultPools()) {
        if (used.some((u) => overlaps(u, pool))) continue;
        return [{ Subnet: formatCidr(pool), Gateway: intToIp(firstHost(pool)) }];
      }
      throw new PaddockError('forbidden', 'could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network');
    }
    return requested.map((c) => {
      if (!c.Subnet) throw invalid('IPAM config needs a subnet');
      if (c.Subnet.includes(':')) throw invalid('IPv6 networks are not supported by Paddock yet');
      const subnet = parseCidr(c.Subnet);
      if (subnet.prefix > 30) throw invalid(`subnet ${c.Subnet} is too small`);
      if (used.some((u) => overlaps(u, subnet))) throw new PaddockError('forbidden', 'Pool overlaps with other one on this address space');
      if (c.Gateway && !contains(subnet, ipToInt(c.Gateway))) throw invalid(`no matching subnet for gateway ${c.Gateway}`);
      if (c.IPRange && !contains(subnet, parseCidr(c.IPRange).base)) throw invalid(`no matching subnet for range ${c.IPRange}`);
      return { Subnet: formatCidr(subnet), ...(c.IPRange ? { IPRange: c.IPRange } : {}), Gateway: c.Gateway ?? intToIp(firstHost(subnet)) };
    });
  }

  private async createPredefined(name: string): Promise<void> {
    const base: NetworkRecord = {
      Name: name,
      Id: randomBytes(32).toString('hex'),
      Created: new Date().toISOString(),
      Scope: 'local',
      Driver: name === 'bridge' ? 'bridge' : name === 'host' ? 'host' : 'null',
      EnableIPv4: true,
      EnableIPv6: false,
      IPAM: { Driver: 'default', Options: null, Config: [] },
      Internal: false,
      Attachable: false,
      Ingress: false,
      ConfigFrom: { Network: '' },
      ConfigOnly: false,
      Options: {},
      Labels: {},
    };
    if (name === 'bridge') {
      base.IPAM.Config = [{ Subnet: '172.17.0.0/16', Gateway: '172.17.0.1' }];
      base.Options = { ...DEFAULT_BRIDGE_OPTIONS };
    }
    await this.store.create(base.Id, base);
    this.networks.set(base.Id, base);
  }

  private async addToFabric(n: NetworkRecord): Promise<void> {
    if (!this.fabric || n.Driver !== 'bridge') return;
    const subnet = this.subnetOf(n);
    const gateway = this.gatewayOf(n);
    // Every bridge network gets its gateway in the namespace: published ports connect from there.
    await this.fabric.addNetwork(n.Id, subnet && gateway ? { address: gateway, prefixLength: subnet.prefix } : null, { internal: n.Internal });
  }
}

function unavailableAddress(n: NetworkRecord): PaddockError {
  return new PaddockError('unavailable', `no available IPv4 addresses on this network's address pools: ${n.Name} (${n.Id})`);
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

/** `--link name:alias` (or "name") as the CLI sends it for user networks. */
export function parseLinks(links: string[]): Array<{ target: string; alias: string }> {
  return links.map((l) => {
    const [target, alias] = l.split(':');
    const clean = (s: string) => s.replace(/^\//, '').split('/').pop() ?? s;
    return { target: clean(target), alias: clean(alias ?? target) };
  });
}

function matchesFilters(n: NetworkRecord, filters: Record<string, string[]>, endpoints: number): boolean {
  for (const [key, values] of Object.entries(filters)) {
    if (!values.length) continue;
    const ok = values.some((v) => {
      switch (key) {
        case 'name':
          return n.Name.includes(v);
        case 'id':
          return n.Id.startsWith(v);
        case 'driver':
          return n.Driver === v;
        case 'scope':
          return v === 'local';
        case 'type':
          if (v !== 'custom' && v !== 'builtin') throw invalid(`invalid filter: 'type'='${v}'`);
          return (v === 'builtin') === PREDEFINED.includes(n.Name);
        case 'label':
          return labelMatches(n.Labels, v);
        case 'dangling':
          return (v === 'true' || v === '1') === (endpoints === 0 && !PREDEFINED.includes(n.Name));
        default:
          throw invalid(`invalid filter '${key}'`);
      }
    });
    if (!ok) return false;
  }
  return true;
}

function labelMatches(labels: Record<string, string>, filter: string): boolean {
  const eq = filter.indexOf('=');
  if (eq < 0) return filter in labels;
  return labels[filter.slice(0, eq)] === filter.slice(eq + 1);
}

function matchesPruneFilters(n: NetworkRecord, filters: Record<string, string[]>): boolean {
  for (const v of filters.label ?? []) if (!labelMatches(n.Labels, v)) return false;
  for (const v of filters['label!'] ?? []) if (labelMatches(n.Labels, v)) return false;
  for (const v of filters.until ?? []) {
    const limit = /^\d+$/.test(v) ? Number(v) * 1000 : Date.parse(v);
    if (Date.parse(n.Created) >= limit) return false;
  }
  return true;
}
