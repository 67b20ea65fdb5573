/**
 * A container's networks: which it is on (chosen at create, changed by connect/disconnect), and
 * while it runs, its endpoints -- an address per network, a VLAN on the VM's trunk NIC, guest
 * interfaces named eth0, eth1, ... -- its published ports and its DNS answers.
 */
import type { AgentConnection } from '../../drivers/agent/agent-client';
import type { NicSpec } from '../../drivers/hypervisor/hypervisor';
import { containerResolver } from '../../drivers/network/dns-responder';
import type { PublishedPort } from '../../drivers/network/port-publisher';
import { invalid, notFound, PaddockError } from '../../errors';
import { logger } from '../../util/log';
import { intToIp } from '../networks/ipam';
import type { EndpointSettings, LiveEndpoint, NetworkRecord, NetworkService } from '../networks/network-service';
import type { ContainerRecord, CreateContainerRequest, PortBinding } from './types';

const log = logger('container-net');

type Requested = Pick<EndpointSettings, 'IPAMConfig' | 'Aliases' | 'Links'>;

export function emptyEndpoint(networkId: string, requested: Partial<Requested> = {}): EndpointSettings {
  return {
    IPAMConfig: requested.IPAMConfig ?? null,
    Links: requested.Links?.length ? requested.Links : null,
    Aliases: requested.Aliases?.length ? requested.Aliases : null,
    MacAddress: '',
    DriverOpts: null,
    NetworkID: networkId,
    EndpointID: '',
    Gateway: '',
    IPAddress: '',
    IPPrefixLen: 0,
    IPv6Gateway: '',
    GlobalIPv6Address: '',
    GlobalIPv6PrefixLen: 0,
    DNSNames: null,
  };
}

/** A stopped container's view: its networks and aliases stay, its addresses and ports go. */
export function clearRuntimeNetworking(record: ContainerRecord): void {
  if (!record.NetworkSettings) return;
  const nets = record.NetworkSettings.Networks;
  for (const [name, s] of Object.entries(nets)) nets[name] = { ...emptyEndpoint(s.NetworkID, s), Aliases: s.Aliases };
  record.NetworkSettings.Ports = {};
}

/** The network mode as stored: Docker's "default" is the bridge. */
export function networkMode(hc: { NetworkMode?: string }): string {
  const m = hc.NetworkMode || 'default';
  return m === 'default' ? 'bridge' : m;
}

/** The networks a new container is on: its network mode plus the endpoints the request names. */
export function initialNetworks(req: CreateContainerRequest, networks: NetworkService): Record<string, EndpointSettings> {
  const mode = networkMode(req.HostConfig ?? {});
  if (mode === 'host') throw invalid('host networking is not available: every Paddock container runs in its own VM');
  if (mode.startsWith('container:')) throw invalid('sharing another container\'s network (--network container:) is not available: every Paddock container has its own VM');
  const configs = (req.NetworkingConfig?.EndpointsConfig ?? {}) as Record<string, Partial<Requested> | null>;
  const primary = networks.find(mode);
  if (!primary) throw notFound(`network ${mode} not found`);
  const out: Record<string, EndpointSettings> = {};
  const add = (n: NetworkRecord, requested: Partial<Requested> | null | undefined) => {
    const r = requested ?? {};
    if ((r.Aliases?.length || r.IPAMConfig?.IPv4Address) && networks.isDefaultBridge(n)) {
      throw invalid(r.Aliases?.length ? 'network-scoped alias is supported only for containers in user defined networks' : 'user specified IP address is supported on user defined networks only');
    }
    out[n.Name] = emptyEndpoint(n.Id, r);
  };
  add(primary, configs[mode] ?? configs[primary.Id] ?? configs.default);
  for (const [ref, cfg] of Object.entries(configs)) {
    const n = ref === 'default' ? primary : networks.find(ref);
    if (!n) throw notFound(`network ${ref} not found`);
    if (out[n.Name]) continue;
    if (primary.Driver === 'null') throw invalid('container cannot be connected to multiple networks with one of the networks in private (none) mode');
    add(n, cfg);
  }
  return out;
}

