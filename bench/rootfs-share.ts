/**
 * Which directory-sharing mechanism should carry the container rootfs into the guest?
 * Boots sandboxes over the same busybox overlay rootfs with 9p and with virtio-fs (virtiofsd)
 * and measures, interleaved, in one run: time to a ready sandbox, a metadata-heavy walk
 * (`find /`), exec latency of a binary (50× `true`), and a 20 MB write + read back.
 *
 *   node dist/bench/rootfs-share.js [--runs N]
 */
import type { FsShareKind } from '../src/drivers/hypervisor/hypervisor';
import { Sandbox } from '../src/engine/sandbox';
import { makeContainerRootfs, openQemu, readAll, removeBusyboxRootfs, testGuestImage } from '../test/helpers/guest';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;

async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function main(): Promise<void> {
  const qemu = await openQemu();
  const guest = await testGuestImage();
  const kinds: FsShareKind[] = qemu.capabilities().fsShare;
  const results: Record<string, Record<string, number[]>> = {};
  for (let i = 0; i < runs; i++) {
    for (const kind of kinds) {
      const ctr = await makeContainerRootfs();
      const row = (results[kind] ??= { ready: [], find: [], exec50: [], io20MB: [] });
      let sb: Sandbox | undefined;
      row.ready.push(await timeMs(async () => (sb = await Sandbox.start(qemu, guest, { id: `share-${kind}-${i}`.replace(/[^a-z0-9-]/g, ''), rootfsDir: ctr.rootfs.merged, shareKind: kind }))));
      const run = async (script: string) => {
        const p = await sb!.exec({ args: ['sh', '-c', script], env: ['PATH=/bin'] });
        await Promise.all([readAll(p.stdout), readAll(p.stderr), p.exited]);
      };
      row.find.push(await timeMs(() => run('find / -xdev > /dev/null')));
      row.exec50.push(await timeMs(() => run('i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done')));
      row.io20MB.push(await timeMs(() => run('dd if=/dev/zero of=/big bs=1M count=20 2>/dev/null && cat /big > /dev/null && rm /big')));
      await sb!.kill();
      await ctr.cleanup();
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`accelerator: ${qemu.info().accelerator}, runs: ${runs} (median ms)`);
  console.log(['mechanism', 'ready', 'find /', '50x exec', '20MB w+r'].map((s) => s.padEnd(12)).join(''));
  for (const kind of kinds) {
    const r = results[kind];
    console.log([kind, ...['ready', 'find', 'exec50', 'io20MB'].map((k) => median(r[k]).toFixed(0))].map((s) => String(s).padEnd(12)).join(''));
  }
  if (kinds.length === 2) {
    const [a, b] = kinds;
    console.log(`ratio ${b}/${a}: ` + ['ready', 'find', 'exec50', 'io20MB'].map((k) => `${k} ${(median(results[b][k]) / median(results[a][k])).toFixed(2)}`).join(', '));
  }
  await removeBusyboxRootfs();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
