/** Healthcheck probes: the command forms and dockerd's healthy/unhealthy rules, on a fake runner. */
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { AgentProcess } from '../../src/drivers/agent/agent-client';
import { HealthMonitor, probeCommand } from '../../src/engine/containers/health';

test('probe command forms', () => {
  expect(probeCommand({ Test: ['CMD-SHELL', 'curl -f localhost'] })).toEqual(['/bin/sh', '-c', 'curl -f localhost']);
  expect(probeCommand({ Test: ['CMD', 'true', 'x'] })).toEqual(['true', 'x']);
  expect(probeCommand({ Test: ['NONE'] })).toBeUndefined();
  expect(probeCommand(undefined)).toBeUndefined();
});

function fakeProcess(exitCode: number): AgentProcess {
  const p = new EventEmitter() as unknown as AgentProcess;
  Object.assign(p, { stdout: new PassThrough(), stderr: new PassThrough(), exited: Promise.resolve({ exitCode, signal: 0 }), signal: () => undefined });
  (p.stdout as PassThrough).end(`exit ${exitCode}\n`);
  (p.stderr as PassThrough).end();
  return p;
}

test('Retries consecutive failures make it unhealthy; one success makes it healthy again', async () => {
  const results = [1, 1, 0];
  const seen: string[] = [];
  const done = new Promise<void>((resolve) => {
    const m = new HealthMonitor(['check'], { Interval: 5e6, Retries: 2 }, {
      run: async () => fakeProcess(results.shift() ?? 0),
      processSpec: {},
      update: (h, changed) => {
        if (changed) seen.push(h.Status);
        if (h.Status === 'healthy') {
          m.stop();
          expect(h.FailingStreak).toBe(0);
          expect(h.Log.map((l) => l.ExitCode)).toEqual([1, 1, 0]);
          expect(h.Log[0].Output).toBe('exit 1\n');
          resolve();
        }
      },
    });
  });
  await done;
  expect(seen).toEqual(['unhealthy', 'healthy']);
});
