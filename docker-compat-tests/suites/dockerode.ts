/**
 * dockerode (docker-modem): the Node client behind testcontainers and many tools. It sends
 * unversioned paths unless pinned, hijacks attach/exec, and parses errors into statusCode + json.
 */
import { PassThrough, type Duplex } from 'node:stream';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { shape } from '../lib/normalize';
import { sleep, type ScenarioContext, type Suite } from '../lib/scenario';

const client = 'dockerode' as const;

function docker(ctx: ScenarioContext): Docker {
  if (!ctx.target.socketPath) ctx.skip('dockerode scenarios need a unix socket');
  return new Docker({ socketPath: ctx.target.socketPath, ...(ctx.target.clientApiVersion ? { version: `v${ctx.target.clientApiVersion}` } : {}) });
}

/** The 8-byte framed stdout/stderr of a non-TTY stream. */
export function demux(buf: Buffer): { stdout: string; stderr: string; bad?: string } {
  let stdout = '';
  let stderr = '';
  let off = 0;
  while (off + 8 <= buf.length) {
    const type = buf[off];
    const len = buf.readUInt32BE(off + 4);
    if (type > 2 || buf[off + 1] || buf[off + 2] || buf[off + 3]) return { stdout, stderr, bad: `bad frame header at ${off}: ${buf.subarray(off, off + 8).toString('hex')}` };
    const chunk = buf.subarray(off + 8, off + 8 + len).toString();
    if (type === 2) stderr += chunk;
    else stdout += chunk;
    off += 8 + len;
  }
  return off === buf.length ? { stdout, stderr } : { stdout, stderr, bad: `${buf.length - off} trailing bytes` };
}

function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    stream.on('data', (c: Buffer) => parts.push(Buffer.from(c)));
    stream.on('end', () => resolve(Buffer.concat(parts)));
    stream.on('close', () => resolve(Buffer.concat(parts)));
    stream.on('error', reject);
  });
}

/** What dockerode threw: {statusCode, message} (the daemon's JSON message). */
async function apiError(p: Promise<unknown>): Promise<{ statusCode?: number; message?: string } | 'no error'> {
  try {
    await p;
    return 'no error';
  } catch (err: any) {
    return { statusCode: err?.statusCode, message: err?.json?.message ?? err?.reason ?? err?.message };
  }
}

