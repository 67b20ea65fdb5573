/**
 * The agent wire format (rootfs-builder/PROTOCOL.md): the 12-byte frame header, the incremental
 * decoder fed arbitrary chunkings of the byte stream, and the TLV payload codec.
 */
import {
  encodeFrame,
  encodeTlv,
  FrameDecoder,
  HEADER_SIZE,
  MAX_FRAME,
  MessageType,
  Tag,
  TlvFields,
  type Frame,
} from '../../src/drivers/agent/protocol';

const plain = (f: Frame) => ({ type: f.type, id: f.id, payload: Buffer.from(f.payload).toString('hex') });

describe('frame encoding', () => {
  it('lays out len, type, flags and id big-endian ahead of the payload', () => {
    const buf = encodeFrame(MessageType.Stdout, 0x01020304, Buffer.from('hey'));
    expect(buf.length).toBe(HEADER_SIZE + 3);
    expect(buf.subarray(0, HEADER_SIZE).toString('hex')).toBe(
      '00000003' + // len
        '0004' + // type STDOUT
        '0000' + // flags
        '01020304', // id
    );
    expect(buf.subarray(HEADER_SIZE).toString()).toBe('hey');
  });

  it('encodes an empty payload as a bare header', () => {
    const buf = encodeFrame(MessageType.Ping, 7);
    expect(buf.length).toBe(HEADER_SIZE);
    expect(buf.readUInt32BE(0)).toBe(0);
  });

  it('keeps ids above 2^31 unsigned', () => {
    const [f] = new FrameDecoder().push(encodeFrame(MessageType.Result, 0xfffffffe));
    expect(f.id).toBe(0xfffffffe);
  });

  it('round-trips type, id and payload', () => {
    const payload = Buffer.from([0, 1, 2, 255, 254, 0]);
    const frames = new FrameDecoder().push(encodeFrame(MessageType.Start, 42, payload));
    expect(frames.map(plain)).toEqual([{ type: MessageType.Start, id: 42, payload: payload.toString('hex') }]);
  });

  it('refuses to encode a payload over MAX_FRAME but accepts exactly MAX_FRAME', () => {
    expect(() => encodeFrame(MessageType.Stdin, 1, Buffer.alloc(MAX_FRAME + 1))).toThrow(RangeError);
    const max = encodeFrame(MessageType.Stdin, 1, Buffer.alloc(MAX_FRAME, 7));
    const frames = new FrameDecoder().push(max);
    expect(frames).toHaveLength(1);
    expect(frames[0].payload.length).toBe(MAX_FRAME);
  });
});

describe('FrameDecoder', () => {
  const stream = Buffer.concat([
    encodeFrame(MessageType.Ready, 0, Buffer.from('ready-payload')),
    encodeFrame(MessageType.Stdout, 3, Buffer.from('out')),
    encodeFrame(MessageType.Pong, 9),
    encodeFrame(MessageType.Stderr, 3, Buffer.alloc(5000, 0x61)),
  ]);
  const expected = [
    { type: MessageType.Ready, id: 0, payload: Buffer.from('ready-payload').toString('hex') },
    { type: MessageType.Stdout, id: 3, payload: Buffer.from('out').toString('hex') },
    { type: MessageType.Pong, id: 9, payload: '' },
    { type: MessageType.Stderr, id: 3, payload: Buffer.alloc(5000, 0x61).toString('hex') },
  ];

  it('returns several frames from one chunk, in order', () => {
    expect(new FrameDecoder().push(stream).map(plain)).toEqual(expected);
  });

  it('reassembles frames fed one byte at a time, emitting each only once complete', () => {
    const d = new FrameDecoder();
    const out: Frame[] = [];
    const firstLen = HEADER_SIZE + 'ready-payload'.length;
    for (let i = 0; i < stream.length; i++) {
      const got = d.push(stream.subarray(i, i + 1));
      if (i < firstLen - 1) expect(got).toEqual([]);
      out.push(...got);
    }
    expect(out.map(plain)).toEqual(expected);
  });

  it('handles splits inside the header and inside the payload, at every offset', () => {
    for (let cut = 1; cut < 60; cut++) {
      const d = new FrameDecoder();
      const out = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
      expect(out.map(plain)).toEqual(expected);
    }
  });

  it('keeps earlier payloads intact when later chunks arrive', () => {
    const d = new FrameDecoder();
    const a = encodeFrame(MessageType.Stdout, 1, Buffer.from('first'));
    const b = encodeFrame(MessageType.Stdout, 1, Buffer.from('second'));
    const [f1] = d.push(Buffer.concat([a, b.subarray(0, 4)]));
    const [f2] = d.push(b.subarray(4));
    expect(f1.payload.toString()).toBe('first');
    expect(f2.payload.toString()).toBe('second');
  });

  it('rejects a header announcing more than MAX_FRAME before the payload arrives', () => {
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt32BE(MAX_FRAME + 1, 0);
    header.writeUInt16BE(MessageType.Stdout, 4);
    expect(() => new FrameDecoder().push(header)).toThrow(/oversized frame/);
  });

  it('does not judge a header until all 12 bytes are there', () => {
    const d = new FrameDecoder();
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt32BE(0xffffffff, 0);
    expect(d.push(header.subarray(0, 3))).toEqual([]);
    expect(() => d.push(header.subarray(3))).toThrow(RangeError);
  });
});

