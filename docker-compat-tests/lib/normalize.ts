/**
 * Normalising client outputs before two daemons' answers are compared: what legitimately differs
 * between any two runs (container IDs, timestamps, durations, sizes, addresses, temp paths, the
 * registry's port) is masked; what should be the same everywhere (image IDs and digests of the
 * seeded images, exit codes, messages, field names and values) is kept, with seeded digests
 * replaced by their names so a difference reads well.
 */
import type { Target } from './target';

export interface NormalizeContext {
  registry: string;
  /** Full hex digest (no "sha256:") → readable name, e.g. "busybox.id". */
  knownDigests: Map<string, string>;
  volatilePaths: string[];
  /** Literal strings → replacement (e.g. the target's own name in repo names). */
  literals: Array<[string, string]>;
}

export function normalizeContextFor(t: Target): NormalizeContext {
  const knownDigests = new Map<string, string>();
  for (const img of Object.values(t.images)) {
    // Seeds share content (busybox, busybox-oci and multiarch's amd64 half are one image): the
    // first name given to a digest stays.
    const name = (digest: string, label: string) => {
      const hex = digest.replace(/^sha256:/, '');
      if (!knownDigests.has(hex)) knownDigests.set(hex, label);
    };
    name(img.manifestDigest, `${img.name}.manifest`);
    name(img.configDigest, `${img.name}.id`);
    for (const p of img.platforms ?? []) {
      const plat = `${p.platform.os}-${p.platform.architecture}${p.platform.variant ? `-${p.platform.variant}` : ''}`;
      name(p.manifestDigest, `${img.name}.${plat}.manifest`);
      name(p.configDigest, `${img.name}.${plat}.id`);
    }
  }
  return {
    registry: t.registry,
    knownDigests,
    volatilePaths: [t.workDir, ...t.volatilePaths],
    literals: [[`compat-${t.name}`, 'compat-<target>']],
  };
}

/** Object keys whose values are volatile whatever they hold. */
const VOLATILE_KEYS: Record<string, string> = {
  Pid: '<pid>',
  Created: '<time>',
  CreatedAt: '<time>',
  StartedAt: '<time>',
  FinishedAt: '<time>',
  LastTagTime: '<time>',
  SystemTime: '<time>',
  time: '<time>',
  timeNano: '<time>',
  read: '<time>',
  preread: '<time>',
  Size: '<size>',
  VirtualSize: '<size>',
  SharedSize: '<size>',
  SizeRw: '<size>',
  SizeRootFs: '<size>',
  NGoroutines: '<n>',
  NFd: '<n>',
  NEventsListener: '<n>',
  MemTotal: '<n>',
  NCPU: '<n>',
  ShmSize: '<size>',
  // docker-py's / the CLI's local view of the client.
  ClientInfo: '<client>',
};

const TIME_RE = /\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)\b/g;
const DURATION_RE =
  /\b(?:Less than a second|About (?:a|an) (?:second|minute|hour)|\d+ (?:seconds?|minutes?|hours?|days?|weeks?|months?|years?))\b/g;
const SIZE_RE = /\b\d+(?:\.\d+)?\s?(?:B|kB|KB|MB|GB|KiB|MiB|GiB|TiB)\b/g;
const PCT_RE = /\b\d+(?:\.\d+)?%/g;
const IP_RE = /\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b/g;
const MAC_RE = /\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b/gi;
/** Lines the reference dockerd adds because it runs with --ip-forward=false (our choice, not its behaviour). */
const DROPPED_LINES = [/^WARNING: IPv4 forwarding is disabled\. Networking will not work\.\r?$/];

export function normalizeString(s: string, c: NormalizeContext): string {
  let out = s;
  c.volatilePaths.forEach((p, i) => {
    if (p) out = out.split(p).join(i === 0 ? '<work>' : '<root>');
  });
  for (const [lit, rep] of c.literals) out = out.split(lit).join(rep);
  out = out.split(c.registry).join('<registry>');
  out = out.replace(/\b(sha256:)?([0-9a-f]{64})\b/g, (_m, prefix: string | undefined, hex: string) => {
    const known = c.knownDigests.get(hex);
    return known ? `<${known}>` : prefix ? '<digest>' : '<id>';
  });
  out = out.replace(/\b[0-9a-f]{12}\b/g, (hex) => {
    if (/^\d+$/.test(hex)) return hex;
    for (const [full, name] of c.knownDigests) if (full.startsWith(hex)) return `<${name}:short>`;
    return '<short-id>';
  });
  out = out.replace(TIME_RE, (t) => (t.startsWith('0001-01-01') ? t : '<time>'));
  out = out.replace(DURATION_RE, '<duration>');
  out = out.replace(SIZE_RE, '<size>');
  out = out.replace(PCT_RE, '<pct>');
  out = out.replace(IP_RE, '<ip>');
  out = out.replace(MAC_RE, '<mac>');
  return out;
}

/** Normalises any JSON-like value; multi-line strings become arrays of lines (line-level diffs). */
export function normalize(value: unknown, c: NormalizeContext, key?: string): unknown {
  if (key && key in VOLATILE_KEYS && value !== null && value !== undefined && value !== '' && value !== 0) {
    if (!(typeof value === 'string' && value.startsWith('0001-01-01'))) return VOLATILE_KEYS[key];
  }
  if (typeof value === 'string') {
    const n = normalizeString(value, c);
    if (n.includes('\n')) return splitLines(n);
    return n;
  }
  if (Array.isArray(value)) return value.map((v) => normalize(v, c));
  if (isSet(value)) {
    // An unordered collection: sorted after normalising, since masked IDs change the order.
    return [...new Set(value.$set.map((v) => JSON.stringify(normalize(v, c))))].sort().map((v) => JSON.parse(v));
  }
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[normalizeString(k, c)] = normalize(v, c, k);
    return out;
  }
  return value;
}

/** The shape of an object: each key with the JSON type of its value (for "which fields exist" comparisons). */
export function shape(obj: unknown): Record<string, string> {
  if (!obj || typeof obj !== 'object') return {};
  return Object.fromEntries(
    Object.entries(obj as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([x], [y]) => x.localeCompare(y))
      .map(([k, v]) => [k, v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v]),
  );
}

/** Marks an observation as an unordered collection (compared as a sorted set after normalisation). */
export function asSet(items: unknown[]): { $set: unknown[] } {
  return { $set: items };
}

function isSet(v: unknown): v is { $set: unknown[] } {
  return Boolean(v) && typeof v === 'object' && Array.isArray((v as { $set?: unknown }).$set) && Object.keys(v as object).length === 1;
}

export function splitLines(text: string): string[] {
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  return lines.filter((l) => !DROPPED_LINES.some((re) => re.test(l)));
}
