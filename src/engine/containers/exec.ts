/**
 * `docker exec`: extra processes in a running container's VM, started through the same agent
 * channel as the main process (the protocol multiplexes them).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { AgentProcess } from '../../drivers/agent/agent-client';
import { AgentRequestError } from '../../drivers/agent/agent-client';
import { conflict, invalid, notFound, PaddockError } from '../../errors';
import type { EventBus } from '../events';
import type { ContainerService } from './container-service';
import { mergeEnv } from './config-merge';
import { resolveUser } from './users';

export interface ExecCreateRequest {
  Cmd?: string[] | string;
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  Tty?: boolean;
  AttachStdin?: boolean;
  AttachStdout?: boolean;
  AttachStderr?: boolean;
  DetachKeys?: string;
  Privileged?: boolean;
  ConsoleSize?: [number, number] | null;
}

export interface ExecInstance {
  ID: string;
  ContainerID: string;
  Running: boolean;
  ExitCode: number | null;
  ProcessConfig: { tty: boolean; entrypoint: string; arguments: string[]; privileged: boolean; user?: string };
  OpenStdin: boolean;
  OpenStderr: boolean;
  OpenStdout: boolean;
  CanRemove: boolean;
  DetachKeys: string;
  Pid: number;
  env: string[];
  workingDir: string;
  consoleSize?: [number, number] | null;
  process?: AgentProcess;
  started: boolean;
}

export interface ExecStreams {
  stdin: Readable | null;
  stdout?: (chunk: Buffer) => void;
  stderr?: (chunk: Buffer) => void;
}

export class ExecManager {
  private readonly execs = new Map<string, ExecInstance>();

  constructor(
    private readonly containers: ContainerService,
    private readonly events: EventBus,
  ) {}

  create(containerIdOrName: string, body: ExecCreateRequest): { Id: string } {
    const { record } = this.containers.requireRunning(containerIdOrName);
    if (record.State.Paused) throw conflict(`Container ${record.Id} is paused, unpause the container before exec`);
    const cmd = typeof body.Cmd === 'string' ? [body.Cmd] : body.Cmd;
    if (!cmd || cmd.length === 0) throw invalid('No exec command specified');
    if (body.Env && (!Array.isArray(body.Env) || body.Env.some((e) => typeof e !== 'string'))) throw invalid('Env must be a list of strings');
    const id = randomBytes(32).toString('hex');
    this.execs.set(id, {
      ID: id,
      ContainerID: record.Id,
      Running: false,
      ExitCode: null,
      ProcessConfig: { tty: Boolean(body.Tty), entrypoint: cmd[0], arguments: cmd.slice(1), privileged: Boolean(body.Privileged), user: body.User ?? '' },
      OpenStdin: Boolean(body.AttachStdin),
      OpenStderr: Boolean(body.AttachStderr),
      OpenStdout: Boolean(body.AttachStdout),
      CanRemove: false,
      DetachKeys: body.DetachKeys ?? '',
      Pid: 0,
      env: body.Env ?? [],
      workingDir: body.WorkingDir ?? '',
      consoleSize: body.ConsoleSize ?? null,
      started: false,
    });
    this.containers.publish(record, `exec_create: ${cmd.join(' ')}`, { execID: id });
    return { Id: id };
  }

  get(id: string): ExecInstance {
    const e = this.execs.get(id);
    if (!e) throw notFound(`No such exec instance: ${id}`);
    return e;
  }

  /** Starts the process; resolves when it has exited (or at once when detached). */
  async start(id: string, streams: ExecStreams, opts: { detach: boolean; tty?: boolean }): Promise<void> {
    const exec = this.get(id);
    if (exec.started) throw conflict(`Error: Exec command ${id} has already run`);
    const { record, runtime } = this.containers.requireRunning(exec.ContainerID);
    if (record.State.Paused) throw conflict(`Container ${record.Id} is paused, unpause the container before exec`);
    exec.started = true;
    const user = await resolveUser((await this.containers.mountedRootfs(record)).merged, exec.ProcessConfig.user || record.Config.User || '');
    const env = mergeEnv(record.Config.Env ?? [], exec.env);
    if (!env.some((e) => e.startsWith('PATH='))) env.unshift('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
    if (exec.ProcessConfig.tty && !env.some((e) => e.startsWith('TERM='))) env.push('TERM=xterm');
    const [rows, cols] = exec.consoleSize ?? [0, 0];
    let proc: AgentProcess;
    try {
      proc = await runtime.sandbox.exec({
        args: [exec.ProcessConfig.entrypoint, ...exec.ProcessConfig.arguments],
        env,
        cwd: exec.workingDir || record.Config.WorkingDir || '/',
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        tty: opts.tty ?? exec.ProcessConfig.tty,
        rows: rows || undefined,
        cols: cols || undefined,
        openStdin: exec.OpenStdin && !opts.detach,
      });
    } catch (err) {
      // dockerd reports a command that cannot start as exit code 126.
      exec.ExitCode = 126;
      if (err instanceof AgentRequestError && err.errno === 2) {
        throw new PaddockError(
          'invalid',
          `OCI runtime exec failed: exec failed: unable to start container process: exec: "${exec.ProcessConfig.entrypoint}": executable file not found in $PATH: unknown`,
        );
      }
      throw err;
    }
    exec.process = proc;
    exec.Running = true;
    exec.Pid = proc.pid;
    this.containers.publish(record, `exec_start: ${[exec.ProcessConfig.entrypoint, ...exec.ProcessConfig.arguments].join(' ')}`, { execID: id });
    if (streams.stdout) proc.stdout.on('data', streams.stdout);
    else proc.stdout.resume();
    if (streams.stderr) proc.stderr.on('data', streams.stderr);
    else proc.stderr.resume();
    if (streams.stdin && exec.OpenStdin) {
      streams.stdin.on('data', (c: Buffer) => {
        if (!proc.stdin.writableEnded) proc.stdin.write(c);
      });
      streams.stdin.on('end', () => {
        if (!proc.stdin.writableEnded) proc.stdin.end();
      });
      // Reading the exec-start body paused the connection; a 'data' listener alone would not
      // restart an explicitly paused stream (the cause of an intermittent `exec -i` hang).
      streams.stdin.resume();
    }
    const finished = proc.exited
      .then((e) => e.exitCode, () => 137)
      .then(async (code) => {
        await Promise.all([drained(proc.stdout), drained(proc.stderr)]);
        exec.Running = false;
        exec.ExitCode = code;
        exec.process = undefined;
        this.containers.publish(record, 'exec_die', { execID: id, exitCode: String(code) });
      });
    if (!opts.detach) await finished;
  }

  resize(id: string, rows: number, cols: number): void {
    const exec = this.get(id);
    if (!exec.process) throw conflict(`Exec ${id} is not running`);
    exec.process.resize(rows, cols);
  }

  /** The container's VM went away: its execs ended with it. */
  containerStopped(containerId: string): void {
    for (const e of this.execs.values()) {
      if (e.ContainerID !== containerId) continue;
      if (e.Running) {
        e.Running = false;
        e.ExitCode ??= 137;
      }
    }
  }

  inspect(id: string): Record<string, unknown> {
    const { process: _p, env: _e, workingDir: _w, consoleSize: _c, started: _s, ...rest } = this.get(id);
    return rest;
  }
}

function drained(stream: Readable): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
  });
}
