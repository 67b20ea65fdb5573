/**
 * Registry auth: challenge parsing, X-Registry-Auth decoding, and the bearer-token flow against a
 * small fake registry with a token server (password, and identity-token refresh grants).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { credentialsFrom, decodeRegistryAuthHeader, parseAuthChallenges } from '../../src/drivers/registry/auth';
import { Registry } from '../../src/drivers/registry/client';
import { isInsecureRegistry } from '../../src/drivers/registry/http';

describe('parseAuthChallenges', () => {
  it('parses a Bearer challenge with quoted, comma-holding values', () => {
    expect(
      parseAuthChallenges('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'),
    ).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' } },
    ]);
  });

  it('parses several challenges, unquoted values and escapes', () => {
    expect(parseAuthChallenges(['Basic realm="my \\"realm\\""', 'Bearer realm=https://x/token, service=x'])).toEqual([
      { scheme: 'basic', params: { realm: 'my "realm"' } },
      { scheme: 'bearer', params: { realm: 'https://x/token', service: 'x' } },
    ]);
    expect(parseAuthChallenges(undefined)).toEqual([]);
  });
});

describe('X-Registry-Auth', () => {
  const encode = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

  it('decodes base64url JSON with or without padding, as the CLI sends it', () => {
    const value = { username: 'u', password: 'p?>>', serveraddress: '127.0.0.1:5000' };
    expect(decodeRegistryAuthHeader(encode(value))).toEqual(value);
    expect(decodeRegistryAuthHeader(Buffer.from(JSON.stringify(value)).toString('base64'))).toEqual(value);
    expect(decodeRegistryAuthHeader(undefined)).toEqual({});
    expect(decodeRegistryAuthHeader('e30=')).toEqual({});
    expect(() => decodeRegistryAuthHeader(Buffer.from('{not json').toString('base64url'))).toThrow(/invalid X-Registry-Auth/);
  });

  it('takes credentials from username/password, from "auth", or an identity token', () => {
    expect(credentialsFrom({ username: 'u', password: 'p' })).toEqual({ username: 'u', password: 'p' });
    expect(credentialsFrom({ auth: Buffer.from('me:pa:ss').toString('base64') })).toEqual({ username: 'me', password: 'pa:ss' });
    expect(credentialsFrom({ identitytoken: 'refresh-me' })).toEqual({ identityToken: 'refresh-me' });
  });
});

/** A registry that wants bearer tokens from its token server (user "alice", password "pw"). */
function fakeTokenRegistry() {
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] }));
  const tokenRequests: Array<{ method: string; query: URLSearchParams; authorization?: string; body: string }> = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
      if (url.pathname === '/token') {
        tokenRequests.push({ method: req.method!, query: url.searchParams, authorization: req.headers.authorization, body });
        const form = new URLSearchParams(body);
        const okPassword = req.headers.authorization === 'Basic ' + Buffer.from('alice:pw').toString('base64');
        const okRefresh = req.method === 'POST' && form.get('grant_type') === 'refresh_token' && form.get('refresh_token') === 'rt-1';
        if (!okPassword && !okRefresh) {
          res.writeHead(401, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'incorrect username or password' }] }));
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token: 'tok-1', ...(url.searchParams.get('offline_token') ? { refresh_token: 'rt-1' } : {}) }));
        return;
      }
      if (req.headers.authorization !== 'Bearer tok-1') {
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': `Bearer realm="http://${host}/token",service="fake-registry"`,
        });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
      if (url.pathname === '/v2/') {
        res.writeHead(200);
        res.end('{}');
      } else if (url.pathname === '/v2/team/app/manifests/latest') {
        res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
        res.end(manifest);
      } else if (url.pathname.startsWith('/v2/team/app/blobs/')) {
        res.writeHead(200);
        res.end('not what the digest says');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  return { server, tokenRequests, manifest };
}

