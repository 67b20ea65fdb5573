/**
 * VM networking below the engine: two VMs on one network through paddock-switch, VLAN
 * interfaces set up by the agent, the gateway tap in the daemon's namespace, a published port
 * through the two-part proxy, and DNS questions answered through the agent channel.
 */
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import dnsPacket from 'dns-packet';
import type { QemuHypervisor } from '../../src/drivers/hypervisor/qemu';
import { NetworkFabric } from '../../src/drivers/network/fabric';
import { Sandbox } from '../../src/engine/sandbox';
import { makeContainerRootfs, openQemu, readAll, removeBusyboxRootfs, testGuestImage, testSwitchBinary, type TestContainerDir } from '../helpers/guest';

jest.setTimeout(180_000);

let qemu: QemuHypervisor;
let fabric: NetworkFabric;
const vms: Array<{ sb: Sandbox; ctr: TestContainerDir }> = [];
const nsName = `paddock-t${process.pid}`;

async function bootOnNetwork(id: string, ip: string, vlan: number): Promise<Sandbox> {
  const ctr = await makeContainerRootfs();
  const socket = await fabric.openPort(id);
  const sb = await Sandbox.start(qemu, await testGuestImage(), {
    id,
    rootfsDir: ctr.rootfs.merged,
    nic: { id: 'trunk', mac: '52:54:00:00:00:01', backend: { kind: 'unix-stream', path: socket } },
  });
  vms.push({ sb, ctr });
  await fabric.addEndpoint(id, vlan, 'net1');
  const last = Number(ip.split('.')[3]);
  await sb.agent.addInterface({ name: 'eth0', vlan, mac: `02:42:ac:12:00:${last.toString(16).padStart(2, '0')}`, ipv4: ip, prefixLength: 16, gateway: '172.18.0.1' });
  return sb;
}

async function run(sb: Sandbox, args: string[]): Promise<{ code: number; out: string }> {
  const p = await sb.exec({ args, env: ['PATH=/bin:/usr/bin'] });
  const [out, err] = await Promise.all([readAll(p.stdout), readAll(p.stderr)]);
  const exit = await p.exited;
  return { code: exit.exitCode, out: out + err };
}

beforeAll(async () => {
  const switchBinary = testSwitchBinary();
  fabric = await NetworkFabric.open({
    namespace: nsName,
    runDir: path.join(os.tmpdir(), `pdk-net-${process.pid}`),
    switchBinary,
    masquerade: false,
  });
  await fabric.addNetwork('net1', { address: '172.18.0.1', prefixLength: 16 });
  qemu = await openQemu();
});

afterAll(async () => {
  for (const v of vms) {
    await v.sb.kill();
    await v.ctr.cleanup();
  }
  await fabric?.close();
  await removeBusyboxRootfs();
});

test('two VMs on one network reach each other and the gateway', async () => {
  const a = await bootOnNetwork('fab-a', '172.18.0.2', 1);
  const b = await bootOnNetwork('fab-b', '172.18.0.3', 7); // VLAN ids are per VM, not per network
  const ifaces = await run(a, ['cat', '/sys/class/net/eth0/address']);
  expect(ifaces.out.trim()).toBe('02:42:ac:12:00:02');
  expect((await run(a, ['ping', '-c', '1', '-W', '5', '172.18.0.3'])).code).toBe(0);
  expect((await run(b, ['ping', '-c', '1', '-W', '5', '172.18.0.2'])).code).toBe(0);
  expect((await run(b, ['ping', '-c', '1', '-W', '5', '172.18.0.1'])).code).toBe(0);
});

test('a published port reaches a server in the VM through the namespace proxy', async () => {
  const a = vms[0].sb;
  await run(a, ['sh', '-c', 'mkdir -p /www && echo hello-from-vm > /www/index.html']);
  const httpd = await a.exec({ args: ['httpd', '-f', '-p', '80', '-h', '/www'], env: ['PATH=/bin'] });
  const published = await fabric.publisher.publish({ proto: 'tcp', hostIp: '127.0.0.1', hostPort: 0, containerIp: '172.18.0.2', containerPort: 80 });
  try {
    let body = '';
    for (let i = 0; i < 50 && !body; i++) {
      body = await new Promise<string>((resolve) => {
        http
          .get({ host: '127.0.0.1', port: published.hostPort, path: '/' }, (res) => {
            let b = '';
            res.on('data', (c) => (b += c));
            res.on('end', () => resolve(b));
          })
          .on('error', () => setTimeout(() => resolve(''), 100));
      });
    }
    expect(body).toBe('hello-from-vm\n');
  } finally {
    await published.close();
    httpd.signal(9);
  }
});

