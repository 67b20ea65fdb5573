/**
 * Crash consistency (issue 8): the paddockd binary is SIGKILLed at random instants while it
 * pulls, creates, starts, commits, writes volumes through containers and removes; after each
 * restart every object must be whole or absent, nothing acknowledged may be lost, containers
 * that were running read as exited, and no QEMU/virtiofsd/switch process and no temp file of the
 * killed daemon may remain. PADDOCK_FAULT_KILLS (default 8) and PADDOCK_FAULT_SEED replay a run.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { startTestRegistry, type TestRegistry } from '../helpers/registry';
import { seedTestImages } from '../helpers/seed-images';
import { rng } from '../fuzz/fuzzer';
import { api, makeBase, processesMentioning, removeBase, startPaddockd, type DaemonProcess } from '../fuzz/harness';

const KILLS = Number(process.env.PADDOCK_FAULT_KILLS ?? 8);
const SEED = Number(process.env.PADDOCK_FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31));
jest.setTimeout(KILLS * 60_000 + 120_000);

let base: string;
let registry: TestRegistry;
let busybox: string;
let layered: string;
let daemon: DaemonProcess | undefined;

beforeAll(async () => {
  base = makeBase('paddock-fault-');
  registry = await startTestRegistry();
  const seeded = await seedTestImages(registry, ['busybox', 'layered']);
  busybox = seeded.busybox.ref;
  layered = seeded.layered.ref;
});

afterAll(async () => {
  if (daemon) {
    const gone = new Promise((r) => daemon!.child.once('exit', r));
    daemon.child.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 20_000).unref())]);
    await daemon.kill('SIGKILL');
  }
  await registry?.stop();
  if (base) await removeBase(base);
});

/** What the daemon acknowledged (a success answer arrived): it must survive any later kill. */
interface Acked {
  containers: Set<string>;
  removedContainers: Set<string>;
  images: Set<string>;
  volumes: Set<string>;
  /** volume name → file names a container wrote there and exited 0 for. */
  volumeFiles: Map<string, string[]>;
}

const enc = encodeURIComponent;

/** Temp names of the state store and layer store (see state-store.ts, layer-store.ts). */
const TEMP_NAME = /^\..*\.(tmp|creating|removing)$|^\.staging-/;
/** Container and volume contents belong to users, not to the daemon's bookkeeping. */
const USER_TREES = new Set(['_data', 'upper', 'work', 'merged', 'diff', 'rootfs']);

async function tempLeftovers(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    let entries;
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      // Half-downloaded blobs live in the content store's ingest/ until renamed to their digest.
      if (TEMP_NAME.test(e.name) || path.basename(dir) === 'ingest') found.push(path.relative(root, p));
      else if (e.isDirectory() && !USER_TREES.has(e.name)) await walk(p);
    }
  };
  await walk(root);
  return found;
}

