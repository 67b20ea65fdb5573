/**
 * A real distribution v2 registry (Debian's `docker-registry`, distribution 2.8) for tests and
 * benchmarks: listens on 127.0.0.1 only, stores blobs on the local filesystem, optionally demands
 * htpasswd (basic) auth. Plus the few HTTP calls tests need to talk to it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, promises as fs } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import bcrypt from 'bcryptjs';

export const REGISTRY_BINARY = '/usr/bin/docker-registry';

export interface RegistryCredentials {
  username: string;
  password: string;
}

export interface TestRegistry {
  /** "127.0.0.1:PORT": what goes in front of image references. */
  host: string;
  auth?: RegistryCredentials;
  storageDir: string;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  auth?: RegistryCredentials;
  /** A fixed port; by default a free one is picked. */
  port?: number;
  /** Keep the registry's content here (and leave it there on stop). Default: a temp dir. */
  storageDir?: string;
}

export async function startTestRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'paddock-registry-'));
  try {
    const storageDir = opts.storageDir ? checkedDirectory(opts.storageDir) : path.join(workDir, 'storage');
    await fs.mkdir(storageDir, { recursive: true });
    let htpasswdPath: string | undefined;
    if (opts.auth) {
      htpasswdPath = path.join(workDir, 'htpasswd');
      await fs.writeFile(htpasswdPath, htpasswdLine(opts.auth), { mode: 0o600 });
    }
    // A port picked as free can be taken before the registry binds it: then try another.
    const attempts = opts.port ? 1 : 5;
    let lastError: unknown;
    for (let i = 0; i < attempts; i++) {
      const port = opts.port ?? (await findFreePort());
      const configPath = path.join(workDir, 'config.yml');
      await fs.writeFile(configPath, registryConfig({ port, storageDir, htpasswdPath }));
      try {
        const child = await launchRegistry(configPath, port, Boolean(opts.auth));
        return {
          host: `127.0.0.1:${port}`,
          auth: opts.auth,
          storageDir,
          stop: async () => {
            await stopProcess(child);
            await removeTree(workDir);
          },
        };
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  } catch (err) {
    await removeTree(workDir);
    throw err;
  }
}

/** The registry's htpasswd auth only accepts bcrypt hashes ("$2y$"/"$2a$"/"$2b$"). */
function htpasswdLine(auth: RegistryCredentials): string {
  if (auth.username.includes(':')) throw new Error('registry user names cannot contain ":"');
  return `${auth.username}:${bcrypt.hashSync(auth.password, 10)}\n`;
}

function registryConfig(c: { port: number; storageDir: string; htpasswdPath?: string }): string {
  // JSON strings are valid YAML scalars, which keeps odd characters in paths harmless.
  const q = JSON.stringify;
  const lines = [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(c.storageDir)}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${q(`127.0.0.1:${c.port}`)}`,
    // A fixed secret per run keeps the registry from warning about a generated one.
    `  secret: ${q(randomBytes(16).toString('hex'))}`,
  ];
  if (c.htpasswdPath) {
    // htpasswd mode needs both: the realm goes into `WWW-Authenticate: Basic realm=...`.
    lines.push('auth:', '  htpasswd:', '    realm: "paddock-test-registry"', `    path: ${q(c.htpasswdPath)}`);
  }
  return lines.join('\n') + '\n';
}

async function launchRegistry(configPath: string, port: number, withAuth: boolean): Promise<ChildProcess> {
  // REGISTRY_* variables override the config file; none of the caller's may leak in.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
  // setpriv --pdeathsig: the registry is SIGKILLed when the test process dies, however it dies.
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', REGISTRY_BINARY, 'serve', configPath], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });
  const ready = withAuth ? [200, 401] : [200];
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (exited || child.exitCode !== null) break;
    try {
      const res = await httpRequest({ method: 'GET', url: `http://127.0.0.1:${port}/v2/` });
      if (ready.includes(res.status)) {
        child.stderr!.resume();
        return child;
      }
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  await stopProcess(child);
  throw new Error(`docker-registry did not become ready on 127.0.0.1:${port}: ${stderr.trim() || '(no output)'}`);
}

/** SIGTERM, then SIGKILL if it lingers; resolves once the process is gone. */
export async function stopProcess(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A directory we may create and write into: absolute after resolution, never "/". */
export function checkedDirectory(dir: string): string {
  if (!dir || !dir.trim()) throw new Error('refusing an empty directory path');
  const resolved = path.resolve(dir);
  if (resolved === path.parse(resolved).root) throw new Error(`refusing to use ${resolved} as a directory`);
  return resolved;
}

/** rm -rf, guarded: refuses "", "/" and top-level directories such as /tmp or /var. */
export async function removeTree(dir: string): Promise<void> {
  const resolved = checkedDirectory(dir);
  if (path.dirname(resolved) === path.parse(resolved).root) throw new Error(`refusing to remove ${resolved}`);
  await fs.rm(resolved, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Talking to a registry over plain HTTP (tests and the image pusher share this).

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface HttpRequest {
  method: string;
  url: string;
  headers?: Record<string, string>;
  /** A buffer, or a file streamed from disk (for big layers). */
  body?: Buffer | { file: string; size: number };
}

/** One request, no keep-alive (nothing lingers to keep jest alive), whole body buffered. */
export function httpRequest(req: HttpRequest): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const url = new URL(req.url);
    if (url.hostname !== '127.0.0.1') {
      reject(new Error(`test helpers only talk to 127.0.0.1, not ${url.hostname}`));
      return;
    }
    const headers: Record<string, string> = { ...req.headers };
    if (req.body) headers['Content-Length'] = String(Buffer.isBuffer(req.body) ? req.body.length : req.body.size);
    const r = http.request(url, { method: req.method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    r.on('error', reject);
    if (!req.body) r.end();
    else if (Buffer.isBuffer(req.body)) r.end(req.body);
    else createReadStream(req.body.file).on('error', reject).pipe(r);
  });
}

/** The `Authorization` header for a registry with auth, nothing otherwise. */
export function registryAuthHeaders(reg: Pick<TestRegistry, 'auth'>): Record<string, string> {
  if (!reg.auth) return {};
  const token = Buffer.from(`${reg.auth.username}:${reg.auth.password}`).toString('base64');
  return { Authorization: `Basic ${token}` };
}

/** A request to `http://<reg.host><pathAndQuery>` with the registry's credentials (if any). */
export function registryRequest(
  reg: Pick<TestRegistry, 'host' | 'auth'>,
  method: string,
  pathAndQuery: string,
  opts: { headers?: Record<string, string>; body?: HttpRequest['body']; anonymous?: boolean } = {},
): Promise<HttpResult> {
  const url = pathAndQuery.startsWith('http://') ? pathAndQuery : `http://${reg.host}${pathAndQuery}`;
  const auth = opts.anonymous ? {} : registryAuthHeaders(reg);
  return httpRequest({ method, url, headers: { ...auth, ...opts.headers }, body: opts.body });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
