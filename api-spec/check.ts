/**
 * `npm run api-spec [-- --write-readme]`: checks that api-spec/operations.json, the spec and
 * Paddock's router agree, and prints the coverage table.
 *
 *  - operations.json lists exactly the spec's operations (else: run api-spec/generate.ts);
 *  - every route of the router (buildRouter over an inert engine) is a listed operation that is
 *    `implemented` or `unsupported`, never `missing`;
 *  - every `implemented` entry has a route (HEAD may be served by the GET route) and a `since`;
 *  - every `unsupported` entry's `answer` is what the server really answers: the request is sent
 *    through createApiServer(router) on a private unix socket and the status code compared.
 * With --write-readme the table goes into README.md between <!-- api-coverage:start --> and
 * <!-- api-coverage:end --> (nothing else is touched; without the markers nothing is written).
 * Exits 1 on any mismatch.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createApiServer } from '../src/api/server';
import type { Router } from '../src/api/router';
import { MAX_API_VERSION, MIN_API_VERSION } from '../src/api/version';
import { buildRouter, type Engine } from '../src/daemon';
import { compareVersions, placeholders, readOperations, repoRoot, specOperations, type Operation } from './spec';

const START = '<!-- api-coverage:start -->';
const END = '<!-- api-coverage:end -->';

/** An engine whose every property and call returns another such object: route tables only need shapes. */
function inertEngine(): Engine {
  const make = (): any =>
    new Proxy(function inert() {}, {
      get: (_t, prop) => (prop === 'then' ? undefined : prop === Symbol.toPrimitive ? () => '' : make()),
      apply: () => make(),
      construct: () => make(),
    });
  return make() as Engine;
}

function routeKeys(router: Router): Map<string, string> {
  const keys = new Map<string, string>();
  for (const r of router.list()) keys.set(`${r.method} ${placeholders(r.path.replace(/:\.\*\}/g, '}'))}`, `${r.method} ${r.path}`);
  return keys;
}

