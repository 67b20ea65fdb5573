/**
 * The container API driven by the real docker CLI (28.x and Debian's 20.10), over VM containers.
 * Images come from a fake store here (busybox from rootfs-builder), so that these tests exercise
 * containers alone; pulls are covered by the image tests.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DOCKER_CLI_DEBIAN } from '../helpers/daemon';
import { startContainerHarness, type ContainerHarness } from '../helpers/container-harness';
import { removeBusyboxRootfs, testGuestImage, waitUntil } from '../helpers/guest';

jest.setTimeout(180_000);

let h: ContainerHarness;

beforeAll(async () => {
  h = await startContainerHarness();
});

afterAll(async () => {
  await h?.close();
  await removeBusyboxRootfs();
});

/** Runs the docker CLI under a pseudo-terminal of the given size, typing `input` after `delayMs`. */
function dockerInPty(args: string[], input: string, opts: { rows: number; cols: number; delayMs: number }): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const cmd = `stty rows ${opts.rows} cols ${opts.cols}; exec docker ${args.map((a) => `'${a}'`).join(' ')}`;
    const p = spawn('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, DOCKER_HOST: h.dockerHost, DOCKER_CLI_HINTS: 'false' } });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (out += c));
    setTimeout(() => p.stdin.write(input), opts.delayMs);
    const kill = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('close', (code) => {
      clearTimeout(kill);
      resolve({ code: code ?? -1, out });
    });
  });
}

describe('docker run', () => {
  test('--rm echo prints and exits 0', async () => {
    const r = await h.docker(['run', '--rm', 'busybox', 'echo', 'hello']);
    expect(r).toMatchObject({ code: 0, stdout: 'hello\n' });
    expect((await h.docker(['ps', '-aq'])).stdout).toBe('');
  });

  test('exit codes propagate', async () => {
    expect((await h.docker(['run', '--rm', 'busybox', 'sh', '-c', 'exit 3'])).code).toBe(3);
  });

  test('stdin is piped with -i', async () => {
    const r = await h.docker(['run', '-i', '--rm', 'busybox', 'cat'], { input: 'hi there\n' });
    expect(r).toMatchObject({ code: 0, stdout: 'hi there\n' });
  });

  test('stdout and stderr stay separate', async () => {
    const r = await h.docker(['run', '--rm', 'busybox', 'sh', '-c', 'echo out; echo err >&2']);
    expect(r.stdout).toBe('out\n');
    expect(r.stderr).toBe('err\n');
  });

  test('the main process is PID 1 and sees only the container\'s processes', async () => {
    const r = await h.docker(['run', '--rm', 'busybox', 'sh', '-c', 'echo $$; ls /proc | grep -c "^[0-9]"']);
    const [pid, count] = r.stdout.trim().split('\n').map(Number);
    expect(pid).toBe(1);
    expect(count).toBeLessThanOrEqual(3); // sh, ls, grep: no kernel threads, no agent
  });

  test('the container runs on the guest kernel', async () => {
    const r = await h.docker(['run', '--rm', 'busybox', 'cat', '/proc/version']);
    const guest = await testGuestImage();
    expect(r.stdout).toContain(`Linux version ${guest.kernelRelease}`);
    expect(r.stdout).not.toContain(os.release());
  });

  test('an unknown command exits 127 with dockerd\'s message', async () => {
    const r = await h.docker(['run', '--rm', 'busybox', 'no-such-command']);
    expect(r.code).toBe(127);
    expect(r.stderr).toContain('executable file not found in $PATH');
  });

  test('-it gives a terminal with the client\'s size; typed input runs; exit code returns', async () => {
    const r = await dockerInPty(['run', '-it', '--rm', 'busybox', 'sh'], 'echo in-$((40+2)); stty size; exit 5\r', {
      rows: 33,
      cols: 77,
      delayMs: 2500,
    });
    expect(r.out).toContain('in-42');
    expect(r.out).toContain('33 77');
    expect(r.code).toBe(5);
  });

  test('the Debian 20.10 CLI works too', async () => {
    const r = await h.docker(['run', '--rm', 'busybox', 'echo', 'from-20.10'], { cli: DOCKER_CLI_DEBIAN });
    expect(r).toMatchObject({ code: 0, stdout: 'from-20.10\n' });
  });
});

