/**
 * A sandbox to reproduce what the compat run reports, by hand: the seeded registry, a Paddock
 * daemon and the reference dockerd, side by side, until Ctrl-C.
 *
 *   npx tsc -p docker-compat-tests && node dist/docker-compat-tests/sandbox.js
 *   # then, in another shell: eval "$(cat /tmp/paddock-compat-sandbox.env)"
 *   #   DOCKER_HOST=$PADDOCK docker run --rm $REG/busybox:latest echo hi
 *   #   DOCKER_HOST=$DOCKERD docker run --rm $REG/busybox:latest echo hi
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestRegistry } from '../test/helpers/registry';
import { seedTestImages } from '../test/helpers/seed-images';
import { startDockerdTarget, startPaddockTarget } from './lib/target';

async function main(): Promise<void> {
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-compat-sandbox-'));
  const reg = await startTestRegistry();
  const images = await seedTestImages(reg);
  const opts = { runDir, registry: reg.host, images };
  const paddock = await startPaddockTarget(opts);
  const dockerd = await startDockerdTarget(opts);
  const envFile = path.join(os.tmpdir(), 'paddock-compat-sandbox.env');
  writeFileSync(
    envFile,
    [`export REG=${reg.host}`, `export PADDOCK=${paddock.dockerHost}`, `export DOCKERD=${dockerd.dockerHost}`, `export DOCKER_CONFIG=${paddock.cliConfigDir}`, ''].join('\n'),
  );
  console.log(`registry ${reg.host}\npaddock  ${paddock.dockerHost} (log: ${path.join(paddock.workDir, 'daemon.log')})\ndockerd  ${dockerd.dockerHost}\nenv in ${envFile}; Ctrl-C to stop`);
  const stop = async () => {
    await Promise.allSettled([paddock.stop(), dockerd.stop()]);
    await reg.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
