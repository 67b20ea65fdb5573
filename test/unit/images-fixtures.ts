/** Tar builders shared by the image unit tests (hostile members included, on purpose). */
import tar from 'tar-stream';

export type TarMember = Partial<tar.Header> & { name: string; content?: string };

export async function makeTar(members: TarMember[]): Promise<Buffer> {
  const pack = tar.pack();
  const done = (async () => {
    const chunks: Buffer[] = [];
    for await (const c of pack as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
    return Buffer.concat(chunks);
  })();
  for (const { content, ...header } of members) {
    await new Promise<void>((resolve, reject) =>
      pack.entry({ mode: 0o644, mtime: new Date(1_600_000_000_000), ...header }, content ?? '', (err) => (err ? reject(err) : resolve())),
    );
  }
  pack.finalize();
  return done;
}
