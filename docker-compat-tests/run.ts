/**
 * The compat runner: `npm run compat [-- options]`.
 *
 *   (default)            seeded registry + a Paddock daemon, every suite, a table per client
 *   --against dockerd    the same suites against Debian's reference dockerd 20.10
 *   --host unix:///S     the same suites against any running daemon (it must reach 127.0.0.1
 *                        registries; --as paddock applies Paddock's allow-list entries to it)
 *   --diff               dockerd, then Paddock (clients pinned to dockerd's API version so both
 *                        speak the same dialect), then field-level differences of normalised
 *                        outputs; differences not in allow-list.json fail the run
 *   --only REGEX         only scenarios whose id matches
 *   --client NAME        only this client's suite (repeatable)
 *   --api-version V      pin every client to API version V
 *   --json FILE          also write the full results as JSON
 *   --verbose            print allow-listed failures' messages and allowed differences too
 *   --keep               keep the scratch directory
 *
 * Exit status: 0 when every failure and every difference is in the allow-list, 1 otherwise.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startTestRegistry, type TestRegistry } from '../test/helpers/registry';
import { seedTestImages, type SeedName, type SeededImage } from '../test/helpers/seed-images';
import { AllowList, type FailureEntry } from './lib/allow-list';
import { diffValues, type Difference } from './lib/diff';
import { normalize, normalizeContextFor } from './lib/normalize';
import { CLIENTS, ScenarioAbort, ScenarioContext, SkipScenario, type ClientName, type Observation, type Suite } from './lib/scenario';
import { externalTarget, startDockerdTarget, startPaddockTarget, type Target } from './lib/target';
import { allSuites } from './suites';

interface ScenarioResult {
  id: string;
  client: ClientName;
  title: string;
  status: 'passed' | 'failed' | 'skipped';
  failures: string[];
  skipReason?: string;
  allowed?: FailureEntry;
  notes: string[];
  observations: Observation[];
  ms: number;
}

interface TargetRun {
  target: string;
  kind: string;
  apiVersion: string;
  clientApiVersion?: string;
  results: ScenarioResult[];
  staleFailureEntries: FailureEntry[];
  daemonDied?: string;
  ms: number;
}

const ALLOW_LIST = path.join(__dirname, '..', '..', 'docker-compat-tests', 'allow-list.json');

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      against: { type: 'string', default: 'paddock' },
      host: { type: 'string' },
      as: { type: 'string' },
      diff: { type: 'boolean', default: false },
      only: { type: 'string' },
      client: { type: 'string', multiple: true },
      'api-version': { type: 'string' },
      json: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(readFileSync(__filename, 'utf8').match(/\/\*\*([\s\S]*?)\*\//)?.[1].replace(/^ \* ?/gm, ''));
    return 0;
  }
  for (const c of values.client ?? []) if (!CLIENTS.includes(c as ClientName)) throw new Error(`unknown client ${c} (known: ${CLIENTS.join(', ')})`);
  const allowList = AllowList.load(ALLOW_LIST);
  const only = values.only ? new RegExp(values.only) : undefined;
  // Fresh suite objects per target: suites keep per-run state (fixture IDs, the suite's start time).
  const suitesFor = () =>
    allSuites()
      .filter((s) => !values.client?.length || values.client.includes(s.client))
      .map((s) => ({ ...s, scenarios: s.scenarios.filter((sc) => !only || only.test(sc.id)) }))
      .filter((s) => s.scenarios.length > 0);
  if (!suitesFor().length) throw new Error('no scenario matches --only / --client');
  const kinds: Array<'paddock' | 'dockerd' | 'external'> = values.diff
    ? ['dockerd', 'paddock']
    : values.host
      ? ['external']
      : [values.against === 'dockerd' ? 'dockerd' : values.against === 'paddock' ? 'paddock' : invalidTarget(values.against!)];

  const started = Date.now();
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-compat-'));
  let registry: TestRegistry | undefined;
  const runs: TargetRun[] = [];
  try {
    log(`scratch dir ${runDir}`);
    registry = await startTestRegistry();
    const images = (await seedTestImages(registry)) as Record<SeedName, SeededImage>;
    log(`registry ${registry.host} seeded (${Object.keys(images).join(', ')}) in ${secs(Date.now() - started)}`);
    let pin = values['api-version'];
    for (const kind of kinds) {
      const t0 = Date.now();
      const opts = { runDir, registry: registry.host, images };
      const target =
        kind === 'paddock' ? await startPaddockTarget(opts) : kind === 'dockerd' ? await startDockerdTarget(opts) : await externalTarget({ ...opts, dockerHost: values.host!, name: values.as });
      // --diff: both daemons answer the API version dockerd 20.10 speaks, so that version-gated
      // fields are compared like with like.
      if (values.diff && !pin) pin = target.apiVersion;
      target.clientApiVersion = pin;
      normalizeContexts.set(target.name, normalizeContextFor(target));
      log(`${target.name}: ${target.dockerHost} (API ${target.apiVersion}${pin ? `, clients pinned to ${pin}` : ''}) up in ${secs(Date.now() - t0)}`);
      try {
        runs.push(await runTarget(target, suitesFor(), allowList, values.verbose!));
      } finally {
        await target.stop().catch((err) => log(`stopping ${target.name}: ${err}`));
      }
      runs[runs.length - 1].ms = Date.now() - t0;
    }
  } finally {
    await registry?.stop().catch(() => undefined);
    if (!values.keep) rmSync(runDir, { recursive: true, force: true });
  }

  let bad = false;
  for (const run of runs) bad = printRun(run, values.verbose!) || bad;
  let diffs: ReturnType<typeof diffRuns> | undefined;
  if (values.diff) {
    const dockerd = runs.find((r) => r.kind === 'dockerd')!;
    const paddock = runs.find((r) => r.kind === 'paddock')!;
    diffs = diffRuns(paddock, dockerd, allowList);
    bad = printDiffs(diffs, allowList, values.verbose!, Boolean(values.only || values.client?.length)) || bad;
  }
  if (values.json) {
    writeFileSync(values.json, JSON.stringify({ runs, diffs }, null, 2));
    log(`results written to ${values.json}`);
  }
  log(`total ${secs(Date.now() - started)}; ${bad ? 'FAILED: see above (fix it, or add it to docker-compat-tests/allow-list.json with the reason)' : 'OK'}`);
  return bad ? 1 : 0;
}

function invalidTarget(v: string): never {
  throw new Error(`--against ${v}: use paddock or dockerd (or --host unix:///path for any daemon)`);
}

async function runTarget(target: Target, suites: Suite[], allowList: AllowList, verbose: boolean): Promise<TargetRun> {
  const results: ScenarioResult[] = [];
  const t0 = Date.now();
  for (const suite of suites) {
    const unavailable = suite.unavailable?.();
    const suiteStart = Date.now();
    for (const scenario of suite.scenarios) {
      const base = { id: scenario.id, client: scenario.client, title: scenario.title, notes: [] as string[], observations: [] as Observation[] };
      if (unavailable) {
        results.push({ ...base, status: 'skipped', failures: [], skipReason: unavailable, ms: 0 });
        continue;
      }
      const missing = (scenario.needs ?? []).filter((f) => !target.features.has(f));
      if (missing.length) {
        results.push({ ...base, status: 'skipped', failures: [], skipReason: `${target.name} lacks ${missing.join(', ')}`, ms: 0 });
        continue;
      }
      const dead = target.died();
      if (dead) {
        results.push({ ...base, status: 'failed', failures: [`daemon is gone: ${dead}`], ms: 0 });
        continue;
      }
      const workDir = path.join(target.workDir, scenario.id.replace(/[^\w.-]+/g, '_'));
      mkdirSync(workDir, { recursive: true });
      const ctx = new ScenarioContext(target, scenario, workDir);
      const s0 = Date.now();
      let status: ScenarioResult['status'] = 'passed';
      let skipReason: string | undefined;
      try {
        await withTimeout(scenario.run(ctx), scenario.timeoutMs ?? 120_000, scenario.id);
      } catch (err) {
        if (err instanceof SkipScenario) {
          status = 'skipped';
          skipReason = err.message;
        } else if (!(err instanceof ScenarioAbort)) {
          ctx.fail(`threw: ${(err as Error)?.stack ?? String(err)}`);
        }
      }
      const died = target.died();
      if (died) ctx.fail(`the daemon died during this scenario: ${died}`);
      if (status !== 'skipped' && ctx.failures.length) status = 'failed';
      const result: ScenarioResult = {
        ...base,
        status,
        failures: ctx.failures,
        skipReason,
        notes: ctx.notes,
        observations: ctx.observations,
        ms: Date.now() - s0,
      };
      if (status === 'failed') result.allowed = allowList.failure(scenario.id, target.name, ctx.failures.join('\n'));
      results.push(result);
      const mark = status === 'passed' ? 'ok  ' : status === 'skipped' ? 'skip' : result.allowed ? 'KNOWN' : 'FAIL';
      log(`  ${mark} ${scenario.id} (${secs(result.ms)})${status === 'failed' && !result.allowed ? `\n        ${ctx.failures.join('\n        ').slice(0, 3000)}` : ''}${verbose && result.allowed ? `\n        ${ctx.failures.join('\n        ')}` : ''}${skipReason ? ` — ${skipReason}` : ''}`);
    }
    if (suite.cleanup && !unavailable && !target.died()) await suite.cleanup(target).catch((err) => log(`cleanup of ${suite.name}: ${err}`));
    log(`${target.name}: suite ${suite.name} done in ${secs(Date.now() - suiteStart)}`);
  }
  const ran = new Set(results.filter((r) => r.status === 'passed').map((r) => r.id));
  return {
    target: target.name,
    kind: target.kind,
    apiVersion: target.apiVersion,
    clientApiVersion: target.clientApiVersion,
    results,
    staleFailureEntries: allowList.staleFailures(ran, target.name),
    daemonDied: target.died(),
    ms: Date.now() - t0,
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${secs(ms)}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Prints the per-client table and the failures; true when something failed outside the allow-list. */
function printRun(run: TargetRun, verbose: boolean): boolean {
  console.log(`\n=== ${run.target} (daemon API ${run.apiVersion}${run.clientApiVersion ? `, clients pinned to ${run.clientApiVersion}` : ''}) — ${secs(run.ms)}`);
  const rows: string[][] = [['client', 'passed', 'failed', 'of which allow-listed', 'skipped', 'total']];
  const tot = [0, 0, 0, 0, 0];
  for (const client of CLIENTS) {
    const rs = run.results.filter((r) => r.client === client);
    if (!rs.length) continue;
    const n = [
      rs.filter((r) => r.status === 'passed').length,
      rs.filter((r) => r.status === 'failed').length,
      rs.filter((r) => r.status === 'failed' && r.allowed).length,
      rs.filter((r) => r.status === 'skipped').length,
      rs.length,
    ];
    n.forEach((v, i) => (tot[i] += v));
    rows.push([client, ...n.map(String)]);
  }
  rows.push(['all', ...tot.map(String)]);
  console.log(table(rows));
  let bad = false;
  const failed = run.results.filter((r) => r.status === 'failed');
  if (failed.length) console.log(`\nfailures on ${run.target}:`);
  for (const r of failed) {
    if (r.allowed) {
      console.log(`  known  ${r.id} [${r.allowed.kind}]: ${r.allowed.reason}`);
      if (verbose) console.log(`         ${r.failures.join('\n         ')}`);
    } else {
      bad = true;
      console.log(`  FAILED ${r.id} — ${r.title}\n         ${r.failures.join('\n         ')}`);
    }
  }
  const skipped = run.results.filter((r) => r.status === 'skipped');
  if (skipped.length) {
    console.log(`\nskipped on ${run.target}:`);
    for (const r of skipped) console.log(`  ${r.id}: ${r.skipReason}`);
  }
  if (run.staleFailureEntries.length) {
    console.log(`\nallow-list entries for ${run.target} whose scenarios now pass (remove them):`);
    for (const e of run.staleFailureEntries) console.log(`  ${e.scenario} [${e.kind}]: ${e.reason}`);
  }
  // (A death is also the failure of the scenario it happened in, allow-listed or not, and of every later one.)
  if (run.daemonDied) console.log(`\nTHE DAEMON DIED during the run:\n${run.daemonDied}`);
  return bad;
}