interface PortSpec {
  key: string;
  proto: 'tcp' | 'udp';
  port: number;
  bindings: PortBinding[];
}

/** What -p/-P ask for, from PortBindings, ExposedPorts and PublishAllPorts. */
export function portSpecs(record: ContainerRecord): PortSpec[] {
  const hc = record.HostConfig;
  const keys = new Set([...Object.keys(record.Config.ExposedPorts ?? {}), ...Object.keys(hc.PortBindings ?? {})]);
  const specs: PortSpec[] = [];
  for (const key of keys) {
    const m = /^(\d+)(?:\/(tcp|udp|sctp))?$/.exec(key);
    if (!m) throw invalid(`invalid port specification: "${key}"`);
    const proto = (m[2] ?? 'tcp') as 'tcp' | 'udp' | 'sctp';
    if (proto === 'sctp') throw invalid('sctp ports are not supported by Paddock');
    let bindings = (hc.PortBindings?.[key] ?? []).filter(Boolean);
    if (!bindings.length && hc.PublishAllPorts) bindings = [{ HostIp: '', HostPort: '' }];
    specs.push({ key: `${m[1]}/${proto}`, proto, port: Number(m[1]), bindings });
  }
  return specs;
}

/** First port of "8000" or "8000-8010"; 0 for any. */
function hostPortOf(b: PortBinding): number {
  const text = (b.HostPort ?? '').split('-')[0];
  if (!text) return 0;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw invalid(`invalid host port: ${b.HostPort}`);
  return n;
}

/** A running container's networking. */
export class ContainerNetworking {
  private readonly published: PublishedPort[] = [];
  private agent?: AgentConnection;

  private constructor(
    private readonly record: ContainerRecord,
    private readonly networks: NetworkService,
    readonly nic: NicSpec | undefined,
  ) {}

  /**
   * Allocates the container's endpoints and its switch port before its VM starts (the VM's NIC
   * connects to that port; /etc/hosts needs the address). Null for `--network none`.
   */
  static async prepare(record: ContainerRecord, networks: NetworkService): Promise<ContainerNetworking | null> {
    const settings = record.NetworkSettings?.Networks ?? {};
    const names = Object.keys(settings).filter((name) => {
      const n = networks.find(settings[name].NetworkID) ?? networks.find(name);
      return n && n.Driver === 'bridge';
    });
    if (!names.length) return null;
    const fabric = networks.fabric;
    const nic: NicSpec | undefined = fabric
      ? { id: 'trunk', mac: '02:50:00:00:00:01', backend: { kind: 'unix-stream', path: await fabric.openPort(record.Id) } }
      : undefined;
    const cn = new ContainerNetworking(record, networks, nic);
    try {
      for (const name of names) cn.allocate(name, settings[name]);
    } catch (err) {
      await cn.release();
      throw err;
    }
    return cn;
  }

  /** Once the guest agent is up: switch endpoints, guest interfaces, resolver, ports. */
  async activate(agent: AgentConnection): Promise<void> {
    this.agent = agent;
    const upstream = this.record.HostConfig.Dns?.length ? this.record.HostConfig.Dns : this.networks.upstreamResolvers();
    agent.setDnsResolver(
      containerResolver(
        (name) => this.networks.lookup(this.record.Id, name),
        (ip) => this.networks.reverseLookup(ip),
        () => upstream,
      ),
    );
    const eps = this.networks.endpointsOf(this.record.Id);
    for (const [i, ep] of eps.entries()) await this.plug(ep, i === 0);
    await this.publishPorts();
  }

  /** `docker network connect` while running. */
  async connect(n: NetworkRecord, requested: Requested): Promise<EndpointSettings> {
    const ep = this.allocate(n.Name, emptyEndpoint(n.Id, requested), n);
    try {
      if (this.agent) await this.plug(ep, false);
    } catch (err) {
      this.networks.releaseEndpoint(n.Id, this.record.Id);
      throw err;
    }
    return this.record.NetworkSettings!.Networks[n.Name];
  }

