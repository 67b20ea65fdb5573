/**
 * A distribution v2 (OCI distribution) client: manifests, blobs, uploads and tags for one
 * repository, with the auth flows registries use — anonymous, Basic, and the Bearer token
 * challenge (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`), with a password or an
 * identity (refresh) token. Digests of everything fetched are checked by the caller or here.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { PaddockError, type ErrorKind } from '../../errors';
import { logger } from '../../util/log';
import { basicAuthorization, hasCredentials, parseAuthChallenges, type AuthChallenge, type Credentials } from './auth';
import { httpRequest, isInsecureRegistry, isTlsMismatch, readBody, TransportError, type HttpRequest } from './http';
import { MANIFEST_ACCEPT } from './manifest';
import { DEFAULT_DOMAIN } from './reference';

const log = logger('registry');

/** An error answer from a registry, worded as the docker client words errcode errors. */
export class RegistryResponseError extends PaddockError {
  constructor(
    kind: ErrorKind,
    message: string,
    readonly status: number,
    readonly codes: string[],
  ) {
    super(kind, message);
  }
}

export interface RegistryOptions {
  insecureRegistries: string[];
}

export interface FetchedManifest {
  raw: Buffer;
  mediaType: string;
  digest: string;
}

type Action = 'pull' | 'push';

/** Which scheme worked for an insecure registry: asked once per process, forgotten on failure. */
const schemeCache = new Map<string, 'https' | 'http'>();

export class Registry {
  readonly host: string;
  private readonly insecure: boolean;

  constructor(
    readonly domain: string,
    opts: RegistryOptions,
  ) {
    this.host = domain === DEFAULT_DOMAIN ? 'registry-1.docker.io' : domain;
    this.insecure = isInsecureRegistry(domain, opts.insecureRegistries);
  }

  /** "https://host" or, for an insecure registry that does not speak TLS, "http://host". */
  async baseUrl(): Promise<string> {
    if (!this.insecure) return `https://${this.host}`;
    const known = schemeCache.get(this.host);
    if (known) return `${known}://${this.host}`;
    try {
      const res = await httpRequest({ method: 'GET', url: `https://${this.host}/v2/`, insecureTls: true });
      res.resume();
      schemeCache.set(this.host, 'https');
    } catch (err) {
      if (!isTlsMismatch(err) && !(err instanceof TransportError)) throw err;
      schemeCache.set(this.host, 'http');
    }
    return `${schemeCache.get(this.host)}://${this.host}`;
  }

  forgetScheme(): void {
    schemeCache.delete(this.host);
  }

  get insecureTls(): boolean {
    return this.insecure;
  }

  /** A repository session; with `signal`, every request it makes is abandoned on abort. */
  repository(path: string, creds: Credentials, actions: Action[], signal?: AbortSignal): RegistryRepository {
    return new RegistryRepository(this, path, creds, actions, signal);
  }

  /**
   * Checks credentials as `docker login` does: `GET /v2/` and whatever auth it asks for.
   * Returns the refresh token a token server may hand out (the CLI stores it as identitytoken).
   */
  async login(creds: Credentials): Promise<{ identityToken?: string }> {
    const session = new AuthSession(this, creds, undefined);
    const url = `${await this.baseUrl()}/v2/`;
    const res = await session.send({ method: 'GET', url }, { offlineToken: true });
    res.resume();
    if (res.statusCode === 200) return { identityToken: session.refreshToken };
    throw new PaddockError('forbidden', `login attempt to ${url} failed with status: ${res.statusCode} ${httpStatusText(res.statusCode ?? 0)}`);
  }
}

/** Holds the Authorization a registry accepted, and earns one when challenged. */
class AuthSession {
  private authorization?: string;
  private authenticating?: Promise<void>;
  refreshToken?: string;

  constructor(
    private readonly registry: Registry,
    private readonly creds: Credentials,
    private readonly scope: string | undefined,
    private readonly signal?: AbortSignal,
  ) {
    if (creds.registryToken) this.authorization = `Bearer ${creds.registryToken}`;
  }

  async send(req: HttpRequest, opts: { offlineToken?: boolean } = {}): Promise<IncomingMessage> {
    const attempt = () =>
      httpRequest({
        ...req,
        signal: req.signal ?? this.signal,
        insecureTls: this.registry.insecureTls,
        headers: { ...req.headers, ...(this.authorization ? { authorization: this.authorization } : {}) },
      });
    let res: IncomingMessage;
    try {
      res = await attempt();
    } catch (err) {
      if (err instanceof TransportError) this.registry.forgetScheme();
      throw err;
    }
    if (res.statusCode !== 401) return res;
    const challenges = parseAuthChallenges(res.headers['www-authenticate']);
    const body = await readBody(res).catch(() => Buffer.alloc(0));
    if (!this.authorization && !this.creds.username && challenges.length > 0 && challenges.every((c) => c.scheme === 'basic')) {
      const method = req.method[0] + req.method.slice(1).toLowerCase();
      throw new PaddockError('forbidden', `${method} "${req.url}": no basic auth credentials`);
    }
    const before = this.authorization;
    this.authenticating ??= this.authenticate(challenges, opts).finally(() => (this.authenticating = undefined));
    await this.authenticating;
    if (!this.authorization || this.authorization === before) {
      // Nothing new to try: hand back the registry's own 401.
      throw registryError(401, body, req);
    }
    return attempt();
  }

