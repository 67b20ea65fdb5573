/**
 * The port proxy's inner half, a program run by paddockd inside its network namespace (where
 * container addresses are routable). The daemon accepts a published port's connections on the
 * host, then opens a unix-socket stream to us per connection (or per UDP peer) with a one-line
 * JSON header naming the target; we connect to the container and relay. Same job as dockerd's
 * docker-proxy, split in two because a process can only open sockets in its own namespace.
 *
 * UDP datagrams travel over the stream with a 4-byte big-endian length before each.
 */
import dgram from 'node:dgram';
import { unlinkSync } from 'node:fs';
import net from 'node:net';

export interface ProxyTarget {
  proto: 'tcp' | 'udp';
  ip: string;
  port: number;
}

const UDP_IDLE_MS = 90_000;

export function parseTarget(line: string): ProxyTarget | null {
  try {
    const t = JSON.parse(line) as ProxyTarget;
    if ((t.proto !== 'tcp' && t.proto !== 'udp') || net.isIPv4(t.ip) === false) return null;
    if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65535) return null;
    return t;
  } catch {
    return null;
  }
}

/** Splits a stream into length-prefixed datagrams. */
export class DatagramReader {
  private pending: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Buffer[] = [];
    while (this.pending.length >= 4) {
      const len = this.pending.readUInt32BE(0);
      if (this.pending.length < 4 + len) break;
      out.push(this.pending.subarray(4, 4 + len));
      this.pending = this.pending.subarray(4 + len);
    }
    return out;
  }
}

export function frameDatagram(d: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(d.length);
  return Buffer.concat([h, d]);
}

function relay(client: net.Socket, target: ProxyTarget, rest: Buffer): void {
  if (target.proto === 'tcp') {
    const upstream = net.connect({ host: target.ip, port: target.port, allowHalfOpen: true });
    if (rest.length) upstream.write(rest);
    client.pipe(upstream);
    upstream.pipe(client);
    const destroy = () => {
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', destroy);
    client.on('error', destroy);
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
    return;
  }
  const udp = dgram.createSocket('udp4');
  const reader = new DatagramReader();
  let idle: NodeJS.Timeout;
  const touch = () => {
    clearTimeout(idle);
    idle = setTimeout(() => client.destroy(), UDP_IDLE_MS);
  };
  const send = (d: Buffer) => udp.send(d, target.port, target.ip);
  udp.on('message', (msg) => {
    touch();
    client.write(frameDatagram(msg));
  });
  udp.on('error', () => client.destroy());
  client.on('data', (c: Buffer) => {
    touch();
    for (const d of reader.push(c)) send(d);
  });
  client.on('close', () => {
    clearTimeout(idle);
    udp.close();
  });
  client.on('error', () => undefined);
  touch();
  for (const d of reader.push(rest)) send(d);
}

export function serveProxy(socketPath: string): net.Server {
  try {
    unlinkSync(socketPath);
  } catch {
    // nothing left over
  }
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(10);
      if (nl < 0) {
        if (head.length > 1024) client.destroy();
        return;
      }
      client.off('data', onData);
      client.pause();
      const target = parseTarget(head.subarray(0, nl).toString('utf8'));
      if (!target) return void client.destroy();
      relay(client, target, head.subarray(nl + 1));
      client.resume();
    };
    client.on('data', onData);
    client.on('error', () => undefined);
  });
  server.listen(socketPath);
  return server;
}

if (require.main === module) {
  const socketPath = process.argv[2];
  if (!socketPath) {
    process.stderr.write('usage: netns-proxy SOCKET\n');
    process.exit(2);
  }
  // Ends with the daemon: its stdin is a pipe from paddockd.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();
  serveProxy(socketPath).on('listening', () => process.stderr.write('netns-proxy: ready\n'));
}
