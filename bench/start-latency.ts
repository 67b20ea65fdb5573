/**
 * Start latency and density (issue 7), in one invocation, interleaved, against the same local
 * registry and with the same docker CLI (28.x):
 *
 *  1. N× `docker run --rm busybox true` on Paddock (VM templates on, the default), on Paddock with
 *     `--vm-templates=false` (every VM boots), on Paddock's default network when it has one, and
 *     on Debian's dockerd 20.10 + runc (started by the bench on its own socket: `--bridge=none
 *     --iptables=false --ip6tables=false`, vfs; test/helpers/reference-dockerd.ts) with
 *     `--network none`. Paddock runs use `--network none` too unless marked "default net".
 *     min/median/max and ratios to dockerd.
 *  2. Where a Paddock `docker run --rm true` spends its time: CLI → API requests (create, start),
 *     the Sandbox steps reported by the daemon (VMM spawn, template restore, agent READY, clock +
 *     rootfs mount, other mounts), the rest of start (overlay, main process), run to `die` (which
 *     Paddock publishes once the VM is gone and the rootfs unmounted), `die` → `destroy`, CLI exit.
 *     Medians over the runs.
 *  3. 20 concurrent `docker run -d busybox sleep 600`: time until every CLI returned (all running),
 *     then host memory per idle container — PSS of each QEMU process (/proc/<pid>/smaps_rollup) for
 *     Paddock; for dockerd, PSS of the container's processes + its containerd shim, and its memory
 *     cgroup's usage — then `rm -f` of all of them.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/start-latency.js [--runs N] [--concurrent N] [--rounds N] [--no-baseline]
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { DOCKER_CLI, runDocker, startTestDaemon, type CliResult, type TestDaemon } from '../test/helpers/daemon';
import { referenceDockerdUnavailable, startReferenceDockerd, type ReferenceDockerd } from '../test/helpers/reference-dockerd';
import { startTestRegistry } from '../test/helpers/registry';
import { seedTestImages } from '../test/helpers/seed-images';
import { onSandboxTimings, type StartTimings } from '../src/engine/start-timings';
import { argNumber, formatRow, summarise } from './guest-boot';

type Docker = (args: string[], timeoutMs?: number) => Promise<CliResult>;

interface Target {
  label: string;
  docker: Docker;
  runArgs: string[];
  paddock?: TestDaemon;
  times: number[];
}

function must(what: string, r: CliResult): CliResult {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.stdout}${r.stderr}`);
  return r;
}

const median = (v: number[]) => (v.length ? summarise(v).median : NaN);

/** PSS and RSS of a process, KiB. */
function rollup(pid: number): { pss: number; rss: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { pss: field('Pss'), rss: field('Rss') };
}

function ppidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Memory cgroup (v1 or v2) usage of a process's cgroup, bytes. */
function cgroupMemory(pid: number): number {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
  const v1 = lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l));
  if (v1) return Number(readFileSync(`/sys/fs/cgroup/memory${v1.split(':')[2]}/memory.usage_in_bytes`, 'utf8'));
  const v2 = lines.find((l) => l.startsWith('0::'));
  return v2 ? Number(readFileSync(`/sys/fs/cgroup${v2.slice(3)}/memory.current`, 'utf8')) : NaN;
}

/** Records, per container, when the daemon got/answered its create and start requests and published die/destroy. */
class PaddockProbe {
  readonly marks = new Map<string, Record<string, number>>();
  private lastCreate?: { t0: number };

