/**
 * The JSON shapes dockerd answers for images (inspect, list entry, history), per API version:
 * before 1.44 VirtualSize, Container and ContainerConfig; before 1.50 the container-only
 * fields in Config; `<none>` placeholders in lists before 1.44.
 */
import { familiarString } from '../../drivers/registry/reference';
import { compareVersions } from '../../api/version';
import type { ImageRuntimeConfig } from '../image-backend';
import type { ImageStore } from './image-store';
import type { ImageConfigFile, LoadedImage } from './types';

const ZERO_TIME = '0001-01-01T00:00:00Z';
const before = (apiVersion: string, v: string) => compareVersions(apiVersion, v) < 0;

export function repoTags(store: ImageStore, id: string): string[] {
  return store.refs.referencesTo(id).filter((r) => r.tag).map(familiarString);
}

export function repoDigests(store: ImageStore, id: string): string[] {
  return store.refs.referencesTo(id).filter((r) => r.digest).map(familiarString);
}

/** Go marshals maps with sorted keys; clients diffing output expect the same order. */
function sortedKeys<T>(map: Record<string, T> | null | undefined): Record<string, T> | null {
  if (!map) return null;
  return Object.fromEntries(Object.keys(map).sort().map((k) => [k, map[k]]));
}

/** Config as dockerd shows it in inspect (the image config, plus legacy fields for old clients). */
export function inspectConfig(config: ImageRuntimeConfig | undefined, apiVersion: string): Record<string, unknown> {
  const c = config ?? {};
  const legacy = before(apiVersion, '1.50');
  const out: Record<string, unknown> = {};
  if (legacy) Object.assign(out, { Hostname: '', Domainname: '' });
  out.User = c.User ?? '';
  if (legacy) Object.assign(out, { AttachStdin: false, AttachStdout: false, AttachStderr: false });
  if (c.ExposedPorts && Object.keys(c.ExposedPorts).length) out.ExposedPorts = sortedKeys(c.ExposedPorts);
  if (legacy) Object.assign(out, { Tty: false, OpenStdin: false, StdinOnce: false });
  out.Env = c.Env ?? null;
  out.Cmd = c.Cmd ?? null;
  if (c.Healthcheck) out.Healthcheck = c.Healthcheck;
  if (c.ArgsEscaped) out.ArgsEscaped = c.ArgsEscaped;
  if (legacy) out.Image = '';
  out.Volumes = sortedKeys(c.Volumes);
  out.WorkingDir = c.WorkingDir ?? '';
  out.Entrypoint = c.Entrypoint ?? null;
  out.OnBuild = c.OnBuild ?? null;
  out.Labels = sortedKeys(c.Labels);
  if (c.StopSignal) out.StopSignal = c.StopSignal;
  if (c.Shell) out.Shell = c.Shell;
  return out;
}

export function inspectImage(store: ImageStore, img: LoadedImage, apiVersion: string): Record<string, unknown> {
  const { config, stored } = img;
  const size = store.imageSize(config);
  const dirs = store.layerDiffDirs(config);
  const out: Record<string, unknown> = {
    Id: stored.id,
    RepoTags: repoTags(store, stored.id),
    RepoDigests: repoDigests(store, stored.id),
    Parent: stored.parent ?? '',
    Comment: config.comment ?? '',
  };
  if (config.created) out.Created = config.created;
  else if (before(apiVersion, '1.44')) out.Created = ZERO_TIME;
  if (before(apiVersion, '1.44')) {
    out.Container = config.container ?? '';
    out.ContainerConfig = inspectConfig(config.container_config as ImageRuntimeConfig | undefined, '1.43');
  }
  out.DockerVersion = config.docker_version ?? '';
  out.Author = config.author ?? '';
  out.Config = inspectConfig(config.config, apiVersion);
  out.Architecture = config.architecture ?? '';
  if (config.variant) out.Variant = config.variant;
  out.Os = config.os ?? '';
  if (config['os.version']) out.OsVersion = config['os.version'];
  out.Size = size;
  if (before(apiVersion, '1.44')) out.VirtualSize = size;
  out.GraphDriver = {
    Data: {
      ...(dirs.length > 1 ? { LowerDir: dirs.slice(1).join(':') } : {}),
      UpperDir: dirs[0],
    },
    Name: 'overlayfs+vm',
  };
  out.RootFS = { Type: config.rootfs?.type ?? 'layers', ...(config.rootfs?.diff_ids?.length ? { Layers: config.rootfs.diff_ids } : {}) };
  out.Metadata = { LastTagTime: stored.lastTagTime ?? ZERO_TIME };
  return out;
}

export function createdSeconds(config: ImageConfigFile): number {
  const t = config.created ? Date.parse(config.created) : NaN;
  return Number.isNaN(t) ? 0 : Math.floor(t / 1000);
}

export function summarizeImage(
  store: ImageStore,
  img: LoadedImage,
  apiVersion: string,
  opts: { tags: string[]; digests: string[]; containers: number },
): Record<string, unknown> {
  const size = store.imageSize(img.config);
  let tags: string[] = opts.tags;
  let digests: string[] = opts.digests;
  if (before(apiVersion, '1.44') && tags.length === 0 && digests.length === 0) {
    tags = ['<none>:<none>'];
    digests = ['<none>@<none>'];
  }
  const out: Record<string, unknown> = {
    Containers: compareVersions(apiVersion, '1.51') >= 0 ? opts.containers : -1,
    Created: createdSeconds(img.config),
    Id: img.stored.id,
    Labels: sortedKeys(img.config.config?.Labels),
    ParentId: img.stored.parent ?? '',
    RepoDigests: digests,
    RepoTags: tags,
    SharedSize: -1,
    Size: size,
  };
  if (before(apiVersion, '1.44')) out.VirtualSize = size;
  return out;
}

/** `docker history`: newest entry first; only the top entry per image carries its ID and tags. */
export function imageHistory(store: ImageStore, img: LoadedImage): Array<Record<string, unknown>> {
  const items: Array<Record<string, unknown>> = [];
  let current: LoadedImage | undefined = img;
  const chain: LoadedImage[] = [];
  while (current && chain.length < 1000) {
    chain.push(current);
    current = current.stored.parent ? store.getIncludingHidden(current.stored.parent) : undefined;
  }
  const diffIds = img.config.rootfs?.diff_ids ?? [];
  let layer = 0;
  const entries = (img.config.history ?? []).map((h) => {
    let size = 0;
    if (!h.empty_layer) {
      const diffId = diffIds[layer++];
      size = diffId ? (store.layers.get(diffId)?.size ?? 0) : 0;
    }
    return {
      Comment: h.comment ?? '',
      Created: h.created ? Math.floor(Date.parse(h.created) / 1000) : 0,
      CreatedBy: h.created_by ?? '',
      Id: '<missing>',
      Size: size,
      Tags: null as string[] | null,
    };
  });
  entries.reverse();
  // The newest entries belong to the image itself, older ones to its local parents, one each.
  for (let i = 0; i < entries.length && i < chain.length; i++) {
    const owner = chain[i];
    entries[i].Id = owner.stored.id;
    const tags = repoTags(store, owner.stored.id);
    entries[i].Tags = tags.length ? tags : null;
  }
  items.push(...entries);
  return items;
}
