/**
 * A reduced run of bench/load.ts (the full one is 50 clients × 200 requests): parallel clients
 * mixing list/inspect/create/start/stop/rm on the paddockd binary's socket. No 5xx, no dropped
 * connection, and the daemon's memory levels off (the second half of the run adds little).
 */
import { loadAgainstFreshDaemon } from '../../bench/load';

jest.setTimeout(300_000);

test('20 clients × 60 requests: zero 5xx, zero transport errors, bounded RSS growth', async () => {
  const seed = Number(process.env.PADDOCK_LOAD_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const f = await loadAgainstFreshDaemon({ clients: 20, requests: 60, maxStarts: 2, seed });
  console.log(`load figures (seed ${seed}):\n${JSON.stringify(f, null, 1)}`);
  expect(f.fiveXX).toEqual([]);
  expect(f.transportErrors).toEqual([]);
  expect(f.requests).toBe(20 * 60);
  // Every answer is one the mix expects (404/304/409 come from clients racing each other).
  for (const status of Object.keys(f.statuses)) expect(['200', '201', '204', '304', '404', '409']).toContain(status);
  const MiB = 1024;
  expect(f.rssKiB.end - f.rssKiB.middle).toBeLessThan(48 * MiB);
  expect(f.rssKiB.end - f.rssKiB.start).toBeLessThan(150 * MiB);
});
