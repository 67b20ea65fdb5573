/**
 * Wires the daemon together: config → drivers (hypervisor, guest image, stores) → engine
 * services → HTTP router → listeners. Nothing here knows HTTP details or QEMU flags.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { Router } from './api/router';
import { containerRoutes } from './api/routes/containers';
import { imageRoutes } from './api/routes/images';
import { systemRoutes } from './api/routes/system';
import { networkRoutes } from './api/routes/networks';
import { volumeRoutes } from './api/routes/volumes';
import { createApiServer, listenApi, loadTls } from './api/server';
import type { DaemonConfig } from './config';
import { locateGuestImage, type GuestImage } from './drivers/guest/guest-image';
import type { Hypervisor } from './drivers/hypervisor/hypervisor';
import { openHypervisor } from './drivers/hypervisor/registry';
import { NetworkFabric } from './drivers/network/fabric';
import { ContainerService } from './engine/containers/container-service';
import { withVmTemplates } from './engine/vm-templates';
import { EventBus } from './engine/events';
import { ImageService } from './engine/images/image-service';
import { NetworkService } from './engine/networks/network-service';
import { SystemService } from './engine/system';
import { VolumeService } from './engine/volumes/volume-service';
import { logger, setLogLevel } from './util/log';

const log = logger('daemon');

export interface Engine {
  config: DaemonConfig;
  events: EventBus;
  hypervisor: Hypervisor;
  guest: GuestImage;
  images: ImageService;
  containers: ContainerService;
  volumes: VolumeService;
  networks: NetworkService;
  system: SystemService;
}

export interface RunningDaemon {
  engine: Engine;
  router: Router;
  servers: http.Server[];
  close(): Promise<void>;
}

export async function buildEngine(config: DaemonConfig): Promise<Engine> {
  await fs.mkdir(config.dataRoot, { recursive: true, mode: 0o711 });
  await fs.mkdir(config.execRoot, { recursive: true, mode: 0o700 });
  // Container layers and volumes hold tenants' files, setuid-root binaries included: no host user
  // may reach them (the data root itself stays 0711, as dockerd's). image/ is 0700 already.
  for (const dir of ['containers', 'volumes']) {
    await fs.mkdir(path.join(config.dataRoot, dir), { recursive: true, mode: 0o700 });
    await fs.chmod(path.join(config.dataRoot, dir), 0o700);
  }
  const guest = await locateGuestImage({ sourceRoot: config.sourceRoot, kind: config.guestKernel });
  log.info('guest image', { kernel: guest.kernelPath, release: guest.kernelRelease, kind: guest.kind });
  const driver = await openHypervisor(config.hypervisor, {
    runRoot: path.join(config.execRoot, 'vm'),
    probeGuest: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath },
  });
  // Containers start as clones of a saved, booted VM where the driver can (issue 7; --vm-templates).
  const hypervisor = withVmTemplates(driver, { enabled: config.vmTemplates !== false, root: path.join(config.execRoot, 'templates') });
  const hv = hypervisor.info();
  log.info('hypervisor ready', { driver: hv.name, version: hv.version, accelerator: hv.accelerator, reason: hv.acceleratorReason });
  const events = new EventBus();
  const images = await ImageService.open({
    root: path.join(config.dataRoot, 'image'),
    events,
    insecureRegistries: config.insecureRegistries,
  });
  const volumes = await VolumeService.open({ root: path.join(config.dataRoot, 'volumes'), events });
  const fabric = await openFabric(config);
  const networks = await NetworkService.open({ root: path.join(config.dataRoot, 'network'), events, fabric, dns: config.dns });
  const containers = await ContainerService.open({
    root: path.join(config.dataRoot, 'containers'),
    events,
    images,
    hypervisor,
    guest,
    defaultMemoryMiB: config.defaultMemoryMiB,
    volumes,
    networks,
  });
  images.setUsageProbe((imageId) => containers.usersOfImage(imageId));
  const system = new SystemService({
    hypervisor,
    guest,
    dataRoot: config.dataRoot,
    insecureRegistries: config.insecureRegistries,
    containerCounts: () => containers.counts(),
    imageCount: () => images.count(),
  });
  return { config, events, hypervisor, guest, images, containers, volumes, networks, system };
}

/**
 * The daemon's network namespace, switch and port proxy. Without them (not root, no tun
 * device) containers still run, with `--network none` semantics, and the reason is logged.
 */
async function openFabric(config: DaemonConfig): Promise<NetworkFabric | null> {
  try {
    const switchBinary = await new Promise<string>((resolve, reject) =>
      execFile('bash', [path.join(config.sourceRoot, 'scripts/build-switch.sh')], (err, stdout, stderr) =>
        err ? reject(new Error(stderr.trim() || err.message)) : resolve(stdout.trim()),
      ),
    );
    const key = createHash('sha256').update(path.resolve(config.execRoot)).digest('hex').slice(0, 10);
    const fabric = await NetworkFabric.open({
      namespace: `paddock-${key}`,
      runDir: path.join(config.execRoot, 'net'),
      switchBinary,
      masquerade: config.ipMasq,
    });
    log.info('container networking ready', { namespace: fabric.ns.name });
    return fabric;
  } catch (err) {
    log.warn('container networking is unavailable; containers run without networks', { reason: String((err as Error).message ?? err) });
    return null;
  }
}

export function buildRouter(engine: Engine): Router {
  return new Router([
    ...systemRoutes(engine.system, engine.events),
    ...imageRoutes(engine.images, (ref) => engine.containers.commitInfo(ref)),
    ...containerRoutes(engine.containers),
    ...volumeRoutes(engine.volumes),
    ...networkRoutes(engine.networks, engine.containers),
  ]);
}

export async function startDaemon(config: DaemonConfig): Promise<RunningDaemon> {
  setLogLevel(config.logLevel);
  // TLS applies to TCP listeners only, as in dockerd; unix sockets are guarded by owner/group/mode.
  // Read the files first: a missing certificate should fail before any VM work starts.
  const tls = config.tls ? await loadTls(config.tls) : undefined;
  const engine = await buildEngine(config);
  const router = buildRouter(engine);
  const servers: http.Server[] = [];
  for (const host of config.hosts) {
    const server = createApiServer(router, { tls: host.startsWith('tcp://') ? tls : undefined });
    servers.push(await listenApi(server, host, { group: config.group }));
  }
  log.info('API listening', { hosts: config.hosts.join(',') });
  return {
    engine,
    router,
    servers,
    close: async () => {
      const closed = Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
      // close() alone would wait for keep-alive and streaming clients (events, logs -f).
      for (const s of servers) s.closeAllConnections();
      await closed;
      await engine.containers.shutdown();
      await engine.networks.fabric?.close();
    },
  };
}
