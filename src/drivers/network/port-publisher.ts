/**
 * Published ports (`-p`, `-P`): the outer half of the port proxy. It listens on the host address
 * and port, and hands each TCP connection, or each UDP peer, to the proxy inside the daemon's
 * network namespace (netns-proxy.ts), which connects to the container's address.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { PaddockError } from '../../errors';
import { DatagramReader, frameDatagram, type ProxyTarget } from './netns-proxy';

export interface PortMapping {
  proto: 'tcp' | 'udp';
  /** Host address to listen on ('0.0.0.0' for all, as Docker's default). */
  hostIp: string;
  /** 0: any free port. */
  hostPort: number;
  containerIp: string;
  containerPort: number;
}

export interface PublishedPort {
  mapping: PortMapping;
  /** The port actually bound. */
  hostPort: number;
  close(): Promise<void>;
}

const UDP_IDLE_MS = 90_000;

function bindError(m: PortMapping, err: NodeJS.ErrnoException): PaddockError {
  const where = `${m.hostIp}:${m.hostPort}`;
  // dockerd's wording (the CLI shows it as is); a 500 as in dockerd.
  const why = err.code === 'EADDRINUSE' ? 'port is already allocated' : err.message;
  return new PaddockError('internal', `driver failed programming external connectivity: Bind for ${where} failed: ${why}`);
}

export class PortPublisher {
  /** `proxySocket` yields the path of the in-namespace proxy, starting it when needed. */
  constructor(private readonly proxySocket: () => Promise<string>) {}

  async publish(m: PortMapping): Promise<PublishedPort> {
    const proxy = await this.proxySocket();
    const target: ProxyTarget = { proto: m.proto, ip: m.containerIp, port: m.containerPort };
    const header = `${JSON.stringify(target)}\n`;
    return m.proto === 'tcp' ? this.publishTcp(m, proxy, header) : this.publishUdp(m, proxy, header);
  }

  private async publishTcp(m: PortMapping, proxy: string, header: string): Promise<PublishedPort> {
    const sockets = new Set<net.Socket>();
    // Half-open connections are kept (a client may shut down its sending side and still read
    // the answer), as docker-proxy does: each direction ends on its own.
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (client) => {
      sockets.add(client);
      const upstream = net.connect({ path: proxy, allowHalfOpen: true }, () => {
        upstream.write(header);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
      const destroy = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', destroy);
      upstream.on('error', destroy);
      client.on('close', () => {
        sockets.delete(client);
        upstream.destroy();
      });
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(bindError(m, err)));
      server.listen({ host: m.hostIp, port: m.hostPort, exclusive: true }, () => resolve());
    });
    server.on('error', () => undefined);
    const hostPort = (server.address() as net.AddressInfo).port;
    return {
      mapping: m,
      hostPort,
      close: () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        }),
    };
  }

  private async publishUdp(m: PortMapping, proxy: string, header: string): Promise<PublishedPort> {
    const socket = dgram.createSocket({ type: net.isIPv6(m.hostIp) ? 'udp6' : 'udp4' });
    const peers = new Map<string, { stream: net.Socket; idle: NodeJS.Timeout }>();
    socket.on('message', (msg, rinfo) => {
      const key = `${rinfo.address}:${rinfo.port}`;
      let peer = peers.get(key);
      if (!peer) {
        const stream = net.connect(proxy);
        stream.write(header);
        const reader = new DatagramReader();
        stream.on('data', (c: Buffer) => {
          for (const d of reader.push(c)) socket.send(d, rinfo.port, rinfo.address);
        });
        stream.on('error', () => undefined);
        stream.on('close', () => {
          const p = peers.get(key);
          if (p) clearTimeout(p.idle);
          peers.delete(key);
        });
        peer = { stream, idle: setTimeout(() => undefined, 0) };
        peers.set(key, peer);
      }
      clearTimeout(peer.idle);
      const p = peer;
      p.idle = setTimeout(() => p.stream.destroy(), UDP_IDLE_MS);
      p.stream.write(frameDatagram(msg));
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err) => reject(bindError(m, err)));
      socket.bind({ address: m.hostIp, port: m.hostPort, exclusive: true }, () => resolve());
    });
    socket.on('error', () => undefined);
    return {
      mapping: m,
      hostPort: socket.address().port,
      close: async () => {
        for (const p of peers.values()) {
          clearTimeout(p.idle);
          p.stream.destroy();
        }
        await new Promise<void>((resolve) => socket.close(() => resolve()));
      },
    };
  }
}
