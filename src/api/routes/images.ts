/**
 * Image endpoints (images, distribution, auth, commit). Handlers only translate HTTP to the
 * image service and back; streamed answers start lazily, so a failure before the first byte is
 * still an ordinary HTTP error, and one after it ends the stream with an errorDetail line as
 * dockerd does.
 */
import type { ServerResponse } from 'node:http';
import { decodeRegistryAuthHeader, type AuthConfig } from '../../drivers/registry/auth';
import { httpRequest } from '../../drivers/registry/http';
import { parsePlatform } from '../../drivers/registry/manifest';
import type { ImageRuntimeConfig } from '../../engine/image-backend';
import type { ImageService } from '../../engine/images/image-service';
import { errorMessage, formatMessage, type JsonMessage, type ProgressSink } from '../../engine/images/progress';
import { invalid, notImplemented, PaddockError } from '../../errors';
import type { RequestContext } from '../context';
import type { Route } from '../router';
import { BODY } from '../body-types';

/** What `POST /commit` needs to know about a container; the container service answers it. */
export interface CommitContainerInfo {
  id: string;
  /** The container's name, with or without the leading '/'. */
  name?: string;
  /** Full ID of the image the container was created from. */
  imageId: string;
  /** The container's writable layer (overlayfs upper dir, with whiteouts). */
  upperDir: string;
  /** The container's config (Cmd, Env, ...): fills what the commit request leaves unset. */
  config: ImageRuntimeConfig;
  labels?: Record<string, string>;
  /** Pauses a running container; resolves to the function that resumes it. */
  pause?: () => Promise<() => Promise<void>>;
}

/** NotFound("No such container: ...") when there is none. */
export type GetContainerForCommit = (idOrName: string) => Promise<CommitContainerInfo>;

/** A JSON-lines response that only starts when the first message is written. */
class LazyJsonStream implements ProgressSink {
  private res?: ServerResponse;

  constructor(private readonly ctx: RequestContext) {}

  get started(): boolean {
    return this.res !== undefined;
  }

  write(msg: JsonMessage): void {
    this.res ??= this.ctx.stream(200, 'application/json');
    this.res.write(formatMessage(msg));
  }

  end(): void {
    this.res ??= this.ctx.stream(200, 'application/json');
    this.res.end();
  }
}

async function streamJson(ctx: RequestContext, work: (sink: LazyJsonStream) => Promise<void>): Promise<void> {
  const sink = new LazyJsonStream(ctx);
  try {
    await work(sink);
  } catch (err) {
    if (!sink.started) throw err;
    sink.write(errorMessage(err));
  }
  sink.end();
}

/** Aborts when the client disconnects before the answer is complete (`docker pull` + Ctrl-C). */
function clientGone(ctx: RequestContext): AbortSignal {
  const controller = new AbortController();
  ctx.res?.on('close', () => {
    if (!ctx.res?.writableFinished) controller.abort();
  });
  return controller.signal;
}

function registryAuth(ctx: RequestContext): AuthConfig {
  const header = ctx.req.headers['x-registry-auth'];
  return decodeRegistryAuthHeader(Array.isArray(header) ? header[0] : header);
}

function platformParam(ctx: RequestContext) {
  const p = ctx.query.get('platform');
  return p ? parsePlatform(p) : undefined;
}

async function createImage(images: ImageService, ctx: RequestContext): Promise<void> {
  const fromImage = ctx.query.get('fromImage');
  const platform = platformParam(ctx);
  if (fromImage) {
    await streamJson(ctx, (sink) =>
      images.pull({ fromImage, tag: ctx.query.get('tag') ?? undefined, platform, auth: registryAuth(ctx), signal: clientGone(ctx) }, sink),
    );
    return;
  }
  const fromSrc = ctx.query.get('fromSrc');
  if (!fromSrc) throw invalid('either fromImage or fromSrc is required');
  const source = fromSrc === '-' ? ctx.req : await download(fromSrc);
  await streamJson(ctx, async (sink) => {
    await images.import(
      {
        source,
        origin: fromSrc,
        repo: ctx.query.get('repo') ?? undefined,
        tag: ctx.query.get('tag') ?? undefined,
        message: ctx.query.get('message') ?? undefined,
        changes: ctx.query.getAll('changes'),
        platform,
      },
      sink,
    );
  });
}