describe('TLV payloads', () => {
  it('encodes u32, UTF-8 strings and raw bytes with a 6-byte tag/length head', () => {
    const buf = encodeTlv([
      [Tag.Uid, 1000],
      [Tag.Cwd, 'é/'],
      [Tag.Data, Buffer.from([9, 8])],
    ]);
    expect(buf.toString('hex')).toBe(
      '000e' + '00000004' + '000003e8' + // UID = 1000
        '000c' + '00000003' + 'c3a92f' + // CWD = "é/" (3 UTF-8 bytes)
        '0018' + '00000002' + '0908', // DATA
    );
  });

  it('round-trips fields and writes negative numbers as u32', () => {
    const f = TlvFields.decode(
      encodeTlv([
        [Tag.ExitCode, 3],
        [Tag.Signal, -1],
        [Tag.Message, 'no such file'],
        [Tag.Data, Buffer.from('raw')],
      ]),
    );
    expect(f.u32(Tag.ExitCode)).toBe(3);
    expect(f.u32(Tag.Signal)).toBe(0xffffffff);
    expect(f.str(Tag.Message)).toBe('no such file');
    expect(f.bytes(Tag.Data)?.toString()).toBe('raw');
  });

  it('keeps repeated tags in order; single getters return the first', () => {
    const f = TlvFields.decode(
      encodeTlv([
        [Tag.Arg, 'sh'],
        [Tag.Env, 'A=1'],
        [Tag.Arg, '-c'],
        [Tag.Arg, ''],
        [Tag.Arg, 'echo hi'],
        [Tag.Group, 10],
        [Tag.Group, 20],
      ]),
    );
    expect(f.all(Tag.Arg)).toEqual(['sh', '-c', '', 'echo hi']);
    expect(f.str(Tag.Arg)).toBe('sh');
    expect(f.all(Tag.Env)).toEqual(['A=1']);
    expect(f.u32(Tag.Group)).toBe(10);
    expect(f.all(Tag.Cwd)).toEqual([]);
  });

  it('skips unknown tags and still reads the known ones around them', () => {
    const unknown = Buffer.alloc(6 + 3);
    unknown.writeUInt16BE(999, 0);
    unknown.writeUInt32BE(3, 2);
    unknown.write('zzz', 6);
    const f = TlvFields.decode(Buffer.concat([encodeTlv([[Tag.Version, 1]]), unknown, encodeTlv([[Tag.Kernel, '6.1.0']])]));
    expect(f.u32(Tag.Version)).toBe(1);
    expect(f.str(Tag.Kernel)).toBe('6.1.0');
  });

  it('answers undefined for missing fields and for a u32 of the wrong width', () => {
    const f = TlvFields.decode(encodeTlv([[Tag.Pid, 'not a number']]));
    expect(f.u32(Tag.Pid)).toBeUndefined();
    expect(f.u32(Tag.ExitCode)).toBeUndefined();
    expect(f.str(Tag.Message)).toBeUndefined();
    expect(f.bytes(Tag.Data)).toBeUndefined();
  });

  it('ignores a truncated trailing field', () => {
    const whole = encodeTlv([[Tag.Pid, 5], [Tag.Message, 'cut short']]);
    const f = TlvFields.decode(whole.subarray(0, whole.length - 2));
    expect(f.u32(Tag.Pid)).toBe(5);
    expect(f.str(Tag.Message)).toBeUndefined();
  });

  it('decodes an empty payload to no fields', () => {
    const f = TlvFields.decode(Buffer.alloc(0));
    expect(f.all(Tag.Arg)).toEqual([]);
    expect(f.u32(Tag.Errno)).toBeUndefined();
  });
});
