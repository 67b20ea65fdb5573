/**
 * VirtualBox driver: the VBoxManage argument lists it runs, checked against the VirtualBox manual
 * ("VBoxManage createvm / modifyvm / storagectl / storageattach / sharedfolder / createmedium /
 * unregistervm / closemedium"; 7.0 renamed --uartmode<N> to --uart-mode<N> and friends), its
 * capabilities, and what open() says without VirtualBox. The boot disk builder is run for real.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, promises as fs, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  VirtualBoxHypervisor,
  diskCommands,
  shareCommand,
  virtualBoxCapabilities,
  virtualBoxKernelArgs,
  virtualBoxPlan,
  virtualBoxTeardown,
  type VirtualBoxPaths,
} from '../../src/drivers/hypervisor/virtualbox';
import { expectUnavailable, tempDir, testSpec } from './hypervisor-fixtures';

const spec = testSpec({ id: 'b0a710ad', memoryMiB: 256, vcpus: 1 });
const paths: VirtualBoxPaths = {
  vmDir: '/run/paddock/vm/virtualbox/paddock-b0a710ad',
  bootDisk: '/run/paddock/vm/virtualbox/paddock-b0a710ad/boot.vdi',
  agentPipe: '/run/paddock/vm/virtualbox/paddock-b0a710ad/agent.sock',
  consoleLog: '/run/paddock/vm/virtualbox/paddock-b0a710ad/console.log',
};

/** The value(s) after an option in an argument list. */
function after(args: string[], option: string, n = 1): string[] {
  const i = args.indexOf(option);
  if (i < 0) throw new Error(`${option} missing from ${args.join(' ')}`);
  return args.slice(i + 1, i + 1 + n);
}

describe('virtualBoxPlan', () => {
  test('creates and registers the VM in its own directory under the run root', () => {
    const { commands } = virtualBoxPlan(spec, paths, 7);
    expect(commands[0]).toEqual(['createvm', '--name', 'paddock-b0a710ad', '--basefolder', '/run/paddock/vm/virtualbox', '--ostype', 'Linux_64', '--register']);
  });

  test('modifyvm: memory, CPUs, BIOS boot from disk, agent on COM1 as a server pipe, console on COM2 to a file (7.x spelling)', () => {
    const modify = virtualBoxPlan(spec, paths, 7).commands[1];
    expect(modify.slice(0, 2)).toEqual(['modifyvm', 'paddock-b0a710ad']);
    expect(after(modify, '--memory')).toEqual(['256']);
    expect(after(modify, '--cpus')).toEqual(['1']);
    expect(after(modify, '--firmware')).toEqual(['bios']);
    expect(after(modify, '--boot1')).toEqual(['disk']);
    expect(after(modify, '--nic1')).toEqual(['none']);
    expect(after(modify, '--uart1', 2)).toEqual(['0x3F8', '4']);
    expect(after(modify, '--uart-mode1', 2)).toEqual(['server', paths.agentPipe]);
    expect(after(modify, '--uart2', 2)).toEqual(['0x2F8', '3']);
    expect(after(modify, '--uart-mode2', 2)).toEqual(['file', paths.consoleLog]);
    expect(after(modify, '--paravirt-provider')).toEqual(['kvm']);
    expect(after(modify, '--audio-driver')).toEqual(['none']);
  });

  test('VirtualBox 6.x gets the old option names', () => {
    const modify = virtualBoxPlan(spec, paths, 6).commands[1];
    expect(after(modify, '--uartmode1', 2)).toEqual(['server', paths.agentPipe]);
    expect(after(modify, '--uartmode2', 2)).toEqual(['file', paths.consoleLog]);
    expect(after(modify, '--paravirtprovider')).toEqual(['kvm']);
    expect(modify).not.toContain('--uart-mode1');
  });

  test('the guest kernel is told its console and agent ports', () => {
    expect(virtualBoxKernelArgs(spec)).toEqual(expect.arrayContaining(['console=ttyS1', '8250.nr_uarts=2', 'paddock.channel=/dev/ttyS0']));
  });

  test('halt on reset, a SATA controller, the boot disk on port 0', () => {
    const { commands, media } = virtualBoxPlan(spec, paths, 7);
    expect(commands[2]).toEqual(['setextradata', 'paddock-b0a710ad', 'VBoxInternal/PDM/HaltOnReset', '1']);
    expect(commands[3].slice(0, 6)).toEqual(['storagectl', 'paddock-b0a710ad', '--name', 'SATA', '--add', 'sata']);
    expect(after(commands[3], '--controller')).toEqual(['IntelAhci']);
    expect(commands[4]).toEqual([
      'storageattach', 'paddock-b0a710ad', '--storagectl', 'SATA', '--port', '0', '--device', '0', '--type', 'hdd', '--medium', paths.bootDisk,
    ]);
    expect(media).toEqual([paths.bootDisk]);
  });

  test('raw disks get a RawDisk VMDK descriptor; read-only ones are immutable; all hot-pluggable', () => {
    const { commands, media } = virtualBoxPlan(
      { ...spec, disks: [{ id: 'data', hostPath: '/img/data.raw', readOnly: true }, { id: 'q', hostPath: '/img/q.qcow2', format: 'qcow2' }] },
      paths,
      7,
    );
    const vmdk = path.join(paths.vmDir, 'disk-data.vmdk');
    expect(commands).toContainEqual(['createmedium', 'disk', '--filename', vmdk, '--format', 'VMDK', '--variant', 'RawDisk', '--property', 'RawDrive=/img/data.raw']);
    expect(commands).toContainEqual([
      'storageattach', 'paddock-b0a710ad', '--storagectl', 'SATA', '--port', '1', '--device', '0', '--type', 'hdd', '--medium', vmdk, '--hotpluggable', 'on', '--mtype', 'immutable',
    ]);
    expect(commands).toContainEqual([
      'storageattach', 'paddock-b0a710ad', '--storagectl', 'SATA', '--port', '2', '--device', '0', '--type', 'hdd', '--medium', '/img/q.qcow2', '--hotpluggable', 'on',
    ]);
    expect(media).toEqual([paths.bootDisk, vmdk, '/img/q.qcow2']);
    expect(diskCommands('vm', { id: 'x', hostPath: '/a.raw' }, 3, '/d').commands).toHaveLength(2);
  });

  test('shares are shared folders (transient on a running VM); other kinds name the capability', () => {
    const { commands } = virtualBoxPlan({ ...spec, shares: [{ tag: 'rootfs', hostPath: '/r', kind: 'vboxsf' }, { tag: 'ro', hostPath: '/o', readOnly: true }] }, paths, 7);
    expect(commands).toContainEqual(['sharedfolder', 'add', 'paddock-b0a710ad', '--name', 'rootfs', '--hostpath', '/r']);
    expect(commands).toContainEqual(['sharedfolder', 'add', 'paddock-b0a710ad', '--name', 'ro', '--hostpath', '/o', '--readonly']);
    expect(shareCommand('vm', { tag: 'late', hostPath: '/l' }, true)).toEqual(['sharedfolder', 'add', 'vm', '--name', 'late', '--hostpath', '/l', '--transient']);
    expect(() => shareCommand('vm', { tag: 'x', hostPath: '/x', kind: '9p' }, false)).toThrow(/capability fsShare\[9p\]/);
  });

  test('NICs are refused naming the capability', () => {
    expect(() => virtualBoxPlan({ ...spec, nics: [{ id: 'n', mac: '02:00:00:00:00:01', backend: { kind: 'tap', name: 't' } }] }, paths, 7)).toThrow(
      /capability nicBackends/,
    );
  });

  test('teardown unregisters and closes media without deleting them', () => {
    const t = virtualBoxTeardown('paddock-b0a710ad', ['/boot.vdi', '/user/data.vdi']);
    expect(t).toEqual([['unregistervm', 'paddock-b0a710ad'], ['closemedium', 'disk', '/boot.vdi'], ['closemedium', 'disk', '/user/data.vdi']]);
    expect(t.flat()).not.toContain('--delete');
  });
});

