/** Networks without VMs: IPAM, the network service's rules, DNS answers, port specs. */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import dnsPacket from 'dns-packet';
import { answerLocally } from '../../src/drivers/network/dns-responder';
import { initialNetworks, portSpecs } from '../../src/engine/containers/container-networking';
import type { ContainerRecord } from '../../src/engine/containers/types';
import { EventBus } from '../../src/engine/events';
import { allocate, defaultPools, formatCidr, intToIp, ipToInt, macForIp, overlaps, parseCidr } from '../../src/engine/networks/ipam';
import { NetworkService } from '../../src/engine/networks/network-service';

describe('ipam', () => {
  test('CIDRs parse, normalise and overlap as expected', () => {
    expect(formatCidr(parseCidr('10.1.2.3/16'))).toBe('10.1.0.0/16');
    expect(overlaps(parseCidr('10.1.0.0/16'), parseCidr('10.1.200.0/24'))).toBe(true);
    expect(overlaps(parseCidr('10.1.0.0/16'), parseCidr('10.2.0.0/16'))).toBe(false);
    expect(() => parseCidr('10.1.0.0/33')).toThrow('invalid CIDR');
    expect(() => ipToInt('300.1.1.1')).toThrow('invalid IPv4');
  });

  test('addresses skip the network, broadcast and taken ones; MACs follow Docker', () => {
    const subnet = parseCidr('192.168.5.0/30');
    const gw = ipToInt('192.168.5.1');
    expect(intToIp(allocate(subnet, new Set([gw]))!)).toBe('192.168.5.2');
    expect(allocate(subnet, new Set([gw, ipToInt('192.168.5.2')]))).toBeNull();
    expect(macForIp(ipToInt('172.18.0.2'))).toBe('02:42:ac:12:00:02');
  });

  test('default pools start where dockerd starts', () => {
    const pools = [...defaultPools()].map(formatCidr);
    expect(pools.slice(0, 2)).toEqual(['172.17.0.0/16', '172.18.0.0/16']);
    expect(pools).toContain('192.168.0.0/20');
  });
});

describe('network service', () => {
  let svc: NetworkService;
  beforeEach(async () => {
    svc = await NetworkService.open({ root: mkdtempSync(path.join(os.tmpdir(), 'paddock-net-unit-')), events: new EventBus(), fabric: null });
  });

  test('predefined networks exist and cannot be removed', async () => {
    expect(svc.list().map((n) => n.Name)).toEqual(['bridge', 'host', 'none']);
    expect(svc.get('bridge').IPAM.Config).toEqual([{ Subnet: '172.17.0.0/16', Gateway: '172.17.0.1' }]);
    await expect(svc.remove('bridge')).rejects.toMatchObject({ kind: 'forbidden', message: 'bridge is a pre-defined network and cannot be removed' });
  });

  test('user networks get the next free pool; overlaps, duplicates and unknown drivers are refused', async () => {
    const { Id } = await svc.create({ Name: 'a' });
    expect(svc.get(Id).IPAM.Config).toEqual([{ Subnet: '172.18.0.0/16', Gateway: '172.18.0.1' }]);
    expect(svc.get(Id.slice(0, 6)).Name).toBe('a');
    await expect(svc.create({ Name: 'a' })).rejects.toMatchObject({ kind: 'conflict', message: 'network with name a already exists' });
    await expect(svc.create({ Name: 'c', IPAM: { Config: [{ Subnet: '172.18.4.0/24' }] } })).rejects.toMatchObject({ kind: 'forbidden' });
    await expect(svc.create({ Name: 'd', Driver: 'overlay' })).rejects.toMatchObject({ kind: 'not-found', message: 'plugin "overlay" not found' });
    await expect(svc.create({ Name: 'e', IPAM: { Config: [{ Subnet: '10.9.0.0/24', Gateway: '10.8.0.1' }] } })).rejects.toThrow('no matching subnet for gateway');
    await svc.create({ Name: 'f' });
    expect(svc.get('f').IPAM.Config[0].Subnet).toBe('172.19.0.0/16');
    expect(svc.list({ type: ['custom'] }).map((n) => n.Name)).toEqual(['a', 'f']);
  });

  test('endpoints get addresses in order, names resolve only on shared user networks', async () => {
    await svc.create({ Name: 'app', IPAM: { Config: [{ Subnet: '10.50.0.0/24' }] } });
    const app = svc.get('app');
    const web = svc.allocateEndpoint(app, { id: 'a'.repeat(64), name: 'web' }, { IPAMConfig: null, Aliases: ['www'], Links: null });
    const db = svc.allocateEndpoint(app, { id: 'b'.repeat(64), name: 'db' }, { IPAMConfig: { IPv4Address: '10.50.0.77' }, Aliases: null, Links: null });
    expect(intToIp(web.ip)).toBe('10.50.0.2');
    expect(intToIp(db.ip)).toBe('10.50.0.77');
    expect(svc.lookup('b'.repeat(64), 'www')).toEqual(['10.50.0.2']);
    expect(svc.lookup('b'.repeat(64), 'web.app')).toEqual(['10.50.0.2']);
    expect(svc.lookup('b'.repeat(64), 'a'.repeat(12))).toEqual(['10.50.0.2']);
    expect(svc.lookup('b'.repeat(64), 'example.com')).toBeNull();
    expect(svc.reverseLookup('10.50.0.2')).toBe('web');
    expect(svc.reverseLookup('10.50.0.1')).toBe('nxdomain');
    expect(svc.reverseLookup('127.0.0.11')).toBe('nxdomain');
    expect(svc.reverseLookup('192.0.2.1')).toBeNull();
    const bridgeOnly = svc.allocateEndpoint(svc.get('bridge'), { id: 'c'.repeat(64), name: 'lonely' }, { IPAMConfig: null, Aliases: null, Links: null });
    expect(intToIp(bridgeOnly.ip)).toBe('172.17.0.2');
    expect(svc.lookup('c'.repeat(64), 'web')).toBeNull();
    await expect(svc.remove('app')).rejects.toThrow('has active endpoints');
    svc.releaseEndpoint(app.Id, 'a'.repeat(64));
    svc.releaseEndpoint(app.Id, 'b'.repeat(64));
    await svc.remove('app');
    expect(svc.find('app')).toBeUndefined();
  });

  test('state survives a reopen', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'paddock-net-unit-'));
    const first = await NetworkService.open({ root, events: new EventBus(), fabric: null });
    const { Id } = await first.create({ Name: 'kept', Labels: { a: 'b' } });
    const second = await NetworkService.open({ root, events: new EventBus(), fabric: null });
    expect(second.get('kept')).toMatchObject({ Id, Labels: { a: 'b' } });
    expect(second.get('bridge').Id).toBe(first.get('bridge').Id);
  });

  test('a container is created on its network mode and the named endpoints', async () => {
    await svc.create({ Name: 'front' });
    const nets = initialNetworks({ Image: 'x', HostConfig: { NetworkMode: 'front' }, NetworkingConfig: { EndpointsConfig: { front: { Aliases: ['web'] } } } }, svc);
    expect(Object.keys(nets)).toEqual(['front']);
    expect(nets.front).toMatchObject({ Aliases: ['web'], NetworkID: svc.get('front').Id, IPAddress: '' });
    expect(Object.keys(initialNetworks({ Image: 'x', HostConfig: {} }, svc))).toEqual(['bridge']);
    expect(() => initialNetworks({ Image: 'x', HostConfig: { NetworkMode: 'nope' } }, svc)).toThrow('network nope not found');
    expect(() => initialNetworks({ Image: 'x', HostConfig: { NetworkMode: 'host' } }, svc)).toThrow('not available');
    expect(() => initialNetworks({ Image: 'x', HostConfig: {}, NetworkingConfig: { EndpointsConfig: { bridge: { Aliases: ['x'] } } } }, svc)).toThrow('user defined networks');
  });
});

