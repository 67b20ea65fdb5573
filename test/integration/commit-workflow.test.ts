/**
 * The seed's workflow end to end with the docker CLI: pull → run (the container writes a file and
 * deletes one) → commit → run the new image and see both changes → push → pull it back.
 */
import { startTestDaemon, type TestDaemon } from '../helpers/daemon';
import { startTestRegistry, type TestRegistry } from '../helpers/registry';
import { seedTestImages } from '../helpers/seed-images';

jest.setTimeout(180_000);

let td: TestDaemon;
let registry: TestRegistry;
let busybox: string;

beforeAll(async () => {
  registry = await startTestRegistry();
  busybox = (await seedTestImages(registry, ['busybox'])).busybox.ref;
  td = await startTestDaemon();
});

afterAll(async () => {
  await td?.close();
  await registry?.stop();
});

test('pull, run, commit, run the commit, push, pull back', async () => {
  expect((await td.docker(['pull', busybox])).code).toBe(0);
  const run = await td.docker(['run', '--name', 'writer', busybox, 'sh', '-c', 'echo committed > /greeting && rm /bin/vi']);
  expect(run.code).toBe(0);
  const diff = await td.docker(['diff', 'writer']);
  expect(diff.stdout).toContain('A /greeting');
  expect(diff.stdout).toContain('D /bin/vi');

  const target = `${registry.host}/committed:v1`;
  const commit = await td.docker(['commit', '-c', 'CMD ["cat", "/greeting"]', '-m', 'made by a test', 'writer', target]);
  expect(commit.code).toBe(0);
  expect(commit.stdout.trim()).toMatch(/^sha256:[0-9a-f]{64}$/);

  const fromCommit = await td.docker(['run', '--rm', target]);
  expect(fromCommit).toMatchObject({ code: 0, stdout: 'committed\n' });
  expect((await td.docker(['run', '--rm', target, 'ls', '/bin/vi'])).code).not.toBe(0);
  const history = await td.docker(['history', '--format', '{{.Comment}}', target]);
  expect(history.stdout).toContain('made by a test');

  expect((await td.docker(['push', target])).code).toBe(0);
  expect((await td.docker(['rm', 'writer'])).code).toBe(0);
  expect((await td.docker(['rmi', target])).code).toBe(0);
  expect((await td.docker(['pull', target])).code).toBe(0);
  expect((await td.docker(['run', '--rm', target])).stdout).toBe('committed\n');
});