test('capabilities: vboxsf, disk hotplug, pause; no NIC backend', () => {
  expect(virtualBoxCapabilities).toEqual({
    fsShare: ['vboxsf'],
    hotplugDisk: true,
    hotplugNic: false,
    pause: true,
    nicBackends: [],
    snapshot: false,
    resizeMemory: false,
    resizeCpus: false,
  });
});

describe('open() without VirtualBox', () => {
  const runRoot = tempDir('paddock-vbox-open-');

  test('no VBoxManage: one line naming what to install', async () => {
    await expectUnavailable(
      VirtualBoxHypervisor.open({ runRoot, host: { locate: () => null, driverLoaded: () => false } }),
      /^hypervisor "virtualbox" is not available: VBoxManage not found \(install VirtualBox 7 from virtualbox\.org.*\)$/,
    );
  });

  test('installed but vboxdrv not loaded', async () => {
    await expectUnavailable(
      VirtualBoxHypervisor.open({ runRoot, host: { locate: (n) => `/usr/bin/${n}`, driverLoaded: () => false } }),
      /\/dev\/vboxdrv is missing \(run `\/sbin\/vboxconfig`/,
    );
  });
});

describe('rootfs-builder/vbox-boot-disk.sh', () => {
  const script = path.resolve(__dirname, '../../rootfs-builder/vbox-boot-disk.sh');
  const tools = ['mkfs.vfat', 'mcopy', 'syslinux', 'sfdisk'].every((t) => ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => existsSync(path.join(d, t))));
  const maybe = tools && existsSync('/usr/lib/syslinux/mbr/mbr.bin') ? test : test.skip;

  maybe('builds a partitioned FAT disk with syslinux, the kernel, the initramfs and the command line', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-vbox-disk-'));
    try {
      writeFileSync(path.join(dir, 'bzImage'), Buffer.alloc(1024 * 1024, 1));
      writeFileSync(path.join(dir, 'initrd'), Buffer.alloc(4096, 2));
      const out = path.join(dir, 'boot.img');
      execFileSync('bash', [script, path.join(dir, 'bzImage'), path.join(dir, 'initrd'), out, 'console=ttyS1', 'paddock.channel=/dev/ttyS0'], {
        env: { ...process.env, PADDOCK_NO_INSTALL: '1' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const disk = await fs.readFile(out);
      expect(disk.readUInt16LE(510)).toBe(0xaa55); // MBR signature
      expect(disk[446]).toBe(0x80); // first partition active
      expect(disk.readUInt32LE(446 + 8)).toBe(2048); // starts at 1 MiB
      const files = execFileSync('mdir', ['-a', '-b', '-i', `${out}@@1M`, '::/']).toString();
      for (const f of ['VMLINUZ', 'INITRD', 'SYSLINUX.CFG', 'LDLINUX.SYS']) expect(files.toUpperCase()).toContain(f);
      const cfg = execFileSync('mtype', ['-i', `${out}@@1M`, '::/syslinux.cfg']).toString();
      expect(cfg).toContain('APPEND console=ttyS1 paddock.channel=/dev/ttyS0');
      expect(cfg).toContain('INITRD /initrd');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  test('refuses a bad output path', () => {
    expect(() => execFileSync('bash', [script, '/etc/hostname', '/etc/hostname', '/'], { stdio: 'pipe' })).toThrow(/refusing output path/);
  });
});
