/**
 * Healthchecks (`HEALTHCHECK`, `--health-*`) as dockerd runs them: a probe process in the
 * container every Interval (StartInterval during StartPeriod), Timeout per probe, Retries
 * consecutive failures make it unhealthy; the last 5 results are kept in State.Health.
 */
import type { AgentProcess, ProcessSpec } from '../../drivers/agent/agent-client';
import type { ContainerState } from './types';
import type { ImageRuntimeConfig } from '../image-backend';

type Health = NonNullable<ContainerState['Health']>;

const NS_PER_MS = 1e6;
const DEFAULTS = { Interval: 30_000, Timeout: 30_000, StartPeriod: 0, StartInterval: 5_000, Retries: 3 };
const MAX_LOG_ENTRIES = 5;
const MAX_OUTPUT = 4096;

/** The probe's argv, or undefined when there is no healthcheck (or it is NONE). */
export function probeCommand(hc: ImageRuntimeConfig['Healthcheck']): string[] | undefined {
  const test = hc?.Test;
  if (!test || test.length === 0 || test[0] === 'NONE') return undefined;
  if (test[0] === 'CMD-SHELL') return ['/bin/sh', '-c', test.slice(1).join(' ')];
  if (test[0] === 'CMD') return test.length > 1 ? test.slice(1) : undefined;
  return undefined;
}

export interface HealthMonitorHooks {
  run(spec: ProcessSpec): Promise<AgentProcess>;
  processSpec: Omit<ProcessSpec, 'args'>;
  /** Called after every probe with the updated health (persist it; publish status changes). */
  update(health: Health, changed: boolean): void;
}

export class HealthMonitor {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  readonly health: Health = { Status: 'starting', FailingStreak: 0, Log: [] };
  private readonly started = Date.now();
  private readonly opts: typeof DEFAULTS;

  constructor(
    private readonly command: string[],
    config: NonNullable<ImageRuntimeConfig['Healthcheck']>,
    private readonly hooks: HealthMonitorHooks,
  ) {
    const ms = (ns: number | undefined, d: number) => (ns && ns > 0 ? ns / NS_PER_MS : d);
    this.opts = {
      Interval: ms(config.Interval, DEFAULTS.Interval),
      Timeout: ms(config.Timeout, DEFAULTS.Timeout),
      StartPeriod: ms(config.StartPeriod, DEFAULTS.StartPeriod),
      StartInterval: ms(config.StartInterval, DEFAULTS.StartInterval),
      Retries: config.Retries && config.Retries > 0 ? config.Retries : DEFAULTS.Retries,
    };
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private inStartPeriod(): boolean {
    return Date.now() - this.started < this.opts.StartPeriod;
  }

  private schedule(): void {
    if (this.stopped) return;
    const wait = this.inStartPeriod() && this.health.Status === 'starting' ? Math.min(this.opts.StartInterval, this.opts.Interval) : this.opts.Interval;
    this.timer = setTimeout(() => void this.probe().finally(() => this.schedule()), wait);
    this.timer.unref();
  }

  private async probe(): Promise<void> {
    const start = new Date();
    let exitCode = -1;
    let output = '';
    try {
      const proc = await this.hooks.run({ ...this.hooks.processSpec, args: this.command });
      const collect = (c: Buffer) => {
        if (output.length < MAX_OUTPUT) output += c.toString();
      };
      proc.stdout.on('data', collect);
      proc.stderr.on('data', collect);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.opts.Timeout)));
      const result = await Promise.race([proc.exited, timedOut]);
      clearTimeout(timer);
      if (result === 'timeout') {
        proc.signal(9);
        output = `Health check exceeded timeout (${this.opts.Timeout / 1000}s)`;
      } else {
        exitCode = result.exitCode;
        // The last output may still be on its way through the streams.
        await Promise.all([proc.stdout, proc.stderr].map((s) => (s.readableEnded || s.destroyed ? undefined : new Promise((r) => s.once('end', r).once('close', r)))));
      }
    } catch (err) {
      output = (err as Error).message;
    }
    if (this.stopped) return;
    const h = this.health;
    const before = h.Status;
    h.Log.push({ Start: start.toISOString(), End: new Date().toISOString(), ExitCode: exitCode, Output: output.slice(0, MAX_OUTPUT) });
    if (h.Log.length > MAX_LOG_ENTRIES) h.Log.shift();
    if (exitCode === 0) {
      h.Status = 'healthy';
      h.FailingStreak = 0;
    } else if (!(this.inStartPeriod() && h.Status === 'starting')) {
      // Failures during the start period do not count (dockerd).
      h.FailingStreak++;
      if (h.FailingStreak >= this.opts.Retries) h.Status = 'unhealthy';
    }
    this.hooks.update(h, h.Status !== before);
  }
}
