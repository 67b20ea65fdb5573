/**
 * Cloud Hypervisor driver: the API requests it sends, checked against Cloud Hypervisor's OpenAPI
 * description (vmm/src/api/openapi/cloud-hypervisor.yaml: vm.create with VmConfig — CpusConfig,
 * MemoryConfig, PayloadConfig, DiskConfig, NetConfig, FsConfig, VsockConfig, SerialConfig,
 * RngConfig — then vm.boot; vm.add-disk/add-net/add-fs), the event-monitor stream it reads
 * (event_monitor/src/lib.rs: serde_json pretty-printed events), its capabilities, and what open()
 * says when Cloud Hypervisor cannot run here.
 */
import { PassThrough } from 'node:stream';
import {
  CloudHypervisorHypervisor,
  cloudHypervisorCapabilities,
  cloudHypervisorKernelArgs,
  cloudHypervisorPlan,
  diskConfig,
  findVirtiofsd,
  fsConfig,
  netConfig,
  splitJsonObjects,
  virtiofsdArgs,
  watchEvents,
} from '../../src/drivers/hypervisor/cloud-hypervisor';
import { expectUnavailable, fakeKvmHost, tempDir, testSpec } from './hypervisor-fixtures';

const spec = testSpec({ id: 'c1a0d', memoryMiB: 128, vcpus: 2 });

describe('cloudHypervisorPlan', () => {
  test('vm.create with the whole VmConfig, then vm.boot', () => {
    const calls = cloudHypervisorPlan(spec, '/k/vmlinux', { vsockSocket: '/run/vm/vsock.sock', fsSockets: {} });
    expect(calls.map((c) => `${c.method} ${c.path}`)).toEqual(['PUT /api/v1/vm.create', 'PUT /api/v1/vm.boot']);
    expect(calls[1].body).toBeUndefined();
    expect(calls[0].body).toEqual({
      cpus: { boot_vcpus: 2, max_vcpus: 2 },
      // MemoryConfig.size is in bytes; shared for vhost-user (virtio-fs).
      memory: { size: 128 * 1024 * 1024, shared: true },
      payload: { kernel: '/k/vmlinux', initramfs: '/k/initramfs.cpio', cmdline: cloudHypervisorKernelArgs(spec) },
      // ConsoleMode enum: Off, Pty, Tty, File, Socket, Null.
      serial: { mode: 'Tty' },
      console: { mode: 'Off' },
      rng: { src: '/dev/urandom' },
      // VsockConfig: cid (≥ 3) and socket required.
      vsock: { cid: 3, socket: '/run/vm/vsock.sock', id: 'agent' },
    });
  });

  test('disks, tap NICs and virtio-fs shares', () => {
    const [create] = cloudHypervisorPlan(
      {
        ...spec,
        disks: [{ id: 'd0', hostPath: '/img/rootfs.ext4', readOnly: true }],
        nics: [{ id: 'eth0', mac: '02:42:ac:11:00:02', backend: { kind: 'tap', name: 'pdk0' } }],
        shares: [{ tag: 'rootfs', hostPath: '/merged', kind: 'virtio-fs' }],
      },
      '/k/vmlinux',
      { vsockSocket: '/v', fsSockets: { rootfs: '/run/vm/fs-rootfs.sock' } },
    );
    const body = create.body as Record<string, unknown>;
    expect(body.disks).toEqual([{ id: 'd0', path: '/img/rootfs.ext4', readonly: true }]);
    expect(body.net).toEqual([{ id: 'eth0', tap: 'pdk0', mac: '02:42:ac:11:00:02' }]);
    // FsConfig: tag, socket, num_queues, queue_size required.
    expect(body.fs).toEqual([{ tag: 'rootfs', socket: '/run/vm/fs-rootfs.sock', num_queues: 1, queue_size: 1024, id: 'fs-rootfs' }]);
  });

  test('hotplug bodies are the same configs', () => {
    expect(diskConfig({ id: 'x', hostPath: '/x.qcow2', format: 'qcow2' })).toEqual({ id: 'x', path: '/x.qcow2', readonly: false });
    expect(netConfig({ id: 'n1', mac: '02:00:00:00:00:01', backend: { kind: 'tap', name: 't1' } })).toEqual({ id: 'n1', tap: 't1', mac: '02:00:00:00:00:01' });
    expect(fsConfig({ tag: 'v', hostPath: '/v' }, '/s')).toMatchObject({ tag: 'v', socket: '/s' });
  });

  test('what Cloud Hypervisor lacks is named as a capability', () => {
    expect(() => netConfig({ id: 'n', mac: '02:00:00:00:00:01', backend: { kind: 'unix-stream', path: '/sw' } })).toThrow(/capability nicBackends\[unix-stream\]/);
    expect(() => fsConfig({ tag: 'r', hostPath: '/r', kind: '9p' }, '/s')).toThrow(/capability fsShare\[9p\]/);
  });

  test('the guest reboots as its power-off, so the kernel gets reboot=k and the console on ttyS0', () => {
    expect(cloudHypervisorKernelArgs({ ...spec, kernelArgs: ['x=1'] }).split(' ')).toEqual(expect.arrayContaining(['console=ttyS0', 'reboot=k', 'x=1']));
  });
});

