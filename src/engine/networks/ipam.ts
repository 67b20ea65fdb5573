/**
 * IPv4 address management for bridge networks, as Docker's default IPAM does it: subnets from
 * 172.17.0.0/16 … 172.31.0.0/16 then 192.168.0.0/20 steps, the gateway at the first address,
 * containers from the next free one. All these addresses live inside the daemon's own network
 * namespace, so they never collide with the host's.
 */
import { invalid } from '../../errors';

export interface Cidr {
  /** Network address as a 32-bit number. */
  base: number;
  prefix: number;
}

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw invalid(`invalid IPv4 address: ${ip}`);
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function parseCidr(text: string): Cidr {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text);
  if (!m || Number(m[2]) > 32) throw invalid(`invalid CIDR address: ${text}`);
  const prefix = Number(m[2]);
  return { base: (ipToInt(m[1]) & maskOf(prefix)) >>> 0, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.prefix}`;
}

export function contains(c: Cidr, ip: number): boolean {
  return ((ip & maskOf(c.prefix)) >>> 0) === c.base;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  return ((a.base & maskOf(prefix)) >>> 0) === ((b.base & maskOf(prefix)) >>> 0);
}

/** Docker's default local address pools, in its order. */
export function* defaultPools(): Generator<Cidr> {
  for (let second = 17; second <= 31; second++) yield { base: ipToInt(`172.${second}.0.0`), prefix: 16 };
  for (let third = 0; third < 256; third += 16) yield { base: ipToInt(`192.168.${third}.0`), prefix: 20 };
}

export function firstHost(c: Cidr): number {
  return c.base + 1;
}

/** The lowest free address of `range` (default: the subnet), skipping network, broadcast and `taken`. */
export function allocate(subnet: Cidr, taken: Set<number>, range: Cidr = subnet): number | null {
  const size = 2 ** (32 - range.prefix);
  const broadcast = subnet.base + 2 ** (32 - subnet.prefix) - 1;
  for (let i = 0; i < size; i++) {
    const ip = range.base + i;
    if (ip === subnet.base || ip === broadcast || taken.has(ip)) continue;
    return ip;
  }
  return null;
}

/** Docker's MAC for an address: 02:42 and the four address bytes. */
export function macForIp(ip: number): string {
  return ['02', '42', ...[ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}