  constructor(td: TestDaemon) {
    for (const server of td.daemon.servers) {
      server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
        const t0 = performance.now();
        const url = req.url ?? '';
        if (req.method === 'POST' && /\/containers\/create(\?|$)/.test(url)) {
          const create = { t0 };
          this.lastCreate = create;
          const chunks: Buffer[] = [];
          const write = res.write.bind(res) as (c: unknown, ...a: unknown[]) => boolean;
          const end = res.end.bind(res) as (c?: unknown, ...a: unknown[]) => http.ServerResponse;
          res.write = ((c: unknown, ...a: unknown[]) => (Buffer.isBuffer(c) || typeof c === 'string' ? chunks.push(Buffer.from(c as string)) : 0, write(c, ...a))) as typeof res.write;
          res.end = ((c?: unknown, ...a: unknown[]) => {
            if (Buffer.isBuffer(c) || typeof c === 'string') chunks.push(Buffer.from(c as string));
            try {
              const id = JSON.parse(Buffer.concat(chunks).toString('utf8')).Id as string;
              if (id) this.mark(id, { createReq: create.t0, createRes: performance.now() });
            } catch {
              // not JSON: a failed create
            }
            return end(c, ...a);
          }) as typeof res.end;
          return;
        }
        const m = /\/containers\/([0-9a-f]{64})\/start(\?|$)/.exec(url);
        if (req.method === 'POST' && m) {
          const id = m[1];
          this.mark(id, { startReq: t0 });
          res.on('finish', () => this.mark(id, { startRes: performance.now() }));
        }
      });
    }
    td.daemon.engine.events.subscribe((e) => {
      if (e.Type === 'container' && (e.Action === 'die' || e.Action === 'destroy')) this.mark(e.Actor.ID, { [e.Action]: performance.now() });
    });
  }

  mark(id: string, m: Record<string, number>): void {
    this.marks.set(id, { ...this.marks.get(id), ...m });
  }
}

