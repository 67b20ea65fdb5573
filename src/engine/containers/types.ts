/**
 * Docker's container shapes, as far as Paddock reads or writes them. Field names follow the
 * Engine API so that stored state can be returned by inspect without translation.
 */
import type { ImageRuntimeConfig } from '../image-backend';
import type { EndpointSettings } from '../networks/network-service';

export interface ContainerConfig extends ImageRuntimeConfig {
  Hostname?: string;
  Domainname?: string;
  AttachStdin?: boolean;
  AttachStdout?: boolean;
  AttachStderr?: boolean;
  Tty?: boolean;
  OpenStdin?: boolean;
  StdinOnce?: boolean;
  Image?: string;
  NetworkDisabled?: boolean;
  MacAddress?: string;
  StopTimeout?: number | null;
}

export interface RestartPolicy {
  Name: '' | 'no' | 'always' | 'on-failure' | 'unless-stopped';
  MaximumRetryCount?: number;
}

export interface PortBinding {
  HostIp?: string;
  HostPort?: string;
}

export interface HostConfig {
  Binds?: string[] | null;
  NetworkMode?: string;
  PortBindings?: Record<string, PortBinding[] | null> | null;
  RestartPolicy?: RestartPolicy;
  AutoRemove?: boolean;
  VolumesFrom?: string[] | null;
  Mounts?: unknown[] | null;
  Tmpfs?: Record<string, string> | null;
  Dns?: string[] | null;
  DnsOptions?: string[] | null;
  DnsSearch?: string[] | null;
  ExtraHosts?: string[] | null;
  Links?: string[] | null;
  PublishAllPorts?: boolean;
  Privileged?: boolean;
  ReadonlyRootfs?: boolean;
  Init?: boolean | null;
  Memory?: number;
  MemorySwap?: number;
  NanoCpus?: number;
  CpuShares?: number;
  CpuQuota?: number;
  CpuPeriod?: number;
  ShmSize?: number;
  LogConfig?: { Type: string; Config: Record<string, string> };
  ConsoleSize?: [number, number] | null;
  [key: string]: unknown;
}

export interface ContainerState {
  Status: 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead';
  Running: boolean;
  Paused: boolean;
  Restarting: boolean;
  OOMKilled: boolean;
  Dead: boolean;
  Pid: number;
  ExitCode: number;
  Error: string;
  StartedAt: string;
  FinishedAt: string;
  Health?: {
    Status: 'starting' | 'healthy' | 'unhealthy' | 'none';
    FailingStreak: number;
    Log: Array<{ Start: string; End: string; ExitCode: number; Output: string }>;
  };
}

/** A mount of the container, in the shape of inspect's `Mounts` entries. */
export interface MountPoint {
  Type: 'bind' | 'volume' | 'tmpfs';
  /** Volume name (volumes only). */
  Name?: string;
  /** Host path (bind) or the volume's directory. */
  Source: string;
  Destination: string;
  Driver?: string;
  Mode: string;
  RW: boolean;
  Propagation: string;
  /** tmpfs mount options ("size=64m,mode=1777"). */
  TmpfsOptions?: string;
}

/** What is persisted per container (config.json in its directory). */
export interface ContainerRecord {
  Id: string;
  /** With the leading slash, as Docker stores it. */
  Name: string;
  Created: string;
  Path: string;
  Args: string[];
  Config: ContainerConfig;
  HostConfig: HostConfig;
  /** Image ID ("sha256:..."). */
  Image: string;
  State: ContainerState;
  RestartCount: number;
  /** Set when the user stopped it (unless-stopped must not restart it). */
  ManuallyStopped?: boolean;
  NetworkingConfig?: { EndpointsConfig?: Record<string, unknown> } | null;
  /** The container's networks (by name) and, while it runs, its addresses and published ports. */
  NetworkSettings?: { Networks: Record<string, EndpointSettings>; Ports: Record<string, PortBinding[] | null> };
  MountPoints?: MountPoint[];
  /** Largest exec / process id used, so ids stay unique across restarts. */
  Platform: 'linux';
}

export interface CreateContainerRequest extends ContainerConfig {
  HostConfig?: HostConfig;
  NetworkingConfig?: { EndpointsConfig?: Record<string, unknown> } | null;
}

export const ZERO_TIME = '0001-01-01T00:00:00Z';
