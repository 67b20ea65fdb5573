/**
 * Daemon configuration: dockerd-like flags, optionally a JSON config file with the same keys
 * (flags win). Parsed with Node's own util.parseArgs.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { invalid } from './errors';
import type { LogLevel } from './util/log';

export interface DaemonConfig {
  hosts: string[];
  dataRoot: string;
  execRoot: string;
  insecureRegistries: string[];
  logLevel: LogLevel;
  hypervisor: string;
  /** Guest kernel flavour: our own small kernel, or Debian's cloud kernel (virtio as modules). */
  guestKernel: 'paddock' | 'debian-cloud';
  /** Where kernel/ and rootfs-builder/ live (to build the guest image on first start). */
  sourceRoot: string;
  defaultMemoryMiB: number;
  /** Start containers from saved, booted VM templates where possible (issue 7); default true. */
  vmTemplates?: boolean;
  /** Outbound access for containers: NAT from the daemon's network namespace (dockerd's --ip-masq). */
  ipMasq: boolean;
  /** Resolvers for names that are not containers' (dockerd's --dns); unset: the host's. */
  dns?: string[];
  /**
   * Group that owns unix sockets (dockerd's -G/--group). Absent: "docker" when that group
   * exists, else root's group. An empty string keeps root's group.
   */
  group?: string;
  /** TLS on TCP listeners (dockerd's --tls/--tlsverify and their files); absent: plain HTTP. */
  tls?: TlsConfig;
}

export interface TlsConfig {
  /** Require and verify client certificates against `caCert` (dockerd's --tlsverify). */
  verify: boolean;
  caCert: string;
  cert: string;
  key: string;
}

export const DEFAULT_SOCKET = 'unix:///run/paddock.sock';

const usage = `Usage: paddockd [OPTIONS]

A Docker Engine API server that runs every container in its own VM.

Options:
  -H, --host list               Daemon socket(s) to listen on (default ${DEFAULT_SOCKET});
                                unix:///path or tcp://127.0.0.1:2375 (loopback only without TLS)
      --data-root string        Root of persistent state (default /var/lib/paddock)
      --exec-root string        Root of runtime state (default /run/paddock)
      --insecure-registry list  Registries reached over plain HTTP (loopback always is)
      --log-level string        debug, info, warn or error (default info)
      --hypervisor string       Hypervisor driver: qemu, xen, virtualbox, firecracker or
                                cloud-hypervisor (default qemu)
      --guest-kernel string     paddock (built from kernel/) or debian-cloud (default paddock)
      --dns list                DNS servers for names that are not containers' (default: the
                                host's resolvers)
      --ip-masq                 Give containers outbound access through NAT (default true;
                                --ip-masq=false to turn it off)
      --vm-templates            Start containers as clones of a saved, booted VM (default
                                true; --vm-templates=false boots every VM)
  -G, --group string            Group for the unix socket(s) (default "docker" if that group
                                exists, else root); the socket's mode is 0660
      --tls                     Use TLS on TCP listeners; implied by --tlsverify
      --tlsverify               Use TLS and require client certificates signed by --tlscacert;
                                only then may TCP listen off loopback
      --tlscacert string        Trust certs signed only by this CA (default ~/.docker/ca.pem)
      --tlscert string          Path to TLS certificate file (default ~/.docker/cert.pem)
      --tlskey string           Path to TLS key file (default ~/.docker/key.pem)
      --config-file string      JSON file with the same keys (e.g. {"hosts": [...], "data-root": ...})
  -h, --help                    Print this help
`;

