/**
 * Durable state (atomic JSON files, object directories with crash leftovers) and the json-file
 * container logs (line splitting as dockerd's copier does, and the reader behind `docker logs`).
 */
import { promises as fs, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  JsonLogWriter,
  matches,
  nanoTimestamp,
  readLogEntries,
  timestampNanos,
  type LogEntry,
} from '../../src/engine/containers/json-log';
import { ObjectDirectory, readJson, writeFileAtomic, writeJsonAtomic } from '../../src/drivers/storage/state-store';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-state-'));
});
afterEach(() => fs.rm(dir, { recursive: true, force: true }));

describe('writeFileAtomic', () => {
  it('creates parent directories, writes with mode 0600 and leaves no temp file', async () => {
    const file = path.join(dir, 'a/b/state.json');
    await writeFileAtomic(file, 'one');
    expect(readFileSync(file, 'utf8')).toBe('one');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    await writeFileAtomic(file, Buffer.from('two'), 0o644);
    expect(readFileSync(file, 'utf8')).toBe('two');
    expect(readdirSync(path.dirname(file))).toEqual(['state.json']);
  });

  it('lets a concurrent reader see only the old or the new content, never a mix', async () => {
    const file = path.join(dir, 'big.json');
    const size = 512 * 1024;
    await writeFileAtomic(file, 'A'.repeat(size));
    let writing = true;
    const seen = new Set<string>();
    const reader = (async () => {
      while (writing) {
        const text = await fs.readFile(file, 'utf8');
        seen.add(text.length === size && /^(A+|B+|C+)$/.test(text) ? text[0] : `torn:${text.length}`);
      }
    })();
    for (const letter of ['B', 'C', 'B', 'C', 'B']) await writeFileAtomic(file, letter.repeat(size));
    writing = false;
    await reader;
    expect([...seen].filter((s) => s.startsWith('torn'))).toEqual([]);
    expect(readFileSync(file, 'utf8')[0]).toBe('B');
  });

  it('keeps the old file and removes its temp file when the rename fails', async () => {
    const target = path.join(dir, 'occupied');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'keep'), 'k');
    await expect(writeFileAtomic(target, 'new')).rejects.toThrow();
    expect(readFileSync(path.join(target, 'keep'), 'utf8')).toBe('k');
    expect(readdirSync(dir)).toEqual(['occupied']);
  });

  it('readJson: undefined for a missing file, throws for a corrupt one', async () => {
    expect(await readJson(path.join(dir, 'missing.json'))).toBeUndefined();
    await writeJsonAtomic(path.join(dir, 'ok.json'), { a: [1, 2] });
    expect(await readJson(path.join(dir, 'ok.json'))).toEqual({ a: [1, 2] });
    await fs.writeFile(path.join(dir, 'bad.json'), '{"a":');
    await expect(readJson(path.join(dir, 'bad.json'))).rejects.toThrow(SyntaxError);
  });
});

