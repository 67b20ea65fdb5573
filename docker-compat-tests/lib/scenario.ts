/**
 * What a scenario is, and the context it runs in: the target daemon, the seeded registry, a
 * scratch directory, soft checks (a scenario keeps going after one fails, so one run shows every
 * broken expectation) and observations (normalised client outputs that `--diff` compares between
 * Paddock and dockerd).
 */
import type { Target } from './target';

export type ClientName = 'docker-cli-28' | 'docker-cli-20.10' | 'docker-compose-1.29' | 'dockerode' | 'docker-py' | 'http-api';

export const CLIENTS: readonly ClientName[] = ['docker-cli-28', 'docker-cli-20.10', 'docker-compose-1.29', 'dockerode', 'docker-py', 'http-api'];

/** Capabilities a scenario may need that a target may lack (reported as "skipped", with the reason). */
export type Feature = 'bridge-networks' | 'port-publishing' | 'api-1.44' | 'paddock';

export interface Scenario {
  /** "<suite>/<name>", unique; the allow-list names scenarios by this id. */
  id: string;
  client: ClientName;
  title: string;
  needs?: Feature[];
  /** Upper bound for the whole scenario (default 90 s). */
  timeoutMs?: number;
  run(ctx: ScenarioContext): Promise<void>;
}

/** A suite: scenarios in order, sharing fixtures made in `setup` (a container reused by many). */
export interface Suite {
  name: string;
  client: ClientName;
  /** Why the whole suite cannot run here (client missing...), or undefined. */
  unavailable?(): string | undefined;
  scenarios: Scenario[];
  /** Always called at the end, even after failures: remove what the suite made. */
  cleanup?(target: Target): Promise<void>;
}

export class SkipScenario extends Error {}
/** A hard failure: the scenario cannot go on (its soft failures so far are kept). */
export class ScenarioAbort extends Error {}

export interface Observation {
  key: string;
  value: unknown;
}

export class ScenarioContext {
  readonly failures: string[] = [];
  readonly observations: Observation[] = [];
  readonly notes: string[] = [];

  constructor(
    readonly target: Target,
    readonly scenario: Scenario,
    readonly workDir: string,
  ) {}

  /** Records a value for `--diff` (normalised there). Keys are unique per scenario. */
  observe(key: string, value: unknown): void {
    this.observations.push({ key, value });
  }

  note(text: string): void {
    this.notes.push(text);
  }

  skip(reason: string): never {
    throw new SkipScenario(reason);
  }

  fail(message: string): void {
    this.failures.push(message);
  }

  abort(message: string): never {
    this.failures.push(message);
    throw new ScenarioAbort(message);
  }

  check(ok: boolean, message: string): boolean {
    if (!ok) this.fail(message);
    return ok;
  }

  equal(actual: unknown, expected: unknown, what: string): boolean {
    const a = JSON.stringify(actual);
    const e = JSON.stringify(expected);
    return this.check(a === e, `${what}: expected ${e}, got ${a}`);
  }

  /** The client's exit code, with its output in the message when it is not the expected one. */
  exitCode(res: { code: number; stdout: string; stderr: string }, expected: number, what: string): boolean {
    return this.check(res.code === expected, `${what}: exit code ${res.code}, expected ${expected}${outputOf(res)}`);
  }

  /** Like exitCode but stops the scenario: later steps depend on this one. */
  requireExitCode(res: { code: number; stdout: string; stderr: string }, expected: number, what: string): void {
    if (res.code !== expected) this.abort(`${what}: exit code ${res.code}, expected ${expected}${outputOf(res)}`);
  }

  contains(text: string, needle: string, what: string): boolean {
    return this.check(text.includes(needle), `${what}: expected to contain ${JSON.stringify(needle)}, got ${quote(text)}`);
  }

  matches(text: string, re: RegExp, what: string): boolean {
    return this.check(re.test(text), `${what}: expected to match ${re}, got ${quote(text)}`);
  }

  /** Every listed field of `obj` equals the given value (dotted paths). */
  fields(obj: unknown, expected: Record<string, unknown>, what: string): void {
    for (const [p, want] of Object.entries(expected)) {
      const got = getPath(obj, p);
      if (want instanceof RegExp) this.check(typeof got === 'string' && want.test(got), `${what}: ${p} expected to match ${want}, got ${JSON.stringify(got)}`);
      else this.equal(got, want, `${what}: ${p}`);
    }
  }
}

export function getPath(obj: unknown, dotted: string): unknown {
  let cur: any = obj;
  for (const part of dotted.split('.')) {
    if (cur === null || cur === undefined) return undefined;
    cur = cur[part];
  }
  return cur;
}

export function quote(text: string, max = 1500): string {
  const t = text.length > max ? `${text.slice(0, max)}…(${text.length - max} more chars)` : text;
  return JSON.stringify(t);
}

export function outputOf(res: { stdout: string; stderr: string }): string {
  const parts: string[] = [];
  if (res.stdout.trim()) parts.push(`stdout ${quote(res.stdout.trim(), 800)}`);
  if (res.stderr.trim()) parts.push(`stderr ${quote(res.stderr.trim(), 800)}`);
  return parts.length ? ` (${parts.join(', ')})` : ' (no output)';
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Parses `--format '{{json .}}'` output: one JSON document per line. */
export function jsonLines(text: string): any[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

export function tryJson(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
