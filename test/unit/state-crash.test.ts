/**
 * Two crash/race leftovers of the state store that fault injection can hit (issue 8): a kill
 * during an update leaves `.config.json.*.tmp` inside the object's directory, and an update
 * racing a removal must not bring the removed object back as a directory with one file.
 */
import { existsSync, mkdtempSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ObjectDirectory } from '../../src/drivers/storage/state-store';

let root: string;
beforeEach(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'paddock-state-crash-'));
});
afterEach(() => fs.rm(root, { recursive: true, force: true }));

test("sweep removes an update's temp file left inside an object's directory, and nothing else", async () => {
  const store = new ObjectDirectory<{ n: number }>(root);
  await store.create('a', { n: 1 });
  await fs.writeFile(path.join(root, 'a', '.config.json.0123456789ab.tmp'), '{"n":');
  await fs.writeFile(path.join(root, 'a', 'keep.log'), 'x');
  await fs.writeFile(path.join(root, 'plain-file'), 'x');
  await store.sweep();
  expect((await fs.readdir(path.join(root, 'a'))).sort()).toEqual(['config.json', 'keep.log']);
  expect(await store.read('a')).toEqual({ n: 1 });
  expect(existsSync(path.join(root, 'plain-file'))).toBe(true);
});

test('an update after (or racing) remove fails instead of recreating the object', async () => {
  const store = new ObjectDirectory<{ n: number }>(root);
  await store.create('gone', { n: 1 });
  await store.remove('gone');
  await expect(store.write('gone', { n: 2 })).rejects.toMatchObject({ code: 'ENOENT' });
  expect(await store.ids()).toEqual([]);
});
