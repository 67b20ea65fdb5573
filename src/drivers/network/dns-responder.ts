/**
 * The answering side of the containers' 127.0.0.11 resolver. Queries reach the daemon through
 * the guest agent (no network path from a VM to the host is needed). Names the engine knows --
 * containers, aliases, links on the asker's networks -- are answered here; the rest go to the
 * upstream resolvers (the host's, or --dns), as Docker's embedded DNS server does.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';
import { logger } from '../../util/log';

const log = logger('dns');

/** IPv4 addresses for a name, or null when the name is not the engine's to answer. */
export type NameLookup = (name: string) => string[] | null;

/**
 * Names for an address (PTR): a name, 'nxdomain' for an address that is ours but unnamed (a
 * gateway, loopback: never asked upstream), or null when the address is not ours.
 */
export type AddressLookup = (ip: string) => string | 'nxdomain' | null;

const FORWARD_TIMEOUT_MS = 4000;
const TTL = 600;

/** Nameservers of the host, without loopback ones (they would be the VM's own loopback). */
export function hostResolvers(resolvConf = '/etc/resolv.conf'): string[] {
  try {
    return readFileSync(resolvConf, 'utf8')
      .split('\n')
      .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
      .filter((s): s is string => Boolean(s) && !s!.startsWith('127.') && s !== '::1');
  } catch {
    return [];
  }
}

/** Builds the answer for a query we own; exported for tests. */
export function answerLocally(query: Buffer, lookup: NameLookup, reverse: AddressLookup = () => null): Buffer | null {
  let packet: dnsPacket.Packet;
  try {
    packet = dnsPacket.decode(query);
  } catch {
    return null;
  }
  const q = packet.questions?.[0];
  if (!q || packet.type !== 'query') return null;
  // Authoritative, recursion available; NOERROR with no records for AAAA and others, so
  // resolvers do not go on to ask upstream about a container's name.
  const flags = dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_AVAILABLE | ((packet.flags ?? 0) & dnsPacket.RECURSION_DESIRED);
  const name = q.name.replace(/\.$/, '');
  if (q.type === 'PTR') {
    const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\.in-addr\.arpa$/i.exec(name);
    if (!m) return null;
    const found = reverse(`${m[4]}.${m[3]}.${m[2]}.${m[1]}`);
    if (!found) return null;
    const answers: dnsPacket.Answer[] = found === 'nxdomain' ? [] : [{ type: 'PTR', name: q.name, class: 'IN', ttl: TTL, data: found }];
    return dnsPacket.encode({ type: 'response', id: packet.id, flags: flags | (found === 'nxdomain' ? 3 : 0), questions: packet.questions, answers });
  }
  const addresses = lookup(name.toLowerCase());
  if (!addresses) return null;
  const answers: dnsPacket.Answer[] =
    q.type === 'A'
      ? addresses.map((ip) => ({ type: 'A' as const, name: q.name, class: 'IN' as const, ttl: TTL, data: ip }))
      : [];
  return dnsPacket.encode({ type: 'response', id: packet.id, flags, questions: packet.questions, answers });
}

/** Sends the query unchanged to the upstream servers, first answer wins. */
export function forwardQuery(query: Buffer, servers: string[], timeoutMs = FORWARD_TIMEOUT_MS): Promise<Buffer | null> {
  const upstream = servers.filter((s) => /^\d+\.\d+\.\d+\.\d+$/.test(s));
  if (!upstream.length) return Promise.resolve(servfail(query));
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const done = (answer: Buffer | null) => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    const timer = setTimeout(() => done(servfail(query)), timeoutMs);
    socket.on('message', (msg) => {
      if (msg.length >= 2 && msg.readUInt16BE(0) === query.readUInt16BE(0)) done(msg);
    });
    socket.on('error', (err) => {
      log.debug('upstream resolver error', { error: String(err) });
      done(servfail(query));
    });
    for (const s of upstream) socket.send(query, 53, s);
  });
}

function servfail(query: Buffer): Buffer | null {
  try {
    const p = dnsPacket.decode(query);
    return dnsPacket.encode({ type: 'response', id: p.id, flags: dnsPacket.RECURSION_AVAILABLE | 2, questions: p.questions });
  } catch {
    return null;
  }
}

/** A resolver for one container: local names first, then upstream. */
export function containerResolver(lookup: NameLookup, reverse: AddressLookup, upstream: () => string[]): (query: Buffer) => Promise<Buffer | null> {
  return async (query) => answerLocally(query, lookup, reverse) ?? forwardQuery(query, upstream());
}
