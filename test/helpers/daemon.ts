/**
 * Starts a whole Paddock daemon in-process on a private unix socket with its own data root, for
 * tests that drive it through real clients (docker CLI, dockerode, docker-py) or plain HTTP.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, promises as fs } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { DaemonConfig } from '../../src/config';
import { startDaemon, type RunningDaemon } from '../../src/daemon';
import { repoRoot } from './guest';

const run = promisify(execFile);

export interface TestDaemon {
  daemon: RunningDaemon;
  socketPath: string;
  /** For DOCKER_HOST. */
  dockerHost: string;
  dataRoot: string;
  /** Runs the docker CLI (28.x by default) against this daemon. */
  docker(args: string[], opts?: { input?: string; cli?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<CliResult>;
  /** A raw HTTP request to the API. */
  request(method: string, urlPath: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse>;
  close(): Promise<void>;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ApiResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json<T = any>(): T;
}

export const DOCKER_CLI = '/usr/local/bin/docker';
export const DOCKER_CLI_DEBIAN = '/usr/bin/docker';

export async function startTestDaemon(overrides: Partial<DaemonConfig> = {}): Promise<TestDaemon> {
  const base = mkdtempSync(path.join(os.tmpdir(), 'paddock-daemon-'));
  const socketPath = path.join(base, 'paddock.sock');
  const config: DaemonConfig = {
    hosts: [`unix://${socketPath}`],
    dataRoot: path.join(base, 'data'),
    execRoot: path.join(base, 'exec'),
    insecureRegistries: [],
    logLevel: (process.env.PADDOCK_TEST_LOG_LEVEL as DaemonConfig['logLevel']) ?? 'warn',
    hypervisor: 'qemu',
    guestKernel: 'paddock',
    sourceRoot: repoRoot,
    defaultMemoryMiB: 128,
    // Tests only talk to 127.0.0.0/8 and the daemon's namespace: no way out is needed.
    ipMasq: false,
    // Names that are not containers' get SERVFAIL at once instead of being asked upstream.
    dns: [],
    ...overrides,
  };
  const daemon = await startDaemon(config);
  const dockerHost = `unix://${socketPath}`;
  const cliConfigDir = path.join(base, 'docker-config');
  await fs.mkdir(cliConfigDir, { recursive: true });
  return {
    daemon,
    socketPath,
    dockerHost,
    dataRoot: config.dataRoot,
    docker: (args, opts = {}) => runDocker(args, { ...opts, dockerHost, configDir: cliConfigDir }),
    request: (method, urlPath, body, headers) => apiRequest(socketPath, method, urlPath, body, headers),
    close: async () => {
      await daemon.close();
      await fs.rm(base, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}

export async function runDocker(
  args: string[],
  opts: { input?: string; cli?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; dockerHost: string; configDir?: string },
): Promise<CliResult> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolve) => {
    const p = spawn(opts.cli ?? DOCKER_CLI, args, {
      env: {
        ...process.env,
        DOCKER_HOST: opts.dockerHost,
        ...(opts.configDir ? { DOCKER_CONFIG: opts.configDir } : {}),
        DOCKER_CLI_HINTS: 'false',
        ...opts.env,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c) => (stdout += c));
    p.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    if (opts.input !== undefined) p.stdin.end(opts.input);
    else p.stdin.end();
  });
}

export function apiRequest(
  socketPath: string,
  method: string,
  urlPath: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        headers: { ...(data !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, json: () => JSON.parse(text) }),
        );
      },
    );
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

export { run as execFileAsync };
