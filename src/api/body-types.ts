/**
 * The JSON types of request bodies, as dockerd's Go structs decode them, so that a wrong type is
 * a 400 with Go's own message ("json: cannot unmarshal string into Go struct field
 * HostConfig.Memory of type int64") instead of a TypeError deep in the engine (a 500). Like Go:
 * unknown fields are ignored, `null` leaves a field at its zero value, numbers bound for integer
 * fields must be integers in range, and a StrSlice is a string or an array of strings.
 */
import { invalid } from '../errors';

type Scalar = 'string' | 'bool' | 'int64' | 'uint32' | 'uint16' | 'StrSlice';
/** A struct (named fields), a list, or a map with string keys. */
export type BodyType = Scalar | { struct: string; fields: Record<string, BodyType> } | { list: BodyType } | { map: BodyType } | { tuple: BodyType };

const list = (t: BodyType): BodyType => ({ list: t });
const map = (t: BodyType): BodyType => ({ map: t });
const struct = (name: string, fields: Record<string, BodyType>): BodyType => ({ struct: name, fields });
const strs = list('string');
const strMap = map('string');
const empty = struct('struct {}', {});

const healthConfig = struct('HealthConfig', { Test: strs, Interval: 'int64', Timeout: 'int64', StartPeriod: 'int64', StartInterval: 'int64', Retries: 'int64' });

const configFields: Record<string, BodyType> = {
  Hostname: 'string', Domainname: 'string', User: 'string', AttachStdin: 'bool', AttachStdout: 'bool', AttachStderr: 'bool',
  ExposedPorts: map(empty), Tty: 'bool', OpenStdin: 'bool', StdinOnce: 'bool', Env: strs, Cmd: 'StrSlice', Healthcheck: healthConfig,
  ArgsEscaped: 'bool', Image: 'string', Volumes: map(empty), WorkingDir: 'string', Entrypoint: 'StrSlice', NetworkDisabled: 'bool',
  MacAddress: 'string', OnBuild: strs, Labels: strMap, StopSignal: 'string', StopTimeout: 'int64', Shell: 'StrSlice',
};

const resources: Record<string, BodyType> = {
  CpuShares: 'int64', Memory: 'int64', NanoCpus: 'int64', CgroupParent: 'string', BlkioWeight: 'uint16', CpuPeriod: 'int64',
  CpuQuota: 'int64', CpuRealtimePeriod: 'int64', CpuRealtimeRuntime: 'int64', CpusetCpus: 'string', CpusetMems: 'string',
  Devices: list(struct('DeviceMapping', { PathOnHost: 'string', PathInContainer: 'string', CgroupPermissions: 'string' })),
  DeviceCgroupRules: strs, KernelMemory: 'int64', KernelMemoryTCP: 'int64', MemoryReservation: 'int64', MemorySwap: 'int64',
  MemorySwappiness: 'int64', OomKillDisable: 'bool', PidsLimit: 'int64', CpuCount: 'int64', CpuPercent: 'int64',
  IOMaximumIOps: 'int64', IOMaximumBandwidth: 'int64',
  Ulimits: list(struct('Ulimit', { Name: 'string', Hard: 'int64', Soft: 'int64' })),
};

const restartPolicy = struct('RestartPolicy', { Name: 'string', MaximumRetryCount: 'int64' });

const hostConfig = struct('HostConfig', {
  ...resources,
  Binds: strs, ContainerIDFile: 'string', LogConfig: struct('LogConfig', { Type: 'string', Config: strMap }), NetworkMode: 'string',
  PortBindings: map(list(struct('PortBinding', { HostIp: 'string', HostPort: 'string' }))), RestartPolicy: restartPolicy,
  AutoRemove: 'bool', VolumeDriver: 'string', VolumesFrom: strs, ConsoleSize: { tuple: 'uint32' }, Annotations: strMap,
  CapAdd: 'StrSlice', CapDrop: 'StrSlice', CgroupnsMode: 'string', Dns: strs, DnsOptions: strs, DnsSearch: strs, ExtraHosts: strs,
  GroupAdd: strs, IpcMode: 'string', Cgroup: 'string', Links: strs, OomScoreAdj: 'int64', PidMode: 'string', Privileged: 'bool',
  PublishAllPorts: 'bool', ReadonlyRootfs: 'bool', SecurityOpt: strs, StorageOpt: strMap, Tmpfs: strMap, UTSMode: 'string',
  UsernsMode: 'string', ShmSize: 'int64', Sysctls: strMap, Runtime: 'string', Isolation: 'string', MaskedPaths: strs,
  ReadonlyPaths: strs, Init: 'bool',
  Mounts: list(
    struct('Mount', {
      Type: 'string', Source: 'string', Target: 'string', ReadOnly: 'bool', Consistency: 'string',
      BindOptions: struct('BindOptions', { Propagation: 'string', NonRecursive: 'bool', CreateMountpoint: 'bool', ReadOnlyNonRecursive: 'bool', ReadOnlyForceRecursive: 'bool' }),
      VolumeOptions: struct('VolumeOptions', { NoCopy: 'bool', Labels: strMap, Subpath: 'string', DriverConfig: struct('Driver', { Name: 'string', Options: strMap }) }),
      TmpfsOptions: struct('TmpfsOptions', { SizeBytes: 'int64', Mode: 'uint32' }),
    }),
  ),
});

