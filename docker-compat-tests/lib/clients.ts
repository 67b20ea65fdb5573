/** How scenarios call each client against the context's target. */
import http from 'node:http';
import { runBackground, runCmd, shellQuote, type Background, type BinaryResult, type CmdOptions, type CmdResult } from './exec';
import type { ScenarioContext } from './scenario';
import { clientEnv } from './target';

export const DOCKER_CLI_28 = '/usr/local/bin/docker';
export const DOCKER_CLI_20 = '/usr/bin/docker';
export const DOCKER_COMPOSE = '/usr/bin/docker-compose';
export const PYTHON3 = '/usr/bin/python3';

export async function cli(ctx: ScenarioContext, bin: string, args: string[], opts: CmdOptions = {}): Promise<BinaryResult> {
  const r = await runCmd(bin, args, { timeoutMs: 60_000, ...opts, env: clientEnv(ctx.target, opts.env) });
  return { ...r, stderr: dropNoise(r.stderr) };
}

/** The reference dockerd warns on every run because we start it with --ip-forward=false: not its behaviour. */
export function dropNoise(text: string): string {
  return text.replace(/^WARNING: IPv4 forwarding is disabled\. Networking will not work\.\r?\n/gm, '');
}

export function cliBackground(ctx: ScenarioContext, bin: string, args: string[], opts: CmdOptions = {}): Background {
  return runBackground(bin, args, { ...opts, env: clientEnv(ctx.target, opts.env) });
}

/**
 * Runs a command line with a pseudo-terminal as its controlling terminal (`script -qec`), as a
 * user at a shell would: `docker run -it` refuses to start without one. The pty is sized first.
 */
export function withPty(ctx: ScenarioContext, argv: string[], opts: CmdOptions & { cols?: number; rows?: number } = {}): Promise<BinaryResult> {
  const line = `stty cols ${opts.cols ?? 123} rows ${opts.rows ?? 45} 2>/dev/null; exec ${shellQuote(argv)}`;
  return runCmd('script', ['-qec', line, '/dev/null'], { timeoutMs: 60_000, ...opts, env: clientEnv(ctx.target, { TERM: 'xterm', ...opts.env }) }).then((r) => ({
    ...r,
    stdout: dropNoise(r.stdout),
  }));
}

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json(): any;
}

/** A raw API request on the target's unix socket. `path` may carry a /vX.Y prefix. */
export function api(ctx: ScenarioContext, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  const socketPath = ctx.target.socketPath;
  if (!socketPath) ctx.skip('raw API scenarios need a unix socket');
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        method,
        path,
        agent: false,
        headers: { ...(data !== undefined ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {}), ...headers },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: text,
            json: () => {
              try {
                return JSON.parse(text);
              } catch {
                return { unparsable: text };
              }
            },
          }),
        );
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path}: no answer in 30 s`)));
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

/** {code, stdout, stderr} for an observation (stdout dropped when it is binary). */
export function cliObservation(res: CmdResult): { code: number; stdout: string; stderr: string } {
  return { code: res.code, stdout: res.stdout, stderr: res.stderr };
}
