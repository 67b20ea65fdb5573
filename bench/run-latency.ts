/**
 * `docker run --rm busybox true`, end to end through the docker CLI, on Paddock — next to a bare
 * VM boot of the same guest (bench/guest-boot.ts rawBoot) and, where it can run, the reference
 * dockerd 20.10 (vfs + runc) doing `docker run --rm --network none` of the same image from the
 * same local registry. Iterations interleave Paddock, raw boot and dockerd, so drift in host load
 * hits all three; the ratios are the result, absolute numbers vary with the machine.
 * The same docker CLI (28.x) drives both daemons.
 *
 * Then host memory per idle container: PSS and RSS (from /proc/<qemu pid>/smaps_rollup) of the
 * QEMU process of each of 3 `docker run -d busybox sleep 300` containers.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/run-latency.js [--runs N]
 */
import { mkdtempSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { DOCKER_CLI, runDocker, startTestDaemon, type CliResult } from '../test/helpers/daemon';
import { makeContainerRootfs, openQemu, removeBusyboxRootfs, testGuestImage, testRunRoot } from '../test/helpers/guest';
import { referenceDockerdUnavailable, startReferenceDockerd, type ReferenceDockerd } from '../test/helpers/reference-dockerd';
import { startTestRegistry } from '../test/helpers/registry';
import { seedTestImages } from '../test/helpers/seed-images';
import { argNumber, formatRow, rawBoot, summarise } from './guest-boot';

async function timed(what: string, run: () => Promise<CliResult>): Promise<number> {
  const t0 = performance.now();
  const r = await run();
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.stdout}${r.stderr}`);
  return ms;
}

function must(what: string, r: CliResult): CliResult {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.stdout}${r.stderr}`);
  return r;
}

/** The QEMU process of a Paddock container: the driver names it `paddock-<id12>`. */
function qemuPidOf(containerId: string): number | undefined {
  const name = `paddock-${containerId.slice(0, 12)}`;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (path.basename(argv[0]) !== 'qemu-system-x86_64') continue;
      const i = argv.indexOf('-name');
      if (i >= 0 && argv[i + 1] === name) return Number(entry);
    } catch {
      // the process went away while we looked
    }
  }
  return undefined;
}

function rollup(pid: number): { pssKiB: number; rssKiB: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { pssKiB: field('Pss'), rssKiB: field('Rss') };
}

async function main(): Promise<void> {
  const runs = argNumber('--runs', 5);
  const registry = await startTestRegistry();
  const cleanups: Array<() => Promise<unknown>> = [async () => registry.stop()];
  try {
    const image = (await seedTestImages(registry, ['busybox'])).busybox.ref;
    const td = await startTestDaemon();
    cleanups.unshift(() => td.close());
    const guest = await testGuestImage();
    const hv = await openQemu();
    const ctr = await makeContainerRootfs();
    cleanups.unshift(async () => {
      await ctr.cleanup();
      await removeBusyboxRootfs();
      await fs.rm(testRunRoot(), { recursive: true, force: true });
    });
    const info = hv.info();
    console.log(`qemu ${info.version}, accelerator ${info.accelerator}; guest kernel ${guest.kernelRelease}; docker CLI ${DOCKER_CLI}`);
    console.log(`image ${image}; runs: ${runs}, interleaved; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);

    must('paddock: docker pull', await td.docker(['pull', '-q', image], { timeoutMs: 300_000 }));

    let ref: ReferenceDockerd | undefined;
    let refDocker: ((args: string[]) => Promise<CliResult>) | undefined;
    const why = referenceDockerdUnavailable();
    if (why) console.log(`reference dockerd unavailable: ${why}`);
    else {
      ref = await startReferenceDockerd({ insecureRegistries: [registry.host] });
      const r = ref;
      cleanups.unshift(() => r.stop());
      const configDir = mkdtempSync(path.join(os.tmpdir(), 'pd-bench-cli-'));
      cleanups.push(() => fs.rm(configDir, { recursive: true, force: true }));
      refDocker = (args) => runDocker(args, { dockerHost: r.host, configDir, timeoutMs: 300_000 });
      must('dockerd: docker pull', await refDocker(['pull', '-q', image]));
    }

    // Untimed warm-up of each path (page cache, first container of each daemon).
    must('paddock warm-up', await td.docker(['run', '--rm', image, 'true']));
    await rawBoot(hv, guest, ctr.rootfs.merged);
    if (refDocker) must('dockerd warm-up', await refDocker(['run', '--rm', '--network', 'none', image, 'true']));

    const paddock: number[] = [];
    const raw: number[] = [];
    const dockerd: number[] = [];
    console.log(`${'run'.padEnd(5)} ${'paddock'.padStart(9)} ${'raw boot'.padStart(9)} ${'dockerd'.padStart(9)}   (ms)`);
    for (let i = 0; i < runs; i++) {
      paddock.push(await timed('paddock: docker run --rm', () => td.docker(['run', '--rm', image, 'true'])));
      raw.push((await rawBoot(hv, guest, ctr.rootfs.merged)).readyMs);
      if (refDocker) dockerd.push(await timed('dockerd: docker run --rm', () => refDocker!(['run', '--rm', '--network', 'none', image, 'true'])));
      const cell = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(0)).padStart(9);
      console.log(`${String(i + 1).padEnd(5)} ${cell(paddock[i])} ${cell(raw[i])} ${cell(dockerd[i])}`);
    }

    console.log(`${''.padEnd(34)} ${'min'.padStart(8)} ${'median'.padStart(8)} ${'max'.padStart(8)}`);
    console.log(formatRow('paddock: docker run --rm true', paddock));
    console.log(formatRow('raw qemu boot: spawn → READY', raw));
    if (dockerd.length) console.log(formatRow('dockerd 20.10 (vfs, runc)', dockerd));
    const p = summarise(paddock);
    const rb = summarise(raw);
    console.log(`ratio paddock/raw-boot:  median ${(p.median / rb.median).toFixed(2)}x, min ${(p.min / rb.min).toFixed(2)}x`);
    if (dockerd.length) {
      const d = summarise(dockerd);
      console.log(`ratio paddock/dockerd:   median ${(p.median / d.median).toFixed(2)}x, min ${(p.min / d.min).toFixed(2)}x`);
    }

    // Idle memory per container.
    const ids: string[] = [];
    try {
      for (let i = 0; i < 3; i++) ids.push(must('docker run -d', await td.docker(['run', '-d', image, 'sleep', '300'])).stdout.trim());
      await new Promise((r) => setTimeout(r, 3000)); // let the guests settle into idle
      console.log('idle `docker run -d busybox sleep 300` on paddock (QEMU process, /proc/<pid>/smaps_rollup):');
      const pss: number[] = [];
      for (const id of ids) {
        const pid = qemuPidOf(id);
        if (!pid) throw new Error(`no QEMU process found for container ${id}`);
        const m = rollup(pid);
        pss.push(m.pssKiB / 1024);
        console.log(`  ${id.slice(0, 12)}  qemu pid ${String(pid).padEnd(7)} PSS ${(m.pssKiB / 1024).toFixed(1).padStart(6)} MiB   RSS ${(m.rssKiB / 1024).toFixed(1).padStart(6)} MiB`);
      }
      console.log(formatRow('PSS per idle container', pss, 'MiB', 1));
    } finally {
      if (ids.length) await td.docker(['rm', '-f', ...ids]);
    }
  } finally {
    for (const c of cleanups) await c().catch((e) => console.error(`cleanup: ${(e as Error).message}`));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
