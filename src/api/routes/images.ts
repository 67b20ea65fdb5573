/** PLACEHOLDER — image endpoints (being written). */
import type { ImageService } from '../../engine/images/image-service';
import type { Route } from '../router';

export function imageRoutes(_images: ImageService): Route[] {
  return [];
}
