/** Network endpoints (`docker network ...`). */
import type { ContainerService } from '../../engine/containers/container-service';
import type { NetworkService } from '../../engine/networks/network-service';
import { invalid } from '../../errors';
import { BODY } from '../body-types';
import type { Route } from '../router';

interface ConnectBody {
  Container?: string;
  EndpointConfig?: { Aliases?: string[] | null; Links?: string[] | null; IPAMConfig?: { IPv4Address?: string; IPv6Address?: string } | null } | null;
  Force?: boolean;
}

export function networkRoutes(networks: NetworkService, containers: ContainerService): Route[] {
  const containerOf = (body: ConnectBody) => {
    if (!body || typeof body.Container !== 'string' || !body.Container) throw invalid('container is required');
    return body.Container;
  };
  return [
    {
      method: 'GET',
      path: '/networks',
      handler: (ctx) => ctx.json(200, networks.list(ctx.filters()).map((n) => ({ ...networks.inspectView(n), Containers: {} }))),
    },
    { method: 'POST', path: '/networks/create', handler: async (ctx) => ctx.json(201, await networks.create(await ctx.jsonBody({}, BODY.networkCreate))) },
    {
      method: 'POST',
      path: '/networks/prune',
      // As dockerd: a network without running containers is unused (stopped ones hold no endpoint).
      handler: async (ctx) => ctx.json(200, await networks.prune(ctx.filters(), () => false)),
    },
    { method: 'GET', path: '/networks/{id}', handler: (ctx) => ctx.json(200, networks.inspectView(networks.get(ctx.params.id))) },
    {
      method: 'DELETE',
      path: '/networks/{id}',
      handler: async (ctx) => {
        await networks.remove(ctx.params.id);
        ctx.noContent();
      },
    },
    {
      method: 'POST',
      path: '/networks/{id}/connect',
      handler: async (ctx) => {
        const body = await ctx.jsonBody<ConnectBody>({}, BODY.networkConnect);
        await containers.connectNetwork(ctx.params.id, containerOf(body), body.EndpointConfig ?? {});
        ctx.noContent(200);
      },
    },
    {
      method: 'POST',
      path: '/networks/{id}/disconnect',
      handler: async (ctx) => {
        const body = await ctx.jsonBody<ConnectBody>({}, BODY.networkDisconnect);
        await containers.disconnectNetwork(ctx.params.id, containerOf(body), Boolean(body.Force));
        ctx.noContent(200);
      },
    },
  ];
}