const endpointSettings = struct('EndpointSettings', {
  IPAMConfig: struct('EndpointIPAMConfig', { IPv4Address: 'string', IPv6Address: 'string', LinkLocalIPs: strs }),
  Links: strs, Aliases: strs, MacAddress: 'string', DriverOpts: strMap, NetworkID: 'string', EndpointID: 'string',
  Gateway: 'string', IPAddress: 'string', IPPrefixLen: 'int64', IPv6Gateway: 'string', GlobalIPv6Address: 'string',
  GlobalIPv6PrefixLen: 'int64', DNSNames: strs,
});

export const BODY = {
  containerCreate: struct('ContainerConfigWrapper', {
    ...configFields,
    HostConfig: hostConfig,
    NetworkingConfig: struct('NetworkingConfig', { EndpointsConfig: map(endpointSettings) }),
  }),
  containerUpdate: struct('UpdateConfig', { ...resources, RestartPolicy: restartPolicy }),
  commitConfig: struct('Config', configFields),
  execCreate: struct('ExecOptions', {
    User: 'string', Privileged: 'bool', Tty: 'bool', ConsoleSize: { tuple: 'uint32' }, AttachStdin: 'bool', AttachStderr: 'bool',
    AttachStdout: 'bool', DetachKeys: 'string', Env: strs, WorkingDir: 'string', Cmd: strs,
  }),
  execStart: struct('ExecStartOptions', { Detach: 'bool', Tty: 'bool', ConsoleSize: { tuple: 'uint32' } }),
  volumeCreate: struct('CreateOptions', { Name: 'string', Driver: 'string', DriverOpts: strMap, Labels: strMap }),
  networkCreate: struct('CreateRequest', {
    Name: 'string', Driver: 'string', Scope: 'string', EnableIPv4: 'bool', EnableIPv6: 'bool', Internal: 'bool', Attachable: 'bool',
    Ingress: 'bool', ConfigOnly: 'bool', CheckDuplicate: 'bool', Options: strMap, Labels: strMap,
    IPAM: struct('IPAM', { Driver: 'string', Options: strMap, Config: list(struct('IPAMConfig', { Subnet: 'string', IPRange: 'string', Gateway: 'string', AuxiliaryAddresses: strMap })) }),
    ConfigFrom: struct('ConfigReference', { Network: 'string' }),
  }),
  networkConnect: struct('ConnectOptions', { Container: 'string', EndpointConfig: endpointSettings }),
  networkDisconnect: struct('DisconnectOptions', { Container: 'string', Force: 'bool' }),
  auth: struct('AuthConfig', {
    username: 'string', password: 'string', auth: 'string', email: 'string', serveraddress: 'string', identitytoken: 'string', registrytoken: 'string',
  }),
} satisfies Record<string, BodyType>;

const goName = (t: BodyType): string => {
  if (typeof t === 'string') return t === 'StrSlice' ? 'strslice.StrSlice' : t;
  if ('struct' in t) return t.struct;
  if ('list' in t) return `[]${goName(t.list)}`;
  if ('tuple' in t) return `[2]${goName(t.tuple)}`;
  return `map[string]${goName(t.map)}`;
};

const jsonKind = (v: unknown): string => {
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return `number ${String(v)}`;
  return typeof v; // string, object
};

const RANGES: Record<string, [number, number]> = { int64: [-(2 ** 63), 2 ** 63], uint32: [0, 2 ** 32 - 1], uint16: [0, 65535] };

/** Throws dockerd's 400 for the first value of the wrong JSON type; returns the body unchanged. */
export function checkBody<T>(body: T, type: BodyType): T {
  const top = typeof type === 'object' && 'struct' in type ? type.struct : goName(type);
  walk(body, type, top, '');
  return body;
}

function walk(v: unknown, t: BodyType, struct: string, field: string): void {
  if (v === null || v === undefined) return; // Go: null leaves the zero value
  const fail = () => {
    const where = field ? `Go struct field ${struct}.${field}` : 'Go value';
    throw invalid(`json: cannot unmarshal ${jsonKind(v)} into ${where} of type ${goName(t)}`);
  };
  if (typeof t === 'string') {
    switch (t) {
      case 'string':
        if (typeof v !== 'string') fail();
        return;
      case 'bool':
        if (typeof v !== 'boolean') fail();
        return;
      case 'StrSlice':
        if (typeof v === 'string') return;
        if (!Array.isArray(v)) fail();
        (v as unknown[]).forEach((x) => typeof x !== 'string' && x !== null && walk(x, 'string', struct, field));
        return;
      default: {
        const [lo, hi] = RANGES[t];
        if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v >= hi + (t === 'int64' ? 0 : 1)) fail();
        return;
      }
    }
  }
  if ('list' in t || 'tuple' in t) {
    if (!Array.isArray(v)) return fail();
    const item = 'list' in t ? t.list : t.tuple;
    for (const x of v) walk(x, item, struct, field);
    return;
  }
  if (typeof v !== 'object' || Array.isArray(v)) return fail();
  if ('map' in t) {
    for (const x of Object.values(v as object)) walk(x, t.map, struct, field);
    return;
  }
  // A nested struct: Go names the field path from the outermost struct.
  for (const [k, x] of Object.entries(v as object)) {
    // Own fields only: "constructor" or "__proto__" in a body must not find Object's.
    const ft = Object.hasOwn(t.fields, k) ? t.fields[k] : undefined;
    if (ft) walk(x, ft, struct, field ? `${field}.${k}` : k);
  }
}
