/**
 * A seeded test registry for benchmarks and the compat harness, as a foreground process:
 *
 *   node dist/test/helpers/seed-registry.js [--port 5000] [--auth user:pass] [--with-large] [--storage DIR]
 *
 * Prints one JSON line per seeded image (a SeededImage) on stdout once everything is pushed, then
 * serves until SIGINT/SIGTERM. Progress and errors go to stderr.
 */
import { DEFAULT_SEEDS, seedTestImages, type SeedName } from './seed-images';
import { startTestRegistry, type StartRegistryOptions } from './registry';

interface CliOptions extends StartRegistryOptions {
  withLarge: boolean;
}

const USAGE = 'usage: seed-registry [--port N] [--auth user:pass] [--with-large] [--storage DIR]';

export function parseArgs(argv: string[]): CliOptions {
  const opts: CliOptions = { withLarge: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value\n${USAGE}`);
      return v;
    };
    switch (arg) {
      case '--port': {
        const port = Number(value());
        if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port\n${USAGE}`);
        opts.port = port;
        break;
      }
      case '--auth': {
        const v = value();
        const colon = v.indexOf(':');
        if (colon <= 0) throw new Error(`--auth wants user:pass\n${USAGE}`);
        opts.auth = { username: v.slice(0, colon), password: v.slice(colon + 1) };
        break;
      }
      case '--storage':
        opts.storageDir = value();
        break;
      case '--with-large':
        opts.withLarge = true;
        break;
      case '-h':
      case '--help':
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
      default:
        throw new Error(`unknown argument ${arg}\n${USAGE}`);
    }
  }
  return opts;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const registry = await startTestRegistry(opts);
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`seed-registry: ${signal}, stopping ${registry.host}\n`);
    await registry.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  try {
    const which: SeedName[] = [...DEFAULT_SEEDS, ...(opts.withLarge ? (['large'] as const) : [])];
    const images = await seedTestImages(registry, which);
    for (const name of which) process.stdout.write(`${JSON.stringify(images[name])}\n`);
    process.stderr.write(`seed-registry: ${registry.host} seeded in ${Date.now() - started} ms; Ctrl-C to stop\n`);
  } catch (err) {
    await registry.stop();
    throw err;
  }
  // The registry child keeps the event loop alive; the signal handlers end it.
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`seed-registry: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