/** `fromSrc=<url>`: dockerd fetches the tarball itself (http or https only). */
async function download(src: string) {
  let url: URL;
  try {
    url = new URL(/^[a-z]+:\/\//i.test(src) ? src : `http://${src}`);
  } catch {
    throw invalid(`invalid fromSrc URL ${src}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(`unsupported fromSrc scheme ${url.protocol}`);
  const res = await httpRequest({ method: 'GET', url: url.toString() });
  if (res.statusCode !== 200) {
    res.resume();
    throw invalid(`Get "${url}": status ${res.statusCode}`);
  }
  return res;
}

async function commit(images: ImageService, getContainer: GetContainerForCommit | undefined, ctx: RequestContext): Promise<void> {
  if (!getContainer) throw notImplemented('commit is not available: this daemon has no container service');
  const containerRef = ctx.query.get('container') ?? '';
  const body = await ctx.jsonBody<ImageRuntimeConfig | null>(null, BODY.commitConfig);
  const container = await getContainer(containerRef);
  const resume = ctx.bool('pause', true) && container.pause ? await container.pause() : undefined;
  let id: string;
  try {
    id = await images.commitContainer({
      containerId: container.id,
      containerName: container.name?.replace(/^\//, ''),
      containerLabels: container.labels,
      imageId: container.imageId,
      upperDir: container.upperDir,
      containerConfig: container.config,
      requestConfig: body ?? {},
      changes: ctx.query.getAll('changes'),
      repo: ctx.query.get('repo') || undefined,
      tag: ctx.query.get('tag') || undefined,
      author: ctx.query.get('author') || undefined,
      comment: ctx.query.get('comment') || undefined,
    });
  } finally {
    await resume?.();
  }
  ctx.json(201, { Id: id });
}

async function login(images: ImageService, ctx: RequestContext): Promise<void> {
  const auth = await ctx.jsonBody<AuthConfig>({}, BODY.auth);
  try {
    ctx.json(200, await images.login(auth));
  } catch (err) {
    // dockerd answers every failed login with 401 and the registry's own words.
    if (err instanceof PaddockError && err.kind === 'invalid') throw err;
    ctx.json(401, { message: err instanceof Error ? err.message : String(err) });
  }
}

function sendTar(ctx: RequestContext, stream: NodeJS.ReadableStream): void {
  const res = ctx.stream(200, 'application/x-tar');
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

export function imageRoutes(images: ImageService, getContainerForCommit?: GetContainerForCommit): Route[] {
  return [
    { method: 'POST', path: '/images/create', handler: (ctx) => createImage(images, ctx) },
    {
      method: 'GET',
      path: '/images/json',
      handler: async (ctx) => ctx.json(200, await images.list({ all: ctx.bool('all'), filters: ctx.filters(), apiVersion: ctx.apiVersion })),
    },
    { method: 'POST', path: '/images/load', handler: (ctx) => streamJson(ctx, (sink) => images.load(ctx.req, ctx.bool('quiet'), sink)) },
    { method: 'POST', path: '/images/prune', handler: async (ctx) => ctx.json(200, await images.prune(ctx.filters())) },
    { method: 'GET', path: '/images/get', handler: (ctx) => sendTar(ctx, images.save(ctx.query.getAll('names'))) },
    { method: 'GET', path: '/images/{name:.*}/json', handler: (ctx) => ctx.json(200, images.inspect(ctx.params.name, ctx.apiVersion)) },
    { method: 'GET', path: '/images/{name:.*}/history', handler: (ctx) => ctx.json(200, images.history(ctx.params.name)) },
    { method: 'GET', path: '/images/{name:.*}/get', handler: (ctx) => sendTar(ctx, images.save([ctx.params.name])) },
    {
      method: 'POST',
      path: '/images/{name:.*}/tag',
      handler: async (ctx) => {
        await images.tag(ctx.params.name, ctx.query.get('repo'), ctx.query.get('tag'));
        ctx.noContent(201);
      },
    },
    {
      method: 'POST',
      path: '/images/{name:.*}/push',
      handler: (ctx) => streamJson(ctx, (sink) => images.push(ctx.params.name, ctx.query.get('tag'), registryAuth(ctx), sink)),
    },
    {
      method: 'DELETE',
      path: '/images/{name:.*}',
      handler: async (ctx) =>
        ctx.json(200, await images.remove(ctx.params.name, { force: ctx.bool('force'), noprune: ctx.bool('noprune') })),
    },
    {
      method: 'GET',
      path: '/distribution/{name:.*}/json',
      handler: async (ctx) => ctx.json(200, await images.distributionInspect(ctx.params.name, registryAuth(ctx))),
    },
    { method: 'POST', path: '/auth', handler: (ctx) => login(images, ctx) },
    { method: 'POST', path: '/commit', handler: (ctx) => commit(images, getContainerForCommit, ctx) },
  ];
}
