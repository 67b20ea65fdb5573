/**
 * The guest runtime end to end: a real QEMU VM with our kernel and agent runs processes in a
 * busybox container rootfs.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { QemuHypervisor } from '../../src/drivers/hypervisor/qemu';
import { Sandbox } from '../../src/engine/sandbox';
import {
  isAlive,
  makeContainerRootfs,
  openQemu,
  readAll,
  removeBusyboxRootfs,
  repoRoot,
  testGuestImage,
  testRunRoot,
  waitUntil,
  type TestContainerDir,
} from '../helpers/guest';

jest.setTimeout(120_000);

let qemu: QemuHypervisor;
let ctr: TestContainerDir;
let sandbox: Sandbox;

beforeAll(async () => {
  const guest = await testGuestImage();
  qemu = await openQemu();
  ctr = await makeContainerRootfs();
  sandbox = await Sandbox.start(qemu, guest, { id: 'guest-runtime-test', rootfsDir: ctr.rootfs.merged });
});

afterAll(async () => {
  await sandbox?.kill();
  await ctr?.cleanup();
  await removeBusyboxRootfs();
});

async function run(args: string[], input?: string) {
  const p = await sandbox.exec({ args, openStdin: input !== undefined, env: ['PATH=/bin'] });
  if (input !== undefined) p.stdin.end(input);
  const [stdout, stderr, exit] = await Promise.all([readAll(p.stdout), readAll(p.stderr), p.exited]);
  return { stdout, stderr, ...exit };
}

test('the process runs on the guest kernel, not the host one', async () => {
  const r = await run(['/bin/busybox', 'uname', '-r']);
  expect(r.exitCode).toBe(0);
  expect(r.stdout.trim()).toBe((await testGuestImage()).kernelRelease);
  expect(r.stdout.trim()).not.toBe(os.release());
  expect(sandbox.agentInfo.kernelRelease).toBe(r.stdout.trim());
});

test('the guest\'s wall clock is the host\'s', async () => {
  const r = await run(['date', '+%s']);
  expect(Math.abs(Number(r.stdout.trim()) - Date.now() / 1000)).toBeLessThan(5);
});

test('stdout and stderr arrive separately', async () => {
  const r = await run(['sh', '-c', 'echo to-out; echo to-err >&2']);
  expect(r.stdout).toBe('to-out\n');
  expect(r.stderr).toBe('to-err\n');
});

test('the exit code propagates', async () => {
  expect((await run(['sh', '-c', 'exit 3'])).exitCode).toBe(3);
});

test('a missing command is reported as an error, not a hang', async () => {
  await expect(sandbox.exec({ args: ['/no/such/binary'] })).rejects.toMatchObject({ errno: 2 });
});

test('stdin is piped to cat, including its end', async () => {
  const input = 'line one\nline two\n' + 'x'.repeat(300_000) + '\n';
  const r = await run(['cat'], input);
  expect(r.exitCode).toBe(0);
  expect(r.stdout.length).toBe(input.length);
  expect(r.stdout).toBe(input);
});

test('large output is delivered whole under flow control', async () => {
  const r = await run(['sh', '-c', 'dd if=/dev/zero bs=1024 count=2048 2>/dev/null | tr "\\0" a']);
  expect(r.stdout.length).toBe(2048 * 1024);
});

test('the container sees its image as / and writes land in the host writable layer', async () => {
  const r = await run(['sh', '-c', 'ls /bin/busybox && echo written > /hello.txt && cat /proc/1/comm']);
  expect(r.exitCode).toBe(0);
  expect(r.stdout).toContain('/bin/busybox');
  expect(await fs.readFile(path.join(ctr.rootfs.upper, 'hello.txt'), 'utf8')).toBe('written\n');
});

test('a TTY process gets a terminal and its resize', async () => {
  const p = await sandbox.exec({ args: ['sh'], tty: true, openStdin: true, rows: 24, cols: 80, env: ['PATH=/bin'] });
  let out = '';
  p.stdout.on('data', (c: Buffer) => (out += c.toString()));
  p.resize(40, 132);
  p.stdin.write('stty size; tty; exit 7\n');
  const exit = await p.exited;
  expect(exit.exitCode).toBe(7);
  expect(out).toContain('40 132');
  expect(out).toMatch(/\/dev\/pts\/\d+/);
});

test('a second process runs while the first is still running, and signals reach the first', async () => {
  const first = await sandbox.exec({ args: ['sleep', '300'] });
  const second = await run(['echo', 'second']);
  expect(second.stdout).toBe('second\n');
  first.signal(15);
  const exit = await first.exited;
  expect(exit.signal).toBe(15);
  expect(exit.exitCode).toBe(143);
});

describe('VM lifecycle leaves nothing behind', () => {
  test('stop powers the VM off and its QEMU exits', async () => {
    const c = await makeContainerRootfs();
    try {
      const sb = await Sandbox.start(qemu, await testGuestImage(), { id: 'lifecycle-stop', rootfsDir: c.rootfs.merged });
      expect(isAlive(sb.vm.pid)).toBe(true);
      const exit = await sb.stop();
      expect(exit.signal).toBeNull(); // powered off, not killed
      expect(isAlive(sb.vm.pid)).toBe(false);
    } finally {
      await c.cleanup();
    }
  });

  test('kill ends QEMU at once', async () => {
    const c = await makeContainerRootfs();
    try {
      const sb = await Sandbox.start(qemu, await testGuestImage(), { id: 'lifecycle-kill', rootfsDir: c.rootfs.merged });
      await sb.kill();
      expect(isAlive(sb.vm.pid)).toBe(false);
    } finally {
      await c.cleanup();
    }
  });

  test('the run directory is gone once the VM is up', () => {
    const leftovers = existsSync(testRunRoot()) ? readdirSync(testRunRoot()) : [];
    expect(leftovers).toEqual([]);
  });

  test('a crash of the process that owns the VM takes the VM with it', async () => {
    const script = path.join(repoRoot, 'dist/test/fixtures/vm-owner.js');
    if (!existsSync(script)) execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: repoRoot });
    const c = await makeContainerRootfs();
    try {
      const owner = spawn(process.execPath, [script, c.rootfs.merged], { stdio: ['ignore', 'pipe', 'inherit'] });
      const qemuPid = await new Promise<number>((resolve, reject) => {
        let out = '';
        owner.stdout.on('data', (d) => {
          out += d;
          const m = /QEMU_PID=(\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        owner.on('exit', (code) => reject(new Error(`owner exited early (${code})`)));
      });
      expect(isAlive(qemuPid)).toBe(true);
      owner.kill('SIGKILL');
      expect(await waitUntil(() => !isAlive(qemuPid), 5000)).toBe(true);
      // Nothing else that served this VM (QEMU, virtiofsd) may still hold its rootfs.
      const stray = execFileSync('ps', ['-eo', 'pid,args']).toString().split('\n').filter((l) => l.includes(c.rootfs.merged));
      expect(stray).toEqual([]);
    } finally {
      await c.cleanup();
    }
  });
});
