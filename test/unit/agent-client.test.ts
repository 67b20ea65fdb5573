/**
 * The host side of the agent protocol against a fake agent on the other end of a real unix
 * socket: READY and version check, requests matched to answers by id, processes with their
 * output, exit and both directions of credit-based flow control, and what a lost connection
 * does to everything in flight.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { AgentConnection, AgentRequestError, type AgentProcess } from '../../src/drivers/agent/agent-client';
import {
  encodeFrame,
  encodeTlv,
  FrameDecoder,
  MessageType,
  PROTOCOL_VERSION,
  Tag,
  TlvFields,
  type Frame,
  type TlvValue,
} from '../../src/drivers/agent/protocol';
import { PaddockError } from '../../src/errors';

/** The guest end: records every frame the host sends and answers as the test tells it. */
class FakeAgent {
  readonly frames: Frame[] = [];
  private readonly decoder = new FrameDecoder();
  private waiters: Array<() => void> = [];
  closed = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.decoder.push(chunk)) this.frames.push({ ...f, payload: Buffer.from(f.payload) });
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
  }

  send(type: MessageType, id: number, payload?: Buffer | Array<[Tag, TlvValue]>): void {
    this.socket.write(frameOf(type, id, payload));
  }

  ready(version = PROTOCOL_VERSION): void {
    this.send(MessageType.Ready, 0, [
      [Tag.Version, version],
      [Tag.Kernel, '6.1.0-paddock'],
      [Tag.Agent, 'paddock-agent 0.1'],
    ]);
  }

  /** Waits for the next frame (after those already taken) that matches. */
  async next(match: (f: Frame) => boolean = () => true, timeoutMs = 2000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(match);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error('fake agent: expected frame did not come');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 20);
      });
    }
  }

  taken(type: MessageType, id?: number): Frame[] {
    const out = this.frames.filter((f) => f.type === type && (id === undefined || f.id === id));
    for (const f of out) this.frames.splice(this.frames.indexOf(f), 1);
    return out;
  }
}

function frameOf(type: MessageType, id: number, payload?: Buffer | Array<[Tag, TlvValue]>): Buffer {
  return encodeFrame(type, id, Array.isArray(payload) ? encodeTlv(payload) : payload);
}

/** Every TLV field in order, for repeated u32 tags (GROUP) that TlvFields has no getter for. */
function rawFields(payload: Buffer): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  for (let o = 0; o + 6 <= payload.length; ) {
    const len = payload.readUInt32BE(o + 2);
    out.push([payload.readUInt16BE(o), payload.subarray(o + 6, o + 6 + len)]);
    o += 6 + len;
  }
  return out;
}

const ofType = (type: MessageType) => (f: Frame) => f.type === type;
const settle = (ms = 30) => new Promise((r) => setTimeout(r, ms));

let dir: string;
let server: net.Server;
let conn: AgentConnection;
let agent: FakeAgent;

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-agent-'));
  const sock = path.join(dir, 'agent.sock');
  server = net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  const host = net.connect(sock);
  conn = new AgentConnection(host);
  agent = new FakeAgent(await accepted);
});

afterEach(async () => {
  conn.close();
  agent.socket.destroy();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

async function readyConnection(): Promise<void> {
  agent.ready();
  await conn.waitReady(2000);
}

/** Starts a process and answers its START with `pid`, optionally granting stdin credit. */
async function startProcess(spec: Parameters<AgentConnection['start']>[0] = { args: ['cat'] }, pid = 42): Promise<AgentProcess> {
  const starting = conn.start(spec);
  const req = await agent.next(ofType(MessageType.Start));
  agent.send(MessageType.Result, req.id, [[Tag.Errno, 0], [Tag.Pid, pid]]);
  const proc = await starting;
  expect(proc.id).toBe(req.id);
  return proc;
}

function collect(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    stream.on('data', (c: Buffer) => (s += c.toString()));
    stream.on('end', () => resolve(s));
    stream.on('error', reject);
  });
}

