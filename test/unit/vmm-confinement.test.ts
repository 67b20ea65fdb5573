/** The VMM launch wrapper's argv, the paths a QEMU command line names, limits and cgroup layout. */
import { spawnSync } from 'node:child_process';
import {
  buildLaunch,
  cgroupParents,
  deriveLimits,
  limitsFromHostConfig,
  pathsInArgs,
  shq,
  VMM_MEMORY_OVERHEAD_BYTES,
  type LaunchPlan,
} from '../../src/drivers/hypervisor/vmm-confinement';

const MiB = 1024 * 1024;

function plan(p: Partial<LaunchPlan> = {}): LaunchPlan {
  return {
    setpriv: '/usr/bin/setpriv',
    unshare: '/usr/bin/unshare',
    pivotRoot: '/usr/sbin/pivot_root',
    umount: '/usr/bin/umount',
    mount: '/usr/bin/mount',
    sh: '/bin/sh',
    cgroupProcs: [],
    jail: null,
    user: null,
    capabilities: null,
    ...p,
  };
}

const full = plan({
  cgroupProcs: ['/sys/fs/cgroup/memory/paddock/d1/vm.1/cgroup.procs', '/sys/fs/cgroup/cpu/paddock/d1/vm.1/cgroup.procs'],
  user: { uid: 1342177281, gid: 1342177281 },
  capabilities: ['chown', 'dac_override'],
  jail: {
    root: '/run/paddock/vm-x/root',
    links: [['bin', 'usr/bin']],
    binds: [
      { path: '/tmp/ctr/rootfs/merged/sub', readOnly: true, kind: 'dir' },
      { path: '/usr', readOnly: true, kind: 'dir' },
      { path: '/tmp/ctr/rootfs/merged', readOnly: false, kind: 'dir' },
      { path: "/cache/it's/bzImage", readOnly: true, kind: 'file' },
    ],
    devices: ['/dev/null', '/dev/kvm'],
  },
});

