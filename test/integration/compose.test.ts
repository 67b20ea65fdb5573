/**
 * docker-compose 1.29 runs a multi-service project on Paddock: a web server published on
 * 127.0.0.1, a client that reaches it by service name once it is healthy, a named volume whose
 * data survives down/up, ps, logs -f, exec, run --rm, scale, restart and down -v.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { httpGet } from '../helpers/http';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon';
import { startTestRegistry, type TestRegistry } from '../helpers/registry';
import { seedTestImages } from '../helpers/seed-images';

jest.setTimeout(600_000);

const COMPOSE = '/usr/bin/docker-compose';
let td: TestDaemon;
let registry: TestRegistry;
let dir: string;

function compose(args: string[], timeoutMs = 180_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(COMPOSE, ['--ansi', 'never', '-p', 'shop', ...args], {
      cwd: dir,
      env: { ...process.env, DOCKER_HOST: td.dockerHost, COMPOSE_HTTP_TIMEOUT: '300' },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c) => (stdout += c));
    p.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

async function ok(args: string[]): Promise<string> {
  const r = await compose(args);
  if (r.code !== 0) throw new Error(`docker-compose ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}


beforeAll(async () => {
  registry = await startTestRegistry();
  const busybox = (await seedTestImages(registry, ['busybox'])).busybox.ref;
  td = await startTestDaemon();
  expect((await td.docker(['pull', busybox])).code).toBe(0);
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-compose-'));
  writeFileSync(
    path.join(dir, 'docker-compose.yml'),
    [
      'version: "2.4"',
      'services:',
      '  web:',
      `    image: ${busybox}`,
      `    command: ["sh", "-c", "mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www"]`,
      '    ports: ["127.0.0.1::80"]',
      '    healthcheck:',
      '      test: ["CMD", "wget", "-qO-", "http://127.0.0.1/"]',
      '      interval: 1s',
      '      timeout: 5s',
      '      retries: 60',
      '  client:',
      `    image: ${busybox}`,
      `    command: ["sh", "-c", "wget -qO- http://web/ > /data/fetched && echo fetched: $$(cat /data/fetched) && exec sleep 600"]`,
      '    volumes: ["shared:/data"]',
      '    depends_on:',
      '      web:',
      '        condition: service_healthy',
      'volumes:',
      '  shared: {}',
      '',
    ].join('\n'),
  );
});

afterAll(async () => {
  if (td) await compose(['down', '-v', '--remove-orphans']).catch(() => undefined);
  await td?.close();
  await registry?.stop();
});

test('up waits for the healthy web server; the client reaches it by service name', async () => {
  const since = Math.floor(Date.now() / 1000) - 1;
  await ok(['up', '-d']);
  const ps = await ok(['ps']);
  expect(ps).toMatch(/shop_web_1\s.*Up \(healthy\)/);
  expect(ps).toMatch(/shop_client_1\s.*Up/);
  // Health gating, as the events stream saw it: web healthy before the client started.
  const until = Math.floor(Date.now() / 1000) + 1;
  const events = await td.docker(['events', '--since', String(since), '--until', String(until), '--format', '{{.Actor.Attributes.name}} {{.Action}}']);
  const lines = events.stdout.split('\n');
  const healthy = lines.findIndex((l) => l === 'shop_web_1 health_status: healthy');
  const clientStart = lines.findIndex((l) => l === 'shop_client_1 start');
  expect(healthy).toBeGreaterThanOrEqual(0);
  expect(clientStart).toBeGreaterThan(healthy);
  expect(lines).toContain('shop_default create');
  const logs = await ok(['logs', '--no-color', 'client']);
  expect(logs).toContain('fetched: hello from web');
});

test('the published port serves from 127.0.0.1; exec and run --rm reach services by name', async () => {
  const port = Number(/127\.0\.0\.1:(\d+)/.exec(await ok(['port', 'web', '80']))![1]);
  expect(await httpGet(port)).toBe('hello from web\n');
  expect(await ok(['exec', '-T', 'client', 'wget', '-qO-', 'http://web/'])).toBe('hello from web\n');
  expect(await ok(['exec', '-T', 'client', 'sh', '-c', 'wget -qO- http://shop_web_1/'])).toBe('hello from web\n');
  const run = await ok(['run', '--rm', '--no-deps', 'client', 'sh', '-c', 'cat /data/fetched; nslookup web 127.0.0.11 >/dev/null && echo resolved']);
  expect(run).toContain('hello from web');
  expect(run).toContain('resolved');
});

test('logs -f follows new output', async () => {
  const p = spawn(COMPOSE, ['--ansi', 'never', '-p', 'shop', 'logs', '-f', '--no-color', 'client'], { cwd: dir, env: { ...process.env, DOCKER_HOST: td.dockerHost } });
  let out = '';
  p.stdout.on('data', (c) => (out += c));
  try {
    await ok(['exec', '-T', 'client', 'sh', '-c', 'echo followed-line > /proc/1/fd/1']);
    const deadline = Date.now() + 30_000;
    while (!out.includes('followed-line') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(out).toContain('followed-line');
  } finally {
    p.kill('SIGKILL');
  }
});

test('scale gives the service name two addresses; restart keeps it serving', async () => {
  await ok(['up', '-d', '--scale', 'web=2', '--no-recreate']);
  const lookup = await ok(['exec', '-T', 'client', 'nslookup', 'web', '127.0.0.11']);
  // Everything after the server's own lines: one address per web container.
  const addresses = lookup.split('Name:').slice(1).join(' ').match(/\d+\.\d+\.\d+\.\d+/g) ?? [];
  expect(new Set(addresses).size).toBe(2);
  await ok(['restart', 'web']);
  expect(await ok(['exec', '-T', 'client', 'sh', '-c', 'for i in $(seq 1 30); do wget -qO- http://web/ && break; sleep 0.5; done'])).toBe('hello from web\n');
});

test('volume data survives down/up; down -v removes containers, network and volume', async () => {
  await ok(['exec', '-T', 'client', 'sh', '-c', 'echo kept > /data/marker']);
  await ok(['down']);
  expect((await td.docker(['volume', 'ls', '-q'])).stdout).toContain('shop_shared');
  await ok(['up', '-d']);
  expect(await ok(['exec', '-T', 'client', 'cat', '/data/marker'])).toBe('kept\n');
  await ok(['down', '-v']);
  expect((await td.docker(['ps', '-aq'])).stdout).toBe('');
  expect((await td.docker(['volume', 'ls', '-q'])).stdout).not.toContain('shop_shared');
  expect((await td.docker(['network', 'ls', '--format', '{{.Name}}'])).stdout).not.toContain('shop_default');
});