export function parseDaemonArgs(argv: string[]): DaemonConfig | 'help' {
  const { values } = parseArgs({
    args: argv.map((a) => (BOOLEAN_FLAGS.includes(a) ? `${a}=true` : a)),
    options: {
      host: { type: 'string', short: 'H', multiple: true },
      'data-root': { type: 'string' },
      'exec-root': { type: 'string' },
      'insecure-registry': { type: 'string', multiple: true },
      'log-level': { type: 'string' },
      hypervisor: { type: 'string' },
      'guest-kernel': { type: 'string' },
      'config-file': { type: 'string' },
      'vm-templates': { type: 'string' },
      'ip-masq': { type: 'string' },
      dns: { type: 'string', multiple: true },
      group: { type: 'string', short: 'G' },
      tls: { type: 'string' },
      tlsverify: { type: 'string' },
      tlscacert: { type: 'string' },
      tlscert: { type: 'string' },
      tlskey: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return 'help';
  let file: Record<string, unknown> = {};
  if (values['config-file']) {
    try {
      file = JSON.parse(readFileSync(values['config-file'], 'utf8'));
    } catch (err) {
      throw invalid(`cannot read config file ${values['config-file']}: ${(err as Error).message}`);
    }
  }
  const pick = <T>(flag: T | undefined, key: string, fallback: T): T => flag ?? (file[key] as T | undefined) ?? fallback;
  const config: DaemonConfig = {
    hosts: pick(values.host, 'hosts', [DEFAULT_SOCKET]),
    dataRoot: pick(values['data-root'], 'data-root', '/var/lib/paddock'),
    execRoot: pick(values['exec-root'], 'exec-root', '/run/paddock'),
    insecureRegistries: pick(values['insecure-registry'], 'insecure-registries', []),
    logLevel: pick(values['log-level'], 'log-level', 'info') as LogLevel,
    hypervisor: pick(values.hypervisor, 'hypervisor', 'qemu'),
    guestKernel: pick(values['guest-kernel'], 'guest-kernel', 'paddock') as DaemonConfig['guestKernel'],
    sourceRoot: path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? '../..' : '..'),
    defaultMemoryMiB: Number(file['default-memory-mib'] ?? 128),
    vmTemplates: booleanFlag(pick<unknown>(values['vm-templates'], 'vm-templates', true), 'vm-templates'),
    ipMasq: parseBool(pick(values['ip-masq'], 'ip-masq', 'true'), 'ip-masq'),
    dns: pick<string[] | undefined>(values.dns, 'dns', undefined),
    group: pick<string | undefined>(values.group, 'group', undefined),
    tls: tlsConfig(values, file),
  };
  if (!['debug', 'info', 'warn', 'error'].includes(config.logLevel)) throw invalid(`unknown log level ${config.logLevel}`);
  if (!['paddock', 'debian-cloud'].includes(config.guestKernel)) throw invalid(`unknown guest kernel ${config.guestKernel}`);
  config.hosts = config.hosts.map((h) => normalizeHost(h, Boolean(config.tls)));
  for (const h of config.hosts) validateHost(h, config.tls);
  return config;
}

/** dockerd's boolean TLS flags, which it takes bare (`--tls`) as well as `--tls=false`. */
const BOOLEAN_FLAGS = ['--tls', '--tlsverify'];

/**
 * dockerd's rules: --tlsverify implies --tls; the files default to $DOCKER_CERT_PATH or
 * ~/.docker/{ca,cert,key}.pem, as the docker CLI's own.
 */
function tlsConfig(values: Record<string, unknown>, file: Record<string, unknown>): TlsConfig | undefined {
  const flag = (name: string): boolean | undefined => {
    const v = values[name] ?? file[name];
    return v === undefined ? undefined : booleanFlag(v, name);
  };
  const verify = flag('tlsverify') ?? false;
  const tls = flag('tls') ?? verify;
  if (!tls && !verify) return undefined;
  const certDir = process.env.DOCKER_CERT_PATH || path.join(os.homedir(), '.docker');
  const file_ = (name: string, base: string) => (values[name] ?? file[name] ?? path.join(certDir, base)) as string;
  return { verify, caCert: file_('tlscacert', 'ca.pem'), cert: file_('tlscert', 'cert.pem'), key: file_('tlskey', 'key.pem') };
}

/** `tcp://HOST` gets dockerd's default port: 2376 with TLS, 2375 without. */
function normalizeHost(host: string, tls: boolean): string {
  if (/^tcp:\/\/(\[[^\]]+\]|[^:/]+)$/.test(host)) return `${host}:${tls ? 2376 : 2375}`;
  return host;
}

export { usage };

/** `--flag`, `--flag=true|false|1|0`, or a JSON boolean in the config file. */
function booleanFlag(v: unknown, flag: string): boolean {
  if (v === true || v === 'true' || v === '1' || v === '') return true;
  if (v === false || v === 'false' || v === '0') return false;
  throw invalid(`invalid value for --${flag}: ${String(v)} (true or false)`);
}

function parseBool(v: unknown, flag: string): boolean {
  if (v === true || v === 'true' || v === '1' || v === '') return true;
  if (v === false || v === 'false' || v === '0') return false;
  throw invalid(`invalid boolean for --${flag}: ${String(v)}`);
}

/**
 * TCP off loopback only with --tlsverify: without client certificates, anyone who reaches the
 * port owns the host (server-only TLS encrypts but lets every client in).
 */
export function validateHost(host: string, tls?: TlsConfig): void {
  if (host.startsWith('unix://')) return;
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:]+):(\d+)$/.exec(host);
  if (!m) throw invalid(`invalid host ${host}: use unix:///path or tcp://HOST:PORT`);
  const addr = m[1].replace(/^\[|\]$/g, '');
  // An IP literal in 127/8 only: a hostname such as 127.example.com may resolve anywhere.
  const loopback = addr === 'localhost' || addr === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(addr);
  if (loopback || tls?.verify) return;
  throw invalid(
    tls
      ? `refusing to listen on ${host} with TLS but without --tlsverify: any client could connect; use --tlsverify or a loopback address`
      : `refusing to listen on ${host} without TLS: use a loopback address or a unix socket, or --tlsverify with client certificates`,
  );
}
