/**
 * Networks with the real docker CLI: user-defined networks with name resolution, aliases,
 * connect/disconnect on running containers, isolation between networks, published ports from
 * 127.0.0.1, links on the default bridge, --network none, and a host left as it was.
 */
import { execFileSync } from 'node:child_process';
import { httpGet, httpGetRetrying } from '../helpers/http';
import { startContainerHarness, type ContainerHarness } from '../helpers/container-harness';
import { removeBusyboxRootfs } from '../helpers/guest';

jest.setTimeout(240_000);

let h: ContainerHarness;
let hostBefore: string;

/** The host's own networking, to prove the tests leave it alone. */
function hostNetworking(): string {
  const run = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' });
    } catch {
      return `${cmd}: unavailable`;
    }
  };
  return [run('ip', ['-o', 'link', 'show']).replace(/state \w+.*$/gm, ''), run('ip', ['route', 'show', 'table', 'all']), run('iptables-save', [])]
    .join('\n')
    .replace(/^#.*$/gm, '');
}

const HTTPD = ['sh', '-c', 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 80 -h /www'];

async function docker(args: string[]): Promise<string> {
  const r = await h.docker(args);
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}



beforeAll(async () => {
  hostBefore = hostNetworking();
  h = await startContainerHarness();
});

afterAll(async () => {
  await h?.close();
  await removeBusyboxRootfs();
});

describe('user-defined networks', () => {
  test('create, inspect, list and refuse a duplicate', async () => {
    await docker(['network', 'create', '--subnet', '10.77.0.0/24', '--label', 'team=web', 'front']);
    const [net] = JSON.parse(await docker(['network', 'inspect', 'front']));
    expect(net).toMatchObject({
      Name: 'front',
      Driver: 'bridge',
      Scope: 'local',
      Internal: false,
      IPAM: { Driver: 'default', Config: [{ Subnet: '10.77.0.0/24', Gateway: '10.77.0.1' }] },
      Labels: { team: 'web' },
      Containers: {},
    });
    expect(await docker(['network', 'ls', '--format', '{{.Name}}'])).toMatch(/^bridge\nfront\nhost\nnone\n$/);
    expect(await docker(['network', 'ls', '--filter', 'label=team=web', '-q'])).toBe(`${net.Id.slice(0, 12)}\n`);
    const dup = await h.docker(['network', 'create', 'front']);
    expect(dup.code).not.toBe(0);
    expect(dup.stderr).toContain('network with name front already exists');
  });

  test('containers on a network find each other by name and alias', async () => {
    await docker(['run', '-d', '--name', 'web', '--hostname', 'webhost', '--network', 'front', '--network-alias', 'www', 'busybox', ...HTTPD]);
    const out = await docker(['run', '--rm', '--network', 'front', 'busybox', 'sh', '-c', 'for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/ && break; sleep 0.3; done; wget -qO- http://www/; cat /etc/resolv.conf']);
    expect(out).toContain('hello from webhost\nhello from webhost\n');
    expect(out).toContain('nameserver 127.0.0.11');
    const [web] = JSON.parse(await docker(['inspect', 'web']));
    const ep = web.NetworkSettings.Networks.front;
    expect(ep.IPAddress).toBe('10.77.0.2');
    expect(ep.Gateway).toBe('10.77.0.1');
    expect(ep.IPPrefixLen).toBe(24);
    expect(ep.MacAddress).toBe('02:42:0a:4d:00:02');
    expect(ep.Aliases).toEqual(expect.arrayContaining(['www', web.Id.slice(0, 12)]));
    const [net] = JSON.parse(await docker(['network', 'inspect', 'front']));
    expect(net.Containers[web.Id]).toMatchObject({ Name: 'web', IPv4Address: '10.77.0.2/24', MacAddress: '02:42:0a:4d:00:02' });
    // The guest's own view: eth0 with that address.
    expect(await docker(['exec', 'web', 'ip', '-o', '-4', 'addr', 'show', 'eth0'])).toContain('10.77.0.2/24');
    expect(await docker(['ps', '--filter', 'network=front', '--format', '{{.Names}}'])).toBe('web\n');
  });

  test('connect and disconnect a running container; networks stay apart', async () => {
    await docker(['network', 'create', 'back']);
    await docker(['run', '-d', '--name', 'worker', '--network', 'back', 'busybox', 'sleep', '600']);
    // Not on the same network: neither the name nor the address is reachable.
    const isolated = await h.docker(['exec', 'worker', 'sh', '-c', 'nslookup web 127.0.0.11; wget -T 3 -qO- http://10.77.0.2/']);
    expect(isolated.stdout).not.toContain('hello from webhost');
    await docker(['network', 'connect', '--alias', 'api', 'back', 'web']);
    expect(await docker(['exec', 'web', 'ls', '/sys/class/net'])).toMatch(/eth0\neth1\n/);
    expect(await docker(['exec', 'worker', 'wget', '-qO-', 'http://api/'])).toBe('hello from webhost\n');
    const [web] = JSON.parse(await docker(['inspect', 'web']));
    expect(Object.keys(web.NetworkSettings.Networks).sort()).toEqual(['back', 'front']);
    await docker(['network', 'disconnect', 'back', 'web']);
    expect(await docker(['exec', 'web', 'ls', '/sys/class/net'])).not.toContain('eth1');
    const after = await h.docker(['exec', 'worker', 'wget', '-T', '3', '-qO-', 'http://api/']);
    expect(after.code).not.toBe(0);
  });

  test('a network in use cannot be removed; predefined ones never', async () => {
    const busy = await h.docker(['network', 'rm', 'front']);
    expect(busy.stderr).toContain('has active endpoints');
    const predefined = await h.docker(['network', 'rm', 'bridge']);
    expect(predefined.stderr).toContain('bridge is a pre-defined network and cannot be removed');
    await docker(['rm', '-f', 'worker']);
    expect(await docker(['network', 'prune', '-f'])).toContain('back');
    expect(await docker(['network', 'ls', '--format', '{{.Name}}'])).not.toContain('back');
  });
});

describe('published ports', () => {
  test('-p 127.0.0.1::80 reaches the container; docker port and ps show the binding', async () => {
    await docker(['run', '-d', '--name', 'pub', '-p', '127.0.0.1::80', 'busybox', ...HTTPD]);
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(await docker(['port', 'pub', '80']))![1]);
    expect(port).toBeGreaterThan(0);
    expect(await httpGetRetrying(port)).toMatch(/^hello from /);
    expect(await docker(['ps', '--filter', 'name=pub', '--format', '{{.Ports}}'])).toBe(`127.0.0.1:${port}->80/tcp\n`);
    const [pub] = JSON.parse(await docker(['inspect', 'pub']));
    expect(pub.NetworkSettings.Ports['80/tcp']).toEqual([{ HostIp: '127.0.0.1', HostPort: String(port) }]);
    await docker(['rm', '-f', 'pub']);
    await expect(httpGet(port)).rejects.toThrow();
  });

  test('-P publishes exposed ports; a taken host port is refused with dockerd\'s message', async () => {
    await docker(['run', '-d', '--name', 'puball', '--expose', '80', '-P', 'busybox', ...HTTPD]);
    const line = await docker(['port', 'puball']);
    const port = Number(/80\/tcp -> 0\.0\.0\.0:(\d+)/.exec(line)![1]);
    expect(await httpGetRetrying(port)).toMatch(/^hello from /);
    const clash = await h.docker(['run', '-d', '--name', 'clash', '-p', `127.0.0.1:${port}:80`, 'busybox', 'sleep', '60']);
    expect(clash.code).not.toBe(0);
    expect(clash.stderr).toContain('port is already allocated');
    await docker(['rm', '-f', 'puball', 'clash']);
  });
});

