/** Volume endpoints (`docker volume ...`). */
import type { VolumeRecord, VolumeService } from '../../engine/volumes/volume-service';
import type { Route } from '../router';
import { BODY } from '../body-types';

const view = ({ Anonymous: _a, ...v }: VolumeRecord) => v;

export function volumeRoutes(volumes: VolumeService): Route[] {
  return [
    { method: 'GET', path: '/volumes', handler: (ctx) => ctx.json(200, { Volumes: volumes.list(ctx.filters()).map(view), Warnings: [] }) },
    { method: 'POST', path: '/volumes/create', handler: async (ctx) => ctx.json(201, view(await volumes.create(await ctx.jsonBody({}, BODY.volumeCreate)))) },
    { method: 'POST', path: '/volumes/prune', handler: async (ctx) => ctx.json(200, await volumes.prune(ctx.filters())) },
    { method: 'GET', path: '/volumes/{name}', handler: (ctx) => ctx.json(200, view(volumes.get(ctx.params.name))) },
    {
      method: 'DELETE',
      path: '/volumes/{name}',
      handler: async (ctx) => {
        await volumes.remove(ctx.params.name, ctx.bool('force'));
        ctx.noContent();
      },
    },
  ];
}
