/**
 * Who may reach the API (issue 8): the unix socket is root:docker 0660 as dockerd makes it;
 * TCP speaks TLS with dockerd's flags, and with --tlsverify only clients holding a certificate
 * signed by the CA get in. Certificates are made here with openssl; the clients are the real
 * docker CLI (flags and DOCKER_TLS_VERIFY/DOCKER_CERT_PATH) and Node's https for the refusals.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, promises as fs, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseDaemonArgs, type DaemonConfig } from '../../src/config';
import { createApiServer, listenApi, loadTls } from '../../src/api/server';
import { startDaemon, type RunningDaemon } from '../../src/daemon';
import { runDocker } from '../helpers/daemon';
import { repoRoot } from '../helpers/guest';

jest.setTimeout(120_000);

let certs: string;
let base: string;
let socketPath: string;
let daemon: RunningDaemon;
let tlsPort: number;

/** CA, server cert for 127.0.0.1, client cert; and a second CA with its own client (a stranger). */
function makeCertificates(dir: string): void {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ext = (name: string, text: string) => {
    require('node:fs').writeFileSync(path.join(dir, name), text);
    return name;
  };
  for (const ca of ['ca', 'rogue-ca']) {
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${ca}-key.pem`, '-out', `${ca}.pem`, '-days', '2', '-subj', `/CN=${ca}`);
  }
  const sign = (name: string, ca: string, subj: string, extFile: string) => {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', subj);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}-key.pem`, '-CAcreateserial', '-out', `${name}-cert.pem`, '-days', '2', '-extfile', extFile);
  };
  sign('server', 'ca', '/CN=paddock', ext('server.ext', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'));
  const clientExt = ext('client.ext', 'extendedKeyUsage=clientAuth\n');
  sign('client', 'ca', '/CN=client', clientExt);
  sign('stranger', 'rogue-ca', '/CN=stranger', clientExt);
  // The docker CLI's DOCKER_CERT_PATH layout.
  const cli = path.join(dir, 'cli');
  require('node:fs').mkdirSync(cli);
  for (const [from, to] of [['ca.pem', 'ca.pem'], ['client-cert.pem', 'cert.pem'], ['client-key.pem', 'key.pem']]) {
    require('node:fs').copyFileSync(path.join(dir, from), path.join(cli, to));
  }
}

const dockerGid = (() => {
  const line = readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.startsWith('docker:'));
  return line ? Number(line.split(':')[2]) : 0;
})();

beforeAll(async () => {
  certs = mkdtempSync(path.join(os.tmpdir(), 'paddock-certs-'));
  makeCertificates(certs);
  base = mkdtempSync(path.join(os.tmpdir(), 'paddock-access-'));
  socketPath = path.join(base, 'paddock.sock');
  // The flags as a user gives them, then the daemon as paddockd starts it (in-process).
  const config = parseDaemonArgs([
    '-H', `unix://${socketPath}`,
    '-H', 'tcp://127.0.0.1:0',
    '--data-root', path.join(base, 'data'),
    '--exec-root', path.join(base, 'exec'),
    '--log-level', 'warn',
    '--ip-masq=false',
    '--tlsverify',
    '--tlscacert', path.join(certs, 'ca.pem'),
    '--tlscert', path.join(certs, 'server-cert.pem'),
    '--tlskey', path.join(certs, 'server-key.pem'),
  ]) as DaemonConfig;
  daemon = await startDaemon({ ...config, sourceRoot: repoRoot });
  tlsPort = (daemon.servers[1].address() as AddressInfo).port;
});

afterAll(async () => {
  await daemon?.close();
  for (const dir of [certs, base]) if (dir?.startsWith(os.tmpdir())) await fs.rm(dir, { recursive: true, force: true });
});

const tcpHost = () => `tcp://127.0.0.1:${tlsPort}`;
const cliConfig = () => path.join(certs, 'docker-config');

/** A raw HTTPS GET /_ping with the given client identity; resolves to the status or the error. */
function ping(opts: https.RequestOptions): Promise<number | string> {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port: tlsPort, path: '/_ping', ca: readFileSync(path.join(certs, 'ca.pem')), ...opts }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
  });
}