  private async authenticate(challenges: AuthChallenge[], opts: { offlineToken?: boolean }): Promise<void> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer?.params.realm) {
      this.authorization = `Bearer ${await this.fetchToken(bearer.params, opts)}`;
      return;
    }
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (basic && this.creds.username) {
      this.authorization = basicAuthorization(this.creds.username, this.creds.password);
    }
  }

  private async fetchToken(params: Record<string, string>, opts: { offlineToken?: boolean }): Promise<string> {
    const realm = new URL(params.realm);
    const scope = this.scope ?? params.scope;
    let res: IncomingMessage;
    if (this.creds.identityToken) {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: this.creds.identityToken,
        client_id: 'docker',
        ...(params.service ? { service: params.service } : {}),
        ...(scope ? { scope } : {}),
      });
      res = await httpRequest({
        method: 'POST',
        url: realm.toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: Buffer.from(form.toString()),
        insecureTls: this.registry.insecureTls,
      });
      if (res.statusCode === 404 || res.statusCode === 405) {
        // Token servers without OAuth2 POST support: fall back to GET with the refresh token.
        res.resume();
        realm.searchParams.set('client_id', 'docker');
        if (params.service) realm.searchParams.set('service', params.service);
        if (scope) realm.searchParams.set('scope', scope);
        res = await httpRequest({ method: 'GET', url: realm.toString(), insecureTls: this.registry.insecureTls });
      }
    } else {
      if (params.service) realm.searchParams.set('service', params.service);
      if (scope) realm.searchParams.set('scope', scope);
      const headers: Record<string, string> = {};
      if (this.creds.username) {
        realm.searchParams.set('account', this.creds.username);
        headers.authorization = basicAuthorization(this.creds.username, this.creds.password);
      }
      if (opts.offlineToken) {
        realm.searchParams.set('offline_token', 'true');
        realm.searchParams.set('client_id', 'docker');
      }
      res = await httpRequest({ method: 'GET', url: realm.toString(), headers, insecureTls: this.registry.insecureTls });
    }
    const body = await readBody(res, 1024 * 1024);
    if (res.statusCode !== 200) {
      const detail = registryError(res.statusCode ?? 0, body, { method: 'GET', url: params.realm });
      throw new RegistryResponseError(
        res.statusCode === 401 || res.statusCode === 403 ? 'forbidden' : 'internal',
        `Get "${params.realm}": ${detail.message}`,
        res.statusCode ?? 0,
        detail.codes,
      );
    }
    const doc = JSON.parse(body.toString('utf8')) as { token?: string; access_token?: string; refresh_token?: string };
    const token = doc.token ?? doc.access_token;
    if (!token) throw new PaddockError('internal', `token server at ${params.realm} answered without a token`);
    if (doc.refresh_token) this.refreshToken = doc.refresh_token;
    return token;
  }
}

export class RegistryRepository {
  private readonly auth: AuthSession;

  constructor(
    readonly registry: Registry,
    readonly path: string,
    creds: Credentials,
    actions: Action[],
    signal?: AbortSignal,
  ) {
    this.auth = new AuthSession(registry, creds, `repository:${path}:${actions.join(',')}`, signal);
    if (!hasCredentials(creds)) log.debug('anonymous registry access', { repo: `${registry.domain}/${path}` });
  }

  private async url(suffix: string): Promise<string> {
    return `${await this.registry.baseUrl()}/v2/${this.path}/${suffix}`;
  }

  /** Fetches a manifest by tag or digest; a digest reference is verified against the bytes. */
  async getManifest(reference: string): Promise<FetchedManifest> {
    const url = await this.url(`manifests/${reference}`);
    const res = await this.auth.send({ method: 'GET', url, headers: { accept: MANIFEST_ACCEPT } });
    if (res.statusCode !== 200) throw registryError(res.statusCode ?? 0, await readBody(res).catch(() => Buffer.alloc(0)), { method: 'GET', url });
    const raw = await readBody(res, 4 * 1024 * 1024);
    const digest = sha256(raw);
    if (reference.includes(':') && reference !== digest) {
      throw new PaddockError('invalid', `manifest verification failed for digest ${reference}`);
    }
    return { raw, mediaType: String(res.headers['content-type'] ?? '').split(';')[0].trim(), digest };
  }

  /** Opens a blob for reading; the caller verifies the digest while it streams. */
  async openBlob(digest: string): Promise<{ stream: IncomingMessage; size?: number }> {
    const url = await this.url(`blobs/${digest}`);
    const res = await this.auth.send({ method: 'GET', url });
    if (res.statusCode !== 200) throw registryError(res.statusCode ?? 0, await readBody(res).catch(() => Buffer.alloc(0)), { method: 'GET', url });
    const length = Number(res.headers['content-length']);
    return { stream: res, size: Number.isFinite(length) ? length : undefined };
  }