test('DNS questions to 127.0.0.11 in the guest are answered by the host', async () => {
  const a = vms[0].sb;
  a.agent.setDnsResolver(async (q) => {
    const p = dnsPacket.decode(q);
    const name = p.questions![0].name;
    const answers: dnsPacket.Answer[] = name === 'peer' && p.questions![0].type === 'A' ? [{ type: 'A', name, ttl: 60, data: '172.18.0.3' }] : [];
    return dnsPacket.encode({ type: 'response', id: p.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: p.questions, answers });
  });
  const r = await run(a, ['nslookup', 'peer', '127.0.0.11']);
  expect(r.out).toContain('172.18.0.3');
});

test('removing an interface takes the VM off the network', async () => {
  const b = vms[1].sb;
  await b.agent.removeInterface('eth0');
  const r = await run(b, ['ls', '/sys/class/net']);
  expect(r.out).not.toContain('eth0');
  expect(r.out).toContain('trunk0');
});

test('with masquerading, the namespace gets a userspace uplink and NAT, and nothing on the host', async () => {
  if (!require('node:fs').existsSync('/usr/bin/slirp4netns')) {
    console.warn('slirp4netns is not installed: outbound NAT not checked');
    return;
  }
  const hostLinks = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).replace(/state \w+.*$/gm, '');
  const switchBinary = testSwitchBinary();
  const nat = await NetworkFabric.open({ namespace: `paddock-n${process.pid}`, runDir: path.join(os.tmpdir(), `pdk-nat-${process.pid}`), switchBinary, masquerade: true });
  try {
    // No packet is sent anywhere: only the configuration is looked at.
    expect(await nat.ns.ip(['-o', '-4', 'addr', 'show', 'dev', 'uplink0'])).toContain('10.0.2.100/24');
    expect(await nat.ns.ip(['route', 'show', 'default'])).toContain('via 10.0.2.2 dev uplink0');
    expect(await nat.ns.run('iptables', ['-t', 'nat', '-S', 'POSTROUTING'])).toContain('-o uplink0 -j MASQUERADE');
    expect(await nat.ns.run('iptables', ['-S', 'FORWARD'])).toContain('-P FORWARD DROP');
    expect(execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).replace(/state \w+.*$/gm, '')).toBe(hostLinks);
  } finally {
    await nat.close();
  }
  expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(`paddock-n${process.pid}`);
});

test('a published UDP port relays datagrams both ways', async () => {
  // An echo server inside the daemon's namespace, on the gateway address, stands in for a container.
  const { spawn } = await import('node:child_process');
  const dgram = await import('node:dgram');
  const echo = spawn('ip', ['netns', 'exec', nsName, process.execPath, '-e',
    "const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(Buffer.concat([Buffer.from('echo:'),m]),r.port,r.address));s.bind(7777,'172.18.0.1',()=>console.log('up'))"]);
  await new Promise<void>((resolve) => echo.stdout.once('data', () => resolve()));
  const published = await fabric.publisher.publish({ proto: 'udp', hostIp: '127.0.0.1', hostPort: 0, containerIp: '172.18.0.1', containerPort: 7777 });
  const client = dgram.createSocket('udp4');
  try {
    const reply = await new Promise<string>((resolve) => {
      client.on('message', (m) => resolve(m.toString()));
      client.send('datagram-1', published.hostPort, '127.0.0.1');
    });
    expect(reply).toBe('echo:datagram-1');
  } finally {
    client.close();
    await published.close();
    echo.kill();
  }
});

test('a published TCP port keeps half-closed connections: the answer comes after the client shut down its side', async () => {
  const { spawn } = await import('node:child_process');
  const net = await import('node:net');
  const server = spawn('ip', ['netns', 'exec', nsName, process.execPath, '-e',
    "require('net').createServer({allowHalfOpen:true},(s)=>{let d='';s.on('data',(c)=>d+=c);s.on('end',()=>s.end('got:'+d))}).listen(7001,'172.18.0.1',()=>console.log('up'))"]);
  await new Promise<void>((resolve) => server.stdout.once('data', () => resolve()));
  const published = await fabric.publisher.publish({ proto: 'tcp', hostIp: '127.0.0.1', hostPort: 0, containerIp: '172.18.0.1', containerPort: 7001 });
  try {
    const answer = await new Promise<string>((resolve, reject) => {
      const c = net.connect({ host: '127.0.0.1', port: published.hostPort, allowHalfOpen: true }, () => c.end('question'));
      let got = '';
      c.on('data', (d) => (got += d));
      c.on('end', () => resolve(got));
      c.on('error', reject);
    });
    expect(answer).toBe('got:question');
  } finally {
    await published.close();
    server.kill();
  }
});