describe('a detached container', () => {
  const name = 'detached-1';

  beforeAll(async () => {
    const r = await h.docker(['run', '-d', '--name', name, '--label', 'team=paddock', 'busybox', 'sh', '-c', 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^[0-9a-f]{64}$/);
  });

  test('ps lists it as Up', async () => {
    const r = await h.docker(['ps', '--format', '{{.Names}}|{{.Status}}|{{.Image}}|{{.Labels}}']);
    expect(r.stdout).toMatch(new RegExp(`^${name}\\|Up .*\\|busybox\\|team=paddock$`, 'm'));
  });

  test('logs and logs -f show its output', async () => {
    expect(await waitUntil(async () => (await h.docker(['logs', name])).stdout.includes('tick 1'), 10_000)).toBe(true);
    const follow = await h.docker(['logs', '-f', '--tail', '1', name], { timeoutMs: 3500 });
    // Killed by the timeout while following: it must have streamed new lines meanwhile.
    expect(follow.stdout.trim().split('\n').length).toBeGreaterThanOrEqual(2);
  });

  test('exec runs a second process, with its exit code', async () => {
    const r = await h.docker(['exec', name, 'sh', '-c', 'echo $HOSTNAME; exit 6']);
    expect(r.code).toBe(6);
    expect(r.stdout.trim()).toMatch(/^[0-9a-f]{12}$/);
    const piped = await h.docker(['exec', '-i', name, 'cat'], { input: 'through exec\n' });
    expect(piped.stdout).toBe('through exec\n');
  });

  test('exec -it gives a terminal', async () => {
    const r = await dockerInPty(['exec', '-it', name, 'sh'], 'tty; exit 4\r', { rows: 20, cols: 60, delayMs: 1500 });
    expect(r.out).toMatch(/\/dev\/pts\/\d+/);
    expect(r.code).toBe(4);
  });

  test('top lists the main process; stats reports memory', async () => {
    const top = await h.docker(['top', name]);
    expect(top.stdout).toContain('while true');
    const stats = await h.docker(['stats', '--no-stream', '--format', '{{.Name}} {{.MemUsage}}', name]);
    expect(stats.stdout).toMatch(new RegExp(`^${name} [\\d.]+[KMG]iB / [\\d.]+[KMG]iB`));
  });

  test('docker cp copies in and out', async () => {
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'paddock-cp-'));
    await fs.writeFile(path.join(tmp, 'in.txt'), 'copied in\n');
    expect((await h.docker(['cp', path.join(tmp, 'in.txt'), `${name}:/tmp/`])).code).toBe(0);
    expect((await h.docker(['exec', name, 'cat', '/tmp/in.txt'])).stdout).toBe('copied in\n');
    await h.docker(['exec', name, 'sh', '-c', 'echo made inside > /tmp/out.txt']);
    expect((await h.docker(['cp', `${name}:/tmp/out.txt`, path.join(tmp, 'out.txt')])).code).toBe(0);
    expect(await fs.readFile(path.join(tmp, 'out.txt'), 'utf8')).toBe('made inside\n');
    const diff = await h.docker(['diff', name]);
    expect(diff.stdout).toContain('A /tmp/in.txt');
    expect(diff.stdout).not.toContain('/etc/hosts');
    await fs.rm(tmp, { recursive: true, force: true });
  });

  test('ps -s reports the writable layer\'s size', async () => {
    await h.docker(['exec', name, 'sh', '-c', 'head -c 200000 /dev/zero > /tmp/big']);
    const r = await h.docker(['ps', '-s', '--format', '{{.Size}}', '-f', `name=${name}`]);
    expect(r.stdout).toMatch(/^2\d\d(\.\d+)?kB \(virtual [\d.]+[kM]B\)$/m);
  });

  test('attach over a websocket carries stdin and output', async () => {
    await h.docker(['run', '-d', '-i', '--name', 'ws-cat', 'busybox', 'cat']);
    const { WebSocket } = await import('ws');
    const socketPath = h.dockerHost.replace('unix://', '');
    const ws = new WebSocket(`ws+unix://${socketPath}:/v1.44/containers/ws-cat/attach/ws?stream=1&stdin=1&stdout=1&stderr=1`);
    const received = new Promise<string>((resolve) => {
      let text = '';
      ws.on('message', (d: Buffer) => {
        text += d.toString();
        if (text.includes('over websocket')) resolve(text);
      });
    });
    await new Promise((resolve) => ws.once('open', resolve));
    ws.send(Buffer.from('over websocket\n'));
    expect(await received).toBe('over websocket\n');
    ws.close();
    await h.docker(['rm', '-f', 'ws-cat']);
  });

  test('pause and unpause freeze the VM', async () => {
    expect((await h.docker(['pause', name])).code).toBe(0);
    expect((await h.docker(['ps', '--format', '{{.Status}}', '-f', `name=${name}`])).stdout).toContain('(Paused)');
    expect((await h.docker(['exec', name, 'true'])).stderr).toContain('is paused');
    expect((await h.docker(['unpause', name])).code).toBe(0);
    expect((await h.docker(['exec', name, 'true'])).code).toBe(0);
  });

  test('exec joins the container\'s PID namespace', async () => {
    const r = await h.docker(['exec', name, 'ps', '-o', 'pid,args']);
    expect(r.stdout).toMatch(/^\s*1 sh -c i=0/m);
    expect(r.stdout).not.toContain('kthreadd');
  });

  test('stop, start, restart', async () => {
    expect((await h.docker(['stop', '-t', '2', name])).code).toBe(0);
    const inspect = JSON.parse((await h.docker(['inspect', name])).stdout)[0];
    expect(inspect.State.Running).toBe(false);
    // sh is PID 1 without a TERM handler: the signal is ignored and the VM is killed at the timeout.
    expect(inspect.State.ExitCode).toBe(137);
    expect((await h.docker(['start', name])).code).toBe(0);
    expect((await h.docker(['restart', '-t', '1', name])).code).toBe(0);
    expect(JSON.parse((await h.docker(['inspect', name])).stdout)[0].State.Running).toBe(true);
  });

  test('rm -f removes it while running', async () => {
    expect((await h.docker(['rm', '-f', name])).code).toBe(0);
    expect((await h.docker(['ps', '-aq'])).stdout).toBe('');
  });
});

