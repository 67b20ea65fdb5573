/**
 * Resolves a path inside a container's root filesystem on the host the way the container would
 * see it: symlinks are followed, but absolute links and `..` are interpreted relative to the
 * container's root, never the host's. Everything the daemon does to container files from the
 * host (docker cp, WorkingDir, /etc/passwd lookups) goes through here: without it an image with
 * `/data -> /etc` would let `docker cp` write into the host's /etc.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { invalid } from '../../errors';

const MAX_LINKS = 255;

/**
 * Returns the host path for `containerPath` under `root`. The final component is resolved too
 * unless `followFinal` is false (for lstat-like operations and for creating entries).
 */
export async function resolveInRoot(root: string, containerPath: string, followFinal = true): Promise<string> {
  const parts = containerPath.split('/').filter((p) => p && p !== '.');
  const resolved: string[] = [];
  let links = 0;
  while (parts.length) {
    const part = parts.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = path.join(root, ...resolved, part);
    const isFinal = parts.length === 0;
    let target: string | undefined;
    if (!isFinal || followFinal) {
      try {
        const st = await fs.lstat(candidate);
        if (st.isSymbolicLink()) target = await fs.readlink(candidate);
      } catch {
        // Missing components are fine: the caller may be about to create them.
      }
    }
    if (target === undefined) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_LINKS) throw invalid(`too many levels of symbolic links in ${containerPath}`);
    const linkParts = target.split('/').filter((p) => p && p !== '.');
    if (target.startsWith('/')) resolved.length = 0;
    parts.unshift(...linkParts);
  }
  return path.join(root, ...resolved);
}

/** True when `hostPath` is `root` or below it (after resolution). */
export function isWithin(root: string, hostPath: string): boolean {
  const rel = path.relative(root, hostPath);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}