describe('READY', () => {
  it('resolves waitReady with the agent info and keeps it on the connection', async () => {
    agent.ready();
    const info = await conn.waitReady(2000);
    expect(info).toEqual({ protocolVersion: PROTOCOL_VERSION, kernelRelease: '6.1.0-paddock', agentVersion: 'paddock-agent 0.1' });
    expect(conn.info).toEqual(info);
    expect(conn.closed).toBe(false);
  });

  it('closes the connection on a protocol version mismatch', async () => {
    const closed = new Promise<Error>((resolve) => conn.once('close', resolve));
    agent.ready(PROTOCOL_VERSION + 1);
    const err = await conn.waitReady(2000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PaddockError);
    expect((err as PaddockError).kind).toBe('unavailable');
    expect((err as Error).message).toBe(`agent speaks protocol ${PROTOCOL_VERSION + 1}, host ${PROTOCOL_VERSION}`);
    expect(await closed).toBe(err);
    expect(conn.closed).toBe(true);
    expect(conn.info).toBeUndefined();
    // The host hangs up on an agent it cannot talk to.
    await agent.next(() => false, 300).catch(() => undefined);
    expect(agent.closed).toBe(true);
  });

  it('treats a READY without a version as a mismatch', async () => {
    agent.send(MessageType.Ready, 0, [[Tag.Kernel, 'x']]);
    await expect(conn.waitReady(2000)).rejects.toThrow('agent speaks protocol 0, host 1');
  });

  it('times out when the agent never says READY', async () => {
    await expect(conn.waitReady(50)).rejects.toThrow('guest agent not ready after 50 ms');
    expect(conn.closed).toBe(false);
  });
});

