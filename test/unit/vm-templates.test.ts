/** VM templates (issue 7): which VMs can be clones, and what a template is keyed on. */
import { parseDaemonArgs } from '../../src/config';
import type { HypervisorCapabilities, HypervisorInfo, VmSpec } from '../../src/drivers/hypervisor/hypervisor';
import { templateKey, templateShape, untemplatable } from '../../src/engine/vm-templates';

const caps: HypervisorCapabilities = {
  fsShare: ['9p', 'virtio-fs'],
  hotplugDisk: false,
  hotplugNic: false,
  pause: true,
  nicBackends: ['unix-stream', 'tap'],
  snapshot: true,
  resizeMemory: false,
  resizeCpus: false,
};
const info: HypervisorInfo = { name: 'qemu', version: '7.2.22', accelerator: 'tcg', acceleratorReason: 'test' };
const spec: VmSpec = {
  id: 'c1',
  kernelPath: '/k',
  initrdPath: '/i',
  memoryMiB: 128,
  vcpus: 1,
  shares: [
    { tag: 'rootfs', hostPath: '/ctr/1/merged', kind: '9p' },
    { tag: 'etcfiles', hostPath: '/ctr/1/etc', kind: '9p' },
  ],
  nics: [{ id: 'net0', mac: '02:42:ac:11:00:02', backend: { kind: 'unix-stream', path: '/run/sw.sock' } }],
};
const key = (s: VmSpec, k = 'k', i = 'i') => templateKey(templateShape(s, info), k, i);

test('a 9p VM with one unix-stream NIC can be a clone', () => {
  expect(untemplatable(spec, caps)).toBeNull();
  expect(untemplatable({ ...spec, nics: [] }, caps)).toBeNull();
});

test('what cannot migrate or has no template boots', () => {
  expect(untemplatable(spec, { ...caps, snapshot: false })).toMatch(/cannot save/);
  expect(untemplatable({ ...spec, acpi: true }, caps)).toMatch(/ACPI/);
  expect(untemplatable({ ...spec, shares: [{ tag: 'rootfs', hostPath: '/x', kind: 'virtio-fs' }] }, caps)).toMatch(/virtio-fs/);
  expect(untemplatable({ ...spec, disks: [{ id: 'd', hostPath: '/d' }] }, caps)).toMatch(/disks/);
  expect(untemplatable({ ...spec, nics: [{ id: 'n', mac: 'm', backend: { kind: 'tap', name: 'tap0' } }] }, caps)).toMatch(/tap/);
  expect(untemplatable({ ...spec, nics: [spec.nics![0], { ...spec.nics![0], id: 'net1' }] }, caps)).toMatch(/more than one/);
  expect(untemplatable({ ...spec, template: { mode: 'boot', dir: '/t' } }, caps)).toMatch(/already/);
});

test('per-container paths, ids, MACs and sockets do not change the key', () => {
  const other: VmSpec = {
    ...spec,
    id: 'c2',
    shares: spec.shares!.map((s) => ({ ...s, hostPath: s.hostPath.replace('/1/', '/2/'), readOnly: true })),
    nics: [{ id: 'net0', mac: '02:42:ac:11:00:03', backend: { kind: 'unix-stream', path: '/run/other.sock' } }],
  };
  expect(key(other)).toBe(key(spec));
});

test('the device shape, memory, vCPUs, kernel arguments and guest image change the key', () => {
  const base = key(spec);
  const variants: VmSpec[] = [
    { ...spec, memoryMiB: 256 },
    { ...spec, vcpus: 2 },
    { ...spec, kernelArgs: ['debug'] },
    { ...spec, nics: [] },
    { ...spec, shares: spec.shares!.slice(0, 1) },
    { ...spec, shares: [...spec.shares!].reverse() },
  ];
  const keys = new Set([base, ...variants.map((v) => key(v)), key(spec, 'k2'), key(spec, 'k', 'i2')]);
  expect(keys.size).toBe(variants.length + 3);
  expect(templateKey(templateShape(spec, { ...info, version: '8.2' }), 'k', 'i')).not.toBe(base);
  expect(templateKey(templateShape(spec, { ...info, accelerator: 'kvm' }), 'k', 'i')).not.toBe(base);
});

test('--vm-templates is on by default and takes true/false', () => {
  const parse = (argv: string[]) => {
    const c = parseDaemonArgs(argv);
    if (c === 'help') throw new Error('help');
    return c.vmTemplates;
  };
  expect(parse([])).toBe(true);
  expect(parse(['--vm-templates=false'])).toBe(false);
  expect(parse(['--vm-templates', 'true'])).toBe(true);
  expect(() => parse(['--vm-templates=maybe'])).toThrow(/vm-templates/);
});
