/**
 * Clients that go away mid-stream (`docker export c | head`, Ctrl-C on `docker logs -f`, a
 * dropped attach): the daemon must shrug. Runs last: if one of these takes the daemon down, the
 * other suites have already reported.
 */
import { spawn } from 'node:child_process';
import { api, cli, DOCKER_CLI_28 } from '../lib/clients';
import { sleep, type ScenarioContext, type Suite } from '../lib/scenario';
import { clientEnv } from '../lib/target';

const client = 'docker-cli-28' as const;

/** Starts `docker ARGS`, waits for `bytes` of stdout (or the timeout), then kills it. */
function readThenHangUp(ctx: ScenarioContext, args: string[], bytes: number, timeoutMs = 10_000): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn(DOCKER_CLI_28, args, { env: clientEnv(ctx.target), stdio: ['ignore', 'pipe', 'ignore'] });
    let n = 0;
    const done = () => {
      clearTimeout(t);
      p.kill('SIGKILL');
      resolve(n);
    };
    const t = setTimeout(done, timeoutMs);
    p.stdout.on('data', (c: Buffer) => {
      n += c.length;
      if (n >= bytes) done();
    });
    p.on('close', () => {
      clearTimeout(t);
      resolve(n);
    });
  });
}

async function alive(ctx: ScenarioContext, after: string): Promise<void> {
  await sleep(500);
  const dead = ctx.target.died();
  if (dead) ctx.abort(`the daemon died after ${after}: ${dead}`);
  const r = await api(ctx, 'GET', '/_ping').catch((err) => ({ status: 0, body: String(err) }));
  ctx.check(r.status === 200, `after ${after}: GET /_ping → ${r.status} ${r.body}`);
}

export function resilienceSuite(): Suite {
  const name = 'rs-main';
  return {
    name: 'resilience',
    client,
    scenarios: [
      {
        id: `${client}/client-hangs-up-mid-stream`,
        client,
        title: 'export, logs -f, events, attach: the client hangs up mid-stream, the daemon carries on',
        async run(ctx) {
          const d = (args: string[]) => cli(ctx, DOCKER_CLI_28, args);
          await d(['rm', '-f', name]);
          const r = await d(['run', '-d', '--name', name, `${ctx.target.registry}/busybox:latest`, 'sh', '-c', 'while true; do echo tick; sleep 0.2; done']);
          ctx.requireExitCode(r, 0, 'docker run -d');
          await readThenHangUp(ctx, ['logs', '-f', name], 10);
          await alive(ctx, '`docker logs -f` hung up');
          await readThenHangUp(ctx, ['attach', '--no-stdin', name], 5);
          await alive(ctx, '`docker attach` hung up');
          await readThenHangUp(ctx, ['events'], 1, 1000);
          await alive(ctx, '`docker events` hung up');
          await readThenHangUp(ctx, ['stats', name], 10);
          await alive(ctx, '`docker stats` hung up');
          // Last: this one took the daemon down once.
          const got = await readThenHangUp(ctx, ['export', name], 1);
          ctx.check(got > 0, 'docker export sent nothing');
          await alive(ctx, '`docker export` hung up after the first bytes');
          const still = await d(['inspect', '--format', '{{.State.Status}}', name]);
          ctx.equal(still.stdout, 'running\n', 'the container kept running');
          await d(['rm', '-f', name]);
        },
      },
    ],
    async cleanup(target) {
      await cli({ target } as ScenarioContext, DOCKER_CLI_28, ['rm', '-f', name]);
    },
  };
}