interface ScenarioDiff {
  scenario: string;
  differences: Array<Difference & { allowedBy?: string }>;
}

function diffRuns(paddock: TargetRun, dockerd: TargetRun, allowList: AllowList): { scenarios: ScenarioDiff[]; notCompared: string[] } {
  const out: ScenarioDiff[] = [];
  const notCompared: string[] = [];
  for (const a of paddock.results) {
    const b = dockerd.results.find((r) => r.id === a.id);
    if (!b || a.status === 'skipped' || b.status === 'skipped') {
      notCompared.push(`${a.id} (${!b ? 'not run on dockerd' : a.status === 'skipped' ? `skipped on paddock: ${a.skipReason}` : `skipped on dockerd: ${b.skipReason}`})`);
      continue;
    }
    const na = observationsOf(a, paddock);
    const nb = observationsOf(b, dockerd);
    // A scenario that fails on Paddock for an allow-listed reason differs from dockerd because of
    // that failure: its differences are covered by the failure entry.
    const coveredBy = a.status === 'failed' && a.allowed ? `scenario fails on paddock (allow-listed): ${a.allowed.reason}` : undefined;
    const differences = diffValues(na, nb, '').map((d) => {
      const dd = { ...d, path: d.path.replace(/^\./, '') };
      const entry = allowList.difference(a.id, dd);
      return { ...dd, allowedBy: entry ? `[${entry.kind}] ${entry.reason}` : coveredBy };
    });
    if (differences.length) out.push({ scenario: a.id, differences });
  }
  return { scenarios: out, notCompared };
}

