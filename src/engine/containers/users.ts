/**
 * Resolves Docker's `User` ("name", "uid", "name:group", "uid:gid") against the container's own
 * /etc/passwd and /etc/group, read from the host through container-scoped path resolution.
 */
import { promises as fs } from 'node:fs';
import { invalid } from '../../errors';
import { resolveInRoot } from './scoped-path';

export interface ResolvedUser {
  uid: number;
  gid: number;
  groups: number[];
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

async function readDb(root: string, file: string): Promise<string[][]> {
  try {
    const text = await fs.readFile(await resolveInRoot(root, file), 'utf8');
    return text
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split(':'));
  } catch {
    return [];
  }
}

export async function resolveUser(root: string, user: string): Promise<ResolvedUser> {
  const [userPart, groupPart] = user ? user.split(':', 2) : ['', undefined];
  const passwd: PasswdEntry[] = (await readDb(root, '/etc/passwd')).map((f) => ({ name: f[0], uid: Number(f[2]), gid: Number(f[3]) }));
  const groups = (await readDb(root, '/etc/group')).map((f) => ({ name: f[0], gid: Number(f[2]), members: (f[3] ?? '').split(',').filter(Boolean) }));

  let uid = 0;
  let gid = 0;
  let name = 'root';
  if (userPart) {
    const entry = /^\d+$/.test(userPart) ? passwd.find((p) => p.uid === Number(userPart)) : passwd.find((p) => p.name === userPart);
    if (entry) {
      uid = entry.uid;
      gid = entry.gid;
      name = entry.name;
    } else if (/^\d+$/.test(userPart)) {
      uid = Number(userPart);
      name = '';
    } else {
      throw invalid(`unable to find user ${userPart}: no matching entries in passwd file`);
    }
  }
  if (groupPart) {
    if (/^\d+$/.test(groupPart)) gid = Number(groupPart);
    else {
      const g = groups.find((x) => x.name === groupPart);
      if (!g) throw invalid(`unable to find group ${groupPart}: no matching entries in group file`);
      gid = g.gid;
    }
  }
  // As runc: supplementary groups come from /etc/group only when no group was named.
  const supplementary = name && !groupPart ? groups.filter((g) => g.members.includes(name)).map((g) => g.gid) : [];
  return { uid, gid, groups: [...new Set([gid, ...supplementary])] };
}