export function dockerodeSuite(): Suite {
  const main = 'do-main';
  return {
    name: client,
    client,
    scenarios: [
      {
        id: `${client}/system`,
        client,
        title: 'ping, version, info',
        async run(ctx) {
          const d = docker(ctx);
          const ping = await d.ping();
          ctx.equal(Buffer.isBuffer(ping) ? ping.toString() : String(ping), 'OK', 'ping');
          const v = await d.version();
          ctx.fields(v, { Os: 'linux', Arch: 'amd64' }, 'version');
          ctx.check(/^1\.\d+$/.test(v.ApiVersion), `version ApiVersion ${v.ApiVersion}`);
          const info = await d.info();
          ctx.fields(info, { OSType: 'linux' }, 'info');
          ctx.observe('version', { Os: v.Os, Arch: v.Arch, shape: shape(v) });
        },
      },
      {
        id: `${client}/pull-images`,
        client,
        title: 'pull with progress, inspect, list with a reference filter, history, tag, remove',
        async run(ctx) {
          const d = docker(ctx);
          const ref = `${ctx.target.registry}/hello:latest`;
          await d.getImage(ref).remove({ force: true }).catch(() => undefined);
          const stream = await d.pull(ref);
          const progress: any[] = await new Promise((resolve, reject) => d.modem.followProgress(stream, (err: unknown, out: any[]) => (err ? reject(err) : resolve(out))));
          const statuses = progress.map((p) => p.status).filter(Boolean);
          ctx.check(statuses.includes(`Status: Downloaded newer image for ${ref}`), `pull progress lacks the final status: ${JSON.stringify(statuses)}`);
          ctx.check(statuses.includes(`Digest: ${ctx.target.images.hello.manifestDigest}`), `pull progress lacks the digest: ${JSON.stringify(statuses)}`);
          ctx.check(!progress.some((p) => p.error), `pull reported an error: ${JSON.stringify(progress.filter((p) => p.error))}`);
          ctx.observe('progress', statuses.filter((s) => !/^(Downloading|Extracting)$/.test(s)));
          const ins = await d.getImage(ref).inspect();
          ctx.equal(ins.Id, ctx.target.images.hello.configDigest, 'image Id');
          ctx.equal(ins.Config?.Cmd, ['/hello'], 'image Config.Cmd');
          ctx.observe('inspect', ins);
          const list: any[] = await (d.listImages as any)({ filters: { reference: [`${ctx.target.registry}/hello`] } });
          ctx.equal(list.length, 1, 'listImages with a reference filter');
          ctx.equal(list[0]?.RepoTags, [ref], 'listImages RepoTags');
          ctx.equal(list[0]?.Id, ctx.target.images.hello.configDigest, 'listImages Id');
          ctx.observe('list', list);
          const hist = await d.getImage(ref).history();
          ctx.equal(hist.length, 1, 'history entries');
          ctx.observe('history', hist);
          const tagged = `${ctx.target.registry}/compat-${ctx.target.name}/do-hello`;
          await d.getImage(ref).tag({ repo: tagged, tag: 'v2' });
          const t = await d.getImage(`${tagged}:v2`).inspect();
          ctx.equal(t.Id, ctx.target.images.hello.configDigest, 'tagged image Id');
          const removed = await d.getImage(`${tagged}:v2`).remove();
          ctx.equal(removed, [{ Untagged: `${tagged}:v2` }], 'remove of an extra tag only untags');
        },
      },
      {
        id: `${client}/run`,
        client,
        title: 'docker.run: create, attach, start, wait; separate stdout and stderr; exit code',
        async run(ctx) {
          const d = docker(ctx);
          const out = new PassThrough();
          const err = new PassThrough();
          const outP = collect(out);
          const errP = collect(err);
          const [data, container] = await d.run(`${ctx.target.registry}/busybox:latest`, ['sh', '-c', 'echo out; echo err >&2; exit 3'], [out, err], { Tty: false, name: 'do-run' });
          out.end();
          err.end();
          ctx.equal(data?.StatusCode, 3, 'wait StatusCode');
          ctx.equal((await outP).toString(), 'out\n', 'stdout');
          ctx.equal((await errP).toString(), 'err\n', 'stderr');
          ctx.observe('wait', data);
          await container.remove();
        },
      },
      {
        id: `${client}/container-api`,
        client,
        title: 'create/start/inspect/list; exec with and without stdin; archive put/get/stat; logs; top; stats; changes; stop; wait',
        timeoutMs: 120_000,
        async run(ctx) {
          const d = docker(ctx);
          await d.getContainer(main).remove({ force: true }).catch(() => undefined);
          const c = await d.createContainer({
            name: main,
            Image: `${ctx.target.registry}/busybox:latest`,
            Cmd: ['sh', '-c', 'trap "exit 0" TERM; echo main-started; while true; do sleep 1; done'],
            Labels: { compat: 'dockerode' },
            Env: ['FROM_CREATE=1'],
          });
          ctx.check(/^[0-9a-f]{64}$/.test(c.id), `createContainer id ${c.id}`);
          await c.start();
          const ins = await c.inspect();
          ctx.fields(ins, { Name: `/${main}`, 'State.Running': true, 'Config.Labels.compat': 'dockerode' }, 'inspect');
          ctx.observe('inspect', ins);
          const list = await d.listContainers({ filters: { label: ['compat=dockerode'] } });
          ctx.equal(list.map((x) => x.Names), [[`/${main}`]], 'listContainers with a label filter');
          ctx.fields(list[0], { Id: c.id, State: 'running', 'Labels.compat': 'dockerode' }, 'listContainers entry');
          ctx.observe('list', list);

          const ex = await c.exec({ Cmd: ['sh', '-c', 'echo $FROM_CREATE $FROM_EXEC; echo e >&2; exit 6'], AttachStdout: true, AttachStderr: true, Env: ['FROM_EXEC=2'] });
          const exStream = await ex.start({ hijack: true, stdin: false });
          const exOut = demux(await collect(exStream));
          ctx.equal(exOut, { stdout: '1 2\n', stderr: 'e\n' }, 'exec output (demultiplexed)');
          let exInfo = await ex.inspect();
          for (let i = 0; i < 20 && exInfo.Running; i++) {
            await sleep(100);
            exInfo = await ex.inspect();
          }
          ctx.fields(exInfo, { ExitCode: 6, Running: false }, 'exec inspect');
          ctx.observe('exec.inspect', exInfo);

          const ex2 = await c.exec({ Cmd: ['sh', '-c', 'tr a-z A-Z'], AttachStdin: true, AttachStdout: true, AttachStderr: true });
          const s2 = (await ex2.start({ hijack: true, stdin: true })) as Duplex;
          const got2 = collect(s2);
          s2.write('shout\n');
          // Half-close: the exec's stdin sees EOF, its output still comes back.
          (s2 as any).end();
          ctx.equal(demux(await got2), { stdout: 'SHOUT\n', stderr: '' }, 'exec with stdin');

          const pack = tar.pack();
          pack.entry({ name: 'put.txt', mode: 0o640 }, 'put via archive\n');
          pack.finalize();
          await c.putArchive(pack as any, { path: '/tmp' });
          const arch = await c.getArchive({ path: '/tmp/put.txt' });
          const files = await untar(arch);
          ctx.equal(files, [{ name: 'put.txt', mode: '640', content: 'put via archive\n' }], 'getArchive after putArchive');
          const stat = await c.infoArchive({ path: '/tmp/put.txt' });
          ctx.check(stat !== undefined, 'infoArchive');

          const logs = (await c.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
          ctx.equal(demux(logs), { stdout: 'main-started\n', stderr: '' }, 'logs');
          const top = await c.top();
          ctx.equal(top.Titles, ['UID', 'PID', 'PPID', 'C', 'STIME', 'TTY', 'TIME', 'CMD'], 'top Titles');
          ctx.check((top.Processes ?? []).some((p: string[]) => /sh -c trap/.test(p[7] ?? '')), `top Processes: ${JSON.stringify(top.Processes)}`);
          const stats = await c.stats({ stream: false });
          for (const k of ['read', 'cpu_stats', 'memory_stats', 'pids_stats', 'name', 'id']) ctx.check(k in stats, `stats lacks ${k}`);
          ctx.check((stats as any).memory_stats?.usage > 0, `stats memory_stats.usage ${(stats as any).memory_stats?.usage}`);
          ctx.observe('stats.shape', shape(stats));
          const changes = await c.changes();
          ctx.check((changes ?? []).some((x: any) => x.Path === '/tmp/put.txt' && x.Kind === 1), `changes lacks {Path:/tmp/put.txt, Kind:1}: ${JSON.stringify(changes)}`);

          const startAgain = await apiError(c.start());
          ctx.check(startAgain !== 'no error' && startAgain.statusCode === 304, `start of a running container: ${JSON.stringify(startAgain)} (expected 304)`);
          const rmRunning = await apiError(c.remove());
          ctx.check(rmRunning !== 'no error' && rmRunning.statusCode === 409, `remove of a running container: ${JSON.stringify(rmRunning)} (expected 409)`);
          ctx.observe('errors', { startAgain, rmRunning });

          await c.stop({ t: 5 });
          const w = await c.wait();
          ctx.equal(w.StatusCode, 0, 'wait after stop');
          await c.remove();
          const gone = await apiError(c.inspect());
          ctx.check(gone !== 'no error' && gone.statusCode === 404, `inspect after remove: ${JSON.stringify(gone)}`);
        },
      },
      {
        id: `${client}/attach-stdin`,
        client,
        title: 'attach (hijacked, stdin) before start, as docker run -i does',
        async run(ctx) {
          const d = docker(ctx);
          await d.getContainer('do-attach').remove({ force: true }).catch(() => undefined);
          const c = await d.createContainer({
            name: 'do-attach',
            Image: `${ctx.target.registry}/busybox:latest`,
            Cmd: ['sh', '-c', 'read l; echo got:$l; read m; echo got:$m >&2'],
            OpenStdin: true,
            StdinOnce: true,
            AttachStdin: true,
            AttachStdout: true,
            AttachStderr: true,
          });
          const stream = (await c.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as Duplex;
          const got = collect(stream);
          const waited = c.wait();
          await c.start();
          stream.write('one\n');
          await sleep(200);
          stream.write('two\n');
          const w = await waited;
          const out = demux(await Promise.race([got, sleep(5000).then(() => Buffer.alloc(0))]));
          ctx.equal(w.StatusCode, 0, 'exit code');
          ctx.equal(out, { stdout: 'got:one\n', stderr: 'got:two\n' }, 'attached output');
          stream.destroy();
          await c.remove({ force: true });
        },
      },
      {
        id: `${client}/events`,
        client,
        title: 'getEvents with since/until and filters',
        async run(ctx) {
          const d = docker(ctx);
          const until = Math.floor(Date.now() / 1000) + 1;
          const stream = await d.getEvents({ since: until - 300, until, filters: { type: ['container'], container: [main] } });
          const text = (await collect(stream)).toString();
          const events = text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
          const actions = events.map((e: any) => e.Action);
          for (const a of ['create', 'start', 'exec_create: sh -c echo $FROM_CREATE $FROM_EXEC; echo e >&2; exit 6', 'exec_die', 'kill', 'die', 'stop', 'destroy']) {
            ctx.check(actions.includes(a), `events lack ${JSON.stringify(a)}: ${JSON.stringify(actions)}`);
          }
          ctx.check(events.every((e: any) => e.Type === 'container' && e.Actor?.Attributes?.name === main), 'events match the filters');
          ctx.observe('actions', actions);
        },
      },
      {
        id: `${client}/errors`,
        client,
        title: 'status codes and messages dockerode surfaces',
        async run(ctx) {
          const d = docker(ctx);
          const R = ctx.target.registry;
          const errs = {
            inspectMissing: await apiError(d.getContainer('do-nosuch').inspect()),
            imageMissing: await apiError(d.getImage(`${R}/nosuch:latest`).inspect()),
            createMissingImage: await apiError(d.createContainer({ Image: `${R}/nosuch:latest` })),
            execMissing: await apiError(d.getExec('0123456789ab').inspect()),
          };
          ctx.equal(errs.inspectMissing, { statusCode: 404, message: 'No such container: do-nosuch' }, 'inspect missing container');
          // dockerd 20.10 prefixes "no such image: X: "; dockerd ≥ 23 does not.
          ctx.check(
            errs.imageMissing !== 'no error' && errs.imageMissing.statusCode === 404 && /(^|: )No such image: \S+\/nosuch:latest$/.test(errs.imageMissing.message ?? ''),
            `inspect missing image: ${JSON.stringify(errs.imageMissing)}`,
          );
          ctx.equal(errs.createMissingImage, { statusCode: 404, message: `No such image: ${R}/nosuch:latest` }, 'create from a missing image');
          ctx.equal(errs.execMissing, { statusCode: 404, message: 'No such exec instance: 0123456789ab' }, 'inspect missing exec');
          ctx.observe('errors', errs);
        },
      },
    ],
    async cleanup(target) {
      const d = new Docker({ socketPath: target.socketPath });
      for (const n of [main, 'do-attach', 'do-run']) await d.getContainer(n).remove({ force: true }).catch(() => undefined);
    },
  };
}

async function untar(stream: NodeJS.ReadableStream): Promise<Array<{ name: string; mode: string; content: string }>> {
  const extract = tar.extract();
  const files: Array<{ name: string; mode: string; content: string }> = [];
  extract.on('entry', (header, body, next) => {
    const parts: Buffer[] = [];
    body.on('data', (c: unknown) => void parts.push(c as Buffer));
    body.on('end', () => {
      files.push({ name: header.name, mode: ((header.mode ?? 0) & 0o777).toString(8), content: Buffer.concat(parts).toString() });
      next();
    });
  });
  await new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
    stream.pipe(extract as any);
  });
  return files;
}
