/** `docker version` and `docker info`: facts about the daemon, the host and the VM runtime. */
import os from 'node:os';
import type { GuestImage } from '../drivers/guest/guest-image';
import type { Hypervisor } from '../drivers/hypervisor/hypervisor';
import { MAX_API_VERSION, MIN_API_VERSION } from '../api/version';

export const PADDOCK_VERSION = '0.1.0';

export interface ContainerCounts {
  total: number;
  running: number;
  paused: number;
  stopped: number;
}

export interface SystemDeps {
  hypervisor: Hypervisor;
  guest: GuestImage;
  dataRoot: string;
  insecureRegistries: string[];
  containerCounts(): Promise<ContainerCounts>;
  imageCount(): Promise<number>;
}

export class SystemService {
  readonly id = `PADDOCK:${os.hostname()}`;

  constructor(private readonly deps: SystemDeps) {}

  version(): Record<string, unknown> {
    const hv = this.deps.hypervisor.info();
    const common = {
      Version: PADDOCK_VERSION,
      ApiVersion: MAX_API_VERSION,
      MinAPIVersion: MIN_API_VERSION,
      GitCommit: 'paddock',
      GoVersion: `node ${process.version}`,
      Os: 'linux',
      Arch: goArch(),
      KernelVersion: os.release(),
      BuildTime: '',
    };
    return {
      Platform: { Name: 'Paddock' },
      Components: [
        { Name: 'Engine', Version: PADDOCK_VERSION, Details: { ...stringify(common), Experimental: 'false' } },
        { Name: hv.name, Version: hv.version, Details: { Accelerator: hv.accelerator, GuestKernel: this.deps.guest.kernelRelease } },
      ],
      ...common,
    };
  }

  async info(): Promise<Record<string, unknown>> {
    const hv = this.deps.hypervisor.info();
    const counts = await this.deps.containerCounts();
    const runtime = `${hv.name}-${hv.accelerator}`;
    const warnings: string[] = [];
    if (hv.accelerator === 'tcg') warnings.push(`WARNING: guests run under TCG (software emulation): ${hv.acceleratorReason}`);
    return {
      ID: this.id,
      Containers: counts.total,
      ContainersRunning: counts.running,
      ContainersPaused: counts.paused,
      ContainersStopped: counts.stopped,
      Images: await this.deps.imageCount(),
      Driver: 'overlayfs+vm',
      DriverStatus: [['Root Dir', this.deps.dataRoot]],
      Plugins: { Volume: ['local'], Network: ['bridge', 'null'], Authorization: null, Log: ['json-file'] },
      MemoryLimit: true,
      SwapLimit: false,
      CpuCfsPeriod: false,
      CpuCfsQuota: false,
      CPUShares: false,
      CPUSet: false,
      PidsLimit: false,
      IPv4Forwarding: true,
      Debug: false,
      NFd: 0,
      OomKillDisable: false,
      NGoroutines: 0,
      SystemTime: new Date().toISOString(),
      LoggingDriver: 'json-file',
      CgroupDriver: 'none',
      CgroupVersion: '2',
      NEventsListener: 0,
      KernelVersion: os.release(),
      OperatingSystem: `Paddock ${PADDOCK_VERSION} (every container is a ${hv.name} VM, accelerator ${hv.accelerator})`,
      OSVersion: PADDOCK_VERSION,
      OSType: 'linux',
      Architecture: os.machine(),
      IndexServerAddress: 'https://index.docker.io/v1/',
      RegistryConfig: {
        AllowNondistributableArtifactsCIDRs: [],
        AllowNondistributableArtifactsHostnames: [],
        InsecureRegistryCIDRs: ['127.0.0.0/8', '::1/128'],
        IndexConfigs: {},
        Mirrors: [],
      },
      NCPU: os.cpus().length,
      MemTotal: os.totalmem(),
      GenericResources: null,
      DockerRootDir: this.deps.dataRoot,
      HttpProxy: '',
      HttpsProxy: '',
      NoProxy: '',
      Name: os.hostname(),
      Labels: [
        `paddock.hypervisor=${hv.name}`,
        `paddock.hypervisor.version=${hv.version}`,
        `paddock.accelerator=${hv.accelerator}`,
        `paddock.guest-kernel=${this.deps.guest.kernelRelease} (${this.deps.guest.kind})`,
      ],
      ExperimentalBuild: false,
      ServerVersion: PADDOCK_VERSION,
      Runtimes: { [runtime]: { path: hv.name, runtimeArgs: [`accel=${hv.accelerator}`] } },
      DefaultRuntime: runtime,
      Swarm: {
        NodeID: '',
        NodeAddr: '',
        LocalNodeState: 'inactive',
        ControlAvailable: false,
        Error: '',
        RemoteManagers: null,
      },
      LiveRestoreEnabled: false,
      Isolation: '',
      InitBinary: '',
      ContainerdCommit: { ID: '' },
      RuncCommit: { ID: '' },
      InitCommit: { ID: '' },
      SecurityOptions: [`name=vm,hypervisor=${hv.name},accelerator=${hv.accelerator}`, ...(hv.securityOptions ?? [])],
      Warnings: warnings,
      // Not in Docker's schema: machine-readable facts about the VM runtime.
      Hypervisor: { ...hv, GuestKernel: this.deps.guest.kernelRelease, GuestKernelKind: this.deps.guest.kind },
    };
  }
}

function goArch(): string {
  const a = os.arch();
  return a === 'x64' ? 'amd64' : a === 'ia32' ? '386' : a;
}

function stringify(o: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]));
}
