/**
 * The raw HTTP API, as thin clients (curl, testcontainers' first probes, health checks) use it:
 * _ping headers, version negotiation, status codes and error bodies, and the JSON of the key
 * read endpoints validated against the spec's schemas for the daemon's API version.
 */
import { api } from '../lib/clients';
import type { Scenario, ScenarioContext, Suite } from '../lib/scenario';
import { SpecValidator } from '../lib/swagger';

const client = 'http-api' as const;

export function httpApiSuite(): Suite {
  const scenarios: Scenario[] = [
    {
      id: `${client}/ping`,
      client,
      title: 'GET and HEAD /_ping: OK and the headers clients negotiate with',
      async run(ctx) {
        const g = await api(ctx, 'GET', '/_ping');
        ctx.equal(g.status, 200, 'GET /_ping status');
        ctx.equal(g.body, 'OK', 'GET /_ping body');
        const h = await api(ctx, 'HEAD', '/_ping');
        ctx.equal(h.status, 200, 'HEAD /_ping status');
        ctx.equal(h.headers['api-version'], ctx.target.apiVersion, 'Api-Version header');
        ctx.equal(h.headers['ostype'], 'linux', 'Ostype header');
        ctx.check(h.headers['cache-control'] === 'no-cache, no-store, must-revalidate', `Cache-Control ${h.headers['cache-control']}`);
        ctx.observe('headers', pick(h.headers, ['api-version', 'ostype', 'docker-experimental', 'cache-control', 'pragma', 'content-type']));
        const v = await api(ctx, 'GET', '/v1.24/_ping');
        ctx.equal(v.status, 200, 'GET /v1.24/_ping');
      },
    },
    {
      id: `${client}/version-negotiation`,
      client,
      title: 'versioned paths: the oldest common version works, a too-new one is a 400 with the reason',
      async run(ctx) {
        const ok = await api(ctx, 'GET', '/v1.24/version');
        ctx.equal(ok.status, 200, 'GET /v1.24/version');
        const max = await api(ctx, 'GET', `/v${ctx.target.apiVersion}/version`);
        ctx.equal(max.status, 200, `GET /v${ctx.target.apiVersion}/version`);
        ctx.equal(max.json().ApiVersion, ctx.target.apiVersion, 'ApiVersion');
        const tooNew = await api(ctx, 'GET', '/v9.99/version');
        ctx.equal(tooNew.status, 400, 'GET /v9.99/version status');
        ctx.equal(
          tooNew.json().message,
          `client version 9.99 is too new. Maximum supported API version is ${ctx.target.apiVersion}`,
          'GET /v9.99/version message',
        );
        ctx.equal(String(tooNew.headers['content-type']).split(';')[0], 'application/json', 'error Content-Type');
        ctx.observe('too-new', { status: tooNew.status, message: tooNew.json().message.replace(ctx.target.apiVersion, '<max>') });
      },
    },
    {
      id: `${client}/errors`,
      client,
      title: 'status codes and {"message"} bodies for unknown paths, missing objects, bad requests',
      async run(ctx) {
        const R = ctx.target.registry;
        const cases: Array<[string, string, unknown, number | number[], string | RegExp]> = [
          ['GET', '/nosuch', undefined, 404, 'page not found'],
          ['GET', '/containers/nosuch/json', undefined, 404, 'No such container: nosuch'],
          ['POST', '/containers/nosuch/start', undefined, 404, 'No such container: nosuch'],
          ['DELETE', '/containers/nosuch', undefined, 404, 'No such container: nosuch'],
          // dockerd 20.10 says "no such image: X: No such image: X"; dockerd ≥ 23 and the spec: "No such image: X".
          ['GET', `/images/${R}/nosuch:latest/json`, undefined, 404, new RegExp(`(^|: )No such image: ${esc(R)}/nosuch:latest$`)],
          ['DELETE', `/images/${R}/nosuch:latest`, undefined, 404, `No such image: ${R}/nosuch:latest`],
          ['GET', '/exec/nosuch/json', undefined, 404, 'No such exec instance: nosuch'],
          // dockerd 20.10 answers these two with 500, newer dockerd with 400 (both accepted here; --diff shows which).
          ['POST', '/containers/create', '{not json', [400, 500], /^invalid/],
          ['POST', '/containers/create', {}, 400, /^[Cc]onfig cannot be empty in order to create a container$/],
          ['POST', '/containers/create?name=bad/name', { Image: `${R}/busybox:latest` }, 400, /^Invalid container name \(bad\/name\), only \[a-zA-Z0-9\]\[a-zA-Z0-9_\.-\] are allowed$/],
          ['GET', '/containers/json?filters=notjson', undefined, [400, 500], /^invalid (character|filter)/],
          ['POST', `/containers/create`, { Image: `${R}/nosuch:latest` }, 404, `No such image: ${R}/nosuch:latest`],
        ];
        const pulled = await api(ctx, 'POST', `/images/create?fromImage=${encodeURIComponent(`${R}/busybox`)}&tag=latest`);
        ctx.equal(pulled.status, 200, 'POST /images/create (pull busybox first: dockerd checks the image before the name)');
        const obs: Record<string, unknown> = {};
        for (const [method, path, body, status, message] of cases) {
          const r = await api(ctx, method, path, body);
          const msg = r.json()?.message;
          obs[`${method} ${path}`] = { status: r.status, message: msg };
          if (Array.isArray(status)) ctx.check(status.includes(r.status), `${method} ${path} status: ${r.status}, expected one of ${status.join(', ')}`);
          else ctx.equal(r.status, status, `${method} ${path} status`);
          if (typeof message === 'string') ctx.equal(msg, message, `${method} ${path} message`);
          else ctx.check(typeof msg === 'string' && message.test(msg), `${method} ${path} message: ${JSON.stringify(msg)} does not match ${message}`);
        }
        ctx.observe('errors', obs);
      },
    },
  ];

  // Schema validation of the key read endpoints, for a daemon whose API version has a spec file.
  const schemaCases: Array<[string, string, string, (ctx: ScenarioContext, ids: Ids) => string]> = [
    ['version', 'GET', '/version', () => '/version'],
    ['info', 'GET', '/info', () => '/info'],
    ['containers-list', 'GET', '/containers/json', () => '/containers/json?all=1'],
    ['container-inspect', 'GET', '/containers/{id}/json', (_c, ids) => `/containers/${ids.container}/json`],
    ['images-list', 'GET', '/images/json', () => '/images/json'],
    ['image-inspect', 'GET', '/images/{name}/json', (ctx) => `/images/${ctx.target.registry}/busybox:latest/json`],
  ];
  interface Ids {
    container: string;
  }
  let ids: Ids | undefined;
  let validator: SpecValidator | undefined | null = null;
  for (const [name, method, specPath, url] of schemaCases) {
    scenarios.push({
      id: `${client}/schema-${name}`,
      client,
      title: `${method} ${specPath} matches the spec's response schema`,
      async run(ctx) {
        if (validator === null) validator = SpecValidator.forVersion(ctx.target.apiVersion);
        if (!validator) ctx.skip(`no spec file for API ${ctx.target.apiVersion} in shared/docker-engine-api`);
        if (!ids) {
          // One created (not started) container gives the list and inspect schemas something to check.
          await api(ctx, 'DELETE', '/containers/api-schema?force=1');
          await api(ctx, 'POST', `/images/create?fromImage=${encodeURIComponent(`${ctx.target.registry}/busybox`)}&tag=latest`);
          const c = await api(ctx, 'POST', '/containers/create?name=api-schema', {
            Image: `${ctx.target.registry}/busybox:latest`,
            Cmd: ['true'],
            Labels: { compat: 'http-api' },
          });
          if (c.status !== 201) ctx.abort(`POST /containers/create: ${c.status} ${c.body}`);
          ids = { container: c.json().Id };
        }
        const r = await api(ctx, method, `/v${ctx.target.apiVersion}${url(ctx, ids)}`);
        ctx.equal(r.status, 200, `${method} ${specPath} status`);
        const body = r.json();
        const errors = validator!.validate(method, specPath, 200, body);
        if (errors === undefined) ctx.skip(`the spec has no 200 schema for ${method} ${specPath}`);
        for (const e of errors!.slice(0, 40)) ctx.fail(`${method} ${specPath}: ${e}`);
        if (errors!.length > 40) ctx.fail(`… and ${errors!.length - 40} more schema errors`);
      },
    });
  }
  return {
    name: client,
    client,
    scenarios,
    async cleanup(target) {
      await api({ target } as ScenarioContext, 'DELETE', '/containers/api-schema?force=1').catch(() => undefined);
    },
  };
}

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function pick(h: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => k in h).map((k) => [k, h[k]]));
}
