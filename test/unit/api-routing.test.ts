/**
 * The HTTP edge without a server: the router's Docker URL grammar, API version negotiation,
 * error kinds → statuses, and the attach stream helpers (8-byte frames, detach keys).
 */
import { PassThrough } from 'node:stream';
import { errorBody, httpStatusOf } from '../../src/api/http-errors';
import { Router, type Route } from '../../src/api/router';
import { detachFilter, frame, parseDetachKeys, pipeStdin } from '../../src/api/streams';
import { atLeast, compareVersions, MAX_API_VERSION, MIN_API_VERSION, negotiate } from '../../src/api/version';
import {
  conflict,
  errorKind,
  internal,
  invalid,
  notFound,
  notImplemented,
  notModified,
  PaddockError,
  unavailable,
  type ErrorKind,
} from '../../src/errors';

describe('Router', () => {
  const h = (name: string) => Object.assign(() => undefined, { label: name });
  const routes: Route[] = [
    { method: 'GET', path: '/_ping', handler: h('ping') },
    { method: 'HEAD', path: '/_ping', handler: h('ping-head') },
    { method: 'GET', path: '/containers/json', handler: h('ps') },
    { method: 'GET', path: '/containers/{id}/json', handler: h('inspect') },
    { method: 'POST', path: '/containers/{id}/attach', handler: h('attach'), hijack: true },
    { method: 'GET', path: '/images/{name:.*}/json', handler: h('image-inspect') },
    { method: 'DELETE', path: '/images/{name:.*}', handler: h('rmi') },
    { method: 'POST', path: '/images/{name:.*}/tag', handler: h('tag') },
    { method: 'GET', path: '/v1.2/literal', handler: h('literal') },
    { method: 'GET', path: '/exec/{id}/json', handler: h('exec-inspect') },
  ];
  const router = new Router(routes);
  const hit = (method: string, path: string) => {
    const m = router.match(method, path);
    if (!m || m === 'method-not-allowed') return m;
    return { name: (m.route.handler as unknown as { label: string }).label, params: m.params };
  };

  it('takes slashes, colons and dots into a greedy {name:.*} parameter', () => {
    expect(hit('GET', '/images/127.0.0.1:5000/library/busybox:1.36/json')).toEqual({
      name: 'image-inspect',
      params: { name: '127.0.0.1:5000/library/busybox:1.36' },
    });
    expect(hit('DELETE', '/images/reg.example:443/a/b/c@sha256:abcd')).toEqual({
      name: 'rmi',
      params: { name: 'reg.example:443/a/b/c@sha256:abcd' },
    });
    expect(hit('POST', '/images/busybox/tag')).toEqual({ name: 'tag', params: { name: 'busybox' } });
  });

  it('percent-decodes parameters', () => {
    expect(hit('GET', '/images/my%2Frepo%3Atag/json')).toEqual({ name: 'image-inspect', params: { name: 'my/repo:tag' } });
  });

  it('keeps {id} to one segment', () => {
    expect(hit('GET', '/containers/abc/json')).toEqual({ name: 'inspect', params: { id: 'abc' } });
    expect(hit('GET', '/containers/a/b/json')).toBeUndefined();
  });

  it('prefers the earlier route: /containers/json is the list, not inspect of "json"', () => {
    expect(hit('GET', '/containers/json')).toEqual({ name: 'ps', params: {} });
  });

  it('accepts one trailing slash', () => {
    expect(hit('GET', '/containers/abc/json/')).toEqual({ name: 'inspect', params: { id: 'abc' } });
    expect(hit('GET', '/containers/abc/json//')).toBeUndefined();
  });

  it('answers method-not-allowed for a known path and undefined for an unknown one', () => {
    expect(router.match('POST', '/containers/abc/json')).toBe('method-not-allowed');
    expect(router.match('PUT', '/_ping')).toBe('method-not-allowed');
    expect(router.match('GET', '/nothing/here')).toBeUndefined();
    expect(router.match('GET', '/containers/abc/attach')).toBe('method-not-allowed');
  });

  it('serves HEAD from a GET route, and from an explicit HEAD route when one comes first', () => {
    expect(hit('HEAD', '/exec/e1/json')).toEqual({ name: 'exec-inspect', params: { id: 'e1' } });
    expect(hit('HEAD', '/_ping')).toEqual({ name: 'ping', params: {} });
    expect(router.match('HEAD', '/containers/abc/attach')).toBe('method-not-allowed');
  });

  it('does not serve GET from a HEAD-only route', () => {
    const r = new Router([{ method: 'HEAD', path: '/only-head', handler: () => undefined }]);
    expect(r.match('GET', '/only-head')).toBe('method-not-allowed');
  });

  it('matches literal dots in paths literally', () => {
    expect(hit('GET', '/v1.2/literal')).toEqual({ name: 'literal', params: {} });
    expect(hit('GET', '/v1x2/literal')).toBeUndefined();
  });

  it('anchors the whole path', () => {
    expect(hit('GET', '/x/_ping')).toBeUndefined();
    expect(hit('GET', '/_pingpong')).toBeUndefined();
  });

  it('lists routes with their hijack flag', () => {
    const listed = router.list();
    expect(listed).toHaveLength(routes.length);
    expect(listed.find((r) => r.path === '/containers/{id}/attach')).toMatchObject({ method: 'POST', hijack: true });
    expect(Object.keys(listed[0]).sort()).toEqual(['handler', 'hijack', 'method', 'path']);
  });
});

