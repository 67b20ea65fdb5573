/**
 * Wire format of the Paddock agent protocol (rootfs-builder/PROTOCOL.md): 12-byte frame header
 * and TLV payloads. Hand-written because it is tiny and must match the C agent byte for byte;
 * a general serialisation library would add a runtime to the guest.
 */
export const PROTOCOL_VERSION = 1;
export const MAX_FRAME = 1 << 20;
export const HEADER_SIZE = 12;

export enum MessageType {
  Ready = 1,
  Result = 2,
  Stdout = 4,
  Stderr = 5,
  Exit = 6,
  WindowFromGuest = 7,
  Pong = 8,
  Mount = 10,
  Start = 11,
  Stdin = 12,
  Signal = 13,
  Resize = 14,
  WindowFromHost = 15,
  Ping = 16,
  Shutdown = 17,
  /** Host → guest: the VM was restored from a VM template; DATA = fresh random bytes to reseed with. Answered by READY. */
  Restored = 40,
  SetTime = 18,
  Symlink = 19,
  Hostname = 20,
  Ps = 21,
  ReadFile = 22,
  NetAdd = 23,
  NetRemove = 24,
  /** Guest → host: a DNS query sent to 127.0.0.11 in the guest; the frame id pairs it with its answer. */
  DnsQuery = 25,
  DnsAnswer = 26,
}

export enum Tag {
  Version = 1,
  Kernel = 2,
  Agent = 3,
  Arg = 10,
  Env = 11,
  Cwd = 12,
  Root = 13,
  Uid = 14,
  Gid = 15,
  Group = 16,
  Tty = 17,
  Rows = 18,
  Cols = 19,
  Source = 20,
  Target = 21,
  FsType = 22,
  MountFlags = 23,
  Data = 24,
  StdinOpen = 25,
  PidNamespace = 26,
  JoinPidNamespaceOf = 27,
  Errno = 30,
  Message = 31,
  Pid = 32,
  ExitCode = 33,
  Signal = 34,
  Bytes = 35,
  Signum = 36,
  Seconds = 40,
  Nanos = 41,
  IfName = 50,
  Vlan = 51,
  Mac = 52,
  Ipv4 = 53,
  Prefix = 54,
  Gateway = 55,
  Mtu = 56,
}

export interface Frame {
  type: MessageType;
  id: number;
  payload: Buffer;
}

export function encodeFrame(type: MessageType, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  if (payload.length > MAX_FRAME) throw new RangeError(`frame payload ${payload.length} > ${MAX_FRAME}`);
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32BE(payload.length, 0);
  header.writeUInt16BE(type, 4);
  header.writeUInt16BE(0, 6);
  header.writeUInt32BE(id >>> 0, 8);
  return payload.length ? Buffer.concat([header, payload]) : header;
}

/** Incremental decoder: feed it chunks as they arrive, get whole frames back. */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const frames: Frame[] = [];
    let offset = 0;
    while (this.pending.length - offset >= HEADER_SIZE) {
      const len = this.pending.readUInt32BE(offset);
      if (len > MAX_FRAME) throw new RangeError(`agent sent an oversized frame (${len} bytes)`);
      if (this.pending.length - offset < HEADER_SIZE + len) break;
      frames.push({
        type: this.pending.readUInt16BE(offset + 4),
        id: this.pending.readUInt32BE(offset + 8),
        payload: this.pending.subarray(offset + HEADER_SIZE, offset + HEADER_SIZE + len),
      });
      offset += HEADER_SIZE + len;
    }
    this.pending = this.pending.subarray(offset);
    return frames;
  }
}

export type TlvValue = string | number | Buffer;

/** Encodes fields in order; a number is a u32, a string is UTF-8, a Buffer is raw bytes. */
export function encodeTlv(fields: Array<[Tag, TlvValue]>): Buffer {
  const parts: Buffer[] = [];
  for (const [tag, value] of fields) {
    let body: Buffer;
    if (typeof value === 'number') {
      body = Buffer.alloc(4);
      body.writeUInt32BE(value >>> 0, 0);
    } else body = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    const head = Buffer.alloc(6);
    head.writeUInt16BE(tag, 0);
    head.writeUInt32BE(body.length, 2);
    parts.push(head, body);
  }
  return Buffer.concat(parts);
}

export class TlvFields {
  private constructor(private readonly fields: Array<[number, Buffer]>) {}

  static decode(payload: Buffer): TlvFields {
    const fields: Array<[number, Buffer]> = [];
    let offset = 0;
    while (payload.length - offset >= 6) {
      const tag = payload.readUInt16BE(offset);
      const len = payload.readUInt32BE(offset + 2);
      if (payload.length - offset - 6 < len) break;
      fields.push([tag, payload.subarray(offset + 6, offset + 6 + len)]);
      offset += 6 + len;
    }
    return new TlvFields(fields);
  }

  u32(tag: Tag): number | undefined {
    const f = this.fields.find(([t, v]) => t === tag && v.length === 4);
    return f ? f[1].readUInt32BE(0) : undefined;
  }

  all(tag: Tag): string[] {
    return this.fields.filter(([t]) => t === tag).map(([, v]) => v.toString('utf8'));
  }

  bytes(tag: Tag): Buffer | undefined {
    return this.fields.find(([t]) => t === tag)?.[1];
  }

  str(tag: Tag): string | undefined {
    const f = this.fields.find(([t]) => t === tag);
    return f ? f[1].toString('utf8') : undefined;
  }
}
