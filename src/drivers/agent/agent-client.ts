/**
 * Host side of the agent protocol over any byte stream the hypervisor driver hands us
 * (virtio-serial socket today, vsock later). One connection multiplexes every process of a VM;
 * each process gets Node streams with the protocol's credit-based flow control underneath.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { Readable, Writable } from 'node:stream';
import { PaddockError, unavailable } from '../../errors';
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
} from './protocol';

/** Stdin frames are kept well under MAX_FRAME so one big write cannot hog the channel. */
const STDIN_CHUNK = 64 * 1024;

export interface AgentInfo {
  protocolVersion: number;
  kernelRelease: string;
  agentVersion: string;
}

export interface MountRequest {
  source?: string;
  target: string;
  fsType?: string;
  flags?: number;
  data?: string;
}

export interface ProcessSpec {
  args: string[];
  env?: string[];
  cwd?: string;
  /** Directory the process is chrooted into (the container's root inside the guest). */
  root?: string;
  uid?: number;
  gid?: number;
  groups?: number[];
  tty?: boolean;
  rows?: number;
  cols?: number;
  /** When false the process reads /dev/null. */
  openStdin?: boolean;
  /**
   * 'new': the process is PID 1 of its own PID namespace (a container's main process);
   * { joinProcess }: it joins the namespace of that earlier process (exec).
   */
  pidNamespace?: 'new' | { joinProcess: number };
}

export interface GuestProcessInfo {
  pid: number;
  ppid: number;
  uid: number;
  /** utime + stime, in clock ticks (100 Hz). */
  cpuTicks: number;
  /** Start time in clock ticks since guest boot. */
  startTicks: number;
  tty: number;
  command: string;
}

export interface ProcessExit {
  exitCode: number;
  /** Signal that ended the process, 0 if it exited by itself. */
  signal: number;
}

/** Raised when the agent answers a request with an errno. */
export class AgentRequestError extends PaddockError {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(errno === 2 || errno === 13 ? 'invalid' : 'internal', message);
  }
}

export class AgentProcess extends EventEmitter {
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly stdin: Writable;
  readonly exited: Promise<ProcessExit>;
  pid = 0;

  private stdinCredit = 0;
  private creditWaiters: Array<() => void> = [];
  private owedOutputCredit = 0;
  private resolveExit!: (e: ProcessExit) => void;
  private rejectExit!: (e: Error) => void;

  constructor(
    readonly id: number,
    private readonly conn: AgentConnection,
  ) {
    super();
    this.exited = new Promise((resolve, reject) => {
      this.resolveExit = resolve;
      this.rejectExit = reject;
    });
    this.exited.catch(() => undefined); // observed by callers that care
    const onRead = () => this.returnOutputCredit();
    this.stdout = new Readable({ read: onRead, highWaterMark: 256 * 1024 });
    this.stderr = new Readable({ read: onRead, highWaterMark: 256 * 1024 });
    this.stdin = new Writable({
      highWaterMark: STDIN_CHUNK,
      write: (chunk: Buffer, _enc, cb) => this.writeStdin(chunk).then(() => cb(), cb),
      final: (cb) => {
        this.conn.send(MessageType.Stdin, this.id);
        cb();
      },
    });
    this.stdin.on('error', () => undefined); // writes after exit are dropped, as with a closed pipe
  }

  signal(signum: number): void {
    this.conn.send(MessageType.Signal, this.id, encodeTlv([[Tag.Signum, signum]]));
  }

  resize(rows: number, cols: number): void {
    this.conn.send(MessageType.Resize, this.id, encodeTlv([[Tag.Rows, rows], [Tag.Cols, cols]]));
  }

