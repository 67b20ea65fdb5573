/**
 * The network namespace paddockd owns. Every piece of VM networking -- the switch's gateway taps,
 * their addresses, NAT, the port proxy's connections -- lives in it, so the host's own
 * interfaces, routes and firewall rules are never touched, and deleting the namespace on
 * shutdown removes all of it at once.
 */
import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { promisify } from 'node:util';
import { invalid, unavailable } from '../../errors';

const exec = promisify(execFile);

export async function runCommand(binary: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await exec(binary, args, { maxBuffer: 4 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw unavailable(`${binary} ${args.join(' ')}: ${(e.stderr || e.message).trim()}`);
  }
}

/**
 * Namespaces of daemons that died (kill -9, a crash) with `prefix` in their name and nothing
 * running in them any more: a live daemon's namespace always holds its switch.
 */
async function sweepStale(prefix: string): Promise<void> {
  const list = await runCommand('ip', ['netns', 'list']).catch(() => '');
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0];
    if (!name?.startsWith(prefix)) continue;
    // A daemon starting right now has not got its switch running yet: leave young ones alone.
    const age = Date.now() - (statSync(`/run/netns/${name}`, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
    if (age < 60_000) continue;
    const pids = await runCommand('ip', ['netns', 'pids', name]).catch(() => 'unknown');
    if (pids.trim() === '') await runCommand('ip', ['netns', 'delete', name]).catch(() => undefined);
  }
}

export class NetworkNamespace {
  private constructor(readonly name: string) {}

  get path(): string {
    return `/run/netns/${this.name}`;
  }

  /** Creates the namespace; one left by a crashed daemon (whose VMs died with it) is replaced. */
  static async create(name: string): Promise<NetworkNamespace> {
    if (!/^[a-z0-9][a-z0-9-]{0,39}$/.test(name)) throw invalid(`invalid network namespace name ${name}`);
    const ns = new NetworkNamespace(name);
    await sweepStale(name.replace(/-[^-]*$/, '-'));
    if (existsSync(ns.path)) await runCommand('ip', ['netns', 'delete', name]).catch(() => undefined);
    await runCommand('ip', ['netns', 'add', name]);
    await ns.ip(['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** `ip` inside the namespace. */
  ip(args: string[]): Promise<string> {
    return runCommand('ip', ['-n', this.name, ...args]);
  }

  /** A program run inside the namespace (nsenter execs it: the caller stays its parent). */
  command(binary: string, args: string[]): [string, string[]] {
    return ['nsenter', [`--net=${this.path}`, '--', binary, ...args]];
  }

  run(binary: string, args: string[]): Promise<string> {
    const [cmd, argv] = this.command(binary, args);
    return runCommand(cmd, argv);
  }

  /** A /proc/sys/net value: written from inside, since those files are per namespace. */
  sysctl(key: string, value: string): Promise<string> {
    return this.run('sysctl', ['-q', '-w', `${key}=${value}`]);
  }

  async destroy(): Promise<void> {
    if (existsSync(this.path)) await runCommand('ip', ['netns', 'delete', this.name]).catch(() => undefined);
  }
}
