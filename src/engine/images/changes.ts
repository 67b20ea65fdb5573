/**
 * The Dockerfile instructions `docker commit --change` and `docker import --change` accept
 * (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR), applied to
 * an image's runtime config as the builder would apply them.
 */
import path from 'node:path';
import { invalid } from '../../errors';
import type { ImageRuntimeConfig } from '../image-backend';

const ALLOWED = new Set(['cmd', 'entrypoint', 'env', 'expose', 'label', 'onbuild', 'stopsignal', 'user', 'volume', 'workdir']);

export function applyChanges(base: ImageRuntimeConfig, changes: string[]): ImageRuntimeConfig {
  const config: ImageRuntimeConfig = structuredClone(base);
  const lines = changes.flatMap((c) => joinContinuations(c)).filter((l) => l.trim() !== '' && !l.trim().startsWith('#'));
  for (const line of lines) {
    const m = /^\s*(\S+)\s*([\s\S]*)$/.exec(line)!;
    const instruction = m[1].toLowerCase();
    const args = m[2].trim();
    if (!ALLOWED.has(instruction)) throw invalid(`${m[1]} is not a valid change command`);
    switch (instruction) {
      case 'cmd':
        config.Cmd = commandForm(args);
        break;
      case 'entrypoint':
        config.Entrypoint = commandForm(args);
        break;
      case 'env':
        for (const [k, v] of keyValues(args, 'ENV')) {
          const env = (config.Env ?? []).filter((e) => e.split('=')[0] !== k);
          env.push(`${k}=${v}`);
          config.Env = env;
        }
        break;
      case 'label':
        config.Labels = { ...(config.Labels ?? {}), ...Object.fromEntries(keyValues(args, 'LABEL')) };
        break;
      case 'expose': {
        const ports = { ...(config.ExposedPorts ?? {}) };
        for (const p of words(args)) {
          if (!/^\d+(-\d+)?(\/(tcp|udp|sctp))?$/i.test(p)) throw invalid(`invalid containerPort: ${p}`);
          ports[p.includes('/') ? p.toLowerCase() : `${p}/tcp`] = {};
        }
        config.ExposedPorts = ports;
        break;
      }
      case 'volume': {
        const vols = { ...(config.Volumes ?? {}) };
        for (const v of jsonArray(args) ?? words(args)) vols[v] = {};
        config.Volumes = vols;
        break;
      }
      case 'workdir':
        config.WorkingDir = path.posix.isAbsolute(args) ? path.posix.normalize(args) : path.posix.join('/', config.WorkingDir ?? '', args);
        break;
      case 'user':
        config.User = args;
        break;
      case 'stopsignal':
        config.StopSignal = args;
        break;
      case 'onbuild':
        config.OnBuild = [...(config.OnBuild ?? []), args];
        break;
    }
  }
  return config;
}

function joinContinuations(text: string): string[] {
  return text.replace(/\\\r?\n/g, ' ').split(/\r?\n/);
}

function jsonArray(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(args);
    if (Array.isArray(v) && v.every((s) => typeof s === 'string')) return v;
  } catch {
    // not JSON: shell form
  }
  return undefined;
}

/** Exec form (a JSON array) as is; shell form runs under /bin/sh -c. */
function commandForm(args: string): string[] {
  return jsonArray(args) ?? ['/bin/sh', '-c', args];
}

/** Splits on unquoted whitespace, removing quotes and backslash escapes. */
export function words(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < text.length) cur += text[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < text.length) {
      cur += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw invalid(`unmatched quote in ${JSON.stringify(text)}`);
  if (inWord) out.push(cur);
  return out;
}

/** `K=V K2="v 2"` or the legacy `K value with spaces`. */
function keyValues(args: string, instruction: string): Array<[string, string]> {
  const parts = words(args);
  if (parts.length === 0) throw invalid(`${instruction} requires at least one argument`);
  if (!parts[0].includes('=')) {
    if (parts.length < 2) throw invalid(`${instruction} names can not be blank`);
    return [[parts[0], args.slice(args.indexOf(parts[0]) + parts[0].length).trim()]];
  }
  return parts.map((p) => {
    const i = p.indexOf('=');
    if (i <= 0) throw invalid(`Syntax error - can't find = in "${p}". Must be of the form: name=value`);
    return [p.slice(0, i), p.slice(i + 1)];
  });
}