describe('API versions', () => {
  it('serves the newest version when none is asked for', () => {
    expect(negotiate(undefined)).toBe(MAX_API_VERSION);
    expect(negotiate('')).toBe(MAX_API_VERSION);
  });

  it('serves any version in range as asked', () => {
    expect(negotiate(MIN_API_VERSION)).toBe(MIN_API_VERSION);
    expect(negotiate('1.41')).toBe('1.41');
    expect(negotiate(MAX_API_VERSION)).toBe(MAX_API_VERSION);
  });

  it("refuses a too-new version with dockerd's message", () => {
    expect(() => negotiate('1.99')).toThrow(`client version 1.99 is too new. Maximum supported API version is ${MAX_API_VERSION}`);
    expect(() => negotiate('2.0')).toThrow(/too new/);
    try {
      negotiate('1.99');
    } catch (e) {
      expect(errorKind(e)).toBe('invalid');
    }
  });

  it("refuses a too-old version with dockerd's message", () => {
    expect(() => negotiate('1.12')).toThrow(
      `client version 1.12 is too old. Minimum supported API version is ${MIN_API_VERSION}, please upgrade your client to a newer version`,
    );
  });

  it('compares numerically per component', () => {
    expect(compareVersions('1.9', '1.10')).toBeLessThan(0);
    expect(compareVersions('1.40', '1.4')).toBeGreaterThan(0);
    expect(compareVersions('2.0', '1.51')).toBeGreaterThan(0);
    expect(compareVersions('1.41', '1.41')).toBe(0);
    expect(atLeast('1.44', '1.44')).toBe(true);
    expect(atLeast('1.43', '1.44')).toBe(false);
    expect(atLeast('1.100', '1.44')).toBe(true);
  });
});

describe('error kinds → HTTP status', () => {
  const table: Array<[ErrorKind, PaddockError, number]> = [
    ['not-found', notFound('no such container: x'), 404],
    ['conflict', conflict('name in use'), 409],
    ['invalid', invalid('bad'), 400],
    ['not-modified', notModified(), 304],
    ['unavailable', unavailable('later'), 503],
    ['forbidden', new PaddockError('forbidden', 'no'), 403],
    ['not-implemented', notImplemented('not yet'), 501],
    ['internal', internal('boom'), 500],
  ];

  it.each(table)('%s → %i', (kind, err, status) => {
    expect(err.kind).toBe(kind);
    expect(errorKind(err)).toBe(kind);
    expect(httpStatusOf(err)).toBe(status);
  });

  it('treats anything that is not a PaddockError as internal', () => {
    expect(errorKind(new TypeError('x'))).toBe('internal');
    expect(httpStatusOf(new Error('x'))).toBe(500);
    expect(httpStatusOf('a string')).toBe(500);
    expect(httpStatusOf(undefined)).toBe(500);
  });

  it("gives dockerd's {message} body", () => {
    expect(errorBody(notFound('No such container: abc'))).toEqual({ message: 'No such container: abc' });
    expect(errorBody('plain')).toEqual({ message: 'plain' });
  });

  it('keeps the cause of unavailable and internal errors', () => {
    const cause = new Error('ECONNREFUSED');
    expect(unavailable('registry down', cause).cause).toBe(cause);
    expect(internal('oops', cause).cause).toBe(cause);
    expect(notModified().message).toBe('');
    expect(notFound('x')).toBeInstanceOf(Error);
    expect(notFound('x').name).toBe('PaddockError');
  });
});

describe('stream frames', () => {
  it('prefixes [stream, 0, 0, 0, size BE32]', () => {
    expect(frame(1, Buffer.from('hi')).toString('hex')).toBe('0100000000000002' + '6869');
    expect(frame(2, Buffer.alloc(0)).toString('hex')).toBe('0200000000000000');
    const big = frame(0, Buffer.alloc(0x01020304 & 0xffff));
    expect(big.readUInt32BE(4)).toBe(0x0304);
    expect(big[0]).toBe(0);
  });

  it('writes lengths above 16 bits big-endian', () => {
    const f = frame(1, Buffer.alloc(70000));
    expect(f.subarray(0, 8).toString('hex')).toBe('0100000000011170');
    expect(f.length).toBe(70008);
  });
});

