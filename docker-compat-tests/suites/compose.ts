/**
 * docker-compose 1.29 (docker-py underneath): up -d / ps / logs / exec / run / stop / down, the
 * com.docker.compose.* labels it finds its containers by, `up` attached in the foreground, and a
 * project on the default network with a named volume and a published port (issue 5).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cli, cliObservation, DOCKER_CLI_28, DOCKER_COMPOSE } from '../lib/clients';
import type { CmdOptions } from '../lib/exec';
import { sleep, tryJson, type ScenarioContext, type Suite } from '../lib/scenario';

const client = 'docker-compose-1.29' as const;

/** Compose works on services in parallel: the order of its progress lines is not a compatibility property. */
function sortedLines(r: { code: number; stdout: string; stderr: string }): { code: number; stdout: string[]; stderr: string[] } {
  const lines = (t: string) => t.split('\n').filter(Boolean).sort();
  return { code: r.code, stdout: lines(r.stdout), stderr: lines(r.stderr) };
}

function project(ctx: ScenarioContext, name: string, yaml: string): { dir: string; compose: (args: string[], opts?: CmdOptions) => ReturnType<typeof cli> } {
  const dir = path.join(ctx.workDir, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'docker-compose.yml'), yaml);
  return {
    dir,
    compose: (args, opts = {}) => cli(ctx, DOCKER_COMPOSE, ['--ansi', 'never', '-p', name, ...args], { cwd: dir, timeoutMs: 90_000, ...opts }),
  };
}

const docker = (ctx: ScenarioContext, args: string[]) => cli(ctx, DOCKER_CLI_28, args);

