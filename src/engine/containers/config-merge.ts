/**
 * Turns a create request into the container's stored config: validates what dockerd validates
 * and merges the image config the way dockerd does (daemon/create → merge), so that
 * Entrypoint/Cmd/Env/WorkingDir/User/labels come out identical.
 */
import { invalid } from '../../errors';
import type { ImageRecord } from '../image-backend';
import type { ContainerConfig, CreateContainerRequest, HostConfig, RestartPolicy } from './types';

const RESTART_POLICIES = ['', 'no', 'always', 'on-failure', 'unless-stopped'];

const CONFIG_FIELDS = new Set([
  'Hostname', 'Domainname', 'User', 'AttachStdin', 'AttachStdout', 'AttachStderr', 'ExposedPorts', 'Tty',
  'OpenStdin', 'StdinOnce', 'Env', 'Cmd', 'Healthcheck', 'ArgsEscaped', 'Image', 'Volumes', 'WorkingDir',
  'Entrypoint', 'NetworkDisabled', 'MacAddress', 'OnBuild', 'Labels', 'StopSignal', 'StopTimeout', 'Shell',
]);

/** Every HostConfig field dockerd reports, with the value it reports when the client sent none. */
const HOST_CONFIG_DEFAULTS = {
  Binds: null, ContainerIDFile: '', LogConfig: { Type: 'json-file', Config: {} }, NetworkMode: 'default',
  PortBindings: {}, AutoRemove: false, VolumeDriver: '', VolumesFrom: null, ConsoleSize: [0, 0] as [number, number],
  Annotations: null, CapAdd: null, CapDrop: null, CgroupnsMode: 'private', Dns: [], DnsOptions: [], DnsSearch: [],
  ExtraHosts: null, GroupAdd: null, IpcMode: 'private', Cgroup: '', Links: null, OomScoreAdj: 0, PidMode: '',
  Privileged: false, PublishAllPorts: false, ReadonlyRootfs: false, SecurityOpt: null, UTSMode: '', UsernsMode: '',
  ShmSize: 67108864, Isolation: '', CpuShares: 0, Memory: 0, NanoCpus: 0, CgroupParent: '', BlkioWeight: 0,
  BlkioWeightDevice: [], BlkioDeviceReadBps: [], BlkioDeviceWriteBps: [], BlkioDeviceReadIOps: [],
  BlkioDeviceWriteIOps: [], CpuPeriod: 0, CpuQuota: 0, CpuRealtimePeriod: 0, CpuRealtimeRuntime: 0, CpusetCpus: '',
  CpusetMems: '', Devices: [], DeviceCgroupRules: null, DeviceRequests: null, MemoryReservation: 0, MemorySwap: 0,
  OomKillDisable: false, Ulimits: [], CpuCount: 0, CpuPercent: 0,
  IOMaximumIOps: 0, IOMaximumBandwidth: 0,
};

export interface MergedContainer {
  config: ContainerConfig;
  hostConfig: HostConfig;
  path: string;
  args: string[];
}