  private async writeStdin(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      while (this.stdinCredit <= 0) {
        if (this.conn.closed) throw unavailable('agent connection closed');
        await new Promise<void>((resolve) => this.creditWaiters.push(resolve));
      }
      const n = Math.min(this.stdinCredit, STDIN_CHUNK, chunk.length - offset);
      this.conn.send(MessageType.Stdin, this.id, chunk.subarray(offset, offset + n));
      this.stdinCredit -= n;
      offset += n;
    }
  }

  private returnOutputCredit(): void {
    if (this.owedOutputCredit > 0) {
      this.conn.send(MessageType.WindowFromHost, this.id, encodeTlv([[Tag.Bytes, this.owedOutputCredit]]));
      this.owedOutputCredit = 0;
    }
  }

  /** @internal called by the connection */
  onFrame(frame: Frame): void {
    switch (frame.type) {
      case MessageType.Stdout:
      case MessageType.Stderr: {
        const stream = frame.type === MessageType.Stdout ? this.stdout : this.stderr;
        if (frame.payload.length === 0) {
          stream.push(null);
          return;
        }
        // Copy: the payload is a view into the decoder's buffer.
        const below = stream.push(Buffer.from(frame.payload));
        this.owedOutputCredit += frame.payload.length;
        if (below) this.returnOutputCredit();
        return;
      }
      case MessageType.WindowFromGuest:
        this.stdinCredit += TlvFields.decode(frame.payload).u32(Tag.Bytes) ?? 0;
        for (const w of this.creditWaiters.splice(0)) w();
        return;
      case MessageType.Exit: {
        const f = TlvFields.decode(frame.payload);
        this.finish({ exitCode: f.u32(Tag.ExitCode) ?? 255, signal: f.u32(Tag.Signal) ?? 0 });
        return;
      }
    }
  }

  /** True once the process has exited (or its VM went away). */
  finished = false;

  /** @internal */
  finish(exit: ProcessExit): void {
    this.finished = true;
    if (!this.stdout.readableEnded) this.stdout.push(null);
    if (!this.stderr.readableEnded) this.stderr.push(null);
    this.resolveExit(exit);
    this.emit('exit', exit);
  }

  /** @internal */
  fail(err: Error): void {
    this.finished = true;
    // The error travels through `exited`; the streams just stop (an 'error' event here would
    // crash whoever did not listen for one).
    this.stdout.destroy();
    this.stderr.destroy();
    for (const w of this.creditWaiters.splice(0)) w();
    this.rejectExit(err);
  }
}

interface PendingRequest {
  resolve: (f: TlvFields) => void;
  reject: (e: Error) => void;
}

export class AgentConnection extends EventEmitter {
  closed = false;
  info?: AgentInfo;
  private readonly decoder = new FrameDecoder();
  private readonly requests = new Map<number, PendingRequest>();
  private readonly processes = new Map<number, AgentProcess>();
  private nextId = 1;
  private dnsResolver: ((query: Buffer) => Promise<Buffer | null>) | null = null;
  private readonly ready: Promise<AgentInfo>;
  private resolveReady!: (i: AgentInfo) => void;
  private rejectReady!: (e: Error) => void;