export function composeSuite(): Suite {
  return {
    name: client,
    client,
    unavailable: () => (existsSync(DOCKER_COMPOSE) ? undefined : `${DOCKER_COMPOSE} is not installed`),
    scenarios: [
      {
        id: `${client}/up-ps-logs-exec-run-down`,
        client,
        title: 'compose up -d, ps, logs, exec, run --rm, stop, down (network_mode: none)',
        timeoutMs: 180_000,
        async run(ctx) {
          const R = ctx.target.registry;
          const { compose } = project(
            ctx,
            'cmpa',
            [
              'version: "3.7"',
              'services:',
              '  web:',
              `    image: ${R}/busybox:latest`,
              '    network_mode: none',
              `    command: ["sh", "-c", "trap 'exit 0' TERM; echo web-started; while true; do sleep 1; done"]`,
              '    environment:',
              '      GREETING: hello-compose',
              '    labels:',
              '      app: compat',
              '  job:',
              `    image: ${R}/busybox:latest`,
              '    network_mode: none',
              '    command: ["sh", "-c", "echo job-done; exit 0"]',
              '    depends_on: [web]',
              '',
            ].join('\n'),
          );
          await compose(['down', '--remove-orphans']);
          const up = await compose(['up', '-d']);
          ctx.requireExitCode(up, 0, 'docker-compose up -d');
          for (const c of ['cmpa_web_1', 'cmpa_job_1']) ctx.contains(up.stderr, `Creating ${c} ... done`, 'docker-compose up -d');
          ctx.observe('up', sortedLines(up));
          const ids = await docker(ctx, ['ps', '-a', '--filter', 'label=com.docker.compose.project=cmpa', '--format', '{{.Names}}']);
          ctx.equal(ids.stdout.split('\n').filter(Boolean).sort(), ['cmpa_job_1', 'cmpa_web_1'], 'containers found by the compose project label');
          const ins = await docker(ctx, ['inspect', 'cmpa_web_1']);
          const web = JSON.parse(ins.stdout || '[{}]')[0];
          ctx.fields(web, { 'HostConfig.NetworkMode': 'none', 'State.Running': true }, 'inspect cmpa_web_1');
          const labels = web?.Config?.Labels ?? {};
          for (const [k, v] of Object.entries({
            'com.docker.compose.project': 'cmpa',
            'com.docker.compose.service': 'web',
            'com.docker.compose.container-number': '1',
            'com.docker.compose.oneoff': 'False',
            'com.docker.compose.version': '1.29.2',
            app: 'compat',
          })) {
            ctx.equal(labels[k], v, `label ${k}`);
          }
          ctx.check(/^[0-9a-f]{64}$/.test(labels['com.docker.compose.config-hash'] ?? ''), `label com.docker.compose.config-hash: ${labels['com.docker.compose.config-hash']}`);
          ctx.observe('web.labels', labels);
          let ps = await compose(['ps']);
          for (let i = 0; i < 20 && !/cmpa_job_1 .*Exit 0/.test(ps.stdout); i++) {
            await sleep(300);
            ps = await compose(['ps']);
          }
          ctx.exitCode(ps, 0, 'docker-compose ps');
          ctx.matches(ps.stdout, /cmpa_web_1 .* Up\s/, 'docker-compose ps: web is up');
          ctx.matches(ps.stdout, /cmpa_job_1 .* Exit 0\s/, 'docker-compose ps: job exited 0');
          ctx.observe('ps', ps.stdout);
          const logs = await compose(['logs', '--no-color', 'job']);
          ctx.matches(logs.stdout, /job_1\s+\| job-done/, 'docker-compose logs job');
          const ex = await compose(['exec', '-T', 'web', 'sh', '-c', 'echo $GREETING; exit 3']);
          ctx.exitCode(ex, 3, 'docker-compose exec -T');
          ctx.equal(ex.stdout, 'hello-compose\n', 'docker-compose exec -T output');
          ctx.observe('exec', cliObservation(ex));
          const run = await compose(['run', '--rm', '-T', 'job', 'sh', '-c', 'echo oneoff $GREETING']);
          ctx.exitCode(run, 0, 'docker-compose run --rm');
          ctx.equal(run.stdout, 'oneoff\n', 'docker-compose run --rm output');
          ctx.observe('run', cliObservation(run));
          const stop = await compose(['stop']);
          ctx.exitCode(stop, 0, 'docker-compose stop');
          const st = await docker(ctx, ['inspect', '--format', '{{.State.Status}} {{.State.ExitCode}}', 'cmpa_web_1']);
          ctx.equal(st.stdout, 'exited 0\n', 'web after docker-compose stop');
          const down = await compose(['down']);
          ctx.exitCode(down, 0, 'docker-compose down');
          ctx.contains(down.stderr, 'Removing cmpa_web_1 ... done', 'docker-compose down');
          ctx.observe('down', sortedLines(down));
          const left = await docker(ctx, ['ps', '-aq', '--filter', 'label=com.docker.compose.project=cmpa']);
          ctx.equal(left.stdout, '', 'nothing left after down');
        },
      },
      {
        id: `${client}/up-attached-exit-code`,
        client,
        title: 'compose up in the foreground: attached output, --exit-code-from',
        async run(ctx) {
          const R = ctx.target.registry;
          const { compose } = project(
            ctx,
            'cmpb',
            ['version: "3.7"', 'services:', '  once:', `    image: ${R}/busybox:latest`, '    network_mode: none', '    command: ["sh", "-c", "echo line-one; echo line-two >&2; exit 4"]', ''].join('\n'),
          );
          const up = await compose(['up', '--exit-code-from', 'once']);
          ctx.observe('up', sortedLines({ ...up, stderr: '' }));
          ctx.exitCode(up, 4, 'docker-compose up --exit-code-from');
          ctx.matches(up.stdout, /once_1\s+\| line-one/, 'attached stdout');
          ctx.matches(up.stdout, /once_1\s+\| line-two/, 'attached stderr');
          ctx.matches(up.stdout, /cmpb_once_1 exited with code 4/, 'exit line');
          const down = await compose(['down']);
          ctx.exitCode(down, 0, 'docker-compose down');
        },
      },
      {
        id: `${client}/default-network-volume-port`,
        client,
        title: 'compose project on its default network, with a named volume and a published port',
        needs: ['bridge-networks', 'port-publishing'],
        timeoutMs: 180_000,
        async run(ctx) {
          const R = ctx.target.registry;
          const { compose } = project(
            ctx,
            'cmpc',
            [
              'version: "3.7"',
              'services:',
              '  web:',
              `    image: ${R}/busybox:latest`,
              '    command: ["sh", "-c", "mkdir -p /www; echo from-web > /www/index.html; exec httpd -f -p 8080 -h /www"]',
              '    ports: ["127.0.0.1::8080"]',
              '    volumes: ["data:/data"]',
              '  client:',
              `    image: ${R}/busybox:latest`,
              '    command: ["sh", "-c", "sleep 1; wget -qO- http://web:8080/ && echo ok > /data/ok; sleep 30"]',
              '    volumes: ["data:/data"]',
              '    depends_on: [web]',
              'volumes:',
              '  data: {}',
              '',
            ].join('\n'),
          );
          try {
            const up = await compose(['up', '-d']);
            ctx.observe('up', sortedLines(up));
            ctx.requireExitCode(up, 0, 'docker-compose up -d');
            ctx.contains(up.stderr, 'Creating network "cmpc_default" with the default driver', 'docker-compose up -d');
            ctx.contains(up.stderr, 'Creating volume "cmpc_data" with default driver', 'docker-compose up -d');
            const port = await compose(['port', 'web', '8080']);
            const m = /127\.0\.0\.1:(\d+)/.exec(port.stdout);
            if (!m) return ctx.abort(`docker-compose port: ${JSON.stringify(port.stdout + port.stderr)}`);
            let body = '';
            for (let i = 0; i < 30 && !body.includes('from-web'); i++) {
              body = await fetch(`http://127.0.0.1:${m[1]}/`).then((r) => r.text()).catch(() => '');
              if (!body.includes('from-web')) await sleep(300);
            }
            ctx.equal(body, 'from-web\n', 'HTTP through the published port');
            let ok = '';
            for (let i = 0; i < 30 && ok !== 'ok\n'; i++) {
              ok = (await compose(['exec', '-T', 'client', 'cat', '/data/ok'])).stdout;
              if (ok !== 'ok\n') await sleep(300);
            }
            ctx.equal(ok, 'ok\n', 'client reached web by its service name and wrote to the shared volume');
            const net = await docker(ctx, ['network', 'inspect', 'cmpc_default']);
            ctx.observe('network', tryJson(net.stdout)?.[0]);
          } finally {
            const down = await compose(['down', '-v']);
            ctx.exitCode(down, 0, 'docker-compose down -v');
          }
        },
      },
    ],
    async cleanup(target) {
      const ctx = { target, workDir: path.join(target.workDir, 'compose-cleanup') } as ScenarioContext;
      for (const name of ['cmpa', 'cmpb', 'cmpc']) {
        const containers = await cli(ctx, DOCKER_CLI_28, ['ps', '-aq', '--filter', `label=com.docker.compose.project=${name}`]);
        const ids = containers.stdout.split('\n').filter(Boolean);
        if (ids.length) await cli(ctx, DOCKER_CLI_28, ['rm', '-f', ...ids]);
      }
    },
  };
}