async function main(): Promise<number> {
  const writeReadme = process.argv.includes('--write-readme');
  const problems: string[] = [];
  const file = readOperations();
  const ops = file.operations;
  const key = (o: Pick<Operation, 'method' | 'path'>) => `${o.method} ${placeholders(o.path)}`;
  const byKey = new Map(ops.map((o) => [key(o), o]));

  // 1. The list is the spec's.
  try {
    const spec = specOperations();
    const listed = new Set(ops.map((o) => `${o.method} ${o.path}`));
    const inSpec = new Set(spec.ops.map((o) => `${o.method} ${o.path}`));
    for (const k of inSpec) if (!listed.has(k)) problems.push(`${k} is in the spec (${spec.version}) but not in operations.json: run api-spec/generate.ts`);
    for (const k of listed) if (!inSpec.has(k)) problems.push(`${k} is in operations.json but not in the spec (${spec.version}): run api-spec/generate.ts`);
    if (file.specVersion !== spec.version) problems.push(`operations.json was generated from spec ${file.specVersion}, the spec is now ${spec.version}: run api-spec/generate.ts`);
  } catch (err) {
    console.log(`(spec not found, list not compared with it: ${(err as Error).message})`);
  }
  for (const o of ops) {
    if (!['implemented', 'unsupported', 'missing'].includes(o.status)) problems.push(`${o.method} ${o.path}: unknown status ${JSON.stringify(o.status)}`);
  }

  // 2./3. Router and list agree.
  const router = buildRouter(inertEngine());
  const routes = routeKeys(router);
  for (const [k, declared] of routes) {
    const o = byKey.get(k);
    if (!o) problems.push(`route ${declared} is no Docker API operation in operations.json (if clients use it, add it to UNDOCUMENTED in api-spec/spec.ts)`);
    else if (o.status === 'missing') problems.push(`route ${declared} exists but ${o.method} ${o.path} is listed as missing: mark it implemented (with since) or unsupported (with answer)`);
  }
  for (const o of ops.filter((x) => x.status === 'implemented')) {
    const served = routes.has(key(o)) || (o.method === 'HEAD' && routes.has(key({ method: 'GET', path: o.path })));
    if (!served) problems.push(`${o.method} ${o.path} is listed as implemented but the router has no such route`);
    if (!o.since || !/^1\.\d+$/.test(o.since)) problems.push(`${o.method} ${o.path}: implemented needs "since" (an API version)`);
    else if (compareVersions(o.since, MIN_API_VERSION) < 0 || compareVersions(o.since, MAX_API_VERSION) > 0) {
      problems.push(`${o.method} ${o.path}: since ${o.since} is outside the versions Paddock serves (${MIN_API_VERSION}–${MAX_API_VERSION})`);
    }
  }

  // 4. Unsupported answers are what the server says.
  const unsupported = ops.filter((o) => o.status === 'unsupported');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-api-spec-'));
  const socketPath = path.join(dir, 'api.sock');
  const server = createApiServer(router);
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  try {
    for (const o of unsupported) {
      const m = /^(\d{3})\b/.exec(o.answer ?? '');
      if (!m) {
        problems.push(`${o.method} ${o.path}: unsupported needs "answer" starting with the HTTP status (e.g. "503 ...")`);
        continue;
      }
      const url = `/v${MAX_API_VERSION}${o.path.replace(/\{[^}]+\}/g, 'paddock-api-spec-check')}`;
      const status = await request(socketPath, o.method, url).catch((err) => `error ${err}`);
      if (String(status) !== m[1]) problems.push(`${o.method} ${o.path}: answer says ${m[1]}, the server answers ${status}`);
    }
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  }

  // Coverage.
  const table = coverageTable(ops, file.specVersion);
  console.log(table);
  const readme = path.join(repoRoot, 'README.md');
  const current = existsSync(readme) ? readFileSync(readme, 'utf8') : '';
  const [s0, e0] = [current.indexOf(START), current.indexOf(END)];
  if (!writeReadme && s0 >= 0 && e0 > s0 && current.slice(s0 + START.length, e0).trim() !== table.trim()) {
    console.log('\n(README.md\'s coverage table is out of date: npm run api-spec -- --write-readme)');
  }
  if (writeReadme) {
    const text = existsSync(readme) ? readFileSync(readme, 'utf8') : undefined;
    const s = text?.indexOf(START) ?? -1;
    const e = text?.indexOf(END) ?? -1;
    if (text === undefined || s < 0 || e < s) {
      console.log(`\nREADME.md ${text === undefined ? 'does not exist' : `has no ${START} … ${END} markers`}: nothing written (add the markers where the table belongs).`);
    } else {
      const next = `${text.slice(0, s + START.length)}\n${table}\n${text.slice(e)}`;
      if (next !== text) writeFileSync(readme, next);
      console.log(`\nREADME.md: coverage table ${next === text ? 'already up to date' : 'written'} between the markers.`);
    }
  }
  if (problems.length) {
    console.log(`\n${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
    return 1;
  }
  console.log(`\noperations.json, the spec and the router agree (${routes.size} routes).`);
  return 0;
}

function request(socketPath: string, method: string, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const body = method === 'POST' || method === 'PUT' ? '{}' : undefined;
    const req = http.request(
      { socketPath, method, path: url, agent: false, headers: body ? { 'Content-Type': 'application/json', 'Content-Length': body.length } : {} },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error('no answer in 5 s')));
    req.on('error', reject);
    req.end(body);
  });
}

export function coverageTable(ops: Operation[], specVersion: string): string {
  const groups = [...new Set(ops.map((o) => o.group))].sort();
  const count = (list: Operation[], s: string) => list.filter((o) => o.status === s).length;
  const rows = groups.map((g) => {
    const list = ops.filter((o) => o.group === g);
    return [g, count(list, 'implemented'), count(list, 'unsupported'), count(list, 'missing'), list.length];
  });
  rows.push(['**all**', count(ops, 'implemented'), count(ops, 'unsupported'), count(ops, 'missing'), ops.length]);
  const lines = [
    `Docker Engine API coverage (operations of spec v${specVersion}, from api-spec/operations.json; \`npm run api-spec\`):`,
    '',
    '| group | implemented | unsupported | missing | total |',
    '|---|--:|--:|--:|--:|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
  return lines.join('\n');
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
