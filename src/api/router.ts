/**
 * Declarative routing for Docker's URL grammar. Hand-written because Docker paths put greedy
 * parameters in the middle (`/images/{name:.*}/json`, where a name holds slashes and colons),
 * which general-purpose routers (find-my-way, express) cannot express.
 */
import { invalid } from '../errors';
import type { RequestContext } from './context';

export type Handler = (ctx: RequestContext) => Promise<void> | void;

export interface Route {
  method: string;
  /** Path with `{param}` (one segment) or `{param:.*}` (greedy) placeholders. */
  path: string;
  handler: Handler;
  /** The handler takes over the socket (attach, exec start): served on HTTP upgrade too. */
  hijack?: boolean;
}

interface CompiledRoute extends Route {
  regex: RegExp;
  params: string[];
}

export interface RouteMatch {
  route: Route;
  params: Record<string, string>;
}

export class Router {
  private readonly routes: CompiledRoute[] = [];

  constructor(routes: Route[]) {
    for (const r of routes) this.routes.push(compile(r));
  }

  match(method: string, path: string): RouteMatch | 'method-not-allowed' | undefined {
    let pathMatched = false;
    const m = method === 'HEAD' ? ['HEAD', 'GET'] : [method];
    for (const r of this.routes) {
      const hit = r.regex.exec(path);
      if (!hit) continue;
      pathMatched = true;
      if (!m.includes(r.method)) continue;
      const params: Record<string, string> = {};
      try {
        r.params.forEach((name, i) => (params[name] = decodeURIComponent(hit[i + 1])));
      } catch {
        throw invalid(`malformed escape in path ${JSON.stringify(path)}`);
      }
      return { route: r, params };
    }
    return pathMatched ? 'method-not-allowed' : undefined;
  }

  list(): Route[] {
    return this.routes.map(({ method, path, handler, hijack }) => ({ method, path, handler, hijack }));
  }
}

function compile(route: Route): CompiledRoute {
  const params: string[] = [];
  const escape = (text: string) => text.replace(/[.*+?^$()[\]|\\{}]/g, '\\$&');
  let source = '';
  let last = 0;
  for (const m of route.path.matchAll(/\{(\w+)(:\.\*)?\}/g)) {
    source += escape(route.path.slice(last, m.index));
    params.push(m[1]);
    source += m[2] ? '(.+)' : '([^/]+)';
    last = (m.index ?? 0) + m[0].length;
  }
  source += escape(route.path.slice(last));
  return { ...route, regex: new RegExp(`^${source}/?$`), params };
}
