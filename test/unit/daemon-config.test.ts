/**
 * Daemon flags and config file (flags win), the loopback-only rule for plain TCP, and the
 * accelerator choice with a fake host (kvm_pvm here must mean TCG).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_SOCKET, parseDaemonArgs, validateHost, type DaemonConfig } from '../../src/config';
import { chooseAccelerator, type AcceleratorHost } from '../../src/drivers/hypervisor/accelerator';
import { PaddockError } from '../../src/errors';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const parse = (argv: string[]) => {
  const c = parseDaemonArgs(argv);
  if (c === 'help') throw new Error('unexpected help');
  return c;
};
const configFile = (value: unknown) => {
  const file = path.join(dir, 'daemon.json');
  writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
};

describe('parseDaemonArgs', () => {
  it('has dockerd-like defaults', () => {
    const c = parse([]);
    expect(c).toMatchObject<Partial<DaemonConfig>>({
      hosts: [DEFAULT_SOCKET],
      dataRoot: '/var/lib/paddock',
      execRoot: '/run/paddock',
      insecureRegistries: [],
      logLevel: 'info',
      hypervisor: 'qemu',
      guestKernel: 'paddock',
      defaultMemoryMiB: 128,
    });
    expect(DEFAULT_SOCKET).toBe('unix:///run/paddock.sock');
    // The source root is the repository (it holds kernel/ and rootfs-builder/).
    expect(path.isAbsolute(c.sourceRoot)).toBe(true);
  });

  it('answers help for -h and --help', () => {
    expect(parseDaemonArgs(['-h'])).toBe('help');
    expect(parseDaemonArgs(['--help'])).toBe('help');
  });

  it('collects repeated -H/--host and --insecure-registry in order', () => {
    const c = parse(['-H', 'unix:///tmp/a.sock', '--host', 'tcp://127.0.0.1:2375', '-H', 'unix:///tmp/b.sock', '--insecure-registry', 'r1:5000', '--insecure-registry', '10.0.0.0/8']);
    expect(c.hosts).toEqual(['unix:///tmp/a.sock', 'tcp://127.0.0.1:2375', 'unix:///tmp/b.sock']);
    expect(c.insecureRegistries).toEqual(['r1:5000', '10.0.0.0/8']);
  });

  it('takes every flag', () => {
    const c = parse(['--data-root', '/d', '--exec-root', '/e', '--log-level', 'debug', '--hypervisor', 'xen', '--guest-kernel', 'debian-cloud']);
    expect(c).toMatchObject({ dataRoot: '/d', execRoot: '/e', logLevel: 'debug', hypervisor: 'xen', guestKernel: 'debian-cloud' });
  });

  it('merges a config file under the flags: the file fills gaps, flags win', () => {
    const file = configFile({
      hosts: ['unix:///from/file.sock'],
      'data-root': '/file/data',
      'exec-root': '/file/exec',
      'insecure-registries': ['file-reg:5000'],
      'log-level': 'warn',
      'default-memory-mib': 256,
    });
    const c = parse(['--config-file', file, '--data-root', '/flag/data', '--log-level', 'error']);
    expect(c.hosts).toEqual(['unix:///from/file.sock']);
    expect(c.dataRoot).toBe('/flag/data');
    expect(c.execRoot).toBe('/file/exec');
    expect(c.insecureRegistries).toEqual(['file-reg:5000']);
    expect(c.logLevel).toBe('error');
    expect(c.defaultMemoryMiB).toBe(256);
    // -H on the command line replaces the file's hosts, it does not add to them.
    expect(parse(['--config-file', file, '-H', 'unix:///flag.sock']).hosts).toEqual(['unix:///flag.sock']);
  });

  it('refuses an unreadable or malformed config file as invalid', () => {
    expect(() => parse(['--config-file', path.join(dir, 'missing.json')])).toThrow(/cannot read config file .*missing\.json/);
    const bad = configFile('{ not json');
    let err: unknown;
    try {
      parse(['--config-file', bad]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PaddockError);
    expect((err as PaddockError).kind).toBe('invalid');
  });

  it('refuses unknown log levels and guest kernels, from flags or the file', () => {
    expect(() => parse(['--log-level', 'loud'])).toThrow('unknown log level loud');
    expect(() => parse(['--guest-kernel', 'windows'])).toThrow('unknown guest kernel windows');
    expect(() => parse(['--config-file', configFile({ 'log-level': 'trace' })])).toThrow('unknown log level trace');
  });

  it('refuses unknown flags', () => {
    expect(() => parse(['--storage-driver', 'vfs'])).toThrow();
  });

  it('validates every host, including those from the file', () => {
    expect(() => parse(['-H', 'tcp://0.0.0.0:2375'])).toThrow(/refusing to listen on tcp:\/\/0\.0\.0\.0:2375 without TLS/);
    expect(() => parse(['--config-file', configFile({ hosts: ['unix:///ok.sock', 'tcp://192.168.1.5:2375'] })])).toThrow(/refusing/);
  });
});

describe('validateHost', () => {
  it.each(['unix:///run/paddock.sock', 'unix:///tmp/x y.sock', 'tcp://127.0.0.1:2375', 'tcp://127.1.2.3:1', 'tcp://localhost:2375', 'tcp://[::1]:2375'])(
    'accepts %s',
    (host) => {
      expect(() => validateHost(host)).not.toThrow();
    },
  );

  it.each(['tcp://0.0.0.0:2375', 'tcp://10.0.0.1:2375', 'tcp://example.com:2375', 'tcp://[::]:2375', 'tcp://[fe80::1]:2375', 'tcp://128.0.0.1:2375'])(
    'refuses plain TCP off loopback: %s',
    (host) => {
      expect(() => validateHost(host)).toThrow(`refusing to listen on ${host} without TLS: use a loopback address or a unix socket`);
    },
  );

  it.each(['http://127.0.0.1:2375', 'tcp://127.0.0.1', 'tcp://127.0.0.1:port', '/run/paddock.sock', 'fd://'])('refuses malformed %s', (host) => {
    expect(() => validateHost(host)).toThrow(`invalid host ${host}: use unix:///path or tcp://HOST:PORT`);
  });
});

describe('chooseAccelerator', () => {
  function fakeHost(opts: { env?: NodeJS.ProcessEnv; kvm?: boolean; modules?: string[] }): AcceleratorHost & { asked: string[] } {
    const asked: string[] = [];
    return {
      asked,
      env: opts.env ?? {},
      canOpenKvm: async () => {
        asked.push('kvm');
        return opts.kvm ?? false;
      },
      hasModule: async (name) => {
        asked.push(`module:${name}`);
        return (opts.modules ?? []).includes(name);
      },
    };
  }

  it('obeys PADDOCK_ACCEL without looking at the host', async () => {
    for (const forced of ['kvm', 'tcg'] as const) {
      const host = fakeHost({ env: { PADDOCK_ACCEL: forced }, kvm: forced === 'tcg', modules: ['kvm_pvm'] });
      expect(await chooseAccelerator(host)).toEqual({ accelerator: forced, reason: `forced by PADDOCK_ACCEL=${forced}`, needsProbe: false });
      expect(host.asked).toEqual([]);
    }
  });

  it('ignores an unknown PADDOCK_ACCEL value', async () => {
    const choice = await chooseAccelerator(fakeHost({ env: { PADDOCK_ACCEL: 'hvf' }, kvm: false }));
    expect(choice.accelerator).toBe('tcg');
  });

  it('uses TCG without /dev/kvm', async () => {
    const host = fakeHost({ kvm: false, modules: ['kvm_pvm'] });
    expect(await chooseAccelerator(host)).toEqual({ accelerator: 'tcg', reason: '/dev/kvm is missing or not accessible', needsProbe: false });
    expect(host.asked).toEqual(['kvm']);
  });

  it('uses TCG when /dev/kvm comes from kvm_pvm', async () => {
    const choice = await chooseAccelerator(fakeHost({ kvm: true, modules: ['kvm', 'kvm_pvm'] }));
    expect(choice.accelerator).toBe('tcg');
    expect(choice.needsProbe).toBe(false);
    expect(choice.reason).toMatch(/kvm_pvm/);
  });

  it('chooses KVM where /dev/kvm is usable, pending a boot probe', async () => {
    const host = fakeHost({ kvm: true, modules: ['kvm', 'kvm_intel'] });
    expect(await chooseAccelerator(host)).toEqual({ accelerator: 'kvm', reason: '/dev/kvm is usable', needsProbe: true });
    expect(host.asked).toEqual(['kvm', 'module:kvm_pvm']);
  });
});
