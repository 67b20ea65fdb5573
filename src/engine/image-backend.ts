/**
 * What the rest of the engine needs from the image store (containers resolve images and build
 * their rootfs from its layers; commit adds a layer). The image service implements it.
 */

/** The `config` part of an image config (OCI / Docker image spec). */
export interface ImageRuntimeConfig {
  User?: string;
  Env?: string[] | null;
  Cmd?: string[] | null;
  Entrypoint?: string[] | null;
  WorkingDir?: string;
  ExposedPorts?: Record<string, object> | null;
  Volumes?: Record<string, object> | null;
  Labels?: Record<string, string> | null;
  StopSignal?: string;
  Healthcheck?: {
    Test?: string[];
    Interval?: number;
    Timeout?: number;
    StartPeriod?: number;
    StartInterval?: number;
    Retries?: number;
  };
  OnBuild?: string[] | null;
  Shell?: string[] | null;
  ArgsEscaped?: boolean;
}

export interface ImageRecord {
  /** "sha256:<hex>": the digest of the image config, as in Docker. */
  id: string;
  repoTags: string[];
  repoDigests: string[];
  /** RFC 3339. */
  created: string;
  architecture: string;
  os: string;
  /** Bytes of all unpacked layers. */
  size: number;
  config: ImageRuntimeConfig;
  /** Unpacked layer directories, top-most first (overlayfs lowerdir order). */
  layerDirs: string[];
}

export interface CommitRequest {
  /** Image the container was created from. */
  parent: ImageRecord;
  /** The container's writable layer (overlayfs upper dir, with whiteouts). */
  changesDir: string;
  /** Final runtime config of the new image (container config merged with `changes`). */
  config: ImageRuntimeConfig;
  author?: string;
  comment?: string;
  /** Optional "repo[:tag]" to tag the new image with. */
  reference?: string;
  containerId: string;
}

export interface ImageBackend {
  /** By name[:tag], name@digest, full or short ID; NotFound("No such image: <ref>") otherwise. */
  resolve(ref: string): Promise<ImageRecord>;
  /** Creates an image from a container's changes; returns the new image. */
  commit(req: CommitRequest): Promise<ImageRecord>;
  count(): Promise<number>;
  /** Lets the image store ask which containers use an image (for rmi conflicts). */
  setUsageProbe(probe: (imageId: string) => Promise<Array<{ id: string; running: boolean }>>): void;
}
