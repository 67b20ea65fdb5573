/**
 * Firecracker driver: the API calls it makes, checked against Firecracker's API description
 * (src/firecracker/swagger/firecracker.yaml in firecracker-microvm/firecracker: MachineConfiguration,
 * BootSource, Drive, NetworkInterface, Vsock, InstanceActionInfo; docs/vsock.md for the hybrid
 * vsock handshake), its capabilities, and what open() says when Firecracker cannot run here.
 * A fake Firecracker (an HTTP server on the API socket and a hybrid-vsock socket whose "guest"
 * answers like the agent) drives the real create() path.
 */
import { promises as fs, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AgentConnection } from '../../src/drivers/agent/agent-client';
import {
  FirecrackerHypervisor,
  firecrackerCapabilities,
  firecrackerInstanceId,
  firecrackerKernelArgs,
  firecrackerPlan,
} from '../../src/drivers/hypervisor/firecracker';
import { openHypervisor } from '../../src/drivers/hypervisor/registry';
import { expectUnavailable, fakeKvmHost, tempDir, testSpec } from './hypervisor-fixtures';

const spec = testSpec({ id: 'c0ffee', memoryMiB: 256, vcpus: 2, kernelArgs: ['paddock.test=1'] });

describe('firecrackerPlan', () => {
  test('configures machine, boot source and vsock, then starts the instance', () => {
    const calls = firecrackerPlan(spec, '/k/vmlinux', { vsockSocket: '/run/vm/vsock.sock' });
    expect(calls.map((c) => `${c.method} ${c.path}`)).toEqual([
      'PUT /machine-config',
      'PUT /boot-source',
      'PUT /vsock',
      'PUT /actions',
    ]);
    // MachineConfiguration: vcpu_count and mem_size_mib are required.
    expect(calls[0].body).toEqual({ vcpu_count: 2, mem_size_mib: 256, smt: false });
    // BootSource: kernel_image_path required; initrd_path and boot_args optional.
    expect(calls[1].body).toEqual({
      kernel_image_path: '/k/vmlinux',
      initrd_path: '/k/initramfs.cpio',
      boot_args: firecrackerKernelArgs(spec),
    });
    // Vsock: guest_cid (≥ 3) and uds_path.
    expect(calls[2].body).toEqual({ guest_cid: 3, uds_path: '/run/vm/vsock.sock' });
    // InstanceActionInfo.
    expect(calls[3].body).toEqual({ action_type: 'InstanceStart' });
  });

  test('the kernel gets the serial console, i8042 reset as power-off, and the spec\'s arguments last', () => {
    const args = firecrackerKernelArgs(spec).split(' ');
    expect(args).toEqual(expect.arrayContaining(['console=ttyS0', 'reboot=k', 'rdinit=/init']));
    expect(args[args.length - 1]).toBe('paddock.test=1');
  });

  test('disks are drives that are not the root device, raw only', () => {
    const calls = firecrackerPlan(
      { ...spec, disks: [{ id: 'rootfs', hostPath: '/img/rootfs.ext4' }, { id: 'data', hostPath: '/img/d.raw', readOnly: true }] },
      '/k/vmlinux',
      { vsockSocket: '/s' },
    );
    const drives = calls.filter((c) => c.path.startsWith('/drives/'));
    expect(drives).toEqual([
      { method: 'PUT', path: '/drives/rootfs', body: { drive_id: 'rootfs', path_on_host: '/img/rootfs.ext4', is_root_device: false, is_read_only: false } },
      { method: 'PUT', path: '/drives/data', body: { drive_id: 'data', path_on_host: '/img/d.raw', is_root_device: false, is_read_only: true } },
    ]);
    expect(() => firecrackerPlan({ ...spec, disks: [{ id: 'q', hostPath: '/x.qcow2', format: 'qcow2' }] }, '/k', { vsockSocket: '/s' })).toThrow(/raw/);
  });

  test('a tap NIC becomes a network interface; a unix-stream one names the missing capability', () => {
    const calls = firecrackerPlan(
      { ...spec, nics: [{ id: 'eth0', mac: '02:42:ac:11:00:02', backend: { kind: 'tap', name: 'pdk0' } }] },
      '/k/vmlinux',
      { vsockSocket: '/s' },
    );
    expect(calls.find((c) => c.path.startsWith('/network-interfaces/'))).toEqual({
      method: 'PUT',
      path: '/network-interfaces/eth0',
      body: { iface_id: 'eth0', guest_mac: '02:42:ac:11:00:02', host_dev_name: 'pdk0' },
    });
    expect(() =>
      firecrackerPlan({ ...spec, nics: [{ id: 'eth0', mac: '02:00:00:00:00:01', backend: { kind: 'unix-stream', path: '/sw' } }] }, '/k', { vsockSocket: '/s' }),
    ).toThrow(/capability nicBackends\[unix-stream\]/);
  });

  test('shares are refused naming the fsShare capability (Firecracker has no 9p or virtio-fs)', () => {
    expect(() => firecrackerPlan({ ...spec, shares: [{ tag: 'rootfs', hostPath: '/r' }] }, '/k', { vsockSocket: '/s' })).toThrow(
      expect.objectContaining({ kind: 'not-implemented', message: expect.stringMatching(/firecracker.*capability fsShare/) }),
    );
  });

  test('instance ids fit --id (alphanumerics and hyphens, 64 at most)', () => {
    expect(firecrackerInstanceId('abc_def.1')).toBe('paddock-abc-def-1');
    expect(firecrackerInstanceId('x'.repeat(128))).toHaveLength(64);
  });
});