describe('buildLaunch', () => {
  test('confinement off: only the parent-death guard in front of QEMU', () => {
    const l = buildLaunch(plan(), '/usr/bin/qemu', ['-m', '128M']);
    expect([l.command, ...l.argv]).toEqual(['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', '/usr/bin/qemu', '-m', '128M']);
  });

  test('everything on: pdeathsig → unshare --mount → sh (cgroups, jail) → setpriv (uid, caps, nnp) → QEMU, one exec chain', () => {
    const l = buildLaunch(full, '/usr/bin/qemu', ['-m', '128M']);
    const argv = [l.command, ...l.argv];
    expect(argv.slice(0, 10)).toEqual([
      '/usr/bin/setpriv', '--pdeathsig', 'KILL', '--',
      '/usr/bin/unshare', '--mount', '--propagation', 'private', '--',
      '/bin/sh',
    ]);
    expect(argv.slice(10, 12)).toEqual(['-e', '-c']);
    const script = argv[12];
    expect(argv[13]).toBe('paddock-vmm');
    expect(argv.slice(14)).toEqual([
      '/usr/bin/setpriv', '--reuid=1342177281', '--regid=1342177281', '--clear-groups',
      '--inh-caps=-all,+chown,+dac_override', '--ambient-caps=-all,+chown,+dac_override',
      '--bounding-set=-all,+chown,+dac_override', '--no-new-privs', '--pdeathsig', 'KILL', '--',
      '/usr/bin/qemu', '-m', '128M',
    ]);
    // The cgroups are joined first, by the shell's own PID (which becomes QEMU's).
    expect(script.split('\n').slice(0, 2)).toEqual([
      "echo $$ > '/sys/fs/cgroup/memory/paddock/d1/vm.1/cgroup.procs'",
      "echo $$ > '/sys/fs/cgroup/cpu/paddock/d1/vm.1/cgroup.procs'",
    ]);
    expect(script.endsWith('exec "$@"')).toBe(true);
    // Parents are bound before what lies below them; read-only ones remounted so.
    const order = ['/usr', '/tmp/ctr/rootfs/merged', '/tmp/ctr/rootfs/merged/sub'].map((p) => script.search(new RegExp(`--r?bind (-o \\S+ )?'${p}'`)));
    expect(order.every((i) => i > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    // Directories recursively: a share may hold mounts of its own (staged volumes and binds).
    expect(script).toContain(`--rbind -o ro,nosuid,nodev '/usr' "$R"'/usr'`);
    expect(script).toContain(`--rbind '/tmp/ctr/rootfs/merged' "$R"'/tmp/ctr/rootfs/merged'\n`);
    expect(script).toContain(`--bind -o ro,nosuid,nodev '/cache/it'\\''s/bzImage'`);
    expect(script).toContain(`--bind '/dev/kvm' "$R"'/dev/kvm'`);
    expect(script).toContain("ln -s 'usr/bin' \"$R\"'/bin'");
    expect(script).toMatch(/pivot_root \. oldroot\n.*umount -l \/oldroot/);
    // Mount points are all made in the fresh tmpfs before the first bind: nothing is ever created
    // (or truncated) in a host directory.
    expect(script).toContain(`: > "$R"'/cache/it'\\''s/bzImage'`);
    expect(script.lastIndexOf(': > ')).toBeLessThan(script.indexOf('--bind'));
    expect(script.lastIndexOf('mkdir ')).toBeLessThan(script.indexOf('--bind'));
    // Valid shell.
    const check = spawnSync('/bin/sh', ['-n', '-c', script]);
    expect(check.status).toBe(0);
  });

  test('uid 0 with capabilities cut: permitted set comes from the bounding set, nothing inheritable', () => {
    const l = buildLaunch(plan({ capabilities: ['chown'] }), 'q', []);
    expect(l.argv).toEqual([
      '--pdeathsig', 'KILL', '--',
      '/usr/bin/setpriv', '--inh-caps=-all', '--bounding-set=-all,+chown', '--no-new-privs', '--pdeathsig', 'KILL', '--', 'q',
    ]);
  });

  test('cgroups without a jail: sh joins them, no unshare', () => {
    const l = buildLaunch(plan({ cgroupProcs: ['/cg/cgroup.procs'] }), 'q', ['a']);
    expect([l.command, ...l.argv].slice(0, 6)).toEqual(['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', '/bin/sh', '-e']);
    expect(l.argv).not.toContain('/usr/bin/unshare');
    expect(l.argv.slice(-2)).toEqual(['q', 'a']);
  });
});

test('shq quotes anything for sh', () => {
  for (const s of ["it's", 'a b', '$(rm -rf /)', '`x`', 'new\nline', '"q"']) {
    const r = spawnSync('/bin/sh', ['-c', `printf %s ${shq(s)}`], { encoding: 'utf8' });
    expect(r.stdout).toBe(s);
  }
});

test('pathsInArgs finds every host path of a QEMU command line, but not the kernel command line', () => {
  const args = [
    '-name', 'paddock-x',
    '-kernel', '/k/bzImage',
    '-append', 'console=ttyS0 rdinit=/init',
    '-chardev', 'socket,id=qmp,path=/run/vm/qmp.sock',
    '-fsdev', 'local,id=fs0,path=/a,,b/merged,security_model=passthrough,readonly=on',
    '-blockdev', JSON.stringify({ 'node-name': 'd0', driver: 'raw', file: { driver: 'file', filename: '/disks/d0.img' } }),
    '-object', 'memory-backend-file,id=ram0,size=128M,mem-path=/tpl/memory,share=off',
    '-netdev', 'stream,id=n0,server=off,addr.type=unix,addr.path=/sw/port.sock',
    '-incoming', 'defer',
  ];
  expect(pathsInArgs(args).sort()).toEqual(
    ['/k/bzImage', '/run/vm/qmp.sock', '/a,b/merged', '/disks/d0.img', '/tpl/memory', '/sw/port.sock'].sort(),
  );
});

describe('limits', () => {
  test('default: guest RAM plus the VMM overhead, vCPUs plus one core, a pids cap', () => {
    expect(deriveLimits({ memoryMiB: 128, vcpus: 2 })).toEqual({
      memoryBytes: 128 * MiB + VMM_MEMORY_OVERHEAD_BYTES,
      cpuQuotaUs: 300_000,
      cpuPeriodUs: 100_000,
      pidsMax: 512,
    });
  });
  test('from the container: --cpus, --cpu-quota/--cpu-period, an explicit memory cap, no quota', () => {
    expect(limitsFromHostConfig({ NanoCpus: 1.5e9 })).toEqual({ cpuQuotaUs: 150_000, cpuPeriodUs: 100_000 });
    expect(limitsFromHostConfig({ CpuQuota: 50_000, CpuPeriod: 200_000 })).toEqual({ cpuQuotaUs: 50_000, cpuPeriodUs: 200_000 });
    expect(limitsFromHostConfig({})).toBeUndefined();
    const l = deriveLimits({ memoryMiB: 64, vcpus: 1, limits: { memoryBytes: 300 * MiB, cpuQuotaUs: null } });
    expect(l.memoryBytes).toBe(300 * MiB);
    expect(l.cpuQuotaUs).toBeNull();
    expect(deriveLimits({ memoryMiB: 64, vcpus: 1, limits: limitsFromHostConfig({ NanoCpus: 5e8 }) }).cpuQuotaUs).toBe(50_000);
  });
});

describe('cgroupParents', () => {
  const v1mounts = [
    'tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0',
    'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0',
    'cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0',
    'cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0',
    'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
  ].join('\n');
  const v1self = '8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n';

  test('hybrid host (v1 controllers, an empty unified tree): v1 memory, cpu, pids below the daemon\'s own cgroups', () => {
    const r = cgroupParents({ mounts: v1mounts, selfCgroup: v1self, readControllers: () => 'hugetlb\n' }, 42);
    expect(r.map((c) => [c.controller, c.version, c.base])).toEqual([
      ['memory', 1, '/sys/fs/cgroup/memory/process_api/abc/paddock/d42'],
      ['cpu', 1, '/sys/fs/cgroup/cpu,cpuacct/paddock/d42'],
      ['pids', 1, '/sys/fs/cgroup/pids/paddock/d42'],
    ]);
  });

  test('cgroup v2 with the memory controller: one unified cgroup', () => {
    const r = cgroupParents(
      { mounts: 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0', selfCgroup: '0::/system.slice/paddock.service\n', readControllers: () => 'cpuset cpu io memory pids\n' },
      7,
    );
    expect(r).toEqual([
      { controller: 'unified', version: 2, own: '/sys/fs/cgroup/system.slice/paddock.service', base: '/sys/fs/cgroup/system.slice/paddock.service/paddock/d7' },
    ]);
  });

  test('no cgroup filesystem: nothing', () => {
    expect(cgroupParents({ mounts: 'proc /proc proc rw 0 0', selfCgroup: '', readControllers: () => null }, 1)).toEqual([]);
  });
});
