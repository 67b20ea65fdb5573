/** System endpoints: ping, version, info, events, and the areas Paddock answers as "unsupported". */
import type { EventBus } from '../../engine/events';
import type { SystemService } from '../../engine/system';
import type { RequestContext } from '../context';
import type { Route } from '../router';
import { MAX_API_VERSION } from '../version';
import { serveEvents } from './events';

function pingHeaders(): Record<string, string> {
  return {
    'Api-Version': MAX_API_VERSION,
    Ostype: 'linux',
    'Docker-Experimental': 'false',
    'Builder-Version': '1',
    Swarm: 'inactive',
    'Cache-Control': 'no-cache, no-store, must-revalidate',
    Pragma: 'no-cache',
  };
}

const ping = (ctx: RequestContext) => ctx.text(200, 'OK', pingHeaders());

/** What dockerd says when a swarm endpoint is used on a node outside a swarm. */
const notSwarm = (ctx: RequestContext) =>
  ctx.json(503, {
    message:
      'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.',
  });

export function systemRoutes(system: SystemService, events: EventBus): Route[] {
  const swarmPaths = [
    ['GET', '/swarm'], ['POST', '/swarm/init'], ['POST', '/swarm/join'], ['POST', '/swarm/leave'],
    ['POST', '/swarm/update'], ['GET', '/swarm/unlockkey'], ['POST', '/swarm/unlock'],
    ['GET', '/nodes'], ['GET', '/nodes/{id}'], ['DELETE', '/nodes/{id}'], ['POST', '/nodes/{id}/update'],
    ['GET', '/services'], ['POST', '/services/create'], ['GET', '/services/{id}'], ['DELETE', '/services/{id}'],
    ['POST', '/services/{id}/update'], ['GET', '/services/{id}/logs'],
    ['GET', '/tasks'], ['GET', '/tasks/{id}'], ['GET', '/tasks/{id}/logs'],
    ['GET', '/secrets'], ['POST', '/secrets/create'], ['GET', '/secrets/{id}'], ['DELETE', '/secrets/{id}'], ['POST', '/secrets/{id}/update'],
    ['GET', '/configs'], ['POST', '/configs/create'], ['GET', '/configs/{id}'], ['DELETE', '/configs/{id}'], ['POST', '/configs/{id}/update'],
  ] as const;
  return [
    { method: 'GET', path: '/_ping', handler: ping },
    { method: 'HEAD', path: '/_ping', handler: ping },
    { method: 'GET', path: '/version', handler: (ctx) => ctx.json(200, system.version()) },
    { method: 'GET', path: '/info', handler: async (ctx) => ctx.json(200, await system.info()) },
    { method: 'GET', path: '/events', handler: (ctx) => serveEvents(ctx, events) },
    { method: 'GET', path: '/plugins', handler: (ctx) => ctx.json(200, []) },
    ...swarmPaths.map(([method, path]) => ({ method, path, handler: notSwarm })),
  ];
}