test('capabilities: no directory sharing, no hotplug, pause, tap NICs only', () => {
  expect(firecrackerCapabilities).toEqual({
    fsShare: [],
    hotplugDisk: false,
    hotplugNic: false,
    pause: true,
    nicBackends: ['tap'],
    snapshot: false,
    resizeMemory: false,
    resizeCpus: false,
  });
});

describe('open() where Firecracker cannot run', () => {
  const runRoot = tempDir('paddock-fc-open-');

  test('no binary: one line naming what to install', async () => {
    await expectUnavailable(
      FirecrackerHypervisor.open({ runRoot, host: fakeKvmHost(null, true) }),
      /^hypervisor "firecracker" is not available: firecracker not found \(.*firecracker-microvm\/firecracker\/releases.*\)$/,
    );
  });

  test('no KVM: says so', async () => {
    await expectUnavailable(
      FirecrackerHypervisor.open({ runRoot, host: fakeKvmHost('/bin/true', false) }),
      /^hypervisor "firecracker" is not available: \/dev\/kvm/,
    );
  });

  test('through the registry, as the daemon opens it (this machine has no firecracker on PATH)', async () => {
    const env = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      await expect(openHypervisor('firecracker', { runRoot })).rejects.toThrow(/^hypervisor "firecracker" is not available: /);
    } finally {
      process.env.PATH = env;
    }
  });
});

/**
 * A stand-in for the firecracker binary: serves the API on --api-sock, records every request,
 * and after InstanceStart listens on the vsock uds_path answering `CONNECT 1024` with `OK` and
 * then an agent READY frame (rootfs-builder/PROTOCOL.md: 12-byte header, type 1, TLV VERSION).
 */
const FAKE_FIRECRACKER = `
const http = require('http'), net = require('net'), fs = require('fs');
const sock = process.argv[process.argv.indexOf('--api-sock') + 1];
const log = LOG_PATH;
let vsock;
http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    fs.appendFileSync(log, JSON.stringify({ method: req.method, path: req.url, body: body ? JSON.parse(body) : undefined }) + '\\n');
    const b = body ? JSON.parse(body) : {};
    if (req.url === '/vsock') vsock = b.uds_path;
    if (req.url === '/actions' && b.action_type === 'InstanceStart') {
      net.createServer((c) => {
        c.once('data', (d) => {
          if (String(d) !== 'CONNECT 1024\\n') return c.destroy();
          const tlv = Buffer.from([0, 1, 0, 0, 0, 4, 0, 0, 0, 1]);
          const h = Buffer.alloc(12); h.writeUInt32BE(tlv.length, 0); h.writeUInt16BE(1, 4);
          c.write(Buffer.concat([Buffer.from('OK 1073741824\\n'), h, tlv]));
        });
      }).listen(vsock);
    }
    res.writeHead(204); res.end();
  });
}).listen(sock);
process.stdout.write('fake firecracker console\\n');
`;

