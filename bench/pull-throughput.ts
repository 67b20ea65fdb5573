/**
 * Pull throughput: the `large` seed image (busybox + 4 × 50 MB incompressible layers) pulled
 * from one local registry by Paddock and by the reference dockerd (20.10, vfs), each into an
 * empty store, each through its own docker CLI. Prints MB/s (compressed bytes over wall time of
 * `docker pull`) for both and Paddock's ratio to dockerd.
 *
 *   npm run -s build && node dist/bench/pull-throughput.js [--runs N]
 */
import { performance } from 'node:perf_hooks';
import { startTestDaemon } from '../test/helpers/daemon';
import { referenceDockerdUnavailable, startReferenceDockerd } from '../test/helpers/reference-dockerd';
import { startTestRegistry } from '../test/helpers/registry';
import { seedTestImages } from '../test/helpers/seed-images';

interface Result {
  seconds: number;
  mbPerSecond: number;
}

async function registryBytes(host: string, repo: string, tag: string): Promise<number> {
  const accept = 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json';
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, { headers: { accept } });
  const manifest = (await res.json()) as { config: { size: number }; layers: Array<{ size: number }> };
  return manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0);
}

async function timePull(pull: () => Promise<{ code: number; stdout: string; stderr: string }>, bytes: number): Promise<Result> {
  const started = performance.now();
  const r = await pull();
  const seconds = (performance.now() - started) / 1000;
  if (r.code !== 0) throw new Error(`pull failed (${r.code}): ${r.stdout}${r.stderr}`);
  return { seconds, mbPerSecond: bytes / 1e6 / seconds };
}

async function main(): Promise<void> {
  const runsIndex = process.argv.indexOf('--runs');
  const runs = runsIndex > -1 ? Number(process.argv[runsIndex + 1]) : 1;
  const registry = await startTestRegistry();
  try {
    const seeded = await seedTestImages(registry, ['large']);
    const large = seeded.large;
    const bytes = await registryBytes(registry.host, large.repo, large.tag);
    console.log(`image ${large.ref}: ${large.layers} layers, ${(bytes / 1e6).toFixed(1)} MB compressed`);

    const paddock: Result[] = [];
    const dockerd: Result[] = [];
    for (let run = 0; run < runs; run++) {
      const td = await startTestDaemon();
      try {
        paddock.push(await timePull(() => td.docker(['pull', large.ref], { timeoutMs: 600_000 }), bytes));
      } finally {
        await td.close();
      }
      const unavailable = referenceDockerdUnavailable();
      if (unavailable) {
        console.log(`reference dockerd unavailable: ${unavailable}`);
        continue;
      }
      const ref = await startReferenceDockerd({ insecureRegistries: [registry.host] });
      try {
        dockerd.push(await timePull(() => ref.docker(['pull', large.ref], { timeoutMs: 600_000 }), bytes));
      } finally {
        await ref.stop();
      }
    }
    const best = (rs: Result[]) => rs.reduce((a, b) => (b.mbPerSecond > a.mbPerSecond ? b : a));
    const show = (name: string, rs: Result[]) =>
      console.log(`${name.padEnd(8)} ${rs.map((r) => `${r.mbPerSecond.toFixed(1)} MB/s (${r.seconds.toFixed(2)} s)`).join(', ')}`);
    show('paddock', paddock);
    if (dockerd.length) {
      show('dockerd', dockerd);
      console.log(`ratio    paddock/dockerd = ${(best(paddock).mbPerSecond / best(dockerd).mbPerSecond).toFixed(2)} (best runs)`);
    }
  } finally {
    await registry.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