describe('ports', () => {
  const record = (config: Partial<ContainerRecord['Config']>, hc: Partial<ContainerRecord['HostConfig']>) =>
    ({ Config: config, HostConfig: hc }) as unknown as ContainerRecord;

  test('-p, --expose and -P become port specs', () => {
    expect(portSpecs(record({}, { PortBindings: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }] } }))).toEqual([
      { key: '80/tcp', proto: 'tcp', port: 80, bindings: [{ HostIp: '127.0.0.1', HostPort: '8080' }] },
    ]);
    const all = portSpecs(record({ ExposedPorts: { '53/udp': {}, '80/tcp': {} } }, { PublishAllPorts: true }));
    expect(all.map((s) => [s.key, s.bindings])).toEqual([
      ['53/udp', [{ HostIp: '', HostPort: '' }]],
      ['80/tcp', [{ HostIp: '', HostPort: '' }]],
    ]);
    expect(portSpecs(record({ ExposedPorts: { '80/tcp': {} } }, {}))[0].bindings).toEqual([]);
    expect(() => portSpecs(record({}, { PortBindings: { 'http/tcp': [] } }))).toThrow('invalid port specification');
  });
});

describe('dns answers', () => {
  const query = (name: string, type: 'A' | 'AAAA') => dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });

  test('known names get A records; AAAA gets an empty answer; unknown names are not ours', () => {
    const lookup = (n: string) => (n === 'web' ? ['10.0.0.2', '10.0.0.3'] : null);
    const a = dnsPacket.decode(answerLocally(query('web', 'A'), lookup)!);
    expect(a.id).toBe(7);
    expect(a.answers!.map((r) => (r as { data: string }).data)).toEqual(['10.0.0.2', '10.0.0.3']);
    const aaaa = dnsPacket.decode(answerLocally(query('WEB.', 'AAAA'), (n) => lookup(n))!);
    expect(aaaa.answers).toEqual([]);
    expect((aaaa.flags ?? 0) & 0xf).toBe(0); // NOERROR
    expect(answerLocally(query('example.org', 'A'), lookup)).toBeNull();
    // PTR: a container's address gives its name; our other addresses are never asked upstream.
    const reverse = (ip: string) => (ip === '10.0.0.2' ? 'web' : ip.startsWith('127.') ? 'nxdomain' : null);
    const ptr = (name: string) => dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'PTR', name }] });
    expect(dnsPacket.decode(answerLocally(ptr('2.0.0.10.in-addr.arpa'), lookup, reverse)!).answers!.map((a) => (a as { data: string }).data)).toEqual(['web']);
    const nx = dnsPacket.decode(answerLocally(ptr('11.0.0.127.in-addr.arpa'), lookup, reverse)!);
    expect(((nx.flags ?? 0) & 0xf)).toBe(3); // NXDOMAIN
    expect(answerLocally(ptr('8.8.8.8.in-addr.arpa'), lookup, reverse)).toBeNull();
    expect(answerLocally(Buffer.from('garbage'), lookup)).toBeNull();
  });
});