async function main(): Promise<void> {
  const runs = argNumber('--runs', 10);
  const concurrent = argNumber('--concurrent', 20);
  const rounds = argNumber('--rounds', 3);
  const baseline = !process.argv.includes('--no-baseline');
  const sandboxTimings = new Map<string, StartTimings>();
  onSandboxTimings((id, t) => sandboxTimings.set(id, t));

  const registry = await startTestRegistry();
  const cleanups: Array<() => Promise<unknown>> = [async () => registry.stop()];
  try {
    const image = (await seedTestImages(registry, ['busybox'])).busybox.ref;
    const pd = await startTestDaemon({ vmTemplates: true });
    cleanups.unshift(() => pd.close());
    const probe = new PaddockProbe(pd);
    const pdNoTpl = baseline ? await startTestDaemon({ vmTemplates: false }) : undefined;
    if (pdNoTpl) cleanups.unshift(() => pdNoTpl.close());

    const hv = pd.daemon.engine.hypervisor.info();
    const cpus = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length;
    console.log(`accelerator: ${hv.accelerator} (${hv.acceleratorReason}); qemu ${hv.version}; ${cpus} CPUs; docker CLI ${DOCKER_CLI}`);
    console.log(`image ${image}; runs: ${runs}, interleaved; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);

    const targets: Target[] = [];
    const pdDocker: Docker = (args, t) => pd.docker(args, { timeoutMs: t ?? 300_000 });
    targets.push({ label: 'paddock (templates), --network none', docker: pdDocker, runArgs: ['--network', 'none'], paddock: pd, times: [] });
    if (pdNoTpl) {
      targets.push({ label: 'paddock (boot), --network none', docker: (args, t) => pdNoTpl.docker(args, { timeoutMs: t ?? 300_000 }), runArgs: ['--network', 'none'], paddock: pdNoTpl, times: [] });
    }
    for (const d of [pd, pdNoTpl]) if (d) must('paddock: docker pull', await d.docker(['pull', '-q', image], { timeoutMs: 300_000 }));

    // Paddock's default network, where the daemon has one.
    const def = await pd.docker(['run', '--rm', image, 'true']);
    if (def.code === 0) targets.push({ label: 'paddock (templates), default net', docker: pdDocker, runArgs: [], paddock: pd, times: [] });
    else console.log(`paddock default network: not benched (${(def.stderr || def.stdout).trim().split('\n')[0]})`);

    let ref: ReferenceDockerd | undefined;
    const why = referenceDockerdUnavailable();
    if (why) console.log(`reference dockerd unavailable: ${why}`);
    else {
      ref = await startReferenceDockerd({ insecureRegistries: [registry.host] });
      const r = ref;
      cleanups.unshift(() => r.stop());
      const refDocker: Docker = (args, t) => runDocker(args, { dockerHost: r.host, timeoutMs: t ?? 300_000 });
      must('dockerd: docker pull', await refDocker(['pull', '-q', image]));
      targets.push({ label: 'dockerd 20.10 + runc, --network none', docker: refDocker, runArgs: ['--network', 'none'], times: [] });
    }

    // Untimed warm-up of each path (page cache, first container of each daemon, template build).
    for (const t of targets) must(`${t.label} warm-up`, await t.docker(['run', '--rm', ...t.runArgs, image, 'true']));

    // 1. docker run --rm true, interleaved.
    const paddockRuns: Array<{ t0: number; t1: number; since: number }> = [];
    console.log(`\n${'run'.padEnd(4)} ${targets.map((t, i) => `[${i + 1}]`.padStart(8)).join(' ')}   (ms)`);
    for (let i = 0; i < runs; i++) {
      const row: number[] = [];
      for (const t of targets) {
        const since = probe.marks.size;
        const t0 = performance.now();
        must(`${t.label}: docker run --rm`, await t.docker(['run', '--rm', ...t.runArgs, image, 'true']));
        const t1 = performance.now();
        t.times.push(t1 - t0);
        row.push(t1 - t0);
        if (t === targets[0]) paddockRuns.push({ t0, t1, since });
      }
      console.log(`${String(i + 1).padEnd(4)} ${row.map((v) => v.toFixed(0).padStart(8)).join(' ')}`);
    }
    console.log(`\n\`docker run --rm busybox true\`     ${'min'.padStart(8)} ${'median'.padStart(8)} ${'max'.padStart(8)}`);
    targets.forEach((t, i) => console.log(formatRow(`[${i + 1}] ${t.label}`, t.times)));
    const dockerd = targets.find((t) => !t.paddock);
    const noTpl = targets.find((t) => t.paddock === pdNoTpl && pdNoTpl);
    for (const t of targets.filter((x) => x.paddock)) {
      const parts: string[] = [];
      if (dockerd) parts.push(`×${(median(t.times) / median(dockerd.times)).toFixed(2)} of dockerd (min ×${(summarise(t.times).min / summarise(dockerd.times).min).toFixed(2)})`);
      if (noTpl && t !== noTpl) parts.push(`×${(median(t.times) / median(noTpl.times)).toFixed(2)} of booting`);
      console.log(`ratio ${t.label}: median ${parts.join(', ')}`);
    }

    // 2. Breakdown of the Paddock (templates) runs.
    const phases: Record<string, number[]> = {};
    const add = (k: string, v: number | undefined) => {
      if (v !== undefined && Number.isFinite(v)) (phases[k] ??= []).push(v);
    };
    for (const r of paddockRuns) {
      const entry = [...probe.marks.entries()].find(([, m]) => m.createReq >= r.t0 && m.createReq <= r.t1);
      if (!entry) continue;
      const [id, m] = entry;
      const s = sandboxTimings.get(id) ?? {};
      const sandboxMs = s.rootfsReadyMs;
      add('CLI start → create request', m.createReq - r.t0);
      add('create (API)', m.createRes - m.createReq);
      add('attach + wait requests → start request', m.startReq - m.createRes);
      add('start (API), all of it', m.startRes - m.startReq);
      add('  sandbox: VMM spawn → QMP connected', s.spawnToConnectedMs);
      add('  sandbox: template restore (load state)', s.restoreLoadMs);
      add('  sandbox: template restore (cont)', s.restoreContMs);
      add('  sandbox: VMM create → agent READY', s.agentReadyMs !== undefined ? s.agentReadyMs - s.vmmStartMs : undefined);
      add('  sandbox: VMM start (incl. restore)', s.vmmStartMs);
      add('  sandbox: clock + rootfs mount', s.clockAndRootfsMountMs);
      add('  sandbox: other mounts, hostname', s.otherMountsMs);
      add('  sandbox: total', sandboxMs);
      add('  rest of start (overlay, etc files, main process, state)', sandboxMs !== undefined ? m.startRes - m.startReq - sandboxMs : undefined);
      add('start response → die (process runs and exits; VM killed, rootfs unmounted)', m.die - m.startRes);
      add('die → destroy (state written, container removed)', m.destroy - m.die);
      add('destroy → CLI exited', r.t1 - m.destroy);
    }
    console.log(`\nwhere \`docker run --rm true\` goes on paddock (templates), medians of ${paddockRuns.length} runs:`);
    for (const [k, v] of Object.entries(phases)) console.log(`  ${k.padEnd(58)} ${median(v).toFixed(1).padStart(8)} ms`);

    // 3. Concurrent starts and idle memory.
    console.log(`\n${concurrent} concurrent \`docker run -d busybox sleep 600\` (${rounds} rounds interleaved; time until all are running), then idle memory per container:`);
    const density: Array<{ label: string; startMs: number[]; rmMs: number; pss: number[]; extra?: string }> = [];
    const concTargets = targets.filter((t) => t.runArgs.length && (t.paddock !== pdNoTpl || baseline));
    for (let round = 0; round < rounds; round++) {
      for (const t of concTargets) {
        // Booting every VM is slow: once is enough to show it.
        if (round > 0 && t.paddock === pdNoTpl) continue;
        const t0 = performance.now();
        const results = await Promise.all(Array.from({ length: concurrent }, () => t.docker(['run', '-d', ...t.runArgs, image, 'sleep', '600'], 600_000)));
        const startMs = performance.now() - t0;
        const ids = results.filter((r) => r.code === 0).map((r) => r.stdout.trim());
        const failed = results.filter((r) => r.code !== 0);
        try {
          if (failed.length) throw new Error(`${t.label}: ${failed.length} of ${concurrent} failed: ${failed[0].stderr}`);
          const running = must('docker ps', await t.docker(['ps', '-q', '--no-trunc'])).stdout.trim().split('\n').filter(Boolean);
          if (ids.some((id) => !running.includes(id))) throw new Error(`${t.label}: not all containers are running`);
          const seen = density.find((d) => d.label === t.label);
          if (seen) {
            seen.startMs.push(startMs);
            continue;
          }
          await new Promise((r) => setTimeout(r, 5000)); // idle
          const pids = must('inspect', await t.docker(['inspect', '-f', '{{.State.Pid}}', ...ids])).stdout.trim().split('\n').map(Number);
          const pss: number[] = [];
          let extra: string | undefined;
          if (t.paddock) {
            for (const pid of pids) pss.push(rollup(pid).pss / 1024);
          } else {
            const cg: number[] = [];
            for (const pid of pids) {
              const shim = ppidOf(pid);
              const procs = [shim, ...childrenOf(shim)];
              pss.push(procs.reduce((sum, p) => sum + rollup(p).pss, 0) / 1024);
              cg.push(cgroupMemory(pid) / (1024 * 1024));
            }
            extra = `memory cgroup usage ${median(cg).toFixed(1)} MiB median`;
          }
          const r0 = performance.now();
          must('rm -f', await t.docker(['rm', '-f', ...ids], 600_000));
          density.push({ label: t.label, startMs: [startMs], rmMs: performance.now() - r0, pss, extra });
        } finally {
          if (ids.length) await t.docker(['rm', '-f', ...ids], 600_000);
        }
      }
    }
    for (const d of density) {
      const s = summarise(d.pss);
      const st = summarise(d.startMs);
      console.log(`  ${d.label.padEnd(40)} all running after ${st.median.toFixed(0).padStart(6)} ms median (min ${st.min.toFixed(0)}, max ${st.max.toFixed(0)}, n=${d.startMs.length}); rm -f ${d.rmMs.toFixed(0)} ms; PSS/container min ${s.min.toFixed(1)} median ${s.median.toFixed(1)} max ${s.max.toFixed(1)} MiB${d.extra ? `; ${d.extra}` : ''}`);
    }
    const dd = density.find((d) => d.label.startsWith('dockerd'));
    if (dd) for (const d of density.filter((x) => x !== dd)) console.log(`ratio ${d.label}: ${concurrent} concurrent starts ×${(median(d.startMs) / median(dd.startMs)).toFixed(2)} of dockerd (medians)`);
    console.log(`(Paddock PSS: the QEMU process from /proc/<pid>/smaps_rollup; dockerd PSS: the container's processes + its containerd-shim)`);
  } finally {
    for (const c of cleanups) await c().catch((e) => console.error(`cleanup: ${(e as Error).message}`));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