  async disconnect(n: NetworkRecord): Promise<void> {
    const ep = this.networks.endpointsOf(this.record.Id).find((e) => e.networkId === n.Id);
    if (!ep) return;
    await this.unplug(ep);
    this.networks.releaseEndpoint(n.Id, this.record.Id);
  }

  /** Everything undone: ports closed, endpoints released, the switch port closed. */
  async release(): Promise<void> {
    for (const p of this.published.splice(0)) await p.close().catch(() => undefined);
    this.agent?.setDnsResolver(null);
    const fabric = this.networks.fabric;
    for (const ep of this.networks.endpointsOf(this.record.Id)) this.networks.releaseEndpoint(ep.networkId, this.record.Id);
    if (fabric && this.nic) await fabric.closePort(this.record.Id).catch(() => undefined);
    clearRuntimeNetworking(this.record);
  }

  /** The container's address on its first network (for /etc/hosts). */
  primaryAddress(): string | undefined {
    const ep = this.networks.endpointsOf(this.record.Id)[0];
    return ep ? intToIp(ep.ip) : undefined;
  }

  private allocate(name: string, settings: EndpointSettings, known?: NetworkRecord): LiveEndpoint {
    const n = known ?? this.networks.find(settings.NetworkID) ?? this.networks.find(name);
    if (!n) throw notFound(`network ${name} not found`);
    const ep = this.networks.allocateEndpoint(n, { id: this.record.Id, name: this.record.Name.replace(/^\//, '') }, settings);
    this.record.NetworkSettings ??= { Networks: {}, Ports: {} };
    this.record.NetworkSettings.Networks[n.Name] = this.networks.settingsFor(n, ep, settings);
    return ep;
  }

  private async plug(ep: LiveEndpoint, primary: boolean): Promise<void> {
    const fabric = this.networks.fabric;
    if (!fabric || !this.nic || !this.agent) return;
    const n = this.networks.find(ep.networkId)!;
    await fabric.addEndpoint(this.record.Id, ep.vlan, ep.networkId);
    await this.agent.addInterface({
      name: ep.ifname,
      vlan: ep.vlan,
      mac: ep.mac,
      ipv4: intToIp(ep.ip),
      prefixLength: this.networks.subnetOf(n)!.prefix,
      // The first network carries the default route, except an internal one (no way out).
      gateway: primary && !n.Internal ? this.networks.gatewayOf(n) : undefined,
    });
  }

  private async unplug(ep: LiveEndpoint): Promise<void> {
    const fabric = this.networks.fabric;
    if (!fabric || !this.nic) return;
    await this.agent?.removeInterface(ep.ifname).catch((err) => log.warn('guest interface removal failed', { error: String(err) }));
    await fabric.removeEndpoint(this.record.Id, ep.vlan).catch(() => undefined);
  }

  private async publishPorts(): Promise<void> {
    const specs = portSpecs(this.record);
    const ports: Record<string, PortBinding[] | null> = {};
    const fabric = this.networks.fabric;
    const ep = this.networks.endpointsOf(this.record.Id)[0];
    for (const spec of specs) {
      if (!spec.bindings.length) {
        ports[spec.key] = null;
        continue;
      }
      if (!fabric || !ep) throw new PaddockError('unavailable', 'published ports need container networking, which this daemon has not got');
      ports[spec.key] = [];
      for (const b of spec.bindings) {
        const hostIp = b.HostIp || '0.0.0.0';
        const p = await fabric.publisher.publish({ proto: spec.proto, hostIp, hostPort: hostPortOf(b), containerIp: intToIp(ep.ip), containerPort: spec.port });
        this.published.push(p);
        ports[spec.key]!.push({ HostIp: hostIp, HostPort: String(p.hostPort) });
      }
    }
    this.record.NetworkSettings ??= { Networks: {}, Ports: {} };
    this.record.NetworkSettings.Ports = ports;
  }
}