describe('default bridge, links and none', () => {
  test('the default bridge gives 172.17.0.x; --link writes /etc/hosts', async () => {
    await docker(['run', '-d', '--name', 'db', '--expose', '5432', '-e', 'POSTGRES_DB=shop', 'busybox', 'sleep', '600']);
    const [db] = JSON.parse(await docker(['inspect', 'db']));
    expect(db.NetworkSettings.IPAddress).toMatch(/^172\.17\.0\.\d+$/);
    expect(db.NetworkSettings.Networks.bridge.IPAddress).toBe(db.NetworkSettings.IPAddress);
    const out = await docker(['run', '--rm', '--link', 'db:database', 'busybox', 'sh', '-c', 'grep database /etc/hosts; ping -c 1 -W 5 database >/dev/null && echo reachable']);
    expect(out).toContain(`${db.NetworkSettings.IPAddress}\tdatabase`);
    expect(out).toContain('reachable');
    const env = await docker(['run', '--rm', '--link', 'db:database', 'busybox', 'env']);
    const ip = db.NetworkSettings.IPAddress;
    for (const line of [`DATABASE_PORT=tcp://${ip}:5432`, `DATABASE_PORT_5432_TCP_ADDR=${ip}`, 'DATABASE_PORT_5432_TCP_PORT=5432', 'DATABASE_ENV_POSTGRES_DB=shop']) {
      expect(env).toContain(line);
    }
    expect(env).toMatch(/^DATABASE_NAME=\/[a-z_]+\/database$/m);
    const stopped = await h.docker(['run', '--rm', '--link', 'nosuch:x', 'busybox', 'true']);
    expect(stopped.code).not.toBe(0);
    await docker(['rm', '-f', 'db']);
  });

  test('--network none has only loopback', async () => {
    expect(await docker(['run', '--rm', '--network', 'none', 'busybox', 'ls', '/sys/class/net'])).toBe('lo\n');
  });
});

test('the host networking is unchanged, and the daemon namespace goes on shutdown', async () => {
  await docker(['rm', '-f', 'web']);
  expect(hostNetworking()).toBe(hostBefore);
  const ns = `paddock-h${process.pid}`;
  expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).toContain(ns);
  await h.close();
  expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(ns);
  h = undefined as unknown as ContainerHarness;
});