describe('ObjectDirectory', () => {
  interface Obj {
    name: string;
    n: number;
  }
  const objects = () => new ObjectDirectory<Obj>(path.join(dir, 'containers'));

  it('creates, reads, rewrites and lists objects', async () => {
    const store = objects();
    expect(await store.ids()).toEqual([]);
    const created = await store.create('abc', { name: 'a', n: 1 });
    expect(created).toBe(path.join(dir, 'containers/abc'));
    expect(JSON.parse(readFileSync(path.join(created, 'config.json'), 'utf8'))).toEqual({ name: 'a', n: 1 });
    await store.create('def', { name: 'd', n: 2 });
    await store.write('abc', { name: 'a', n: 3 });
    expect(await store.read('abc')).toEqual({ name: 'a', n: 3 });
    expect(await store.read('nope')).toBeUndefined();
    expect((await store.ids()).sort()).toEqual(['abc', 'def']);
    // Nothing half-made is left next to them.
    expect(readdirSync(store.root).sort()).toEqual(['abc', 'def']);
  });

  it('uses its own file name', async () => {
    const store = new ObjectDirectory<Obj>(path.join(dir, 'x'), 'state.json');
    await store.create('one', { name: 'o', n: 1 });
    expect(readdirSync(path.join(dir, 'x/one'))).toEqual(['state.json']);
  });

  it('refuses to create an id that exists, keeping the original', async () => {
    const store = objects();
    await store.create('abc', { name: 'first', n: 1 });
    await expect(store.create('abc', { name: 'second', n: 2 })).rejects.toThrow();
    expect(await store.read('abc')).toEqual({ name: 'first', n: 1 });
    expect(await store.ids()).toEqual(['abc']);
  });

  it('removes objects entirely, and a missing one quietly', async () => {
    const store = objects();
    await store.create('abc', { name: 'a', n: 1 });
    await fs.writeFile(path.join(store.dirOf('abc'), 'extra.log'), 'x');
    await store.remove('abc');
    await store.remove('abc');
    expect(readdirSync(store.root)).toEqual([]);
  });

  it('sweeps leftovers of interrupted creations and removals, and nothing else', async () => {
    const store = objects();
    await store.create('live', { name: 'l', n: 1 });
    const root = store.root;
    await fs.mkdir(path.join(root, '.half.1a2b.creating'));
    await fs.writeFile(path.join(root, '.half.1a2b.creating/config.json'), '{"name":');
    await fs.mkdir(path.join(root, '.gone.3c4d.removing/deep'), { recursive: true });
    await fs.writeFile(path.join(root, '.config.json.beef.tmp'), 'partial');
    await fs.writeFile(path.join(root, '.keepme'), 'not ours');
    expect(await store.ids()).toEqual(['live']);
    await store.sweep();
    expect(readdirSync(root).sort()).toEqual(['.keepme', 'live']);
    expect(await store.read('live')).toEqual({ name: 'l', n: 1 });
    await new ObjectDirectory(path.join(dir, 'never-made')).sweep();
  });

  it('refuses ids that could leave the directory', () => {
    const store = objects();
    for (const bad of ['../x', '.hidden', 'a/b', '', '-x']) expect(() => store.dirOf(bad)).toThrow(`bad object id ${bad}`);
    expect(store.dirOf('sha256:abc_1.2-3')).toBe(path.join(store.root, 'sha256:abc_1.2-3'));
  });
});

describe('JsonLogWriter', () => {
  const file = () => path.join(dir, 'c-json.log');
  const lines = (): LogEntry[] =>
    readFileSync(file(), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));

  it('writes one entry per line, keeping the newline, per stream', async () => {
    const w = new JsonLogWriter(file());
    await w.init();
    w.write('stdout', 'one\ntwo\n');
    w.write('stderr', Buffer.from('err\n'));
    await w.close();
    expect(lines().map((e) => [e.stream, e.log])).toEqual([
      ['stdout', 'one\n'],
      ['stdout', 'two\n'],
      ['stderr', 'err\n'],
    ]);
    for (const e of lines()) expect(e.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
  });

  it('joins a line split across writes, separately for stdout and stderr', async () => {
    const w = new JsonLogWriter(file());
    w.write('stdout', 'hel');
    w.write('stderr', 'war');
    w.write('stdout', 'lo\nwor');
    w.write('stderr', 'ning\n');
    w.write('stdout', 'ld\n');
    await w.close();
    expect(lines().map((e) => [e.stream, e.log])).toEqual([
      ['stdout', 'hello\n'],
      ['stderr', 'warning\n'],
      ['stdout', 'world\n'],
    ]);
  });

  it('flushes an unterminated line at the end', async () => {
    const w = new JsonLogWriter(file());
    w.write('stdout', 'a\nno newline');
    await w.close();
    expect(lines().map((e) => e.log)).toEqual(['a\n', 'no newline']);
  });

  it('cuts a long line without newline into 16 KiB pieces', async () => {
    const w = new JsonLogWriter(file());
    w.write('stdout', 'x'.repeat(40_000));
    // Two full pieces are out before the end; the rest waits for more output.
    await new Promise((r) => setImmediate(r));
    w.write('stdout', 'y\n');
    await w.close();
    expect(lines().map((e) => e.log.length)).toEqual([16384, 16384, 40_000 - 2 * 16384 + 2]);
    expect(lines()[2].log.endsWith('xy\n')).toBe(true);
  });

  it('reports each entry with its file offset, and continues an existing file', async () => {
    await fs.writeFile(file(), '{"log":"old\\n","stream":"stdout","time":"2024-01-01T00:00:00.000000000Z"}\n');
    const w = new JsonLogWriter(file());
    await w.init();
    const existing = statSync(file()).size;
    expect(w.offset).toBe(existing);
    const offsets: number[] = [];
    w.on('entry', (_e: LogEntry, at: number) => offsets.push(at));
    w.write('stdout', 'a\nb\n');
    await w.close();
    expect(offsets[0]).toBe(existing);
    expect(w.offset).toBe(statSync(file()).size);
    const text = readFileSync(file(), 'utf8');
    expect(text.slice(offsets[1]).startsWith('{"log":"b\\n"')).toBe(true);
  });

  // dockerd's log copier splits bytes at '\n' before decoding: a UTF-8 character cut between two
  // reads of the process's output still reaches the log whole. Here each chunk is decoded alone.
  test('keeps a UTF-8 character split across writes', async () => {
    const w = new JsonLogWriter(file());
    const bytes = Buffer.from('héllo\n');
    w.write('stdout', bytes.subarray(0, 2));
    w.write('stdout', bytes.subarray(2));
    await w.close();
    expect(lines().map((e) => e.log)).toEqual(['héllo\n']);
  });
});

