/** The image config file (Docker image spec v1.2 / OCI image config) and our local metadata. */
import type { ImageRuntimeConfig } from '../image-backend';

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfigFile {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  created?: string;
  author?: string;
  comment?: string;
  docker_version?: string;
  config?: ImageRuntimeConfig;
  container?: string;
  container_config?: Record<string, unknown>;
  rootfs: { type: string; diff_ids: string[] };
  history?: HistoryEntry[];
}

/** What we keep per image beside its config blob (`images/<hex>/image.json`). */
export interface StoredImage {
  id: string;
  /** Local parent (set by commit), as dockerd keeps it. */
  parent?: string;
  /** RFC 3339; set when a tag was added locally. */
  lastTagTime?: string;
  /** Manifests in the content store that describe this image (pulled or pushed), newest last. */
  manifests: string[];
  /** When the image entered this store. */
  added: string;
  /**
   * 'pending' until a reference was written for it: an image left pending by a crash and not
   * referenced is removed at the next start, so a killed pull leaves nothing listed.
   */
  state: 'pending' | 'ready';
  /** Removed with force while containers still used it: hidden, its layers kept for them. */
  deleted?: boolean;
}

export interface LoadedImage {
  stored: StoredImage;
  config: ImageConfigFile;
  configSize: number;
}