describe('virtiofsd', () => {
  test('Debian\'s Rust virtiofsd first, QEMU\'s C one as fallback', () => {
    const have = new Set(['/usr/libexec/virtiofsd', '/usr/lib/qemu/virtiofsd']);
    expect(findVirtiofsd((n) => (have.has(n) ? n : null))).toBe('/usr/libexec/virtiofsd');
    expect(findVirtiofsd((n) => (n === '/usr/lib/qemu/virtiofsd' ? n : null))).toBe('/usr/lib/qemu/virtiofsd');
    expect(findVirtiofsd(() => null)).toBeNull();
  });

  test('each daemon gets its own option spelling', () => {
    expect(virtiofsdArgs('/usr/lib/qemu/virtiofsd', '/s', { tag: 't', hostPath: '/h', readOnly: true })).toEqual([
      '--socket-path=/s', '-o', 'source=/h', '-o', 'cache=auto', '-o', 'no_posix_lock', '-o', 'readonly',
    ]);
    expect(virtiofsdArgs('/usr/libexec/virtiofsd', '/s', { tag: 't', hostPath: '/h' })).toEqual([
      '--socket-path=/s', '--shared-dir=/h', '--cache=auto', '--sandbox=none',
    ]);
  });
});

describe('event monitor', () => {
  const pretty = (source: string, event: string) =>
    JSON.stringify({ timestamp: { secs: 1, nanos: 2 }, source, event, properties: null }, null, 2);

  test('pretty-printed events are split whole, across chunk boundaries', () => {
    const text = `${pretty('vm', 'booted')}\n${pretty('vm', 'rebooting')}`;
    const cut = text.length - 10;
    const first = splitJsonObjects(text.slice(0, cut));
    expect(first.objects.map((o) => JSON.parse(o).event)).toEqual(['booted']);
    const second = splitJsonObjects(first.rest + text.slice(cut));
    expect(second.objects.map((o) => JSON.parse(o).event)).toEqual(['rebooting']);
    expect(second.rest).toBe('');
  });

  test('braces inside strings do not confuse the split', () => {
    expect(splitJsonObjects('{"a":"}{"}{"b":1}').objects).toEqual(['{"a":"}{"}', '{"b":1}']);
  });

  test('watchEvents reports source and event', async () => {
    const s = new PassThrough();
    const seen: string[] = [];
    watchEvents(s, (source, event) => seen.push(`${source}/${event}`));
    s.write(pretty('vmm', 'starting'));
    s.write(pretty('vm', 'rebooting').slice(0, 20));
    s.end(pretty('vm', 'rebooting').slice(20));
    await new Promise((r) => s.on('end', r));
    expect(seen).toEqual(['vmm/starting', 'vm/rebooting']);
  });
});

test('capabilities: virtio-fs only with a virtiofsd; hotplug of disks and NICs; tap NICs', () => {
  expect(cloudHypervisorCapabilities(true)).toEqual({
    fsShare: ['virtio-fs'],
    hotplugDisk: true,
    hotplugNic: true,
    pause: true,
    nicBackends: ['tap'],
    snapshot: false,
    resizeMemory: false,
    resizeCpus: false,
  });
  expect(cloudHypervisorCapabilities(false).fsShare).toEqual([]);
});

describe('open() where Cloud Hypervisor cannot run', () => {
  const runRoot = tempDir('paddock-ch-open-');

  test('no binary: one line naming what to install', async () => {
    await expectUnavailable(
      CloudHypervisorHypervisor.open({ runRoot, host: fakeKvmHost(null, true) }),
      /^hypervisor "cloud-hypervisor" is not available: cloud-hypervisor not found \(.*cloud-hypervisor\/cloud-hypervisor\/releases.*\)$/,
    );
  });

  test('no KVM', async () => {
    await expectUnavailable(
      CloudHypervisorHypervisor.open({ runRoot, host: fakeKvmHost('/bin/true', false) }),
      /^hypervisor "cloud-hypervisor" is not available: \/dev\/kvm/,
    );
  });
});