describe('requests', () => {
  beforeEach(readyConnection);

  it('sends MOUNT with its fields and resolves on a zero errno', async () => {
    const mounting = conn.mount({ source: 'rootfs', target: '/container', fsType: '9p', flags: 0x1, data: 'trans=virtio' });
    const req = await agent.next(ofType(MessageType.Mount));
    const f = TlvFields.decode(req.payload);
    expect(f.str(Tag.Source)).toBe('rootfs');
    expect(f.str(Tag.Target)).toBe('/container');
    expect(f.str(Tag.FsType)).toBe('9p');
    expect(f.u32(Tag.MountFlags)).toBe(1);
    expect(f.str(Tag.Data)).toBe('trans=virtio');
    agent.send(MessageType.Result, req.id, [[Tag.Errno, 0]]);
    await expect(mounting).resolves.toBeUndefined();
  });

  it('leaves optional MOUNT fields out', async () => {
    const mounting = conn.mount({ target: '/x' });
    const req = await agent.next(ofType(MessageType.Mount));
    const f = TlvFields.decode(req.payload);
    expect(f.str(Tag.Target)).toBe('/x');
    expect(f.str(Tag.Source)).toBeUndefined();
    expect(f.u32(Tag.MountFlags)).toBeUndefined();
    agent.send(MessageType.Result, req.id, [[Tag.Errno, 0]]);
    await mounting;
  });

  it('rejects with AgentRequestError carrying the errno and the agent message', async () => {
    const mounting = conn.mount({ target: '/nope' });
    const req = await agent.next(ofType(MessageType.Mount));
    agent.send(MessageType.Result, req.id, [[Tag.Errno, 2], [Tag.Message, 'mount /nope: No such file or directory']]);
    const err = await mounting.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentRequestError);
    expect((err as AgentRequestError).errno).toBe(2);
    expect((err as AgentRequestError).message).toBe('mount /nope: No such file or directory');
    expect((err as AgentRequestError).kind).toBe('invalid');
  });

  it('maps errnos other than ENOENT/EACCES to internal and invents a message when none came', async () => {
    const mounting = conn.mount({ target: '/busy' });
    const req = await agent.next(ofType(MessageType.Mount));
    agent.send(MessageType.Result, req.id, [[Tag.Errno, 16]]);
    const err = (await mounting.catch((e: unknown) => e)) as AgentRequestError;
    expect(err.errno).toBe(16);
    expect(err.kind).toBe('internal');
    expect(err.message).toBe('agent error 16');
  });

  it('matches answers to requests by id, whatever the order they come back in', async () => {
    const a = conn.mount({ target: '/a' });
    const b = conn.mount({ target: '/b' });
    const c = conn.readFile('/proc/meminfo');
    const ra = await agent.next((f) => f.type === MessageType.Mount && TlvFields.decode(f.payload).str(Tag.Target) === '/a');
    const rb = await agent.next((f) => f.type === MessageType.Mount && TlvFields.decode(f.payload).str(Tag.Target) === '/b');
    const rc = await agent.next(ofType(MessageType.ReadFile));
    expect(new Set([ra.id, rb.id, rc.id]).size).toBe(3);
    agent.send(MessageType.Result, rc.id, [[Tag.Errno, 0], [Tag.Data, 'MemTotal: 1 kB\n']]);
    agent.send(MessageType.Result, rb.id, [[Tag.Errno, 13], [Tag.Message, 'denied']]);
    agent.send(MessageType.Result, ra.id, [[Tag.Errno, 0]]);
    await expect(c).resolves.toBe('MemTotal: 1 kB\n');
    await expect(b).rejects.toMatchObject({ errno: 13, message: 'denied' });
    await expect(a).resolves.toBeUndefined();
  });

  it('ignores answers for ids it never asked about', async () => {
    agent.send(MessageType.Result, 9999, [[Tag.Errno, 0]]);
    agent.send(MessageType.Pong, 9998);
    const pinging = conn.ping(2000);
    const req = await agent.next(ofType(MessageType.Ping));
    agent.send(MessageType.Pong, req.id);
    await expect(pinging).resolves.toBeUndefined();
    expect(conn.closed).toBe(false);
  });

  it('rejects a ping that gets no PONG in time', async () => {
    await expect(conn.ping(50)).rejects.toThrow('agent did not answer a ping');
  });

  it('parses PS lines, keeping spaces and bars in the command', async () => {
    const listing = conn.ps();
    const req = await agent.next(ofType(MessageType.Ps));
    agent.send(MessageType.Result, req.id, [
      [Tag.Errno, 0],
      [Tag.Message, '7 1 0 12 340 0|sleep 300'],
      [Tag.Message, '9 7 1000 3 400 34816|sh -c a|b'],
    ]);
    expect(await listing).toEqual([
      { pid: 7, ppid: 1, uid: 0, cpuTicks: 12, startTicks: 340, tty: 0, command: 'sleep 300' },
      { pid: 9, ppid: 7, uid: 1000, cpuTicks: 3, startTicks: 400, tty: 34816, command: 'sh -c a|b' },
    ]);
  });

  it('sends SET_TIME as 8-byte seconds and nanoseconds', async () => {
    const setting = conn.setTime(new Date(1_700_000_000_123));
    const req = await agent.next(ofType(MessageType.SetTime));
    const f = TlvFields.decode(req.payload);
    expect(f.bytes(Tag.Seconds)?.readBigUInt64BE(0)).toBe(1_700_000_000n);
    expect(f.u32(Tag.Nanos)).toBe(123_000_000);
    agent.send(MessageType.Result, req.id, [[Tag.Errno, 0]]);
    await setting;
  });
});

