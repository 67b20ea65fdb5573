/**
 * Everything of VM networking that lives on the host, in one place for the engine: the daemon's
 * network namespace, the switch in it, one gateway tap per network (with the gateway address),
 * outbound NAT through a userspace uplink, and the port proxy. The engine speaks of networks,
 * ports and endpoints; how frames move is this layer's business.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { unavailable } from '../../errors';
import { logger } from '../../util/log';
import { NetworkNamespace, runCommand } from './namespace';
import { PortPublisher } from './port-publisher';
import { SwitchControl } from './switch';

const log = logger('network');

export interface FabricOptions {
  /** Name of the namespace (unique per daemon). */
  namespace: string;
  /** Directory for the switch's sockets (short paths: unix socket paths are limited to 107 bytes). */
  runDir: string;
  switchBinary: string;
  /** Outbound access for containers through NAT and a userspace uplink (slirp4netns). */
  masquerade: boolean;
}

export interface GatewaySpec {
  address: string;
  prefixLength: number;
}

const UPLINK = 'uplink0';

/** Tap names are limited to 15 bytes. */
export function gatewayTapName(networkId: string): string {
  return `pn${networkId.slice(0, 12)}`;
}

export class NetworkFabric {
  readonly publisher: PortPublisher;
  private proxy?: { proc: ChildProcess; socket: string; ready: Promise<string> };
  private uplink?: ChildProcess;
  private closed = false;

  private constructor(
    readonly ns: NetworkNamespace,
    private readonly sw: SwitchControl,
    private readonly opts: FabricOptions,
  ) {
    this.publisher = new PortPublisher(() => this.proxySocket());
  }

  static async open(opts: FabricOptions): Promise<NetworkFabric> {
    await fs.mkdir(opts.runDir, { recursive: true, mode: 0o700 });
    const ns = await NetworkNamespace.create(opts.namespace);
    try {
      const sw = await SwitchControl.start(ns, opts.switchBinary, path.join(opts.runDir, 'switch.ctl'));
      const fabric = new NetworkFabric(ns, sw, opts);
      if (opts.masquerade) await fabric.startUplink().catch((err) => log.warn('no outbound access for containers', { reason: String(err.message ?? err) }));
      return fabric;
    } catch (err) {
      await ns.destroy();
      throw err;
    }
  }

  /** Adds a network to the switch; with a gateway, a tap in the namespace carries its address. */
  async addNetwork(id: string, gateway: GatewaySpec | null, opts: { internal?: boolean } = {}): Promise<void> {
    const tap = gateway ? gatewayTapName(id) : null;
    await this.sw.addNetwork(id, tap);
    if (!tap || !gateway) return;
    try {
      await this.ns.ip(['addr', 'add', `${gateway.address}/${gateway.prefixLength}`, 'dev', tap]);
      await this.ns.ip(['link', 'set', tap, 'up']);
      // An internal network reaches its gateway (for published ports) but is never routed on.
      if (opts.internal) await this.iptables(['-I', 'FORWARD', '-i', tap, '-j', 'DROP']).catch(() => undefined);
    } catch (err) {
      await this.sw.removeNetwork(id).catch(() => undefined);
      throw err;
    }
  }

  async removeNetwork(id: string): Promise<void> {
    await this.sw.removeNetwork(id);
  }

  /** Where a VM's NIC connects (the switch listens there), for the VM with this id. */
  async openPort(vmId: string): Promise<string> {
    const socket = path.join(this.opts.runDir, `p-${vmId.slice(0, 16)}.sock`);
    await this.sw.addPort(vmId, socket);
    return socket;
  }

  async closePort(vmId: string): Promise<void> {
    await this.sw.removePort(vmId);
  }

  addEndpoint(vmId: string, vlan: number, networkId: string): Promise<void> {
    return this.sw.addEndpoint(vmId, vlan, networkId);
  }

  removeEndpoint(vmId: string, vlan: number): Promise<void> {
    return this.sw.removeEndpoint(vmId, vlan);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.sw.stop();
    this.proxy?.proc.kill('SIGKILL');
    this.uplink?.kill('SIGKILL');
    await this.ns.destroy();
  }

  /**
   * Outbound access: slirp4netns gives the namespace a default route through host sockets
   * (no host interface, route or firewall rule is created), and the namespace NATs container
   * traffic onto it. Containers cannot reach the host's loopback through it.
   */
  private async startUplink(): Promise<void> {
    const binary = ['/usr/bin/slirp4netns', '/bin/slirp4netns'].find((p) => existsSync(p));
    if (!binary) throw unavailable('slirp4netns is not installed (apt-get install slirp4netns)');
    // --exit-fd: fd 3 is a pipe from the daemon, so slirp4netns ends with it even after a kill -9.
    // (Its --enable-sandbox is not used: its mount namespace games broke the /run/netns binding.)
    const proc = spawn(
      binary,
      ['--configure', '--mtu=1500', '--disable-host-loopback', '--exit-fd=3', '--netns-type=path', this.ns.path, UPLINK],
      { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    proc.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-2000)));
    this.uplink = proc;
    const deadline = Date.now() + 5000;
    for (;;) {
      const links = await this.ns.ip(['-o', 'addr', 'show', 'dev', UPLINK]).catch(() => '');
      if (/inet /.test(links)) break;
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw unavailable(`slirp4netns did not configure ${UPLINK}: ${stderr.trim() || 'timeout'}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    await this.ns.sysctl('net.ipv4.ip_forward', '1');
    await this.iptables(['-t', 'nat', '-A', 'POSTROUTING', '-o', UPLINK, '-j', 'MASQUERADE']);
    // Only container → outside and its replies are routed; networks stay apart from each other.
    await this.iptables(['-P', 'FORWARD', 'DROP']);
    await this.iptables(['-A', 'FORWARD', '-o', UPLINK, '-j', 'ACCEPT']);
    await this.iptables(['-A', 'FORWARD', '-i', UPLINK, '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT']);
    log.info('outbound access through slirp4netns', { namespace: this.ns.name });
  }

  private iptables(args: string[]): Promise<string> {
    return this.ns.run('iptables', ['-w', ...args]);
  }

  private proxySocket(): Promise<string> {
    if (this.proxy) return this.proxy.ready;
    const socket = path.join(this.opts.runDir, 'proxy.sock');
    // Compiled beside this file; under ts-jest this file is the .ts source, so use the build.
    const script = [path.join(__dirname, 'netns-proxy.js'), path.resolve(__dirname, '../../../dist/src/drivers/network/netns-proxy.js')].find((p) =>
      existsSync(p),
    );
    if (!script) return Promise.reject(unavailable('netns-proxy.js is not built (npm run build)'));
    const [cmd, argv] = this.ns.command(process.execPath, [script, socket]);
    const proc = spawn(cmd, argv, { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    const ready = new Promise<string>((resolve, reject) => {
      proc.stderr?.setEncoding('utf8').on('data', (c: string) => {
        stderr += c;
        if (/ready/.test(stderr)) resolve(socket);
      });
      proc.on('exit', (code) => {
        reject(unavailable(`port proxy exited (${code}): ${stderr.trim()}`));
        if (this.proxy?.proc === proc) this.proxy = undefined;
      });
    });
    ready.catch(() => undefined);
    this.proxy = { proc, socket, ready };
    return ready;
  }
}

export { runCommand };
