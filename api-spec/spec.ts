/**
 * Shared by generate.ts and check.ts: the list of operations in the Docker Engine API spec
 * (../shared/docker-engine-api, read in place), and the shape of api-spec/operations.json.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadSpec, specDir } from '../docker-compat-tests/lib/swagger';

export type Status = 'implemented' | 'unsupported' | 'missing';

export interface Operation {
  method: string;
  path: string;
  /** The spec's tag (Container, Image, Swarm, ...): the coverage table's rows. */
  group: string;
  operationId: string;
  summary: string;
  /**
   * Oldest API version whose CHANGELOG section mentions "METHOD path": the op existed by then, but it
   * may be older (the CHANGELOG mostly records changes, not introductions).
   */
  firstMentioned?: string;
  /** "swagger" for ops in the latest spec; "undocumented" for ops clients use that the spec omits. */
  source: 'swagger' | 'undocumented';
  /** Hand-maintained from here on. */
  status: Status;
  /**
   * implemented: the API version from which Paddock serves it: its minimum, 1.24, or the version
   * that introduced the operation in Docker when that is later (Paddock's routes are not gated).
   */
  since?: string;
  /** unsupported: what Paddock answers ("503 ..."); checked against the router. */
  answer?: string;
  notes?: string;
}

export interface OperationsFile {
  $comment: string[];
  specVersion: string;
  operations: Operation[];
}

/** The repository root (above api-spec/ or dist/api-spec/). */
export const repoRoot = (() => {
  for (let d = __dirname; ; d = path.dirname(d)) {
    if (existsSync(path.join(d, 'package.json')) && existsSync(path.join(d, 'api-spec'))) return d;
    if (path.dirname(d) === d) throw new Error(`no repository root above ${__dirname}`);
  }
})();

export const OPERATIONS_FILE = path.join(repoRoot, 'api-spec', 'operations.json');

const METHODS = ['get', 'post', 'put', 'delete', 'head', 'patch'];

/** Operations clients use that the swagger does not document. */
export const UNDOCUMENTED: Array<Pick<Operation, 'method' | 'path' | 'group' | 'operationId' | 'summary'>> = [
  {
    method: 'POST',
    path: '/grpc',
    group: 'Session',
    operationId: '(undocumented) grpc',
    summary: "Upgrades to h2c for BuildKit's gRPC API: what `docker build` (buildx) talks to before /build",
  },
];

/** Every (method, path) of the latest spec, plus the undocumented ones, sorted by group then path. */
export function specOperations(): { version: string; ops: Array<Omit<Operation, 'status'>> } {
  const dir = specDir();
  if (!dir) throw new Error('the Docker Engine API spec is not there: expected ../shared/docker-engine-api/swagger-latest.yaml (or $DOCKER_ENGINE_API_DIR)');
  const spec = loadSpec(path.join(dir, 'swagger-latest.yaml'));
  const mentions = changelogMentions(path.join(dir, 'CHANGELOG.md'));
  const ops: Array<Omit<Operation, 'status'>> = [];
  for (const [p, item] of Object.entries<any>(spec.paths)) {
    for (const m of METHODS) {
      const op = item[m];
      if (!op) continue;
      const method = m.toUpperCase();
      ops.push({
        method,
        path: p,
        group: op.tags?.[0] ?? 'Other',
        operationId: op.operationId ?? '',
        summary: String(op.summary ?? op.description ?? '').split('\n')[0].trim(),
        firstMentioned: mentions.get(`${method} ${placeholders(p)}`),
        source: 'swagger',
      });
    }
  }
  for (const u of UNDOCUMENTED) ops.push({ ...u, firstMentioned: mentions.get(`${u.method} ${placeholders(u.path)}`), source: 'undocumented' });
  ops.sort((a, b) => a.group.localeCompare(b.group) || a.path.localeCompare(b.path) || a.method.localeCompare(b.method));
  return { version: String(spec.info?.version), ops };
}

/** `/images/{name}/json`, `/images/(name)/json` → `/images/{}/json`. */
export function placeholders(p: string): string {
  return p.replace(/\{[^}]*\}|\([^)]*\)/g, '{}').replace(/\/+$/, '');
}

/** "METHOD /path" → the oldest "## vX.Y API changes" section that mentions it. */
function changelogMentions(file: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(file)) return out;
  let version: string | undefined;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const h = /^## v(\d+\.\d+) API changes/.exec(line);
    if (h) {
      version = h[1];
      continue;
    }
    if (!version) continue;
    for (const m of line.matchAll(/`(GET|POST|PUT|DELETE|HEAD) (\/[^`?\s]*)/g)) {
      // Sections run newest to oldest: the last one seen is the oldest.
      out.set(`${m[1]} ${placeholders(m[2])}`, version);
    }
  }
  return out;
}

export function readOperations(): OperationsFile {
  return JSON.parse(readFileSync(OPERATIONS_FILE, 'utf8'));
}

export function compareVersions(a: string, b: string): number {
  const [am, an] = a.split('.').map(Number);
  const [bm, bn] = b.split('.').map(Number);
  return am !== bm ? am - bm : an - bn;
}