describe('readLogEntries', () => {
  const file = () => path.join(dir, 'log.json');
  const entry = (log: string, stream: 'stdout' | 'stderr', sec: number, frac = '000000000') =>
    JSON.stringify({ log, stream, time: `2024-01-01T00:00:${String(sec).padStart(2, '0')}.${frac}Z` }) + '\n';
  const all = { stdout: true, stderr: true };
  const T = (sec: number, ns = 0) => Date.UTC(2024, 0, 1, 0, 0, sec) * 1e6 + ns;

  beforeEach(() =>
    fs.writeFile(
      file(),
      entry('o1\n', 'stdout', 1) +
        entry('e1\n', 'stderr', 2) +
        entry('o2\n', 'stdout', 3, '500000000') +
        entry('e2\n', 'stderr', 4) +
        entry('o3\n', 'stdout', 5) +
        '{"log":"torn', // the daemon was killed mid-write
    ),
  );
  const logs = async (q: Parameters<typeof readLogEntries>[1], max?: number) => (await readLogEntries(file(), q, max)).map((e) => e.log.trim());

  it('reads every whole entry and ignores a torn last line', async () => {
    expect(await logs(all)).toEqual(['o1', 'e1', 'o2', 'e2', 'o3']);
  });

  it('selects streams', async () => {
    expect(await logs({ stdout: true, stderr: false })).toEqual(['o1', 'o2', 'o3']);
    expect(await logs({ stdout: false, stderr: true })).toEqual(['e1', 'e2']);
    expect(await logs({ stdout: false, stderr: false })).toEqual([]);
  });

  it('keeps the last N lines after filtering; 0 means none, negative means all', async () => {
    expect(await logs({ ...all, tail: 2 })).toEqual(['e2', 'o3']);
    expect(await logs({ stdout: true, stderr: false, tail: 2 })).toEqual(['o2', 'o3']);
    expect(await logs({ ...all, tail: 0 })).toEqual([]);
    expect(await logs({ ...all, tail: -1 })).toEqual(['o1', 'e1', 'o2', 'e2', 'o3']);
    expect(await logs({ ...all, tail: 100 })).toHaveLength(5);
  });

  it('filters by since and until in nanoseconds, inclusive', async () => {
    expect(await logs({ ...all, since: T(3) })).toEqual(['o2', 'e2', 'o3']);
    expect(await logs({ ...all, since: T(3, 600_000_000) })).toEqual(['e2', 'o3']);
    expect(await logs({ ...all, until: T(2) })).toEqual(['o1', 'e1']);
    expect(await logs({ ...all, since: T(2), until: T(4), tail: 1 })).toEqual(['e2']);
  });

  it('stops at maxOffset (what a follower has already been told about)', async () => {
    const firstTwo = Buffer.byteLength(entry('o1\n', 'stdout', 1) + entry('e1\n', 'stderr', 2));
    expect(await logs(all, firstTwo)).toEqual(['o1', 'e1']);
    expect(await logs(all, 0)).toEqual([]);
  });

  it('is empty for a container without a log file', async () => {
    expect(await readLogEntries(path.join(dir, 'none.json'), all)).toEqual([]);
  });

  it('timestampNanos keeps the fraction beyond milliseconds', () => {
    expect(timestampNanos('2024-01-01T00:00:03.500000000Z')).toBe(T(3, 500_000_000));
    expect(timestampNanos('2024-01-01T00:00:03Z')).toBe(T(3));
    expect(timestampNanos('2024-01-01T00:00:03.000000100Z')).toBeLessThan(timestampNanos('2024-01-01T00:00:03.000000900Z'));
    expect(timestampNanos(nanoTimestamp(new Date(T(7) / 1e6)))).toBeGreaterThanOrEqual(T(7));
    expect(matches({ log: 'x', stream: 'stdout', time: '2024-01-01T00:00:03.5Z' }, { ...all, since: T(3, 400_000_000) })).toBe(true);
  });
});
