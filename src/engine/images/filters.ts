/** Image list and prune filters, with dockerd's validation and its glob rules for `reference`. */
import { parseTimestamp } from '../../api/routes/events';
import { familiarName, familiarString, type NamedReference } from '../../drivers/registry/reference';
import { invalid } from '../../errors';

export type Filters = Record<string, string[]>;

const LIST_FILTERS = new Set(['dangling', 'label', 'before', 'since', 'reference', 'until']);
const PRUNE_FILTERS = new Set(['dangling', 'label', 'label!', 'until']);

export function validateFilters(filters: Filters, kind: 'list' | 'prune'): void {
  const allowed = kind === 'list' ? LIST_FILTERS : PRUNE_FILTERS;
  for (const key of Object.keys(filters)) {
    if (!allowed.has(key)) throw invalid(`invalid filter '${key}'`);
  }
}

/** `dangling` as true/false/undefined; anything but 1/true/0/false is dockerd's 400. */
export function danglingFilter(filters: Filters): boolean | undefined {
  const values = filters.dangling;
  if (!values || values.length === 0) return undefined;
  const parsed = values.map((v) => {
    if (['true', '1'].includes(v.toLowerCase())) return true;
    if (['false', '0'].includes(v.toLowerCase())) return false;
    throw invalid(`invalid filter 'dangling=${v}'`);
  });
  return parsed.includes(true);
}

/** `label=key` or `label=key=value`, all must match (`label!=` entries must all not match). */
export function labelsMatch(labels: Record<string, string> | null | undefined, wanted: string[] | undefined, negate = false): boolean {
  if (!wanted || wanted.length === 0) return true;
  const have = labels ?? {};
  const matchOne = (spec: string) => {
    const i = spec.indexOf('=');
    if (i === -1) return spec in have;
    return have[spec.slice(0, i)] === spec.slice(i + 1);
  };
  return negate ? wanted.every((w) => !matchOne(w)) : wanted.every(matchOne);
}

/** Go's path.Match: `*` and `?` do not cross '/', `[...]` classes with `^` or `!` negation. */
export function globMatch(pattern: string, name: string): boolean {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end === -1) throw invalid('syntax error in pattern');
      let cls = pattern.slice(i + 1, end);
      if (cls.startsWith('^') || cls.startsWith('!')) cls = '^' + cls.slice(1);
      re += `[${cls.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else if (c === '\\' && i + 1 < pattern.length) {
      re += '\\' + pattern[++i];
    } else re += c.replace(/[.+^${}()|\]\\]/g, '\\$&');
  }
  return new RegExp(re + '$').test(name);
}

/** Docker's FamiliarMatch: the pattern against "name:tag", then against "name". */
export function referenceMatches(pattern: string, ref: NamedReference): boolean {
  return globMatch(pattern, familiarString(ref)) || globMatch(pattern, familiarName(ref));
}

/** `until` as nanoseconds; images created at or after it are excluded. */
export function untilFilter(filters: Filters): number | undefined {
  const values = filters.until;
  if (!values || values.length === 0) return undefined;
  if (values.length > 1) throw invalid(`more than one until filter specified`);
  return parseTimestamp(values[0]);
}