export function mergeWithImage(req: CreateContainerRequest, image: ImageRecord, id: string): MergedContainer {
  const { HostConfig: hc = {}, NetworkingConfig: _nc, ...body } = req;
  const img = image.config ?? {};
  // Only Docker's Config fields are kept: clients send extras (dockerode's `name`).
  const config: ContainerConfig = Object.fromEntries(Object.entries(body).filter(([k]) => CONFIG_FIELDS.has(k)));

  // Entrypoint and Cmd: the image's are used only where the request says nothing.
  if (!config.Entrypoint || config.Entrypoint.length === 0) {
    if (!config.Cmd || config.Cmd.length === 0) config.Cmd = img.Cmd ?? null;
    if (config.Entrypoint === undefined || config.Entrypoint === null) config.Entrypoint = img.Entrypoint ?? null;
  }
  // dockerd keeps the request's variables first and appends the image's it does not override.
  const userEnv = config.Env ?? [];
  const keyOf = (e: string) => (e.includes('=') ? e.slice(0, e.indexOf('=')) : e);
  config.Env = [...userEnv, ...(img.Env ?? []).filter((e) => !userEnv.some((u) => keyOf(u) === keyOf(e)))];
  if (!config.WorkingDir) config.WorkingDir = img.WorkingDir ?? '';
  if (!config.User) config.User = img.User ?? '';
  config.Labels = { ...(img.Labels ?? {}), ...(config.Labels ?? {}) };
  config.ExposedPorts = mergeSets(img.ExposedPorts, config.ExposedPorts);
  config.Volumes = mergeSets(img.Volumes, config.Volumes);
  if (!config.StopSignal && img.StopSignal) config.StopSignal = img.StopSignal;
  if (img.Healthcheck) {
    // A partial Healthcheck in the request is completed field by field from the image's.
    const user = config.Healthcheck ?? {};
    const merged = { ...img.Healthcheck };
    for (const [k, v] of Object.entries(user)) {
      if (v !== undefined && v !== null && v !== 0 && !(Array.isArray(v) && v.length === 0)) (merged as Record<string, unknown>)[k] = v;
    }
    config.Healthcheck = merged;
  }
  if (config.OnBuild === undefined) config.OnBuild = null;
  config.Hostname ||= id.slice(0, 12);
  config.Domainname ??= '';
  config.Tty = Boolean(config.Tty);
  config.OpenStdin = Boolean(config.OpenStdin);
  config.StdinOnce = Boolean(config.StdinOnce);
  config.AttachStdin = Boolean(config.AttachStdin);
  config.AttachStdout = Boolean(config.AttachStdout);
  config.AttachStderr = Boolean(config.AttachStderr);

  // `--entrypoint ""` arrives as [""]: dockerd resets it to no entrypoint after the merge.
  if (config.Entrypoint && config.Entrypoint.length === 1 && config.Entrypoint[0] === '') config.Entrypoint = null;
  const argv = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
  if (argv.length === 0) throw invalid('no command specified');

  const hostConfig = normaliseHostConfig(hc);
  return { config, hostConfig, path: argv[0], args: argv.slice(1) };
}

export function normaliseHostConfig(hc: HostConfig): HostConfig {
  const policy: RestartPolicy = hc.RestartPolicy ?? { Name: 'no' };
  if (!RESTART_POLICIES.includes(policy.Name ?? '')) throw invalid(`invalid restart policy '${policy.Name}'`);
  // An empty name with a count is accepted for backward compatibility, as dockerd does.
  if (policy.Name && policy.Name !== 'on-failure' && (policy.MaximumRetryCount ?? 0) > 0) {
    throw invalid(`invalid restart policy: maximum retry count can only be used with 'on-failure'`);
  }
  if ((policy.MaximumRetryCount ?? 0) < 0) throw invalid('invalid restart policy: maximum retry count cannot be negative');
  if (hc.AutoRemove && policy.Name && policy.Name !== 'no') {
    throw invalid("can't create 'AutoRemove' container with restart policy");
  }
  if (hc.Memory !== undefined && hc.Memory !== 0 && hc.Memory < 6 * 1024 * 1024) {
    throw invalid('Minimum memory limit allowed is 6MB');
  }
  const given = Object.fromEntries(Object.entries(hc).filter(([, v]) => v !== undefined && v !== null));
  return {
    ...HOST_CONFIG_DEFAULTS,
    ...given,
    NetworkMode: (given.NetworkMode as string) || 'default',
    RestartPolicy: { Name: policy.Name || 'no', MaximumRetryCount: policy.MaximumRetryCount ?? 0 },
  };
}

/** Image env first, request env overrides by key (dockerd's ReplaceOrAppendEnvValues). */
export function mergeEnv(base: string[], overrides: string[]): string[] {
  const out = [...base];
  for (const entry of overrides) {
    const key = entry.includes('=') ? entry.slice(0, entry.indexOf('=')) : entry;
    const i = out.findIndex((e) => (e.includes('=') ? e.slice(0, e.indexOf('=')) : e) === key);
    if (!entry.includes('=')) {
      // "KEY" alone removes the variable, as in dockerd.
      if (i >= 0) out.splice(i, 1);
      continue;
    }
    if (i >= 0) out[i] = entry;
    else out.push(entry);
  }
  return out;
}

function mergeSets(a?: Record<string, object> | null, b?: Record<string, object> | null): Record<string, object> | null {
  if (!a && !b) return null;
  return { ...(a ?? {}), ...(b ?? {}) };
}

