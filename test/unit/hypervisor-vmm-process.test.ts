/** Helpers the non-QEMU drivers share: kernel format choice, stale run dirs, hybrid vsock. */
import { mkdtempSync, promises as fs, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { connectHybridVsock, elfKernelFor, sweepStaleRunDirs } from '../../src/drivers/hypervisor/vmm-process';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-vmmp-'));
});
afterEach(() => fs.rm(dir, { recursive: true, force: true }));

describe('elfKernelFor', () => {
  test('an ELF kernel is used as it is; a bzImage is replaced by the vmlinux beside it', async () => {
    writeFileSync(path.join(dir, 'vmlinux'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2]));
    writeFileSync(path.join(dir, 'bzImage'), Buffer.from('MZ\x00\x00bzimage'));
    expect(await elfKernelFor('x', path.join(dir, 'vmlinux'))).toBe(path.join(dir, 'vmlinux'));
    expect(await elfKernelFor('x', path.join(dir, 'bzImage'))).toBe(path.join(dir, 'vmlinux'));
  });

  test('a bzImage alone is refused, naming the driver', async () => {
    writeFileSync(path.join(dir, 'bzImage'), Buffer.from('MZ'));
    await expect(elfKernelFor('firecracker', path.join(dir, 'bzImage'))).rejects.toThrow(/firecracker driver boots an uncompressed ELF vmlinux/);
  });
});

test('stale run dirs (their VMM gone) are removed, live ones kept', async () => {
  await fs.mkdir(path.join(dir, 'vm-dead'));
  writeFileSync(path.join(dir, 'vm-dead', 'pid'), '999999999');
  await fs.mkdir(path.join(dir, 'vm-live'));
  writeFileSync(path.join(dir, 'vm-live', 'pid'), String(process.pid));
  await fs.mkdir(path.join(dir, 'other'));
  await sweepStaleRunDirs(dir, 'vm-');
  expect((await fs.readdir(dir)).sort()).toEqual(['other', 'vm-live']);
});

test('hybrid vsock: retries while the guest does not listen, then hands over the stream whole', async () => {
  const sock = path.join(dir, 'v.sock');
  let attempts = 0;
  const server = net.createServer((c) => {
    c.once('data', (d) => {
      expect(String(d)).toBe('CONNECT 1024\n');
      // The first two attempts find no listener in the guest: the VMM closes the connection.
      if (++attempts < 3) return c.destroy();
      c.write('OK 1073741824\nfirst bytes');
      setTimeout(() => c.end(' and more'), 50);
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    const s = await connectHybridVsock(sock, 1024, 5000);
    let got = '';
    await new Promise<void>((resolve) => {
      s.on('data', (d) => (got += d));
      s.on('end', resolve);
    });
    expect(attempts).toBe(3);
    expect(got).toBe('first bytes and more');
  } finally {
    server.close();
  }
});
