/**
 * A Paddock daemon for the compat run, in its own process (test/helpers' startTestDaemon): if a
 * client makes the daemon crash, the runner survives to say so, and the daemon's CPU work runs
 * beside the runner's. Prints one JSON line {"dockerHost", "socketPath", "dataRoot"} when ready;
 * closes the daemon (and its VMs) on SIGTERM, SIGINT or when its stdin closes.
 *
 * Usage: node paddock-daemon.js --insecure-registry 127.0.0.1:PORT
 */
import { startTestDaemon } from '../test/helpers/daemon';

async function main(): Promise<void> {
  const insecure: string[] = [];
  for (let i = 2; i < process.argv.length; i++) {
    if (process.argv[i] === '--insecure-registry') insecure.push(process.argv[++i]);
  }
  const d = await startTestDaemon({ insecureRegistries: insecure });
  let closing = false;
  const close = async () => {
    if (closing) return;
    closing = true;
    try {
      await d.close();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', close);
  process.on('SIGINT', close);
  process.stdin.on('end', close);
  process.stdin.resume();
  process.stdout.write(`${JSON.stringify({ dockerHost: d.dockerHost, socketPath: d.socketPath, dataRoot: d.dataRoot })}\n`);
}

main().catch((err) => {
  process.stderr.write(`paddock daemon failed to start: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
