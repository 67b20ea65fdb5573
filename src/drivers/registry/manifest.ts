/**
 * Manifest formats the registry client understands (Docker v2 schema 2 and OCI, single-platform
 * manifests and multi-platform lists/indexes), and platform selection in a list as dockerd does
 * it: exact OS and architecture, variant when asked for one.
 */
import { invalid, notFound } from '../../errors';

export const MediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
} as const;

/** What we send as Accept when fetching a manifest by tag or digest. */
export const MANIFEST_ACCEPT = [
  MediaTypes.dockerManifest,
  MediaTypes.dockerManifestList,
  MediaTypes.ociManifest,
  MediaTypes.ociIndex,
].join(', ');

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ManifestList {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

export type ParsedManifest = { kind: 'image'; manifest: ImageManifest } | { kind: 'list'; list: ManifestList };

export function isListMediaType(mediaType: string): boolean {
  return mediaType === MediaTypes.dockerManifestList || mediaType === MediaTypes.ociIndex;
}

/** Classifies a fetched manifest by its Content-Type, falling back to its own mediaType field. */
export function parseManifest(raw: Buffer, contentType: string | undefined): ParsedManifest {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(raw.toString('utf8'));
  } catch {
    throw invalid('invalid manifest: not JSON');
  }
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  const type = (contentType ?? '').split(';')[0].trim();
  const mediaType = [MediaTypes.dockerSchema1, MediaTypes.dockerSchema1Signed].includes(type as never)
    ? type
    : declared ?? type;
  if (doc.schemaVersion === 1 || mediaType === MediaTypes.dockerSchema1 || mediaType === MediaTypes.dockerSchema1Signed) {
    throw invalid(
      'support for Docker Image Format v1 and Docker Image manifest version 2, schema 1 has been removed; the image must be upgraded to the Docker Image manifest version 2, schema 2 or OCI format',
    );
  }
  if (Array.isArray(doc.manifests) || isListMediaType(mediaType)) {
    return { kind: 'list', list: doc as unknown as ManifestList };
  }
  if (doc.config && Array.isArray(doc.layers)) return { kind: 'image', manifest: doc as unknown as ImageManifest };
  throw invalid(`unsupported manifest media type ${mediaType || '(none)'}`);
}

export function hostPlatform(): Platform {
  const arch = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' }[
    process.arch as string
  ];
  return { os: 'linux', architecture: arch ?? process.arch };
}

/** Docker's `platform` query parameter: os[/arch[/variant]]. */
export function parsePlatform(spec: string): Platform {
  const parts = spec.toLowerCase().split('/');
  if (parts.length > 3 || parts.some((p) => p === '' || !/^[a-z0-9_.-]+$/.test(p))) {
    throw invalid(`"${spec}": unknown operating system or architecture: invalid argument`);
  }
  const [os, arch, variant] = parts;
  const normalized = normalizeArch(arch ?? hostPlatform().architecture, variant);
  return { os, ...normalized };
}

function normalizeArch(arch: string, variant?: string): { architecture: string; variant?: string } {
  switch (arch) {
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return { architecture: 'amd64', ...(variant && variant !== 'v1' ? { variant } : {}) };
    case 'aarch64':
    case 'arm64':
      return { architecture: 'arm64', ...(variant && variant !== 'v8' ? { variant } : {}) };
    case 'armhf':
      return { architecture: 'arm', variant: 'v7' };
    case 'armel':
      return { architecture: 'arm', variant: 'v6' };
    case 'arm':
      return { architecture: 'arm', variant: variant ?? 'v7' };
    case 'i386':
      return { architecture: '386' };
    default:
      return { architecture: arch, ...(variant ? { variant } : {}) };
  }
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Picks the manifest for `want` from a list, or fails with dockerd's message. */
export function selectPlatform(list: ManifestList, want: Platform): Descriptor {
  const candidates = list.manifests.filter((m) => {
    if (!m.platform) return false;
    if (m.platform.os !== want.os) return false;
    const have = normalizeArch(m.platform.architecture, m.platform.variant);
    if (have.architecture !== want.architecture) return false;
    return !want.variant || have.variant === want.variant;
  });
  // Without a requested variant, prefer the entry that names none (the baseline build).
  const best = candidates.find((m) => !normalizeArch(m.platform!.architecture, m.platform!.variant).variant) ?? candidates[0];
  if (!best) throw notFound(`no matching manifest for ${formatPlatform(want)} in the manifest list entries`);
  return best;
}
