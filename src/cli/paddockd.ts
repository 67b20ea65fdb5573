#!/usr/bin/env node
/** paddockd: the Paddock daemon. */
import { parseDaemonArgs, usage } from '../config';
import { startDaemon } from '../daemon';
import { logger } from '../util/log';

const log = logger('paddockd');

async function main(): Promise<void> {
  let config;
  try {
    config = parseDaemonArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`paddockd: ${(err as Error).message}\n\n${usage}`);
    process.exit(2);
  }
  if (config === 'help') {
    process.stdout.write(usage);
    return;
  }
  const daemon = await startDaemon(config);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    await daemon.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

// A bug in one request must not take every container down with the daemon.
process.on('uncaughtException', (err) => log.error('uncaught exception', { error: err.stack ?? String(err) }));
process.on('unhandledRejection', (err) => log.error('unhandled rejection', { error: (err as Error)?.stack ?? String(err) }));

main().catch((err) => {
  log.error('failed to start', { error: (err as Error).message });
  process.exit(1);
});
