/** docker-py 5.0 (Debian's python3-docker): each scenario is a function in docker-py/scenarios.py. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { PYTHON3 } from '../lib/clients';
import { runCmd } from '../lib/exec';
import { outputOf, type Scenario, type ScenarioContext, type Suite } from '../lib/scenario';
import { clientEnv } from '../lib/target';

const client = 'docker-py' as const;
/** The source tree's copy (the script is not compiled): from dist/docker-compat-tests/suites or docker-compat-tests/suites. */
const SCRIPT = [path.join(__dirname, '../../../docker-compat-tests/docker-py/scenarios.py'), path.join(__dirname, '../docker-py/scenarios.py')].find((p) => existsSync(p)) ?? 'docker-py/scenarios.py';

const scenarios: Array<[string, string]> = [
  ['system', 'ping, version, info (API version negotiated)'],
  ['images', 'pull an OCI image, list, history, tag, get, remove'],
  ['run', 'containers.run: output, ContainerError with exit status and stderr, remove=True'],
  ['lifecycle', 'run(detach) / exec_run (env, demux, user) / logs / top / stats / put+get_archive / diff / pause / rename / stop / wait / remove'],
  ['attach-socket', 'attach_socket before start: stdin in, a framed stdout chunk out'],
  ['events', 'events(since, until, filters, decode) of the lifecycle'],
  ['errors', 'NotFound / ImageNotFound with status codes and explanations'],
];

async function runPy(ctx: ScenarioContext, name: string): Promise<void> {
  const t = ctx.target;
  const images = Object.fromEntries(Object.entries(t.images).map(([k, v]) => [k, { manifestDigest: v.manifestDigest, configDigest: v.configDigest }]));
  const r = await runCmd(PYTHON3, [SCRIPT, name], {
    timeoutMs: 110_000,
    env: clientEnv(t, {
      COMPAT_REGISTRY: t.registry,
      COMPAT_TARGET: t.name,
      COMPAT_API_VERSION: t.clientApiVersion ?? '',
      COMPAT_IMAGES: JSON.stringify(images),
      PYTHONDONTWRITEBYTECODE: '1',
    }),
  });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let parsed: { failures: string[]; observations: Record<string, unknown> } | undefined;
  try {
    parsed = JSON.parse(last);
  } catch {
    ctx.abort(`docker-py script gave no result (exit ${r.code})${outputOf(r)}`);
  }
  for (const f of parsed!.failures) ctx.fail(f);
  for (const [k, v] of Object.entries(parsed!.observations)) ctx.observe(k, v);
}

export function dockerPySuite(): Suite {
  return {
    name: client,
    client,
    unavailable: () => (existsSync(PYTHON3) && existsSync(SCRIPT) ? undefined : `${PYTHON3} or ${SCRIPT} missing`),
    scenarios: scenarios.map(
      ([name, title]): Scenario => ({
        id: `${client}/${name}`,
        client,
        title,
        run: (ctx) => runPy(ctx, name),
      }),
    ),
    async cleanup(target) {
      await runCmd('/usr/local/bin/docker', ['rm', '-f', 'py-main', 'py-main-2', 'py-attach', 'py-run', 'py-run-fail'], { env: clientEnv(target) });
    },
  };
}