  /** A small blob (an image config) read whole and verified. */
  async getBlob(digest: string, limit = 8 * 1024 * 1024): Promise<Buffer> {
    const { stream } = await this.openBlob(digest);
    const data = await readBody(stream, limit);
    if (sha256(data) !== digest) throw new PaddockError('invalid', `blob ${digest} failed digest verification`);
    return data;
  }

  async hasBlob(digest: string): Promise<boolean> {
    const url = await this.url(`blobs/${digest}`);
    const res = await this.auth.send({ method: 'HEAD', url });
    res.resume();
    if (res.statusCode === 200) return true;
    if (res.statusCode === 404) return false;
    throw registryError(res.statusCode ?? 0, Buffer.alloc(0), { method: 'HEAD', url });
  }

  /** Asks the registry to link a blob it holds in another repository; true when it did. */
  async mountBlob(digest: string, fromPath: string): Promise<boolean> {
    const url = new URL(await this.url('blobs/uploads/'));
    url.searchParams.set('mount', digest);
    url.searchParams.set('from', fromPath);
    const res = await this.auth.send({ method: 'POST', url: url.toString(), headers: { 'content-length': 0 } });
    res.resume();
    return res.statusCode === 201;
  }

  /** Uploads a blob in one PUT (monolithic upload) after opening an upload session. */
  async uploadBlob(digest: string, size: number, open: () => Readable): Promise<void> {
    const startUrl = await this.url('blobs/uploads/');
    const started = await this.auth.send({ method: 'POST', url: startUrl, headers: { 'content-length': 0 } });
    const startBody = await readBody(started).catch(() => Buffer.alloc(0));
    if (started.statusCode !== 202 || !started.headers.location) throw registryError(started.statusCode ?? 0, startBody, { method: 'POST', url: startUrl });
    const location = new URL(started.headers.location, startUrl);
    location.searchParams.set('digest', digest);
    const res = await this.auth.send({
      method: 'PUT',
      url: location.toString(),
      headers: { 'content-type': 'application/octet-stream', 'content-length': size },
      body: open,
    });
    const body = await readBody(res).catch(() => Buffer.alloc(0));
    if (res.statusCode !== 201) throw registryError(res.statusCode ?? 0, body, { method: 'PUT', url: location.toString() });
  }

  async putManifest(reference: string, mediaType: string, raw: Buffer): Promise<string> {
    const url = await this.url(`manifests/${reference}`);
    const res = await this.auth.send({ method: 'PUT', url, headers: { 'content-type': mediaType }, body: raw });
    const body = await readBody(res).catch(() => Buffer.alloc(0));
    if (res.statusCode !== 201 && res.statusCode !== 200) throw registryError(res.statusCode ?? 0, body, { method: 'PUT', url });
    return String(res.headers['docker-content-digest'] ?? sha256(raw));
  }

  async listTags(): Promise<string[]> {
    const tags: string[] = [];
    let url: string | undefined = await this.url('tags/list');
    while (url) {
      const res: IncomingMessage = await this.auth.send({ method: 'GET', url });
      const body = await readBody(res);
      if (res.statusCode !== 200) throw registryError(res.statusCode ?? 0, body, { method: 'GET', url });
      tags.push(...((JSON.parse(body.toString('utf8')) as { tags?: string[] }).tags ?? []));
      const next = /<([^>]+)>;\s*rel="?next"?/.exec(String(res.headers.link ?? ''));
      url = next ? new URL(next[1], url).toString() : undefined;
    }
    return tags;
  }
}

export function sha256(data: Buffer): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

/** errcode's wording: "<code in lower case, spaces for underscores>: <message>". */
export function registryError(status: number, body: Buffer, req: { method: string; url: string }): RegistryResponseError {
  let errors: Array<{ code?: string; message?: string }> = [];
  try {
    const doc = JSON.parse(body.toString('utf8'));
    if (Array.isArray(doc?.errors)) errors = doc.errors;
    else if (doc?.details || doc?.message) errors = [{ code: 'UNKNOWN', message: doc.details ?? doc.message }];
  } catch {
    // not JSON: described by the status below
  }
  const codes = errors.map((e) => e.code ?? 'UNKNOWN');
  const text = errors.length
    ? errors.map((e) => `${(e.code ?? 'unknown').toLowerCase().replace(/_/g, ' ')}: ${e.message ?? ''}`).join(', ')
    : status === 401
      ? 'unauthorized: authentication required'
      : `unexpected status from ${req.method} request to ${req.url}: ${status} ${httpStatusText(status)}`;
  const kind: ErrorKind = status === 404 ? 'not-found' : status === 401 || status === 403 ? 'forbidden' : status === 400 ? 'invalid' : 'internal';
  return new RegistryResponseError(kind, text, status, codes);
}

function httpStatusText(status: number): string {
  return (
    { 200: 'OK', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable' }[
      status
    ] ?? ''
  );
}