describe('create() against a fake Firecracker', () => {
  const dir = tempDir('paddock-fc-fake-');
  let log: string;
  beforeAll(async () => {
    const bin = path.join(dir, 'firecracker');
    // The log path is written into the script: jest's process.env is not the one children inherit.
    log = path.join(dir, 'requests.log');
    writeFileSync(bin, `#!${process.execPath}\n${FAKE_FIRECRACKER.replace('LOG_PATH', JSON.stringify(log))}`, { mode: 0o755 });
    // An ELF-looking kernel, so that no vmlinux needs to be beside it.
    writeFileSync(path.join(dir, 'vmlinux'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]));
  });

  test('sends the plan over the API socket, reaches the agent over hybrid vsock, and cleans up on kill', async () => {
    const hv = await FirecrackerHypervisor.open({
      runRoot: path.join(dir, 'run'),
      binary: path.join(dir, 'firecracker'),
      host: fakeKvmHost(null, true),
    });
    expect(hv.info()).toMatchObject({ name: 'firecracker', accelerator: 'kvm' });
    const vm = await hv.create({ ...spec, kernelPath: path.join(dir, 'vmlinux') });
    const agent = new AgentConnection(vm.agentChannel);
    await expect(agent.waitReady(5000)).resolves.toMatchObject({ protocolVersion: 1 });
    const requests = (await fs.readFile(log, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(requests.map((r) => `${r.method} ${r.path}`)).toEqual(['PUT /machine-config', 'PUT /boot-source', 'PUT /vsock', 'PUT /actions']);
    await vm.pause();
    await vm.resume();
    const lastTwo = (await fs.readFile(log, 'utf8')).trim().split('\n').slice(-2).map((l) => JSON.parse(l));
    expect(lastTwo).toEqual([
      { method: 'PATCH', path: '/vm', body: { state: 'Paused' } },
      { method: 'PATCH', path: '/vm', body: { state: 'Resumed' } },
    ]);
    await expect(vm.addDisk({ id: 'd', hostPath: '/x' })).rejects.toThrow(/capability hotplugDisk/);
    const exit = await vm.kill();
    expect(exit.signal).toBe('SIGKILL');
    expect(exit.consoleTail).toContain('fake firecracker console');
    expect(await fs.readdir(path.join(dir, 'run', 'firecracker'))).toEqual([]);
  });

  test('a VMM that dies during start is reported, and leaves nothing behind', async () => {
    const bad = path.join(dir, 'firecracker-dies');
    writeFileSync(bad, '#!/bin/sh\necho "fatal: no kvm" >&2\nexit 1\n', { mode: 0o755 });
    const hv = await FirecrackerHypervisor.open({ runRoot: path.join(dir, 'run2'), binary: bad, host: fakeKvmHost(null, true) });
    await expect(hv.create({ ...spec, kernelPath: path.join(dir, 'vmlinux') })).rejects.toThrow(/exited/);
    expect(await fs.readdir(path.join(dir, 'run2', 'firecracker'))).toEqual([]);
  });
});


test('the engine refuses a directory rootfs on Firecracker, naming what is missing, before any VM starts', async () => {
  const { Sandbox } = await import('../../src/engine/sandbox');
  let created = false;
  const firecrackerLike = {
    info: () => ({ name: 'firecracker', version: 'test', accelerator: 'kvm', acceleratorReason: 'test' }),
    capabilities: () => ({ ...firecrackerCapabilities }),
    create: async () => {
      created = true;
      throw new Error('must not be called');
    },
  };
  const guest = { kernelPath: '/k', initrdPath: '/i', kernelRelease: '6.1', kind: 'paddock' as const, needsAcpi: false, fsShare: ['9p' as const, 'virtio-fs' as const] };
  await expect(Sandbox.start(firecrackerLike, guest, { id: 'fc-rootfs', rootfsDir: '/tmp' })).rejects.toThrow(
    /no directory sharing in common: the firecracker driver offers none/,
  );
  expect(created).toBe(false);
});
