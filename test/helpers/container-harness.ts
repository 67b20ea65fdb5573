/**
 * The container API over a fake image store: system + container routes served on a private
 * unix socket, driven by the real docker CLI. Lets container behaviour be tested without a
 * registry (the full daemon tests cover pulls).
 */
import { mkdtempSync, promises as fs } from 'node:fs';
import type http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Router } from '../../src/api/router';
import { containerRoutes } from '../../src/api/routes/containers';
import { systemRoutes } from '../../src/api/routes/system';
import { networkRoutes } from '../../src/api/routes/networks';
import { volumeRoutes } from '../../src/api/routes/volumes';
import { NetworkFabric } from '../../src/drivers/network/fabric';
import { NetworkService } from '../../src/engine/networks/network-service';
import { VolumeService } from '../../src/engine/volumes/volume-service';
import { createApiServer } from '../../src/api/server';
import { ContainerService } from '../../src/engine/containers/container-service';
import { EventBus } from '../../src/engine/events';
import { SystemService } from '../../src/engine/system';
import { apiRequest, runDocker, type ApiResponse, type CliResult } from './daemon';
import { FakeImages } from './fake-images';
import { openQemu, testGuestImage, testSwitchBinary } from './guest';

export interface ContainerHarness {
  service: ContainerService;
  events: EventBus;
  dockerHost: string;
  root: string;
  docker(args: string[], opts?: { input?: string; cli?: string; timeoutMs?: number }): Promise<CliResult>;
  request(method: string, urlPath: string, body?: unknown): Promise<ApiResponse>;
  /** Simulates a daemon restart: a new service over the same state directory. */
  restartService(): Promise<void>;
  close(): Promise<void>;
}

export async function startContainerHarness(): Promise<ContainerHarness> {
  const base = mkdtempSync(path.join(os.tmpdir(), 'paddock-ctr-harness-'));
  const socketPath = path.join(base, 'api.sock');
  const hypervisor = await openQemu();
  const guest = await testGuestImage();
  const images = new FakeImages();
  const events = new EventBus();
  const fabric = await NetworkFabric.open({
    namespace: `paddock-h${process.pid}`,
    runDir: path.join(base, 'net'),
    switchBinary: testSwitchBinary(),
    masquerade: false,
  });
  const open = async () => {
    volumes = await VolumeService.open({ root: path.join(base, 'volumes'), events });
    networks = await NetworkService.open({ root: path.join(base, 'network'), events, fabric, dns: [] });
    return ContainerService.open({ root: path.join(base, 'containers'), events, images, hypervisor, guest, defaultMemoryMiB: 128, volumes, networks });
  };
  let volumes: VolumeService;
  let networks: NetworkService;
  let service = await open();
  let server: http.Server;
  const serve = async () => {
    const system = new SystemService({
      hypervisor,
      guest,
      dataRoot: base,
      insecureRegistries: [],
      containerCounts: () => service.counts(),
      imageCount: () => images.count(),
    });
    server = createApiServer(new Router([...systemRoutes(system, events), ...containerRoutes(service), ...volumeRoutes(volumes), ...networkRoutes(networks, service)]));
    await fs.rm(socketPath, { force: true });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  };
  await serve();
  const stopServer = async () => {
    const closed = new Promise((resolve) => server.close(resolve));
    server.closeAllConnections(); // close() alone waits for idle keep-alive and streaming clients
    await closed;
  };
  const dockerHost = `unix://${socketPath}`;
  return {
    get service() {
      return service;
    },
    events,
    dockerHost,
    root: base,
    docker: (args, opts = {}) => runDocker(args, { ...opts, dockerHost, configDir: path.join(base, 'cli') }),
    request: (method, urlPath, body) => apiRequest(socketPath, method, urlPath, body),
    restartService: async () => {
      await stopServer();
      await service.shutdown();
      service = await open();
      await serve();
    },
    close: async () => {
      await stopServer();
      await service.shutdown();
      for (const r of service.list()) await service.remove(r.Id, { force: true }).catch(() => undefined);
      await fabric.close();
      await fs.rm(base, { recursive: true, force: true }).catch(() => undefined);
    },
  } as ContainerHarness;
}