test(`SIGKILL at ${KILLS} random instants: every object whole or absent, nothing acknowledged lost, no orphans`, async () => {
  const rand = rng(SEED);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  const acked: Acked = { containers: new Set(), removedContainers: new Set(), images: new Set(), volumes: new Set(), volumeFiles: new Map() };
  const figures = {
    seed: SEED, kills: 0, operations: 0, succeeded: 0, failedByKill: 0, lostObjects: [] as string[], halfObjects: [] as string[],
    orphans: [] as string[], tempFiles: [] as string[], crashes: 0, runningAfterRestart: [] as string[], byOp: {} as Record<string, number>,
  };
  daemon = await startPaddockd(base);
  const sock = () => daemon!.socketPath;

  // Operations; each resolves when acknowledged (and records what must now exist) or throws.
  const ok = (r: { status: number; body: string }, ...want: number[]) => {
    if (!want.includes(r.status)) throw new Error(`${r.status} ${r.body.slice(0, 200)}`);
    return r;
  };
  /** A streamed pull succeeded only if no error line came. */
  const pull = async (ref: string) => {
    const r = ok(await api(sock(), 'POST', `/images/create?fromImage=${enc(ref)}`), 200);
    if (/"error"/.test(r.body)) throw new Error(r.body.slice(-200));
    acked.images.add(ref);
  };
  let n = 0;
  const create = async (cmd: string[], extra: Record<string, unknown> = {}) => {
    const name = `fi-${++n}`;
    const r = ok(await api(sock(), 'POST', `/containers/create?name=${name}`, { Image: busybox, Cmd: cmd, ...extra }), 201);
    const id = JSON.parse(r.body).Id as string;
    acked.containers.add(id);
    return id;
  };
  const ops: Record<string, (round: number) => Promise<void>> = {
    // A real pull each time: the 4-layer image is removed first when nothing uses it.
    pull: async () => {
      await api(sock(), 'DELETE', `/images/${enc(layered)}`);
      acked.images.delete(layered);
      await pull(layered);
    },
    create: async () => void (await create(['true'])),
    start: async () => {
      const id = await create(['sleep', '600']);
      ok(await api(sock(), 'POST', `/containers/${id}/start`), 204);
    },
    commit: async (round) => {
      const id = await create(['true'], { Labels: { round: String(round) } });
      const repo = `fi-commit:r${round}-${n}`;
      ok(await api(sock(), 'POST', `/commit?container=${id}&repo=${enc(repo.split(':')[0])}&tag=${enc(repo.split(':')[1])}`), 201);
      acked.images.add(repo);
    },
    volume: async (round) => {
      const vol = `fi-vol-${round}`;
      ok(await api(sock(), 'POST', '/volumes/create', { Name: vol }), 201);
      acked.volumes.add(vol);
      const file = `f-${n + 1}`;
      const id = await create(['sh', '-c', `echo ${file} > /data/${file} && sync`], { HostConfig: { Binds: [`${vol}:/data`] } });
      ok(await api(sock(), 'POST', `/containers/${id}/start`), 204);
      const w = ok(await api(sock(), 'POST', `/containers/${id}/wait`), 200);
      if (JSON.parse(w.body).StatusCode !== 0) throw new Error(`writer exited ${w.body}`);
      acked.volumeFiles.set(vol, [...(acked.volumeFiles.get(vol) ?? []), file]);
    },
    rm: async () => {
      const live = [...acked.containers].filter((c) => !acked.removedContainers.has(c));
      if (!live.length) return;
      const id = pick(live);
      ok(await api(sock(), 'DELETE', `/containers/${id}?force=1&v=1`), 204, 404);
      acked.removedContainers.add(id);
    },
  };

  // Setup that the kills then race with: the base image.
  await pull(busybox);

  for (let round = 1; round <= KILLS; round++) {
    // 2–4 operation chains run at once; the kill lands somewhere in them.
    const chains = Array.from({ length: 2 + Math.floor(rand() * 3) }, () => pick(Object.keys(ops)));
    const killAfterMs = 100 + Math.floor(rand() * 2900);
    const running = chains.map(async (name) => {
      figures.operations++;
      figures.byOp[name] = (figures.byOp[name] ?? 0) + 1;
      try {
        await ops[name](round);
        figures.succeeded++;
      } catch {
        figures.failedByKill++;
      }
    });
    await new Promise((r) => setTimeout(r, killAfterMs));
    const vmNames = [...acked.containers].map((id) => `paddock-${id.slice(0, 12)}`);
    if (daemon.exited) figures.crashes++;
    await daemon.kill('SIGKILL');
    figures.kills++;
    await Promise.all(running);

    // The daemon's children must die with it (pdeathsig): QEMU, virtiofsd, the switch.
    let left: { pid: number; cmdline: string }[] = [];
    const deadline = Date.now() + 10_000;
    do {
      left = (await processesMentioning(base)).concat(...(await Promise.all(vmNames.map((v) => processesMentioning(`-name ${v}`)))));
      if (!left.length) break;
      await new Promise((r) => setTimeout(r, 200));
    } while (Date.now() < deadline);
    for (const p of left) figures.orphans.push(`round ${round}: ${p.pid} ${p.cmdline.slice(0, 160)}`);

    daemon = await startPaddockd(base);
    figures.tempFiles.push(...(await tempLeftovers(daemon.dataRoot)).map((f) => `round ${round}: ${f}`));
    await checkConsistency(round);
  }

  async function checkConsistency(round: number): Promise<void> {
    const list = async (p: string) => JSON.parse(ok(await api(sock(), 'GET', p), 200).body);
    const containers = (await list('/containers/json?all=1')) as { Id: string }[];
    for (const c of containers) {
      const r = await api(sock(), 'GET', `/containers/${c.Id}/json`);
      const changes = await api(sock(), 'GET', `/containers/${c.Id}/changes`);
      if (r.status !== 200 || changes.status !== 200) {
        figures.halfObjects.push(`round ${round}: container ${c.Id.slice(0, 12)} inspect ${r.status} changes ${changes.status} ${changes.body.slice(0, 120)}`);
        continue;
      }
      // No VM survives its daemon: whatever ran must now read as exited.
      if (JSON.parse(r.body).State.Running) figures.runningAfterRestart.push(`round ${round}: ${c.Id.slice(0, 12)}`);
    }
    const ids = new Set(containers.map((c) => c.Id));
    for (const id of acked.containers) {
      if (!acked.removedContainers.has(id) && !ids.has(id)) figures.lostObjects.push(`round ${round}: container ${id.slice(0, 12)}`);
    }
    for (const id of acked.removedContainers) if (ids.has(id)) figures.lostObjects.push(`round ${round}: removed container ${id.slice(0, 12)} is back`);
    const images = (await list('/images/json')) as { Id: string; RepoTags: string[] | null }[];
    for (const img of images) {
      const r = await api(sock(), 'GET', `/images/${enc(img.Id)}/json`);
      const h = await api(sock(), 'GET', `/images/${enc(img.Id)}/history`);
      if (r.status !== 200 || h.status !== 200) figures.halfObjects.push(`round ${round}: image ${img.Id.slice(0, 19)} inspect ${r.status} history ${h.status}`);
    }
    const tags = new Set(images.flatMap((i) => i.RepoTags ?? []));
    for (const ref of acked.images) if (!tags.has(ref)) figures.lostObjects.push(`round ${round}: image ${ref}`);
    const volumes = ((await list('/volumes')).Volumes ?? []) as { Name: string; Mountpoint: string }[];
    for (const v of volumes) {
      const r = await api(sock(), 'GET', `/volumes/${enc(v.Name)}`);
      const there = await fs.stat(v.Mountpoint).then((s) => s.isDirectory(), () => false);
      if (r.status !== 200 || !there) figures.halfObjects.push(`round ${round}: volume ${v.Name} inspect ${r.status} mountpoint ${there}`);
    }
    const names = new Map(volumes.map((v) => [v.Name, v.Mountpoint]));
    for (const vol of acked.volumes) if (!names.has(vol)) figures.lostObjects.push(`round ${round}: volume ${vol}`);
    for (const [vol, files] of acked.volumeFiles) {
      for (const f of files) {
        const text = await fs.readFile(path.join(names.get(vol) ?? '/nonexistent', f), 'utf8').catch(() => '');
        if (text !== `${f}\n`) figures.lostObjects.push(`round ${round}: ${vol}/${f} (${JSON.stringify(text)})`);
      }
    }
  }

  // The restarted daemon still works end to end.
  const after = await api(sock(), 'POST', '/containers/create?name=fi-final', { Image: busybox, Cmd: ['echo', 'alive'] });
  expect(after.status).toBe(201);
  expect((await api(sock(), 'POST', '/containers/fi-final/start')).status).toBe(204);
  expect(JSON.parse((await api(sock(), 'POST', '/containers/fi-final/wait')).body).StatusCode).toBe(0);

  console.log(`fault-injection figures (seed ${SEED}):\n${JSON.stringify(figures, null, 1)}`);
  expect(figures.kills).toBe(KILLS);
  expect(figures.crashes).toBe(0);
  expect(figures.lostObjects).toEqual([]);
  expect(figures.halfObjects).toEqual([]);
  expect(figures.runningAfterRestart).toEqual([]);
  expect(figures.orphans).toEqual([]);
  expect(figures.tempFiles).toEqual([]);
});