describe('parseDetachKeys', () => {
  it('defaults to ctrl-p,ctrl-q', () => {
    expect([...parseDetachKeys(undefined)]).toEqual([16, 17]);
    expect([...parseDetachKeys(null)]).toEqual([16, 17]);
    expect([...parseDetachKeys('')]).toEqual([16, 17]);
    expect([...parseDetachKeys('', 'ctrl-x')]).toEqual([24]);
  });

  it('maps ctrl- letters and the punctuation dockerd knows', () => {
    expect([...parseDetachKeys('ctrl-a,ctrl-z')]).toEqual([1, 26]);
    expect([...parseDetachKeys('ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_')]).toEqual([0, 27, 28, 29, 30, 31]);
  });

  it('takes single characters as themselves', () => {
    expect([...parseDetachKeys('a,b,ctrl-c')]).toEqual([97, 98, 3]);
    expect([...parseDetachKeys('X')]).toEqual([88]);
  });

  it.each(['ctrl-', 'ctrl-1', 'ctrl-ab', 'alt-a', 'ab', 'ctrl-p,,ctrl-q'])('refuses %j with dockerd\'s message', (spec) => {
    let err: unknown;
    try {
      parseDetachKeys(spec);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PaddockError);
    expect((err as PaddockError).kind).toBe('invalid');
    expect((err as Error).message).toBe(`Invalid detach keys (${spec}) provided`);
  });

  // moby/term ToBytes accepts the literal key name "DEL" as byte 127 (docker attach --detach-keys DEL).
  test('accepts DEL as 127, as moby/term does', () => {
    expect([...parseDetachKeys('DEL')]).toEqual([127]);
  });
});

describe('detachFilter', () => {
  async function run(keys: string, chunks: Array<string | number[]>): Promise<{ out: number[]; detached: number; ended: boolean }> {
    let detached = 0;
    const filter = detachFilter(parseDetachKeys(keys), () => detached++);
    const out: number[] = [];
    filter.on('data', (c: Buffer) => out.push(...c));
    for (const c of chunks) {
      filter.write(typeof c === 'string' ? Buffer.from(c) : Buffer.from(c));
      await new Promise((r) => setImmediate(r));
    }
    return { out, detached, ended: filter.writableEnded };
  }
  const P = 16;
  const Q = 17;

  it('passes ordinary input through unchanged', async () => {
    const r = await run('ctrl-p,ctrl-q', ['hello', [0, 255, 10]]);
    expect(Buffer.from(r.out).toString('latin1')).toBe('hello\x00\xff\n');
    expect(r.detached).toBe(0);
  });

  it('detaches on the sequence in one chunk, forwarding only what came before it', async () => {
    const r = await run('ctrl-p,ctrl-q', [[104, 105, P, Q, 120, 121]]);
    expect(r.out).toEqual([104, 105]);
    expect(r.detached).toBe(1);
  });

  it('holds back the start of a sequence across chunks, then detaches without leaking it', async () => {
    let detached = 0;
    const filter = detachFilter(parseDetachKeys('ctrl-p,ctrl-q'), () => detached++);
    const out: number[] = [];
    filter.on('data', (c: Buffer) => out.push(...c));
    filter.write(Buffer.from([97, P]));
    await new Promise((r) => setImmediate(r));
    expect(out).toEqual([97]); // ctrl-p held back
    filter.write(Buffer.from([Q]));
    await new Promise((r) => setImmediate(r));
    expect(out).toEqual([97]);
    expect(detached).toBe(1);
  });

  it('releases held bytes, in order, when the sequence is broken', async () => {
    const r = await run('ctrl-p,ctrl-q', [[P], [120, P], [P, Q]]);
    // P x P | P Q: the first P and x go through, the second P goes through once the third starts a new match.
    expect(r.out).toEqual([P, 120, P]);
    expect(r.detached).toBe(1);
  });

  it('handles longer sequences and a single key', async () => {
    expect((await run('a,b,c', ['xab', 'd', 'abc'])).out).toEqual([...Buffer.from('xabd')]);
    const single = await run('ctrl-x', ['ok', [24]]);
    expect(single.out).toEqual([...Buffer.from('ok')]);
    expect(single.detached).toBe(1);
  });

  it('pipeStdin passes input straight through without keys and through the filter with them', async () => {
    const input = new PassThrough();
    expect(pipeStdin(input, null, () => undefined)).toBe(input);
    expect(pipeStdin(input, Buffer.alloc(0), () => undefined)).toBe(input);
    expect(pipeStdin(null, Buffer.from([P]), () => undefined)).toBeNull();
    let detached = false;
    const filtered = pipeStdin(input, Buffer.from([P, Q]), () => (detached = true))!;
    const out: number[] = [];
    filtered.on('data', (c: Buffer) => out.push(...c));
    input.write(Buffer.from([65, P, Q]));
    await new Promise((r) => setImmediate(r));
    expect(out).toEqual([65]);
    expect(detached).toBe(true);
  });
});