const normalizeContexts = new Map<string, ReturnType<typeof normalizeContextFor>>();

function observationsOf(r: ScenarioResult, run: TargetRun): Record<string, unknown> {
  const c = normalizeContexts.get(run.target)!;
  const out: Record<string, unknown> = {};
  for (const o of r.observations) out[o.key] = normalize(o.value, c);
  return out;
}

function printDiffs(d: { scenarios: ScenarioDiff[]; notCompared: string[] }, allowList: AllowList, verbose: boolean, partial: boolean): boolean {
  console.log('\n=== differences: paddock (a) vs dockerd (b), normalised');
  let unallowed = 0;
  let allowed = 0;
  for (const s of d.scenarios) {
    const bad = s.differences.filter((x) => !x.allowedBy);
    const ok = s.differences.filter((x) => x.allowedBy);
    unallowed += bad.length;
    allowed += ok.length;
    if (!bad.length && !verbose) continue;
    console.log(`\n  ${s.scenario}: ${bad.length} not allow-listed, ${ok.length} allow-listed`);
    for (const x of bad) console.log(`    DIFF ${describe(x)}`);
    if (verbose) for (const x of ok) console.log(`    known ${describe(x)}  [${x.allowedBy}]`);
  }
  const byReason = new Map<string, number>();
  for (const s of d.scenarios) for (const x of s.differences) if (x.allowedBy) byReason.set(x.allowedBy, (byReason.get(x.allowedBy) ?? 0) + 1);
  if (byReason.size) {
    console.log('\n  allow-listed differences by reason:');
    for (const [reason, n] of [...byReason].sort((x, y) => y[1] - x[1])) console.log(`    ${String(n).padStart(4)}  ${reason}`);
  }
  if (d.notCompared.length) console.log(`\n  not compared:\n    ${d.notCompared.join('\n    ')}`);
  // (A partial run leaves most entries unused: no stale report then.)
  const stale = partial ? [] : allowList.staleDifferences();
  if (stale.length) {
    console.log('\n  difference entries that matched nothing (stale: remove them, or the scenario did not run):');
    for (const e of stale) console.log(`    ${e.scenario} ${e.path} [${e.kind}]: ${e.reason}`);
  }
  console.log(`\n  ${unallowed} differences not in the allow-list, ${allowed} allow-listed`);
  return unallowed > 0;
}

function describe(x: Difference): string {
  const j = (v: unknown) => (v === undefined ? '(absent)' : JSON.stringify(v));
  switch (x.kind) {
    case 'missing-in-a':
      return `${x.path}: only dockerd has it: ${j(x.b)}`;
    case 'missing-in-b':
      return `${x.path}: only paddock has it: ${j(x.a)}`;
    default:
      return `${x.path}: paddock ${j(x.a)} ≠ dockerd ${j(x.b)}`;
  }
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(rows[0]), sep, ...rows.slice(1).map(line)].join('\n');
}

function log(msg: string): void {
  process.stderr.write(`[compat] ${msg}\n`);
}

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
