/** PLACEHOLDER — container endpoints (being written). */
import type { ContainerService } from '../../engine/containers/container-service';
import type { Route } from '../router';

export function containerRoutes(_containers: ContainerService): Route[] {
  return [];
}
