/**
 * What each VMM confinement measure costs at start: Sandbox.start() → exec(['true']) exited, with
 * confinement off, with each measure alone, and with all of them, runs interleaved (off, seccomp,
 * privileges, cgroup, mountns, all, off, ...) so that drift in host load hits every variant alike.
 * Also prints the peak memory of the VMM's cgroup for the 'all' variant (the basis of
 * VMM_MEMORY_OVERHEAD_BYTES), after a small file workload in the guest.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/vmm-confinement.js [--runs N]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { QemuHypervisor } from '../src/drivers/hypervisor/qemu';
import type { ConfinementOptions } from '../src/drivers/hypervisor/vmm-confinement';
import { Sandbox } from '../src/engine/sandbox';
import { makeContainerRootfs, readAll, removeBusyboxRootfs, testGuestImage, testRunRoot } from '../test/helpers/guest';

const none: ConfinementOptions = { seccomp: false, cgroups: false, mountNamespace: false, privileges: false };
const variants: Array<[string, ConfinementOptions]> = [
  ['off', { enabled: false }],
  ['seccomp', { ...none, seccomp: true }],
  // setpriv: own uid, capabilities cut, no_new_privs (no seccomp, no cgroup, no mount namespace)
  ['privileges', { ...none, privileges: true }],
  ['cgroup', { ...none, cgroups: true }],
  ['mountns', { ...none, mountNamespace: true }],
  ['all', {}],
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const runsArg = process.argv.indexOf('--runs');
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 5;
  const guest = await testGuestImage();
  const hvs = new Map<string, QemuHypervisor>();
  for (const [name, confinement] of variants) {
    hvs.set(name, await QemuHypervisor.open({ runRoot: testRunRoot(), confinement }));
  }
  const times = new Map<string, number[]>(variants.map(([n]) => [n, []]));
  let peak = 0;
  for (let r = 0; r < runs; r++) {
    for (const [name] of variants) {
      const ctr = await makeContainerRootfs();
      const t0 = performance.now();
      const sb = await Sandbox.start(hvs.get(name)!, guest, { id: `bench-vmc-${name}`, rootfsDir: ctr.rootfs.merged });
      const p = await sb.exec({ args: ['true'], env: ['PATH=/bin'] });
      await p.exited;
      times.get(name)!.push(performance.now() - t0);
      if (name === 'all' && r === 0) {
        const w = await sb.exec({ args: ['sh', '-c', 'dd if=/dev/zero of=/big bs=1M count=20 2>/dev/null; cat /big > /dev/null; find / -xdev >/dev/null; rm /big'], env: ['PATH=/bin'] });
        await readAll(w.stdout);
        await w.exited;
        const mem = readFileSync(`/proc/${sb.vm.pid}/cgroup`, 'utf8').split('\n').find((l) => /:memory:|^0::/.test(l) && l.includes('/paddock/'));
        if (mem) {
          const rel = mem.split(':')[2];
          const v1 = path.join('/sys/fs/cgroup/memory', rel, 'memory.max_usage_in_bytes');
          try {
            peak = Number(readFileSync(v1, 'utf8'));
          } catch {
            peak = Number(readFileSync(path.join('/sys/fs/cgroup', rel, 'memory.peak'), 'utf8'));
          }
        }
      }
      await sb.kill();
      await ctr.cleanup();
    }
  }
  const base = median(times.get('off')!);
  console.log(`VMM confinement start cost (${runs} interleaved runs each; Sandbox.start → exec true exited)`);
  console.log('variant      min      median   max      vs off');
  for (const [name] of variants) {
    const t = times.get(name)!;
    const m = median(t);
    console.log(
      `${name.padEnd(12)} ${Math.min(...t).toFixed(0).padStart(5)} ms ${m.toFixed(0).padStart(5)} ms ${Math.max(...t).toFixed(0).padStart(5)} ms ${(m - base >= 0 ? '+' : '') + (m - base).toFixed(0)} ms`,
    );
  }
  if (peak) console.log(`peak VMM cgroup memory ('all', -m 128, after 20 MB write+read and find /): ${(peak / 1048576).toFixed(1)} MiB`);
  await removeBusyboxRootfs();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
