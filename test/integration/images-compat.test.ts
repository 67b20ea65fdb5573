/**
 * Paddock against the reference dockerd (Debian's 20.10, API 1.41) on the same registry: the
 * same images give the same list entries, inspect and history answers, and each loads what the
 * other saves.
 */
import { mkdtempSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { apiRequest, startTestDaemon, type TestDaemon } from '../helpers/daemon';
import { referenceDockerdUnavailable, startReferenceDockerd, type ReferenceDockerd } from '../helpers/reference-dockerd';
import { startTestRegistry, type TestRegistry } from '../helpers/registry';
import { seedTestImages, type SeedName, type SeededImage } from '../helpers/seed-images';

jest.setTimeout(180_000);

const unavailable = referenceDockerdUnavailable();
const describeWithDockerd = unavailable ? describe.skip : describe;

let reg: TestRegistry;
let seeds: Record<SeedName, SeededImage>;
let td: TestDaemon;
let refd: ReferenceDockerd;
let work: string;

beforeAll(async () => {
  if (unavailable) return;
  reg = await startTestRegistry();
  seeds = await seedTestImages(reg, ['busybox', 'layered', 'multiarch']);
  [td, refd] = await Promise.all([startTestDaemon(), startReferenceDockerd({ insecureRegistries: [reg.host] })]);
  work = mkdtempSync(path.join(os.tmpdir(), 'paddock-compat-'));
  for (const s of [seeds.busybox, seeds.layered, seeds.multiarch]) {
    const [a, b] = await Promise.all([td.docker(['pull', s.ref]), refd.docker(['pull', s.ref])]);
    if (a.code !== 0 || b.code !== 0) throw new Error(`pull ${s.ref} failed: ${a.stderr} ${b.stderr}`);
  }
});

afterAll(async () => {
  await td?.close();
  await refd?.stop();
  await reg?.stop();
  if (work) await fs.rm(work, { recursive: true, force: true });
});

const get = async (socketPath: string, urlPath: string) => (await apiRequest(socketPath, 'GET', urlPath)).json();

describeWithDockerd('same answers as dockerd 20.10 at API 1.41', () => {
  it('lists the same images', async () => {
    const byId = (list: Array<{ Id: string }>) => [...list].sort((a, b) => a.Id.localeCompare(b.Id));
    expect(byId(await get(td.socketPath, '/v1.41/images/json'))).toEqual(byId(await get(refd.socketPath, '/v1.41/images/json')));
  });

  it('inspects and lists history the same, storage details aside', async () => {
    for (const s of [seeds.busybox, seeds.layered, seeds.multiarch]) {
      const ours = await get(td.socketPath, `/v1.41/images/${s.ref}/json`);
      const theirs = await get(refd.socketPath, `/v1.41/images/${s.ref}/json`);
      for (const o of [ours, theirs]) delete o.GraphDriver;
      expect(ours).toEqual(theirs);
      expect(await get(td.socketPath, `/v1.41/images/${s.ref}/history`)).toEqual(await get(refd.socketPath, `/v1.41/images/${s.ref}/history`));
    }
  });

  it('loads what dockerd saves, and dockerd loads what Paddock saves', async () => {
    const fromDockerd = path.join(work, 'dockerd.tar');
    const fromPaddock = path.join(work, 'paddock.tar');
    expect((await refd.docker(['save', '-o', fromDockerd, seeds.layered.ref])).code).toBe(0);
    expect((await td.docker(['save', '-o', fromPaddock, seeds.busybox.ref])).code).toBe(0);
    expect((await td.docker(['rmi', seeds.layered.ref])).code).toBe(0);
    expect((await refd.docker(['rmi', seeds.busybox.ref])).code).toBe(0);

    const intoPaddock = await td.docker(['load', '-i', fromDockerd]);
    expect(intoPaddock.stdout).toContain(`Loaded image: ${seeds.layered.ref}`);
    const intoDockerd = await refd.docker(['load', '-i', fromPaddock]);
    expect(intoDockerd.stdout).toContain(`Loaded image: ${seeds.busybox.ref}`);

    expect((await get(td.socketPath, `/v1.41/images/${seeds.layered.ref}/json`)).Id).toBe(seeds.layered.configDigest);
    expect((await get(refd.socketPath, `/v1.41/images/${seeds.busybox.ref}/json`)).Id).toBe(seeds.busybox.configDigest);
  });
});
