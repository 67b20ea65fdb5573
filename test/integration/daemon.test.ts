/**
 * The paddockd binary as a user runs it: flags, `docker info`, a real pull and run, and what
 * survives a `kill -9` of the daemon (images, containers, no orphaned VMs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runDocker } from '../helpers/daemon';
import { isAlive, repoRoot, waitUntil } from '../helpers/guest';
import { startTestRegistry, type TestRegistry } from '../helpers/registry';
import { seedTestImages } from '../helpers/seed-images';

jest.setTimeout(180_000);

const paddockd = path.join(repoRoot, 'dist/src/cli/paddockd.js');
let base: string;
let registry: TestRegistry;
let busyboxRef: string;
let daemon: ChildProcess | undefined;
let dockerHost: string;

function startPaddockd(extra: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [
    paddockd,
    '-H', dockerHost,
    '--data-root', path.join(base, 'data'),
    '--exec-root', path.join(base, 'exec'),
    '--log-level', 'warn',
    ...extra,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (c) => process.stderr.write(`[paddockd] ${c}`));
  return child;
}

const docker = (args: string[]) => runDocker(args, { dockerHost, configDir: path.join(base, 'cli') });

async function waitForApi(): Promise<void> {
  const up = await waitUntil(async () => (await docker(['version', '--format', '{{.Server.Version}}'])).code === 0, 60_000);
  if (!up) throw new Error('paddockd did not come up');
}

function runCli(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [paddockd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (out += c));
    p.on('close', (code) => resolve({ code: code ?? -1, out }));
  });
}

beforeAll(async () => {
  if (!existsSync(paddockd)) throw new Error('dist/ is missing: run npx tsc -p tsconfig.json (npm test does)');
  base = mkdtempSync(path.join(os.tmpdir(), 'paddockd-test-'));
  dockerHost = `unix://${path.join(base, 'paddock.sock')}`;
  registry = await startTestRegistry();
  busyboxRef = (await seedTestImages(registry, ['busybox'])).busybox.ref;
});

afterAll(async () => {
  daemon?.kill('SIGKILL');
  await registry?.stop();
  if (base) await fs.rm(base, { recursive: true, force: true });
});

test('--help documents the dockerd-like flags', async () => {
  const r = await runCli(['--help']);
  expect(r.code).toBe(0);
  for (const flag of ['--host', '--data-root', '--exec-root', '--insecure-registry', '--log-level', '--hypervisor', '--config-file']) {
    expect(r.out).toContain(flag);
  }
});

test('plain TCP off loopback is refused; an unknown hypervisor is named', async () => {
  const tcp = await runCli(['-H', 'tcp://0.0.0.0:2375']);
  expect(tcp.code).toBe(2);
  expect(tcp.out).toContain('refusing to listen on tcp://0.0.0.0:2375 without TLS');
  const hv = await runCli(['-H', `unix://${path.join(os.tmpdir(), 'x.sock')}`, '--hypervisor', 'nope', '--data-root', path.join(os.tmpdir(), 'paddock-nope')]);
  expect(hv.code).not.toBe(0);
  expect(hv.out).toContain('unknown hypervisor "nope"');
});

test('docker info reports the hypervisor and accelerator; pull and run work', async () => {
  daemon = startPaddockd();
  await waitForApi();
  const info = JSON.parse((await docker(['info', '--format', '{{json .}}'])).stdout);
  expect(info.Labels).toEqual(expect.arrayContaining([expect.stringMatching(/^paddock\.accelerator=(tcg|kvm)$/), 'paddock.hypervisor=qemu']));
  expect(info.DefaultRuntime).toMatch(/^qemu-(tcg|kvm)$/);
  expect((await docker(['pull', busyboxRef])).code).toBe(0);
  const r = await docker(['run', '--rm', busyboxRef, 'echo', 'pulled and ran']);
  expect(r).toMatchObject({ code: 0, stdout: 'pulled and ran\n' });
});

test('after kill -9 of the daemon: VMs are gone, state is intact, running containers read as exited', async () => {
  expect((await docker(['create', '--name', 'idle', busyboxRef, 'true'])).code).toBe(0);
  expect((await docker(['run', '-d', '--name', 'busy', busyboxRef, 'sleep', '600'])).code).toBe(0);
  const qemuPid = JSON.parse((await docker(['inspect', 'busy'])).stdout)[0].State.Pid;
  expect(qemuPid).toBeGreaterThan(0);
  expect(isAlive(qemuPid)).toBe(true);

  daemon!.kill('SIGKILL');
  await new Promise((resolve) => daemon!.once('exit', resolve));
  expect(await waitUntil(() => !isAlive(qemuPid), 5000)).toBe(true);

  daemon = startPaddockd();
  await waitForApi();
  const images = await docker(['images', '--format', '{{.Repository}}:{{.Tag}}']);
  expect(images.stdout).toContain(busyboxRef);
  const busy = JSON.parse((await docker(['inspect', 'busy'])).stdout)[0];
  expect(busy.State).toMatchObject({ Running: false, Status: 'exited', ExitCode: 137 });
  const idle = JSON.parse((await docker(['inspect', 'idle'])).stdout)[0];
  expect(idle.State.Status).toBe('created');
  // Nothing left half-created, and the restarted daemon can run the old container again.
  expect((await docker(['start', '-a', 'idle'])).code).toBe(0);
  expect((await docker(['rm', '-f', 'busy', 'idle'])).code).toBe(0);
});
