/** Tar archives built in memory for tests (one member list in, the archive's bytes out). */
import tar from 'tar-stream';

export type TarMember = Partial<tar.Header> & { name: string; content?: string };

/** Members default to mode 0644 and a fixed mtime, so that archives are reproducible. */
export async function makeTar(members: TarMember[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    pack.on('data', (c: unknown) => chunks.push(Buffer.from(c as Buffer)));
    pack.on('end', () => resolve(Buffer.concat(chunks)));
    pack.on('error', reject);
  });
  for (const { content, ...header } of members) {
    await new Promise<void>((resolve, reject) =>
      pack.entry({ mode: 0o644, mtime: new Date(1_600_000_000_000), ...header }, content ?? '', (e) => (e ? reject(e) : resolve())),
    );
  }
  pack.finalize();
  return done;
}