/** Validates the body's field types where a wrong type would otherwise crash later. */
export function validateCreateRequest(body: unknown): CreateContainerRequest {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw invalid('config cannot be empty in order to create a container');
  const b = body as Record<string, unknown>;
  const strArray = (k: string) => {
    const v = b[k];
    if (v === undefined || v === null) return;
    if (typeof v === 'string') {
      b[k] = [v]; // Docker's StrSlice accepts a bare string
      return;
    }
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
      throw invalid(`json: cannot unmarshal ${jsonType(v)} into Go struct field ContainerConfigWrapper.${k} of type string`);
    }
  };
  strArray('Cmd');
  strArray('Entrypoint');
  if (b.Env !== undefined && b.Env !== null && (!Array.isArray(b.Env) || b.Env.some((x) => typeof x !== 'string'))) {
    throw invalid(`json: cannot unmarshal ${jsonType(b.Env)} into Go struct field ContainerConfigWrapper.Env of type []string`);
  }
  for (const k of ['Image', 'User', 'WorkingDir', 'Hostname', 'StopSignal']) {
    if (b[k] !== undefined && b[k] !== null && typeof b[k] !== 'string') {
      throw invalid(`json: cannot unmarshal ${jsonType(b[k])} into Go struct field ContainerConfigWrapper.${k} of type string`);
    }
  }
  for (const k of ['Tty', 'OpenStdin', 'StdinOnce', 'AttachStdin', 'AttachStdout', 'AttachStderr']) {
    if (b[k] !== undefined && b[k] !== null && typeof b[k] !== 'boolean') {
      throw invalid(`json: cannot unmarshal ${jsonType(b[k])} into Go struct field ContainerConfigWrapper.${k} of type bool`);
    }
  }
  if (b.Labels !== undefined && b.Labels !== null && (typeof b.Labels !== 'object' || Array.isArray(b.Labels))) {
    throw invalid(`json: cannot unmarshal ${jsonType(b.Labels)} into Go struct field ContainerConfigWrapper.Labels of type map[string]string`);
  }
  if (b.HostConfig !== undefined && b.HostConfig !== null && (typeof b.HostConfig !== 'object' || Array.isArray(b.HostConfig))) {
    throw invalid(`json: cannot unmarshal ${jsonType(b.HostConfig)} into Go struct field ContainerConfigWrapper.HostConfig of type container.HostConfig`);
  }
  if (Object.keys(b).length === 0) throw invalid('config cannot be empty in order to create a container');
  if (!b.Image || typeof b.Image !== 'string') throw invalid('No image was specified');
  return b as CreateContainerRequest;
}

function jsonType(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  return typeof v === 'object' ? 'object' : typeof v;
}

/** Docker's StopSignal names and numbers → a signal number. */
export function signalNumber(sig: string | number | undefined, fallback = 15): number {
  if (sig === undefined || sig === '') return fallback;
  if (typeof sig === 'number') return sig;
  if (/^\d+$/.test(sig)) return Number(sig);
  const name = sig.toUpperCase().replace(/^SIG/, '');
  const n = SIGNALS[name];
  if (n === undefined) throw invalid(`Invalid signal: ${sig}`);
  return n;
}

const SIGNALS: Record<string, number> = {
  HUP: 1, INT: 2, QUIT: 3, ILL: 4, TRAP: 5, ABRT: 6, IOT: 6, BUS: 7, FPE: 8, KILL: 9, USR1: 10, SEGV: 11,
  USR2: 12, PIPE: 13, ALRM: 14, TERM: 15, STKFLT: 16, CHLD: 17, CONT: 18, STOP: 19, TSTP: 20, TTIN: 21,
  TTOU: 22, URG: 23, XCPU: 24, XFSZ: 25, VTALRM: 26, PROF: 27, WINCH: 28, IO: 29, POLL: 29, PWR: 30, SYS: 31,
};

/**
 * Options Paddock cannot honour yet are refused with a clear answer instead of being accepted and
 * ignored (a container that silently lacks its volume or port is worse than an error).
 */
export function refuseUnsupported(req: CreateContainerRequest): void {
  const mode = req.HostConfig?.NetworkMode ?? '';
  // Checked again against existing networks when the container's networks are chosen.
  if (mode === 'host') throw invalid('host networking is not available: every Paddock container runs in its own VM');
}