  constructor(private readonly stream: Duplex) {
    super();
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => undefined);
    stream.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = this.decoder.push(chunk);
      } catch (err) {
        this.close(err as Error);
        return;
      }
      for (const f of frames) this.dispatch(f);
    });
    stream.on('error', (err) => this.close(err));
    stream.on('close', () => this.close(unavailable('agent connection closed')));
  }

  /** Resolves when the agent has said READY (it does so once, right after boot). */
  waitReady(timeoutMs: number): Promise<AgentInfo> {
    return withTimeout(this.ready, timeoutMs, `guest agent not ready after ${timeoutMs} ms`);
  }

  async mount(req: MountRequest): Promise<void> {
    const fields: Array<[Tag, string | number]> = [[Tag.Target, req.target]];
    if (req.source !== undefined) fields.push([Tag.Source, req.source]);
    if (req.fsType !== undefined) fields.push([Tag.FsType, req.fsType]);
    if (req.flags !== undefined) fields.push([Tag.MountFlags, req.flags]);
    if (req.data !== undefined) fields.push([Tag.Data, req.data]);
    await this.request(MessageType.Mount, encodeTlv(fields));
  }

  /** Creates a symbolic link in the guest (an existing target is left alone). */
  async symlink(linkText: string, target: string): Promise<void> {
    await this.request(MessageType.Symlink, encodeTlv([[Tag.Source, linkText], [Tag.Target, target]]));
  }

  async setHostname(name: string): Promise<void> {
    await this.request(MessageType.Hostname, encodeTlv([[Tag.Data, name]]));
  }

  /** Every process in the guest except the agent (see PROTOCOL.md, `PS`). */
  async ps(): Promise<GuestProcessInfo[]> {
    const f = await this.request(MessageType.Ps, Buffer.alloc(0));
    return f.all(Tag.Message).map((line) => {
      const bar = line.indexOf('|');
      const [pid, ppid, uid, cpuTicks, startTicks, tty] = line.slice(0, bar).split(' ').map(Number);
      return { pid, ppid, uid, cpuTicks, startTicks, tty, command: line.slice(bar + 1) };
    });
  }

  /** Reads a small guest file (procfs) for statistics. */
  async readFile(guestPath: string): Promise<string> {
    const f = await this.request(MessageType.ReadFile, encodeTlv([[Tag.Target, guestPath]]));
    return f.bytes(Tag.Data)?.toString('utf8') ?? '';
  }

  /** Adds a network interface: a VLAN on the VM's trunk NIC, named as Docker names them. */
  async addInterface(i: GuestInterface): Promise<void> {
    const fields: Array<[Tag, TlvValue]> = [
      [Tag.IfName, i.name],
      [Tag.Vlan, i.vlan],
      [Tag.Mac, Buffer.from(i.mac.split(':').map((h) => parseInt(h, 16)))],
      [Tag.Ipv4, Buffer.from(i.ipv4.split('.').map(Number))],
      [Tag.Prefix, i.prefixLength],
    ];
    if (i.gateway) fields.push([Tag.Gateway, Buffer.from(i.gateway.split('.').map(Number))]);
    if (i.mtu) fields.push([Tag.Mtu, i.mtu]);
    await this.request(MessageType.NetAdd, encodeTlv(fields));
  }

  async removeInterface(name: string): Promise<void> {
    await this.request(MessageType.NetRemove, encodeTlv([[Tag.IfName, name]]));
  }

  /**
   * Answers the guest's DNS queries (the agent listens on 127.0.0.11:53). A resolver that
   * throws or returns null leaves the query unanswered; the guest's resolver retries.
   */
  setDnsResolver(resolve: ((query: Buffer) => Promise<Buffer | null>) | null): void {
    this.dnsResolver = resolve;
  }

  async start(spec: ProcessSpec): Promise<AgentProcess> {
    if (!spec.args.length) throw new AgentRequestError(22, 'no command');
    const fields: Array<[Tag, string | number]> = spec.args.map((a) => [Tag.Arg, a] as [Tag, string]);
    for (const e of spec.env ?? []) fields.push([Tag.Env, e]);
    if (spec.cwd) fields.push([Tag.Cwd, spec.cwd]);
    if (spec.root) fields.push([Tag.Root, spec.root]);
    fields.push([Tag.Uid, spec.uid ?? 0], [Tag.Gid, spec.gid ?? 0]);
    for (const g of spec.groups ?? []) fields.push([Tag.Group, g]);
    fields.push([Tag.Tty, spec.tty ? 1 : 0], [Tag.StdinOpen, spec.openStdin ? 1 : 0]);
    if (spec.pidNamespace === 'new') fields.push([Tag.PidNamespace, 1]);
    else if (spec.pidNamespace) fields.push([Tag.JoinPidNamespaceOf, spec.pidNamespace.joinProcess]);
    if (spec.rows) fields.push([Tag.Rows, spec.rows]);
    if (spec.cols) fields.push([Tag.Cols, spec.cols]);
    const id = this.allocateId();
    const proc = new AgentProcess(id, this);
    // Registered before the request: output can arrive in the same read as the RESULT.
    this.processes.set(id, proc);
    try {
      const result = await this.request(MessageType.Start, encodeTlv(fields), id);
      proc.pid = result.u32(Tag.Pid) ?? 0;
    } catch (err) {
      this.processes.delete(id);
      throw err;
    }
    proc.exited.finally(() => this.processes.delete(id)).catch(() => undefined);
    return proc;
  }

  async ping(timeoutMs = 5000): Promise<void> {
    await withTimeout(this.request(MessageType.Ping, Buffer.alloc(0)), timeoutMs, 'agent did not answer a ping');
  }

  async setTime(date: Date): Promise<void> {
    const ms = date.getTime();
    const seconds = Math.floor(ms / 1000);
    const secBuf = Buffer.alloc(8);
    secBuf.writeBigUInt64BE(BigInt(seconds));
    await this.request(MessageType.SetTime, encodeTlv([[Tag.Seconds, secBuf], [Tag.Nanos, (ms % 1000) * 1e6]]));
  }

  /** Asks the guest to power off; resolves when the agent acknowledged (the VM exits after). */
  async shutdown(): Promise<void> {
    await this.request(MessageType.Shutdown, Buffer.alloc(0));
  }

  send(type: MessageType, id: number, payload?: Buffer): void {
    if (this.closed) return;
    this.stream.write(encodeFrame(type, id, payload));
  }

  close(err: Error = unavailable('agent connection closed')): void {
    if (this.closed) return;
    this.closed = true;
    this.rejectReady(err);
    for (const r of this.requests.values()) r.reject(err);
    this.requests.clear();
    for (const p of this.processes.values()) p.fail(err);
    this.processes.clear();
    this.stream.destroy();
    this.emit('close', err);
  }

  private allocateId(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1;
    return id;
  }

  private request(type: MessageType, payload: Buffer, id = this.allocateId()): Promise<TlvFields> {
    if (this.closed) return Promise.reject(unavailable('agent connection closed'));
    return new Promise((resolve, reject) => {
      this.requests.set(id, { resolve, reject });
      this.send(type, id, payload);
    });
  }

  private dispatch(frame: Frame): void {
    switch (frame.type) {
      case MessageType.Ready: {
        const f = TlvFields.decode(frame.payload);
        const info: AgentInfo = {
          protocolVersion: f.u32(Tag.Version) ?? 0,
          kernelRelease: f.str(Tag.Kernel) ?? '',
          agentVersion: f.str(Tag.Agent) ?? '',
        };
        if (info.protocolVersion !== PROTOCOL_VERSION) {
          this.close(unavailable(`agent speaks protocol ${info.protocolVersion}, host ${PROTOCOL_VERSION}`));
          return;
        }
        this.info = info;
        this.resolveReady(info);
        return;
      }
      case MessageType.Result:
      case MessageType.Pong: {
        const pending = this.requests.get(frame.id);
        if (!pending) return;
        this.requests.delete(frame.id);
        if (frame.type === MessageType.Pong) return pending.resolve(TlvFields.decode(Buffer.alloc(0)));
        const f = TlvFields.decode(frame.payload);
        const errno = f.u32(Tag.Errno) ?? 0;
        if (errno === 0) pending.resolve(f);
        else pending.reject(new AgentRequestError(errno, f.str(Tag.Message) ?? `agent error ${errno}`));
        return;
      }
      case MessageType.DnsQuery: {
        const resolve = this.dnsResolver;
        if (!resolve) return;
        resolve(frame.payload).then(
          (answer) => { if (answer) this.send(MessageType.DnsAnswer, frame.id, answer); },
          () => undefined,
        );
        return;
      }
      default:
        this.processes.get(frame.id)?.onFrame(frame);
    }
  }
}

export interface GuestInterface {
  /** Interface name in the guest (eth0, eth1, ...). */
  name: string;
  /** VLAN id on the trunk NIC: which network the frames belong to, for the host's switch. */
  vlan: number;
  mac: string;
  ipv4: string;
  prefixLength: number;
  /** Default route via this gateway (the container's first network only). */
  gateway?: string;
  mtu?: number;
}

export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(unavailable(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
