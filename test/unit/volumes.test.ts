/** Volume store and the parsing of -v / --mount / --tmpfs / VOLUME into mount points. */
import { mkdtempSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveMounts } from '../../src/engine/containers/mounts';
import type { ContainerRecord, HostConfig } from '../../src/engine/containers/types';
import { EventBus } from '../../src/engine/events';
import { VolumeService } from '../../src/engine/volumes/volume-service';

let root: string;
let volumes: VolumeService;
let events: EventBus;

beforeEach(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'paddock-volumes-'));
  events = new EventBus();
  volumes = await VolumeService.open({ root: path.join(root, 'volumes'), events });
});

afterEach(() => fs.rm(root, { recursive: true, force: true }));

const noContainer = (ref: string): ContainerRecord => {
  throw new Error(`no container ${ref}`);
};

describe('VolumeService', () => {
  test('creates a directory per volume, lists, filters and survives a reopen', async () => {
    const v = await volumes.create({ Name: 'data', Labels: { team: 'a' } });
    expect(v).toMatchObject({ Name: 'data', Driver: 'local', Scope: 'local', Labels: { team: 'a' } });
    expect((await fs.stat(v.Mountpoint)).isDirectory()).toBe(true);
    await volumes.create({ Name: 'other' });
    expect(volumes.list({ label: ['team=a'] }).map((x) => x.Name)).toEqual(['data']);
    expect(() => volumes.list({ colour: ['x'] })).toThrow("invalid filter 'colour'");
    const reopened = await VolumeService.open({ root: path.join(root, 'volumes'), events });
    expect(reopened.get('data').Labels).toEqual({ team: 'a' });
  });

  test('creating an existing name returns it; bad names and drivers are refused', async () => {
    const a = await volumes.create({ Name: 'same' });
    expect(await volumes.create({ Name: 'same' })).toBe(a);
    await expect(volumes.create({ Name: 'bad/name' })).rejects.toThrow(/includes invalid characters/);
    await expect(volumes.create({ Name: 'x1', Driver: 'nfs' })).rejects.toThrow('plugin "nfs" not found');
  });

  test('in-use volumes cannot be removed; prune takes only unused anonymous ones by default', async () => {
    await volumes.create({ Name: 'named' });
    const anon = await volumes.create({}, true);
    const used = await volumes.create({}, true);
    volumes.setUsageProbe((name) => (name === used.Name ? ['c1'] : []));
    await expect(volumes.remove(used.Name)).rejects.toMatchObject({ kind: 'conflict' });
    expect((await volumes.prune()).VolumesDeleted).toEqual([anon.Name]);
    expect(volumes.find('named')).toBeDefined();
    expect((await volumes.prune({ all: ['true'] })).VolumesDeleted).toEqual(['named']);
    await expect(volumes.remove('ghost')).rejects.toMatchObject({ kind: 'not-found', message: 'get ghost: no such volume' });
  });
});

describe('resolveMounts', () => {
  test('an absolute source is a bind mount, a name a named volume, a bare path an anonymous volume', async () => {
    const hostDir = path.join(root, 'host');
    const points = await resolveMounts(
      { Image: 'x', Volumes: { '/anon': {} }, HostConfig: { Binds: [`${hostDir}:/h:ro`, 'named:/n'] } },
      null,
      volumes,
      noContainer,
    );
    const byDest = Object.fromEntries(points.map((p) => [p.Destination, p]));
    expect(byDest['/h']).toMatchObject({ Type: 'bind', Source: hostDir, RW: false });
    expect((await fs.stat(hostDir)).isDirectory()).toBe(true); // created, as dockerd does for -v
    expect(byDest['/n']).toMatchObject({ Type: 'volume', Name: 'named', RW: true });
    expect(byDest['/anon']).toMatchObject({ Type: 'volume', RW: true });
    expect(volumes.find(byDest['/anon'].Name!)?.Anonymous).toBe(true);
  });

  test('--mount and --tmpfs; a later source for the same path wins over an image VOLUME', async () => {
    const points = await resolveMounts(
      {
        Image: 'x',
        HostConfig: {
          Mounts: [{ Type: 'tmpfs', Target: '/t', TmpfsOptions: { SizeBytes: 1024, Mode: 0o1777 } }],
          Tmpfs: { '/run': 'size=1m' },
          Binds: ['keep:/vol'],
        },
      },
      { '/vol': {} },
      volumes,
      noContainer,
    );
    expect(points.find((p) => p.Destination === '/t')).toMatchObject({ Type: 'tmpfs', TmpfsOptions: 'size=1024,mode=1777' });
    expect(points.find((p) => p.Destination === '/run')).toMatchObject({ Type: 'tmpfs', TmpfsOptions: 'size=1m' });
    expect(points.filter((p) => p.Destination === '/vol')).toEqual([expect.objectContaining({ Name: 'keep' })]);
  });

  test('bad specifications get dockerd-style errors', async () => {
    const run = (hc: HostConfig) => resolveMounts({ Image: 'x', HostConfig: hc }, null, volumes, noContainer);
    await expect(run({ Binds: ['justone'] })).rejects.toThrow("invalid volume specification: 'justone'");
    const notCreated = path.join(root, 'never-created');
    await expect(run({ Binds: [`${notCreated}:relative`] })).rejects.toThrow('mount path must be absolute');
    await expect(fs.stat(notCreated)).rejects.toThrow(); // refused before touching the host
    await expect(run({ Mounts: [{ Type: 'bind', Source: '/no/such/dir', Target: '/x' }] })).rejects.toThrow('bind source path does not exist');
    await expect(run({ Mounts: [{ Type: 'npipe', Target: '/x' }] })).rejects.toThrow('mount type unknown');
  });

  test('any number of volumes and binds is accepted (they share one directory into the VM)', async () => {
    const binds = [1, 2, 3, 4, 5, 6].map((i) => `v${i}:/m${i}`);
    expect(await resolveMounts({ Image: 'x', HostConfig: { Binds: binds } }, null, volumes, noContainer)).toHaveLength(6);
  });
});
