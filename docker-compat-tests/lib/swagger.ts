/**
 * The Docker Engine API spec (moby's swagger, OpenAPI 2) from ../shared/docker-engine-api, read
 * where it lies (never copied into the repo), and JSON-schema validation of responses against it.
 * YAML is parsed by Debian's python3-yaml (already a dependency of docker-compose), which keeps
 * a YAML parser out of our npm dependencies.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import Ajv, { type ValidateFunction } from 'ajv';

/** Where the shared spec lives: $DOCKER_ENGINE_API_DIR, else ../shared/docker-engine-api next to the repo. */
export function specDir(): string | undefined {
  const candidates = [
    process.env.DOCKER_ENGINE_API_DIR,
    ...ancestors(__dirname).map((d) => path.join(d, 'shared', 'docker-engine-api')),
    ...ancestors(process.cwd()).map((d) => path.join(d, 'shared', 'docker-engine-api')),
  ].filter((d): d is string => Boolean(d));
  return candidates.find((d) => existsSync(path.join(d, 'swagger-latest.yaml')));
}

function ancestors(start: string): string[] {
  const out: string[] = [];
  for (let d = path.resolve(start); ; d = path.dirname(d)) {
    out.push(d);
    if (path.dirname(d) === d) return out;
  }
}

/** The spec file for an API version ("1.51" → v1.51.yaml; "latest" → swagger-latest.yaml). */
export function specFile(version: string): string | undefined {
  const dir = specDir();
  if (!dir) return undefined;
  const file = path.join(dir, version === 'latest' ? 'swagger-latest.yaml' : `v${version}.yaml`);
  if (existsSync(file)) return file;
  if (version !== 'latest') {
    // swagger-latest may be exactly this version.
    const latest = loadSpec(path.join(dir, 'swagger-latest.yaml'));
    if (latest?.info?.version === version) return path.join(dir, 'swagger-latest.yaml');
  }
  return undefined;
}

const cache = new Map<string, any>();

export function loadSpec(file: string): any {
  if (!cache.has(file)) {
    const json = execFileSync('/usr/bin/python3', ['-c', 'import sys, json, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout, default=str)', file], {
      maxBuffer: 64 << 20,
      encoding: 'utf8',
    });
    cache.set(file, JSON.parse(json));
  }
  return cache.get(file);
}

/**
 * Swagger 2 schema → JSON schema ajv accepts. Two deliberate leniencies, applied to every daemon
 * alike: `x-nullable` becomes "or null", and arrays / objects may be null everywhere, because Go
 * marshals nil slices and maps as null and dockerd does so in many places the spec does not mark.
 */
function convert(node: any): any {
  if (Array.isArray(node)) return node.map(convert);
  if (!node || typeof node !== 'object') return node;
  const out: any = {};
  for (const [k, v] of Object.entries(node)) {
    if (k.startsWith('x-') || k === 'example' || k === 'discriminator') continue;
    if (k === '$ref' && typeof v === 'string') {
      out.$ref = v.replace(/^#\/definitions\//, 'spec#/definitions/');
      continue;
    }
    out[k] = k === 'properties' || k === 'definitions' ? Object.fromEntries(Object.entries(v as object).map(([pk, pv]) => [pk, convert(pv)])) : convert(v);
  }
  const nullable = node['x-nullable'] === true || node.type === 'array' || (node.type === 'object' && !node.$ref);
  if (nullable && typeof out.type === 'string') out.type = [out.type, 'null'];
  return out;
}

export class SpecValidator {
  private readonly ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(readonly spec: any) {
    this.ajv.addSchema({ $id: 'spec', definitions: convert(spec.definitions) });
  }

  static forVersion(version: string): SpecValidator | undefined {
    const file = specFile(version);
    return file ? new SpecValidator(loadSpec(file)) : undefined;
  }

  /** Errors of `body` against the spec's response schema (empty when valid), or undefined when the spec has none. */
  validate(method: string, specPath: string, status: number, body: unknown): string[] | undefined {
    const key = `${method} ${specPath} ${status}`;
    let fn = this.compiled.get(key);
    if (!fn) {
      const schema = this.spec.paths?.[specPath]?.[method.toLowerCase()]?.responses?.[String(status)]?.schema;
      if (!schema) return undefined;
      fn = this.ajv.compile(convert(schema));
      this.compiled.set(key, fn);
    }
    if (fn(body)) return [];
    return (fn.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ''}`);
  }
}
