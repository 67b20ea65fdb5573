/**
 * Xen driver: the xl domain configuration it writes, checked against xl.cfg(5) (type, kernel,
 * ramdisk, cmdline, memory, vcpus, on_reboot, channel, p9, disk), xl-disk-configuration(5) (disk
 * specs, target last), xen-pv-channel(7) (connection=socket: the backend listens at path), and
 * xl(1)'s `list` table; its capabilities; what open() says on a host that is not Xen's dom0.
 * (xl's own parser, `xl -N create`, needs a running hypervisor, so it cannot check these here.)
 */
import {
  XenHypervisor,
  parseXlList,
  xenCapabilities,
  xenConfig,
  xenDiskSpec,
  xenDomainName,
  xenKernelArgs,
  xenVdev,
} from '../../src/drivers/hypervisor/xen';
import { expectUnavailable, tempDir, testSpec } from './hypervisor-fixtures';

const spec = testSpec({ id: 'feedface', memoryMiB: 192, vcpus: 2, kernelArgs: ['paddock.test=1'] });

/** Parses the `key = value` lines xl reads: strings in double quotes, lists in brackets. */
function parseXlCfg(text: string): Record<string, string | number | string[]> {
  const out: Record<string, string | number | string[]> = {};
  for (const line of text.trim().split('\n')) {
    const m = /^(\w+) = (.*)$/.exec(line);
    if (!m) throw new Error(`not an xl.cfg line: ${line}`);
    const v = m[2];
    if (v.startsWith('[')) out[m[1]] = [...v.matchAll(/"([^"]*)"/g)].map((x) => x[1]);
    else if (v.startsWith('"')) out[m[1]] = JSON.parse(v);
    else out[m[1]] = Number(v);
  }
  return out;
}

describe('xenConfig', () => {
  test('a PVH domain booting our kernel directly, destroyed on every way out', () => {
    const cfg = parseXlCfg(xenConfig(spec, '/k/vmlinux', '/run/xen/vm/agent.sock'));
    expect(cfg).toMatchObject({
      name: 'paddock-feedface',
      type: 'pvh',
      kernel: '/k/vmlinux',
      ramdisk: '/k/initramfs.cpio',
      cmdline: xenKernelArgs(spec),
      memory: 192,
      maxmem: 192,
      vcpus: 2,
      on_poweroff: 'destroy',
      // The agent powers off by rebooting.
      on_reboot: 'destroy',
      on_crash: 'destroy',
    });
  });

  test('the agent channel is a named PV channel whose backend listens on our unix socket', () => {
    const cfg = parseXlCfg(xenConfig(spec, '/k/vmlinux', '/run/xen/vm/agent.sock'));
    expect(cfg.channel).toEqual(['name=paddock.agent, connection=socket, path=/run/xen/vm/agent.sock']);
    // hvc0 is the console, the channel the next PV console; the agent is told which.
    expect(xenKernelArgs(spec).split(' ')).toEqual(expect.arrayContaining(['console=hvc0', 'paddock.channel=/dev/hvc1']));
  });

  test('disks are blkfront vdevs with target last; shares are 9pfs with security_model=none', () => {
    const cfg = parseXlCfg(
      xenConfig(
        {
          ...spec,
          disks: [{ id: 'a', hostPath: '/img/a.raw' }, { id: 'b', hostPath: '/img/b,with,commas.qcow2', format: 'qcow2', readOnly: true }],
          shares: [{ tag: 'rootfs', hostPath: '/var/lib/paddock/c/merged', kind: '9p-xen' }],
        },
        '/k/vmlinux',
        '/s',
      ),
    );
    expect(cfg.disk).toEqual([
      'format=raw, vdev=xvda, access=rw, target=/img/a.raw',
      // target= is last, so it may contain commas (xl-disk-configuration(5)).
      'format=qcow2, vdev=xvdb, access=ro, target=/img/b,with,commas.qcow2',
    ]);
    expect(cfg.p9).toEqual(['tag=rootfs, security_model=none, path=/var/lib/paddock/c/merged']);
  });

  test('values xl cannot carry are refused, not mangled', () => {
    expect(() => xenConfig({ ...spec, shares: [{ tag: 'x', hostPath: '/a,b', kind: '9p-xen' }] }, '/k', '/s')).toThrow(/cannot be written/);
    expect(() => xenConfig(spec, '/k', '/run/a=b/agent.sock')).toThrow(/cannot be written/);
    expect(() => xenConfig({ ...spec, kernelArgs: ['a"b'] }, '/k', '/s')).toThrow(/cannot be written/);
  });

  test('missing capabilities are named: read-only 9pfs, other share kinds, NICs', () => {
    expect(() => xenConfig({ ...spec, shares: [{ tag: 'x', hostPath: '/a', kind: '9p-xen', readOnly: true }] }, '/k', '/s')).toThrow(
      /capability read-only fsShare/,
    );
    expect(() => xenConfig({ ...spec, shares: [{ tag: 'x', hostPath: '/a', kind: '9p' }] }, '/k', '/s')).toThrow(/capability fsShare\[9p\]/);
    expect(() =>
      xenConfig({ ...spec, nics: [{ id: 'n', mac: '02:00:00:00:00:01', backend: { kind: 'tap', name: 't' } }] }, '/k', '/s'),
    ).toThrow(/capability nicBackends/);
  });

  test('block-attach specs and vdev names', () => {
    expect(xenDiskSpec({ id: 'd', hostPath: '/x.img', readOnly: true }, 'xvdc')).toBe('format=raw, vdev=xvdc, access=ro, target=/x.img');
    expect([0, 1, 25, 26, 27].map(xenVdev)).toEqual(['xvda', 'xvdb', 'xvdz', 'xvdaa', 'xvdab']);
    expect(xenDomainName('x'.repeat(100))).toHaveLength(64);
  });
});