describe('processes', () => {
  beforeEach(readyConnection);

  it('encodes START with every field of the spec, under the process id', async () => {
    const starting = conn.start({
      args: ['sh', '-c', 'echo "$A"'],
      env: ['A=1', 'B=2'],
      cwd: '/work',
      root: '/container',
      uid: 1000,
      gid: 100,
      groups: [100, 27],
      tty: true,
      rows: 40,
      cols: 120,
      openStdin: true,
    });
    const req = await agent.next(ofType(MessageType.Start));
    const f = TlvFields.decode(req.payload);
    expect(f.all(Tag.Arg)).toEqual(['sh', '-c', 'echo "$A"']);
    expect(f.all(Tag.Env)).toEqual(['A=1', 'B=2']);
    expect(f.str(Tag.Cwd)).toBe('/work');
    expect(f.str(Tag.Root)).toBe('/container');
    expect(f.u32(Tag.Uid)).toBe(1000);
    expect(f.u32(Tag.Gid)).toBe(100);
    expect(rawFields(req.payload).filter(([t]) => t === Tag.Group).map(([, v]) => v.readUInt32BE(0))).toEqual([100, 27]);
    expect(f.u32(Tag.Tty)).toBe(1);
    expect(f.u32(Tag.StdinOpen)).toBe(1);
    expect(f.u32(Tag.Rows)).toBe(40);
    expect(f.u32(Tag.Cols)).toBe(120);
    agent.send(MessageType.Result, req.id, [[Tag.Errno, 0], [Tag.Pid, 77]]);
    const proc = await starting;
    expect(proc.pid).toBe(77);
    expect(proc.id).toBe(req.id);
  });

  it('defaults uid/gid to 0 and tty/stdin to off', async () => {
    const starting = conn.start({ args: ['true'] });
    const req = await agent.next(ofType(MessageType.Start));
    const f = TlvFields.decode(req.payload);
    expect([f.u32(Tag.Uid), f.u32(Tag.Gid), f.u32(Tag.Tty), f.u32(Tag.StdinOpen)]).toEqual([0, 0, 0, 0]);
    expect(f.str(Tag.Cwd)).toBeUndefined();
    agent.send(MessageType.Result, req.id, [[Tag.Errno, 0], [Tag.Pid, 1]]);
    await starting;
  });

  it('refuses an empty argv without asking the agent', async () => {
    await expect(conn.start({ args: [] })).rejects.toMatchObject({ errno: 22 });
    await settle();
    expect(agent.taken(MessageType.Start)).toEqual([]);
  });

  it('rejects START with the exec errno, and drops later frames for that id', async () => {
    const starting = conn.start({ args: ['/nope'] });
    const req = await agent.next(ofType(MessageType.Start));
    agent.send(MessageType.Result, req.id, [[Tag.Errno, 2], [Tag.Message, 'exec /nope: No such file or directory']]);
    await expect(starting).rejects.toMatchObject({ errno: 2, message: 'exec /nope: No such file or directory', kind: 'invalid' });
    agent.send(MessageType.Stdout, req.id, Buffer.from('ghost'));
    agent.send(MessageType.Exit, req.id, [[Tag.ExitCode, 0]]);
    await settle();
    expect(conn.closed).toBe(false);
  });

  it('delivers stdout and stderr separately, all of it buffered by the time EXIT is seen', async () => {
    const proc = await startProcess();
    const atExit = new Promise<[number, number]>((resolve) =>
      proc.on('exit', () => resolve([proc.stdout.readableLength, proc.stderr.readableLength])),
    );
    agent.send(MessageType.Stdout, proc.id, Buffer.from('hello '));
    agent.send(MessageType.Stderr, proc.id, Buffer.from('oops'));
    agent.send(MessageType.Stdout, proc.id, Buffer.from('world\n'));
    agent.send(MessageType.Stdout, proc.id, Buffer.alloc(0));
    agent.send(MessageType.Stderr, proc.id, Buffer.alloc(0));
    agent.send(MessageType.Exit, proc.id, [[Tag.ExitCode, 3], [Tag.Signal, 0]]);
    expect(await proc.exited).toEqual({ exitCode: 3, signal: 0 });
    // Nothing was read yet: every output byte was already in the streams when exit fired.
    expect(await atExit).toEqual(['hello world\n'.length, 'oops'.length]);
    expect(await collect(proc.stdout)).toBe('hello world\n');
    expect(await collect(proc.stderr)).toBe('oops');
  });

  it('keeps output that arrives in the same read as the START result', async () => {
    const starting = conn.start({ args: ['echo', 'hi'] });
    const req = await agent.next(ofType(MessageType.Start));
    agent.socket.write(
      Buffer.concat([
        frameOf(MessageType.Result, req.id, [[Tag.Errno, 0], [Tag.Pid, 5]]),
        frameOf(MessageType.Stdout, req.id, Buffer.from('hi\n')),
        frameOf(MessageType.Stdout, req.id, Buffer.alloc(0)),
        frameOf(MessageType.Stderr, req.id, Buffer.alloc(0)),
        frameOf(MessageType.Exit, req.id, [[Tag.ExitCode, 0], [Tag.Signal, 0]]),
      ]),
    );
    const proc = await starting;
    expect(await collect(proc.stdout)).toBe('hi\n');
    expect(await proc.exited).toEqual({ exitCode: 0, signal: 0 });
  });

  it('reports the signal that ended a process, and 255 when EXIT carries no code', async () => {
    const a = await startProcess({ args: ['sleep', '1'] }, 10);
    const b = await startProcess({ args: ['sleep', '2'] }, 11);
    agent.send(MessageType.Exit, a.id, [[Tag.ExitCode, 0], [Tag.Signal, 9]]);
    agent.send(MessageType.Exit, b.id, Buffer.alloc(0));
    expect(await a.exited).toEqual({ exitCode: 0, signal: 9 });
    expect(await b.exited).toEqual({ exitCode: 255, signal: 0 });
  });

  it('ends output streams at EXIT even without end-of-stream frames', async () => {
    const proc = await startProcess();
    const out = collect(proc.stdout);
    agent.send(MessageType.Stdout, proc.id, Buffer.from('partial'));
    agent.send(MessageType.Exit, proc.id, [[Tag.ExitCode, 1]]);
    expect(await out).toBe('partial');
    expect((await proc.exited).exitCode).toBe(1);
  });

  it('sends SIGNAL and RESIZE frames for the process', async () => {
    const proc = await startProcess();
    proc.signal(15);
    proc.resize(24, 80);
    const sig = await agent.next(ofType(MessageType.Signal));
    expect(sig.id).toBe(proc.id);
    expect(TlvFields.decode(sig.payload).u32(Tag.Signum)).toBe(15);
    const rs = await agent.next(ofType(MessageType.Resize));
    const f = TlvFields.decode(rs.payload);
    expect([rs.id, f.u32(Tag.Rows), f.u32(Tag.Cols)]).toEqual([proc.id, 24, 80]);
  });
});

