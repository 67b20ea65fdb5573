/** Field-level differences between two normalised values, each with a path the allow-list can name. */

export interface Difference {
  /** "observation.Field.Sub[2]" */
  path: string;
  kind: 'value' | 'type' | 'missing-in-a' | 'missing-in-b';
  a?: unknown;
  b?: unknown;
}

export function diffValues(a: unknown, b: unknown, path: string, out: Difference[] = []): Difference[] {
  if (a === undefined && b === undefined) return out;
  if (a === undefined) {
    out.push({ path, kind: 'missing-in-a', b: brief(b) });
    return out;
  }
  if (b === undefined) {
    out.push({ path, kind: 'missing-in-b', a: brief(a) });
    return out;
  }
  const ta = typeOf(a);
  const tb = typeOf(b);
  if (ta !== tb) {
    out.push({ path, kind: 'type', a: brief(a), b: brief(b) });
    return out;
  }
  if (ta === 'array') {
    const aa = a as unknown[];
    const bb = b as unknown[];
    const primitive = (v: unknown) => v === null || typeof v !== 'object';
    if (aa.every(primitive) && bb.every(primitive)) {
      // Lines, names, actions: an insertion should read as one difference, not a cascade.
      lineDiff(aa, bb, path, out);
      return out;
    }
    for (let i = 0; i < Math.max(aa.length, bb.length); i++) diffValues(aa[i], bb[i], `${path}[${i}]`, out);
    return out;
  }
  if (ta === 'object') {
    const ao = a as Record<string, unknown>;
    const bo = b as Record<string, unknown>;
    const keys = [...new Set([...Object.keys(ao), ...Object.keys(bo)])].sort();
    for (const k of keys) diffValues(ao[k], bo[k], `${path}.${k}`, out);
    return out;
  }
  if (a !== b) out.push({ path, kind: 'value', a, b });
  return out;
}

/** LCS of two primitive arrays; what is left over on either side is a difference at its own index. */
function lineDiff(a: unknown[], b: unknown[], path: string, out: Difference[]): void {
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  let i = 0;
  let j = 0;
  const onlyA: number[] = [];
  const onlyB: number[] = [];
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      flush();
      i++;
      j++;
    } else if (j >= m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1])) onlyA.push(i++);
    else onlyB.push(j++);
  }
  flush();
  // A run of removed lines facing a run of added lines of the same length reads best as changed values.
  function flush(): void {
    if (onlyA.length && onlyA.length === onlyB.length) {
      onlyA.forEach((ia, k) => out.push({ path: `${path}[${ia}]`, kind: 'value', a: a[ia], b: b[onlyB[k]] }));
    } else {
      for (const ia of onlyA) out.push({ path: `${path}[${ia}]`, kind: 'missing-in-b', a: a[ia] });
      for (const ib of onlyB) out.push({ path: `${path}[${ib}]`, kind: 'missing-in-a', b: b[ib] });
    }
    onlyA.length = 0;
    onlyB.length = 0;
  }
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** Whole sub-trees that exist on one side only are shown short. */
function brief(v: unknown): unknown {
  const s = JSON.stringify(v);
  return s && s.length > 200 ? `${s.slice(0, 200)}…` : v;
}

/**
 * A glob as a RegExp. Diff paths ("a.b[3].c"): `**` = anything, `*` = anything within one segment
 * (segments split by `.` and `[ ]`). Scenario ids ("docker-cli-20.10/pull"): `*` = anything.
 */
export function globToRegExp(glob: string, kind: 'path' | 'scenario' = 'path'): RegExp {
  const one = kind === 'path' ? '[^.\\[\\]]*' : '.*';
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (ch === '*') re += one;
    else re += ch.replace(/[.+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}