test('xl list output is parsed (xl(1) example)', () => {
  const text = [
    'Name                                        ID   Mem VCPUs      State   Time(s)',
    'Domain-0                                     0   750     4     r-----   11794.3',
    'paddock-feedface                             7   192     2     -b----       0.3',
  ].join('\n');
  expect(parseXlList(text)).toEqual([
    { name: 'Domain-0', id: 0, memMiB: 750, vcpus: 4, state: 'r-----', cpuSeconds: 11794.3 },
    { name: 'paddock-feedface', id: 7, memMiB: 192, vcpus: 2, state: '-b----', cpuSeconds: 0.3 },
  ]);
});

test('capabilities: Xen 9pfs, disk hotplug, pause; no NIC backend', () => {
  expect(xenCapabilities).toEqual({
    fsShare: ['9p-xen'],
    hotplugDisk: true,
    hotplugNic: false,
    pause: true,
    nicBackends: [],
    snapshot: false,
    resizeMemory: false,
    resizeCpus: false,
  });
});

describe('open() where Xen cannot run', () => {
  const runRoot = tempDir('paddock-xen-open-');
  const host = (xl: string | null, caps: string | null) => ({ locate: () => xl, xenCapabilities: async () => caps });

  test('no xl: one line naming the packages', async () => {
    await expectUnavailable(
      XenHypervisor.open({ runRoot, host: host(null, null) }),
      'hypervisor "xen" is not available: xl not found (apt-get install xen-utils-4.17 qemu-system-xen)',
    );
  });

  test('xl installed but the host is not running on Xen', async () => {
    await expectUnavailable(
      XenHypervisor.open({ runRoot, host: host('/usr/sbin/xl', null) }),
      /^hypervisor "xen" is not available: this host is not running on Xen .*\(apt-get install xen-system-amd64, reboot into Xen/,
    );
  });

  test('a Xen guest (domU) is not a toolstack domain', async () => {
    await expectUnavailable(XenHypervisor.open({ runRoot, host: host('/usr/sbin/xl', '') }), /Xen guest, not dom0/);
  });

  test('on this machine, with the real host checks', async () => {
    await expect(XenHypervisor.open({ runRoot })).rejects.toThrow(/^hypervisor "xen" is not available: /);
  });
});
