/**
 * The allow-list (docker-compat-tests/allow-list.json): the honest map of where Paddock is not
 * yet (or deliberately not) what dockerd is. Two kinds of entries, each with its reason:
 *  - failures: a scenario known to fail on a target (optionally only with a message matching
 *    `match`, so that it failing for some other reason is still reported);
 *  - differences: --diff paths (globs) where Paddock's normalised output differs from dockerd's.
 * Entries that no longer match anything are reported as stale, so the list shrinks as things get fixed.
 */
import { readFileSync } from 'node:fs';
import { globToRegExp, type Difference } from './diff';

export const KINDS = ['bug', 'not-implemented', 'by-design', 'version', 'reference-env'] as const;
export type Kind = (typeof KINDS)[number];

export interface FailureEntry {
  scenario: string;
  kind: Kind;
  /** Targets the failure is known on (default: paddock). */
  targets?: string[];
  reason: string;
  /** Regex that the failure text must match for the entry to apply. */
  match?: string;
  /** Intermittent: a run where the scenario passes does not make the entry stale. */
  flaky?: boolean;
}

export interface DifferenceEntry {
  /** Scenario id glob ("*" for all). */
  scenario: string;
  kind: Kind;
  /** Path glob: "inspect.State.Pid", "**.Pid", "stdout[*]". */
  path: string;
  reason: string;
  /** Timing-dependent: may match nothing in a given run without being stale. */
  flaky?: boolean;
  /** Optional: only when Paddock's (a) / dockerd's (b) normalised value, as JSON, matches. */
  a?: string;
  b?: string;
}

export interface AllowListFile {
  $comment?: string | string[];
  failures: FailureEntry[];
  differences: DifferenceEntry[];
}

export class AllowList {
  private readonly usedFailures = new Set<FailureEntry>();
  private readonly usedDifferences = new Set<DifferenceEntry>();
  private readonly compiled: Array<{ e: DifferenceEntry; s: RegExp; p: RegExp; a?: RegExp; b?: RegExp }>;

  constructor(readonly file: AllowListFile) {
    this.compiled = file.differences.map((e) => ({
      e,
      s: globToRegExp(e.scenario, 'scenario'),
      p: globToRegExp(e.path),
      a: e.a ? new RegExp(e.a) : undefined,
      b: e.b ? new RegExp(e.b) : undefined,
    }));
  }

  static load(file: string): AllowList {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as AllowListFile;
    for (const e of [...parsed.failures, ...parsed.differences]) {
      if (!e.reason || !e.reason.trim()) throw new Error(`${file}: every entry needs a reason (${JSON.stringify(e)})`);
      if (!KINDS.includes(e.kind)) throw new Error(`${file}: kind must be one of ${KINDS.join(', ')} (${JSON.stringify(e)})`);
    }
    return new AllowList(parsed);
  }

  failure(scenarioId: string, target: string, failureText: string): FailureEntry | undefined {
    for (const e of this.file.failures) {
      if (!globToRegExp(e.scenario, 'scenario').test(scenarioId)) continue;
      if (!(e.targets ?? ['paddock']).includes(target)) continue;
      if (e.match && !new RegExp(e.match, 's').test(failureText)) continue;
      this.usedFailures.add(e);
      return e;
    }
    return undefined;
  }

  /** Entries for a scenario that passed on the target: they no longer describe anything. */
  failureEntriesFor(scenarioId: string, target: string): FailureEntry[] {
    return this.file.failures.filter((e) => globToRegExp(e.scenario, 'scenario').test(scenarioId) && (e.targets ?? ['paddock']).includes(target));
  }

  difference(scenarioId: string, d: Difference): DifferenceEntry | undefined {
    for (const c of this.compiled) {
      if (!c.s.test(scenarioId) || !c.p.test(d.path)) continue;
      if (c.a && !c.a.test(JSON.stringify(d.a) ?? 'undefined')) continue;
      if (c.b && !c.b.test(JSON.stringify(d.b) ?? 'undefined')) continue;
      this.usedDifferences.add(c.e);
      return c.e;
    }
    return undefined;
  }

  staleFailures(ranScenarios: Set<string>, target: string): FailureEntry[] {
    return this.file.failures.filter(
      (e) =>
        (e.targets ?? ['paddock']).includes(target) &&
        !this.usedFailures.has(e) &&
        !e.flaky &&
        [...ranScenarios].some((id) => globToRegExp(e.scenario, 'scenario').test(id)),
    );
  }

  staleDifferences(): DifferenceEntry[] {
    return this.file.differences.filter((e) => !this.usedDifferences.has(e) && !e.flaky);
  }
}