describe('volumes, bind mounts and tmpfs', () => {
  let hostDir: string;

  beforeAll(async () => {
    hostDir = await fs.mkdtemp(path.join(os.tmpdir(), 'paddock-bind-'));
    await fs.writeFile(path.join(hostDir, 'in.txt'), 'from the host\n');
  });

  afterAll(() => fs.rm(hostDir, { recursive: true, force: true }));

  test('a named volume keeps data from one container to the next and across a daemon restart', async () => {
    expect((await h.docker(['volume', 'create', '--label', 'purpose=test', 'keep'])).stdout.trim()).toBe('keep');
    expect((await h.docker(['run', '--rm', '-v', 'keep:/data', 'busybox', 'sh', '-c', 'echo persisted > /data/f'])).code).toBe(0);
    expect((await h.docker(['run', '--rm', '-v', 'keep:/data', 'busybox', 'cat', '/data/f'])).stdout).toBe('persisted\n');
    await h.restartService();
    const inspect = JSON.parse((await h.docker(['volume', 'inspect', 'keep'])).stdout)[0];
    expect(inspect).toMatchObject({ Name: 'keep', Driver: 'local', Scope: 'local', Labels: { purpose: 'test' } });
    expect((await h.docker(['run', '--rm', '-v', 'keep:/data', 'busybox', 'cat', '/data/f'])).stdout).toBe('persisted\n');
  });

  test('a volume in use cannot be removed (409); --volumes-from shares it', async () => {
    await h.docker(['run', '-d', '--name', 'holder', '-v', 'keep:/data', 'busybox', 'sleep', '300']);
    const rm = await h.request('DELETE', '/volumes/keep');
    expect(rm.status).toBe(409);
    expect(rm.json().message).toMatch(/^remove keep: volume is in use - \[[0-9a-f]{64}\]$/);
    expect((await h.docker(['run', '--rm', '--volumes-from', 'holder', 'busybox', 'cat', '/data/f'])).stdout).toBe('persisted\n');
    const mounts = JSON.parse((await h.docker(['inspect', '-f', '{{json .Mounts}}', 'holder'])).stdout);
    expect(mounts).toEqual([expect.objectContaining({ Type: 'volume', Name: 'keep', Destination: '/data', RW: true })]);
    await h.docker(['rm', '-f', 'holder']);
    expect((await h.docker(['volume', 'rm', 'keep'])).code).toBe(0);
    expect((await h.docker(['volume', 'ls', '-q'])).stdout).not.toContain('keep');
  });

  test('bind mounts: host files in, container writes out, :ro is read-only', async () => {
    const r = await h.docker(['run', '--rm', '-v', `${hostDir}:/host`, 'busybox', 'sh', '-c', 'cat /host/in.txt; echo from the container > /host/out.txt']);
    expect(r.stdout).toBe('from the host\n');
    expect(await fs.readFile(path.join(hostDir, 'out.txt'), 'utf8')).toBe('from the container\n');
    const ro = await h.docker(['run', '--rm', '--mount', `type=bind,source=${hostDir},target=/ro,readonly`, 'busybox', 'sh', '-c', 'echo x > /ro/nope']);
    expect(ro.code).not.toBe(0);
    expect(ro.stderr).toContain('Read-only file system');
  });

  test('six mounts at once (volumes, directories, a single file, read-only ones) share one directory into the VM', async () => {
    await fs.writeFile(path.join(hostDir, 'single.conf'), 'setting=1\n');
    const args = ['-v', 'vol-a:/a', '-v', 'vol-b:/b', '-v', `${hostDir}:/host1`, '-v', `${hostDir}:/host2:ro`,
      '-v', `${path.join(hostDir, 'single.conf')}:/etc/app.conf:ro`, '--mount', 'type=volume,source=vol-c,target=/c'];
    const r = await h.docker(['run', '--rm', ...args, 'busybox', 'sh', '-c',
      'echo A > /a/f && echo B > /b/f && echo C > /c/f && cat /etc/app.conf /host1/in.txt && (echo x > /host2/nope || echo host2-ro) && (echo x >> /etc/app.conf || echo conf-ro)']);
    expect(r.stdout).toBe('setting=1\nfrom the host\nhost2-ro\nconf-ro\n');
    const again = await h.docker(['run', '--rm', '-v', 'vol-a:/a', '-v', 'vol-b:/b', '-v', 'vol-c:/c', 'busybox', 'cat', '/a/f', '/b/f', '/c/f']);
    expect(again.stdout).toBe('A\nB\nC\n');
    // Nothing stays mounted on the host once the containers are gone.
    expect(await fs.readFile('/proc/self/mountinfo', 'utf8')).not.toContain(path.join(h.root, 'mounts'));
    await h.docker(['volume', 'rm', 'vol-a', 'vol-b', 'vol-c']);
  });

  test('an anonymous volume starts with the image\'s content and goes with rm -v', async () => {
    const id = (await h.docker(['create', '-v', '/etc', 'busybox', 'ls', '/etc'])).stdout.trim();
    expect((await h.docker(['start', '-a', id])).stdout).toContain('passwd');
    const volume = JSON.parse((await h.docker(['inspect', '-f', '{{json .Mounts}}', id])).stdout)[0].Name;
    expect((await h.docker(['rm', '-v', id])).code).toBe(0);
    expect((await h.docker(['volume', 'ls', '-q'])).stdout).not.toContain(volume);
  });

  test('--tmpfs mounts a tmpfs with its options', async () => {
    const r = await h.docker(['run', '--rm', '--tmpfs', '/scratch:size=1m', 'busybox', 'sh', '-c', 'mount | grep " /scratch "']);
    expect(r.stdout).toMatch(/^tmpfs on \/scratch type tmpfs \(rw,.*size=1024k/);
  });
});

test('healthchecks run in the container and drive State.Health, ps and health_status events', async () => {
  const since = Math.floor(Date.now() / 1000) - 1;
  await h.docker(['run', '-d', '--name', 'checked', '--health-cmd', 'test -f /tmp/ok', '--health-interval', '300ms', '--health-retries', '2', 'busybox', 'sleep', '300']);
  const health = async () => JSON.parse((await h.docker(['inspect', '-f', '{{json .State.Health}}', 'checked'])).stdout);
  expect(await waitUntil(async () => (await health()).Status === 'unhealthy', 20_000)).toBe(true);
  expect((await health()).Log[0]).toMatchObject({ ExitCode: 1 });
  await h.docker(['exec', 'checked', 'touch', '/tmp/ok']);
  expect(await waitUntil(async () => (await health()).Status === 'healthy', 20_000)).toBe(true);
  expect((await h.docker(['ps', '--format', '{{.Status}}', '-f', 'name=checked'])).stdout).toMatch(/\(healthy\)/);
  const until = Math.floor(Date.now() / 1000) + 1;
  const events = await h.docker(['events', '--since', String(since), '--until', String(until), '--format', '{{.Action}}', '--filter', 'container=checked']);
  expect(events.stdout).toContain('health_status: unhealthy');
  expect(events.stdout).toContain('health_status: healthy');
  await h.docker(['rm', '-f', 'checked']);
});

test('--cpus becomes a CPU quota on the VMM\'s cgroup', async () => {
  await h.docker(['run', '-d', '--name', 'capped', '--cpus', '0.5', 'busybox', 'sleep', '300']);
  const pid = Number((await h.docker(['inspect', '-f', '{{.State.Pid}}', 'capped'])).stdout.trim());
  const cgroups = await fs.readFile(`/proc/${pid}/cgroup`, 'utf8');
  const v1 = /^\d+:[^:]*\bcpu\b[^:]*:(.*)$/m.exec(cgroups);
  const v2 = /^0::(.*)$/m.exec(cgroups);
  const quota = v1
    ? await fs.readFile(`/sys/fs/cgroup/cpu${v1[1]}/cpu.cfs_quota_us`, 'utf8').catch(() => fs.readFile(`/sys/fs/cgroup/cpu,cpuacct${v1[1]}/cpu.cfs_quota_us`, 'utf8'))
    : await fs.readFile(`/sys/fs/cgroup${v2![1]}/cpu.max`, 'utf8');
  if (!/paddock/.test(cgroups)) {
    console.warn('VMM cgroups are off on this host: --cpus not checked');
  } else {
    expect(quota.trim()).toMatch(/^50000( 100000)?$/);
  }
  await h.docker(['rm', '-f', 'capped']);
});

test('docker wait returns the exit code', async () => {
  await h.docker(['run', '-d', '--name', 'waiter', 'busybox', 'sh', '-c', 'sleep 1; exit 9']);
  const r = await h.docker(['wait', 'waiter']);
  expect(r.stdout.trim()).toBe('9');
  await h.docker(['rm', 'waiter']);
});

test('inspect has the shapes dockerd uses', async () => {
  await h.docker(['create', '--name', 'shape', '-e', 'FOO=bar', '-w', '/tmp', 'busybox', 'echo', 'x']);
  const c = JSON.parse((await h.docker(['inspect', 'shape'])).stdout)[0];
  expect(c.Id).toMatch(/^[0-9a-f]{64}$/);
  expect(c.Name).toBe('/shape');
  expect(c.Created).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  expect(c.State).toMatchObject({ Status: 'created', Running: false, ExitCode: 0, StartedAt: '0001-01-01T00:00:00Z' });
  expect(c.Path).toBe('echo');
  expect(c.Args).toEqual(['x']);
  expect(c.Config).toMatchObject({ Image: 'busybox', WorkingDir: '/tmp', Cmd: ['echo', 'x'] });
  expect(c.Config.Env).toEqual(expect.arrayContaining(['FOO=bar', expect.stringMatching(/^PATH=/)]));
  expect(c.Image).toMatch(/^sha256:[0-9a-f]{64}$/);
  expect(c.HostConfig.RestartPolicy).toEqual({ Name: 'no', MaximumRetryCount: 0 });
  await h.docker(['rm', 'shape']);
});

describe('bad input gets dockerd\'s answers and the daemon stays up', () => {
  test('malformed JSON → 400', async () => {
    const r = await h.request('POST', '/v1.44/containers/create', '{"Image": "busybox", ');
    expect(r.status).toBe(400);
    expect(r.json().message).toMatch(/invalid JSON/i);
  });

  test('a field of the wrong type → 400', async () => {
    const r = await h.request('POST', '/v1.44/containers/create', { Image: 'busybox', Cmd: 42 });
    expect(r.status).toBe(400);
    expect(r.json().message).toContain('cannot unmarshal number');
  });

  test('a missing image → 404 No such image', async () => {
    const r = await h.request('POST', '/v1.44/containers/create', { Image: 'nope:latest' });
    expect(r.status).toBe(404);
    expect(r.json()).toEqual({ message: 'No such image: nope:latest' });
  });

  test('a duplicate name → 409', async () => {
    await h.docker(['create', '--name', 'dup', 'busybox', 'true']);
    const r = await h.request('POST', '/v1.44/containers/create?name=dup', { Image: 'busybox' });
    expect(r.status).toBe(409);
    expect(r.json().message).toMatch(/The container name "\/dup" is already in use/);
    await h.docker(['rm', 'dup']);
  });

  test('starting a running container → 304; a missing one → 404', async () => {
    await h.docker(['run', '-d', '--name', 'twice', 'busybox', 'sleep', '60']);
    expect((await h.request('POST', '/v1.44/containers/twice/start')).status).toBe(304);
    for (const [method, url] of [
      ['POST', '/containers/ghost/start'],
      ['POST', '/containers/ghost/stop'],
      ['GET', '/containers/ghost/json'],
      ['DELETE', '/containers/ghost'],
      ['POST', '/containers/ghost/kill'],
    ]) {
      const r = await h.request(method, url);
      expect(r.status).toBe(404);
      expect(r.json()).toEqual({ message: 'No such container: ghost' });
    }
    expect((await h.request('DELETE', '/containers/twice')).status).toBe(409);
    await h.docker(['rm', '-f', 'twice']);
  });

  test('network modes a VM cannot have are refused, not silently ignored', async () => {
    for (const args of [['--network', 'host'], ['--network', 'container:other']]) {
      const r = await h.docker(['run', '--rm', ...args, 'busybox', 'true']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/not available/);
    }
  });

  test('a client hanging up during docker export does not take the daemon down', async () => {
    await h.docker(['create', '--name', 'exported', 'busybox', 'true']);
    const { spawn } = await import('node:child_process');
    await new Promise<void>((resolve) => {
      const p = spawn('sh', ['-c', 'docker export exported | head -c 1000 > /dev/null'], { env: { ...process.env, DOCKER_HOST: h.dockerHost } });
      p.on('close', () => resolve());
    });
    expect((await h.request('GET', '/_ping')).body).toBe('OK');
    const full = await h.docker(['export', 'exported']);
    expect(full.stdout.length).toBeGreaterThan(1_000_000); // the whole busybox tree
    await h.docker(['rm', 'exported']);
  });

  test('unknown API paths → 404 page not found; versions outside our range → 400', async () => {
    expect((await h.request('GET', '/v1.44/nope')).json()).toEqual({ message: 'page not found' });
    const tooNew = await h.request('GET', '/v9.99/version');
    expect(tooNew.status).toBe(400);
    expect(tooNew.json().message).toMatch(/client version 9.99 is too new/);
    expect((await h.request('GET', '/_ping')).body).toBe('OK');
  });
});

describe('restart policies and daemon restarts', () => {
  test('on-failure:2 restarts a failing container twice', async () => {
    await h.docker(['run', '-d', '--name', 'flaky', '--restart', 'on-failure:2', 'busybox', 'sh', '-c', 'exit 1']);
    const settled = await waitUntil(async () => {
      const c = JSON.parse((await h.docker(['inspect', 'flaky'])).stdout)[0];
      return c.RestartCount === 2 && !c.State.Running && !c.State.Restarting;
    }, 60_000);
    expect(settled).toBe(true);
    await h.docker(['rm', '-f', 'flaky']);
  });

  test('state survives a daemon restart; always-containers come back running', async () => {
    await h.docker(['create', '--name', 'kept', '-e', 'A=1', 'busybox', 'echo', 'kept']);
    await h.docker(['run', '-d', '--name', 'always', '--restart', 'always', 'busybox', 'sleep', '300']);
    await h.docker(['run', '-d', '--name', 'plain', 'busybox', 'sleep', '300']);
    await h.restartService();
    const kept = JSON.parse((await h.docker(['inspect', 'kept'])).stdout)[0];
    expect(kept.Config.Env).toContain('A=1');
    expect(kept.State.Status).toBe('created');
    // A clean daemon shutdown stops containers as `docker stop` does: sleep is PID 1 and
    // ignores SIGTERM, so it is killed when the grace period ends (137), as under dockerd.
    const plain = JSON.parse((await h.docker(['inspect', 'plain'])).stdout)[0];
    expect(plain.State).toMatchObject({ Running: false, Status: 'exited', ExitCode: 137 });
    expect(
      await waitUntil(async () => JSON.parse((await h.docker(['inspect', 'always'])).stdout)[0].State.Running === true, 30_000),
    ).toBe(true);
    for (const n of ['kept', 'always', 'plain']) await h.docker(['rm', '-f', n]);
  });
});

test('events carry the container\'s name, image and labels', async () => {
  const since = Math.floor(Date.now() / 1000) - 1;
  await h.docker(['run', '--rm', '--name', 'evented', '--label', 'com.example=yes', 'busybox', 'true']);
  const until = Math.floor(Date.now() / 1000) + 1;
  const r = await h.docker(['events', '--since', String(since), '--until', String(until), '--format', '{{json .}}', '--filter', 'container=evented']);
  const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const actions = events.map((e) => e.Action);
  expect(actions).toEqual(expect.arrayContaining(['create', 'attach', 'start', 'die', 'destroy']));
  const start = events.find((e) => e.Action === 'start');
  expect(start.Type).toBe('container');
  expect(start.Actor.Attributes).toMatchObject({ name: 'evented', image: 'busybox', 'com.example': 'yes' });
});