describe('bearer token flow', () => {
  let fake: ReturnType<typeof fakeTokenRegistry>;
  let host: string;

  beforeAll(async () => {
    fake = fakeTokenRegistry();
    await new Promise<void>((resolve) => fake.server.listen(0, '127.0.0.1', resolve));
    host = `127.0.0.1:${(fake.server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => fake.server.close(() => resolve())));
  beforeEach(() => (fake.tokenRequests.length = 0));

  it('answers a challenge with a token scoped to the repository, using basic credentials', async () => {
    const repo = new Registry(host, { insecureRegistries: [] }).repository('team/app', { username: 'alice', password: 'pw' }, ['pull']);
    const m = await repo.getManifest('latest');
    expect(m.digest).toBe('sha256:' + createHash('sha256').update(fake.manifest).digest('hex'));
    expect(fake.tokenRequests).toHaveLength(1);
    expect(fake.tokenRequests[0].query.get('scope')).toBe('repository:team/app:pull');
    expect(fake.tokenRequests[0].query.get('service')).toBe('fake-registry');
    expect(fake.tokenRequests[0].query.get('account')).toBe('alice');
  });

  it('uses an identity token with the OAuth2 refresh_token grant', async () => {
    const repo = new Registry(host, { insecureRegistries: [] }).repository('team/app', { identityToken: 'rt-1' }, ['pull', 'push']);
    await repo.getManifest('latest');
    const form = new URLSearchParams(fake.tokenRequests[0].body);
    expect(fake.tokenRequests[0].method).toBe('POST');
    expect(form.get('grant_type')).toBe('refresh_token');
    expect(form.get('scope')).toBe('repository:team/app:pull,push');
  });

  it('logs in, handing back the refresh token as the identity token', async () => {
    const registry = new Registry(host, { insecureRegistries: [] });
    await expect(registry.login({ username: 'alice', password: 'pw' })).resolves.toEqual({ identityToken: 'rt-1' });
    await expect(registry.login({ username: 'alice', password: 'wrong' })).rejects.toThrow(/unauthorized: incorrect username or password/);
  });

  it('refuses a blob whose bytes do not match its digest', async () => {
    const repo = new Registry(host, { insecureRegistries: [] }).repository('team/app', { username: 'alice', password: 'pw' }, ['pull']);
    await expect(repo.getBlob('sha256:' + 'e'.repeat(64))).rejects.toThrow(/failed digest verification/);
  });
});

describe('registry endpoints', () => {
  it('allows plain HTTP only for loopback and registries listed as insecure', () => {
    expect(isInsecureRegistry('127.0.0.1:5000', [])).toBe(true);
    expect(isInsecureRegistry('127.8.9.1', [])).toBe(true);
    expect(isInsecureRegistry('localhost:5000', [])).toBe(true);
    expect(isInsecureRegistry('[::1]:5000', [])).toBe(true);
    expect(isInsecureRegistry('registry.example.com', [])).toBe(false);
    expect(isInsecureRegistry('registry.example.com:5000', ['registry.example.com:5000'])).toBe(true);
    expect(isInsecureRegistry('10.1.2.3:5000', ['10.0.0.0/8'])).toBe(true);
    expect(isInsecureRegistry('11.1.2.3:5000', ['10.0.0.0/8'])).toBe(false);
  });

  it('talks HTTPS to Docker Hub and to registries not listed as insecure', async () => {
    expect(await new Registry('docker.io', { insecureRegistries: [] }).baseUrl()).toBe('https://registry-1.docker.io');
    expect(await new Registry('registry.example.com', { insecureRegistries: [] }).baseUrl()).toBe('https://registry.example.com');
  });

  it('falls back to plain HTTP when an insecure registry does not speak TLS', async () => {
    const server = http.createServer((_req, res) => res.end('{}'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
      expect(await new Registry(host, { insecureRegistries: [] }).baseUrl()).toBe(`http://${host}`);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