describe('flow control', () => {
  beforeEach(readyConnection);

  const stdinBytes = (id: number) => agent.taken(MessageType.Stdin, id).map((f) => f.payload);

  it('sends no stdin before the guest grants credit, and never more than granted', async () => {
    const proc = await startProcess();
    const data = Buffer.from('x'.repeat(100));
    const written = new Promise<void>((resolve, reject) => proc.stdin.write(data, (e) => (e ? reject(e) : resolve())));
    await settle(60);
    expect(stdinBytes(proc.id)).toEqual([]);

    agent.send(MessageType.WindowFromGuest, proc.id, [[Tag.Bytes, 30]]);
    await agent.next((f) => f.type === MessageType.Stdin && f.id === proc.id).then((f) => agent.frames.unshift(f));
    await settle(60);
    const first = stdinBytes(proc.id);
    expect(Buffer.concat(first).length).toBe(30);

    agent.send(MessageType.WindowFromGuest, proc.id, [[Tag.Bytes, 1000]]);
    await written;
    await settle();
    const rest = stdinBytes(proc.id);
    expect(Buffer.concat([...first, ...rest]).equals(data)).toBe(true);

    // More credit is left (930 bytes): the next write goes out at once.
    proc.stdin.write(Buffer.from('more'));
    const more = await agent.next((f) => f.type === MessageType.Stdin && f.id === proc.id);
    expect(more.payload.toString()).toBe('more');

    // End of stdin is an empty STDIN frame.
    proc.stdin.end();
    const eof = await agent.next((f) => f.type === MessageType.Stdin && f.id === proc.id);
    expect(eof.payload.length).toBe(0);
  });

  it('cuts a large write into frames of at most 64 KiB within the credit', async () => {
    const proc = await startProcess();
    agent.send(MessageType.WindowFromGuest, proc.id, [[Tag.Bytes, 256 * 1024]]);
    await settle();
    const data = Buffer.alloc(200 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    await new Promise<void>((resolve, reject) => proc.stdin.write(data, (e) => (e ? reject(e) : resolve())));
    await settle(60);
    const frames = stdinBytes(proc.id);
    expect(frames.length).toBeGreaterThanOrEqual(4);
    for (const f of frames) expect(f.length).toBeLessThanOrEqual(64 * 1024);
    expect(Buffer.concat(frames).equals(data)).toBe(true);
  });

  it('keeps each process to its own stdin credit', async () => {
    const a = await startProcess({ args: ['cat'] }, 1);
    const b = await startProcess({ args: ['cat'] }, 2);
    agent.send(MessageType.WindowFromGuest, a.id, [[Tag.Bytes, 10]]);
    a.stdin.write(Buffer.from('aaaaaaaaaaaaaaaaaaaa'));
    b.stdin.write(Buffer.from('bbbb'));
    await settle(80);
    expect(Buffer.concat(stdinBytes(a.id)).toString()).toBe('aaaaaaaaaa');
    expect(stdinBytes(b.id)).toEqual([]);
  });

  it('returns output credit with WINDOW as the consumer reads, never more than it received', async () => {
    const proc = await startProcess();
    const chunk = 64 * 1024;
    const chunks = 6;
    for (let i = 0; i < chunks; i++) agent.send(MessageType.Stdout, proc.id, Buffer.alloc(chunk, 0x41 + i));
    await settle(100);
    const credit = () =>
      agent.taken(MessageType.WindowFromHost, proc.id).reduce((n, f) => n + (TlvFields.decode(f.payload).u32(Tag.Bytes) ?? 0), 0);
    // Nobody has read yet: part of the output is still owed.
    const early = credit();
    expect(early).toBeLessThan(chunk * chunks);

    // The consumer drains everything: all the credit comes back, exactly.
    let read = 0;
    proc.stdout.on('data', (c: Buffer) => (read += c.length));
    await new Promise<void>((resolve) => {
      const check = () => (read >= chunk * chunks ? resolve() : setTimeout(check, 10));
      check();
    });
    await settle(60);
    expect(early + credit()).toBe(chunk * chunks);
  });

  it('returns credit for stderr too', async () => {
    const proc = await startProcess();
    proc.stderr.resume();
    agent.send(MessageType.Stderr, proc.id, Buffer.alloc(1234));
    const w = await agent.next((f) => f.type === MessageType.WindowFromHost && f.id === proc.id);
    expect(TlvFields.decode(w.payload).u32(Tag.Bytes)).toBe(1234);
  });
});

describe('losing the connection', () => {
  beforeEach(readyConnection);

  it('fails pending requests and running processes, and refuses new requests', async () => {
    const proc = await startProcess();
    const mounting = conn.mount({ target: '/late' });
    await agent.next(ofType(MessageType.Mount));
    // A stdin write waiting for credit must not hang forever.
    const writing = new Promise<Error | null | undefined>((resolve) => proc.stdin.write(Buffer.from('x'), resolve));
    const closed = new Promise<Error>((resolve) => conn.once('close', resolve));
    agent.socket.destroy();

    await expect(mounting).rejects.toMatchObject({ kind: 'unavailable', message: 'agent connection closed' });
    await expect(proc.exited).rejects.toThrow('agent connection closed');
    expect((await closed).message).toBe('agent connection closed');
    expect(await writing).toBeInstanceOf(Error);
    expect(proc.stdout.destroyed).toBe(true);
    expect(conn.closed).toBe(true);
    await expect(conn.ping(1000)).rejects.toMatchObject({ kind: 'unavailable' });
  });

  it('closes on an oversized frame from the agent and fails what was pending with that error', async () => {
    const mounting = conn.mount({ target: '/x' });
    await agent.next(ofType(MessageType.Mount));
    const header = Buffer.alloc(12);
    header.writeUInt32BE(2 * 1024 * 1024, 0);
    header.writeUInt16BE(MessageType.Stdout, 4);
    agent.socket.write(header);
    await expect(mounting).rejects.toThrow(/oversized frame/);
    expect(conn.closed).toBe(true);
  });

  it('close() is idempotent and rejects waitReady for a connection that never became ready', async () => {
    const other = new AgentConnection(new net.Socket());
    const waiting = other.waitReady(5000);
    other.close();
    other.close();
    await expect(waiting).rejects.toThrow('agent connection closed');
  });
});