describe('unix socket', () => {
  test('is owned by root and group docker (if it exists), mode 0660', () => {
    const st = statSync(socketPath);
    expect(st.isSocket()).toBe(true);
    expect(st.uid).toBe(0);
    expect(st.gid).toBe(dockerGid);
    expect(st.mode & 0o7777).toBe(0o660);
  });

  test("tenants' files (container layers, volumes) are out of reach of host users", () => {
    // A setuid-root binary copied into a container must not be runnable by a local user.
    for (const dir of ['containers', 'volumes', 'image']) expect(statSync(path.join(base, 'data', dir)).mode & 0o777).toBe(0o700);
  });

  test('-G names another group (or a gid); an unknown group is an error', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-sock-'));
    try {
      const server = createApiServer(daemon.router);
      await listenApi(server, `unix://${path.join(dir, 'a.sock')}`, { group: 'daemon' });
      const gid = Number(readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.startsWith('daemon:'))!.split(':')[2]);
      expect(statSync(path.join(dir, 'a.sock')).gid).toBe(gid);
      expect(statSync(path.join(dir, 'a.sock')).mode & 0o777).toBe(0o660);
      await new Promise((r) => server.close(r));
      const numeric = createApiServer(daemon.router);
      await listenApi(numeric, `unix://${path.join(dir, 'b.sock')}`, { group: '4242' });
      expect(statSync(path.join(dir, 'b.sock')).gid).toBe(4242);
      await new Promise((r) => numeric.close(r));
      await expect(listenApi(createApiServer(daemon.router), `unix://${path.join(dir, 'c.sock')}`, { group: 'no-such-group-here' })).rejects.toThrow(
        'group "no-such-group-here" not found',
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('TLS with --tlsverify', () => {
  test('docker --tlsverify with the CA and a client certificate gets in', async () => {
    const r = await runDocker(
      ['--tlsverify', '--tlscacert', path.join(certs, 'ca.pem'), '--tlscert', path.join(certs, 'client-cert.pem'), '--tlskey', path.join(certs, 'client-key.pem'), '-H', tcpHost(), 'version', '--format', '{{.Server.Os}}'],
      { dockerHost: '', configDir: cliConfig() },
    );
    expect(r).toMatchObject({ code: 0, stdout: 'linux\n' });
  });

  test('DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=dir DOCKER_HOST=tcp://… docker ps works', async () => {
    const r = await runDocker(['ps', '--format', '{{.ID}}'], {
      dockerHost: tcpHost(),
      configDir: cliConfig(),
      env: { DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: path.join(certs, 'cli') },
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  test('a client without a certificate is refused (docker CLI and a raw TLS client)', async () => {
    const r = await runDocker(['--tls', '--tlscacert', path.join(certs, 'ca.pem'), '-H', tcpHost(), 'version'], { dockerHost: '', configDir: cliConfig() });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/certificate|tls|handshake|EOF|connection reset/i);
    expect(r.stdout).not.toContain('Server:');
    expect(await ping({})).not.toBe(200);
  });

  test('a client certificate from another CA is refused; ours is accepted', async () => {
    const stranger = await ping({ cert: readFileSync(path.join(certs, 'stranger-cert.pem')), key: readFileSync(path.join(certs, 'stranger-key.pem')) });
    expect(stranger).not.toBe(200);
    const ours = await ping({ cert: readFileSync(path.join(certs, 'client-cert.pem')), key: readFileSync(path.join(certs, 'client-key.pem')) });
    expect(ours).toBe(200);
  });

  test('plain HTTP on the TLS port gets no API answer', async () => {
    const outcome = await new Promise<number | string>((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: tlsPort, path: '/_ping' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    });
    expect(outcome).not.toBe(200);
    expect(typeof outcome === 'string' || outcome >= 400).toBe(true);
    const cli = await runDocker(['-H', tcpHost(), 'version'], { dockerHost: '', configDir: cliConfig() });
    expect(cli.code).not.toBe(0);
  });
});

describe('TLS without verification (--tls)', () => {
  test('encrypts but needs no client certificate; the CLI verifies the server against the CA', async () => {
    const config = parseDaemonArgs([
      '-H', 'tcp://127.0.0.1',
      '--tls',
      '--tlscacert', path.join(certs, 'absent-ca.pem'), // not needed without --tlsverify
      '--tlscert', path.join(certs, 'server-cert.pem'),
      '--tlskey', path.join(certs, 'server-key.pem'),
    ]) as DaemonConfig;
    expect(config.hosts).toEqual(['tcp://127.0.0.1:2376']); // dockerd's default TLS port
    const server = createApiServer(daemon.router, { tls: await loadTls(config.tls!) });
    await listenApi(server, 'tcp://127.0.0.1:0');
    try {
      const port = (server.address() as AddressInfo).port;
      const r = await runDocker(['--tlsverify', '--tlscacert', path.join(certs, 'ca.pem'), '-H', `tcp://127.0.0.1:${port}`, 'version', '--format', '{{.Server.Os}}'], {
        dockerHost: '',
        configDir: cliConfig(),
      });
      expect(r).toMatchObject({ code: 0, stdout: 'linux\n' });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('what may listen where', () => {
  const tlsFlags = () => ['--tlscacert', path.join(certs, 'ca.pem'), '--tlscert', path.join(certs, 'server-cert.pem'), '--tlskey', path.join(certs, 'server-key.pem')];
  test('TCP off loopback: refused in plain HTTP and with --tls alone, allowed with --tlsverify', () => {
    expect(() => parseDaemonArgs(['-H', 'tcp://0.0.0.0:2375'])).toThrow('without TLS');
    expect(() => parseDaemonArgs(['-H', 'tcp://0.0.0.0:2376', '--tls', ...tlsFlags()])).toThrow('without --tlsverify');
    expect(() => parseDaemonArgs(['-H', 'tcp://10.1.2.3:2376', '--tls=true', ...tlsFlags()])).toThrow('without --tlsverify');
    const ok = parseDaemonArgs(['-H', 'tcp://0.0.0.0:2376', '--tlsverify', ...tlsFlags()]) as DaemonConfig;
    expect(ok.tls).toMatchObject({ verify: true, caCert: path.join(certs, 'ca.pem') });
    expect(() => parseDaemonArgs(['-H', 'tcp://0.0.0.0:2376', '--tlsverify=false', '--tls=false'])).toThrow('without TLS');
  });

  test('TLS file defaults follow DOCKER_CERT_PATH; a missing key names the file', async () => {
    const saved = process.env.DOCKER_CERT_PATH;
    process.env.DOCKER_CERT_PATH = '/nonexistent-certs';
    try {
      const c = parseDaemonArgs(['--tlsverify']) as DaemonConfig;
      expect(c.tls).toEqual({ verify: true, caCert: '/nonexistent-certs/ca.pem', cert: '/nonexistent-certs/cert.pem', key: '/nonexistent-certs/key.pem' });
      await expect(loadTls(c.tls!)).rejects.toThrow('could not read TLS key "/nonexistent-certs/key.pem"');
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CERT_PATH;
      else process.env.DOCKER_CERT_PATH = saved;
    }
  });
});
