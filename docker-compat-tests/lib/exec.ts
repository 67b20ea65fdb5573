/** Running client programs: the docker CLIs, docker-compose, python, `script` for a pty. */
import { spawn } from 'node:child_process';

export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Set when the command was killed for running past its timeout. */
  timedOut?: boolean;
}

export interface CmdOptions {
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
  cwd?: string;
  /** Keep stdin open this long before writing `input` (lets a client attach first). */
  inputDelayMs?: number;
  /**
   * After writing `input`, keep stdin open until the command exits (or this long): a client that
   * sees EOF may stop relaying the container's output (docker attach does, against dockerd too).
   */
  holdStdinMs?: number;
  /** Binary stdout (docker save / export / cp to "-"). */
  binary?: boolean;
}

export interface BinaryResult extends CmdResult {
  stdoutBytes: Buffer;
}

export function runCmd(cmd: string, args: string[], opts: CmdOptions = {}): Promise<BinaryResult> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    let timedOut = false;
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      p.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    p.on('error', (err) => {
      stderr += `\n${err.message}`;
    });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      const bytes = Buffer.concat(out);
      resolve({
        code: code ?? (signal ? 128 + (signalNumber[signal] ?? 0) : -1),
        stdout: opts.binary ? '' : bytes.toString(),
        stdoutBytes: bytes,
        stderr: timedOut ? `${stderr}\n[killed after ${opts.timeoutMs ?? 60_000} ms]` : stderr,
        timedOut,
      });
    });
    p.stdin.on('error', () => undefined); // the client may exit before reading its input
    let hold: NodeJS.Timeout | undefined;
    p.on('close', () => hold && clearTimeout(hold));
    const feed = () => {
      if (opts.holdStdinMs) {
        if (opts.input !== undefined) p.stdin.write(opts.input);
        hold = setTimeout(() => p.stdin.end(), opts.holdStdinMs);
      } else if (opts.input !== undefined) p.stdin.end(opts.input);
      else p.stdin.end();
    };
    if (opts.inputDelayMs) setTimeout(feed, opts.inputDelayMs);
    else feed();
  });
}

const signalNumber: Record<string, number> = { SIGKILL: 9, SIGTERM: 15, SIGINT: 2, SIGPIPE: 13 };

/** A long-running client (docker events, logs -f): read what it printed so far, then stop it. */
export interface Background {
  output(): string;
  stderr(): string;
  waitFor(re: RegExp, timeoutMs: number): Promise<boolean>;
  stop(): Promise<CmdResult>;
}

export function runBackground(cmd: string, args: string[], opts: CmdOptions = {}): Background {
  const p = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let exited: CmdResult | undefined;
  p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<CmdResult>((resolve) =>
    p.on('close', (code) => {
      exited = { code: code ?? -1, stdout, stderr };
      resolve(exited);
    }),
  );
  const hardStop = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
  return {
    output: () => stdout,
    stderr: () => stderr,
    async waitFor(re, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (re.test(stdout)) return true;
        if (exited) return re.test(stdout);
        await new Promise((r) => setTimeout(r, 50));
      }
      return false;
    },
    async stop() {
      clearTimeout(hardStop);
      if (!exited) p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 3000);
      const r = await done;
      clearTimeout(t);
      return r;
    },
  };
}

/** `script -qec CMD /dev/null`: runs a shell command line with a pty as its terminal. */
export function shellQuote(args: string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}
