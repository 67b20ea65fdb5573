/**
 * `docker rmi` with dockerd's rules. Removing by name removes that reference, and the image only
 * when no reference is left; removing by ID removes the image with its references when they are
 * all in one repository. Conflicts: hard (a running container, child images) never give way;
 * soft (a stopped container, references in several repositories) give way to force. An image
 * forced away from under stopped containers is hidden, not deleted, until they are gone.
 */
import {
  familiarString,
  fullName,
  parseNormalizedNamed,
  withDefaultTag,
  type NamedReference,
} from '../../drivers/registry/reference';
import { conflict, PaddockError } from '../../errors';
import type { EventBus } from '../events';
import type { ImageStore, UsageProbe } from './image-store';

export interface DeleteResponseItem {
  Untagged?: string;
  Deleted?: string;
}

const HARD = 1;
const ACTIVE_REFERENCE = 2;
const STOPPED = 4;
const SOFT = ACTIVE_REFERENCE | STOPPED;

class DeleteConflict extends PaddockError {
  constructor(
    id: string,
    readonly hard: boolean,
    readonly used: boolean,
    detail: string,
  ) {
    super('conflict', `conflict: unable to delete ${shortId(id)} (${hard ? 'cannot be forced' : 'must be forced'}) - ${detail}`);
  }
}

const shortId = (id: string) => id.replace(/^sha256:/, '').slice(0, 12);

export function isImageIdPrefix(id: string, candidate: string): boolean {
  return id.startsWith(candidate) || id.replace(/^sha256:/, '').startsWith(candidate);
}

/** All references in one repository (at most one tag, digests of the same name). */
function isSingleReference(refs: NamedReference[]): boolean {
  if (refs.length <= 1) return refs.length === 1;
  let single: NamedReference | undefined;
  const digestNames = new Set<string>();
  for (const r of refs) {
    if (r.digest) digestNames.add(fullName(r));
    else if (!single) single = r;
    else return false;
  }
  single ??= refs[0];
  return digestNames.size === 1 && digestNames.has(fullName(single));
}

export class ImageDeleter {
  constructor(
    private readonly store: ImageStore,
    private readonly events: EventBus,
    private readonly probe: UsageProbe,
  ) {}

  /** Call under the store lock. */
  async delete(name: string, force: boolean, prune: boolean): Promise<DeleteResponseItem[]> {
    const { store } = this;
    const img = store.lookup(name);
    const id = img.stored.id;
    const records: DeleteResponseItem[] = [];
    let refs = store.refs.referencesTo(id);
    let removedRepositoryRef = false;

    if (!isImageIdPrefix(id, name)) {
      const users = await this.probe(id);
      if (!force && isSingleReference(refs) && users.length > 0) {
        throw conflict(
          `conflict: unable to remove repository reference "${name}" (must force) - container ${shortId(users[0].id)} is using its referenced image ${shortId(id)}`,
        );
      }
      const ref = withDefaultTag(parseNormalizedNamed(name));
      await this.untag(ref, id, records);
      refs = store.refs.referencesTo(id);
      // With the last tag of a repository gone, its digest references go too.
      if (!ref.digest && !refs.some((r) => !r.digest && fullName(r) === fullName(ref))) {
        for (const r of refs.filter((r) => r.digest && fullName(r) === fullName(ref))) await this.untag(r, id, records, false);
        refs = store.refs.referencesTo(id);
      }
      if (refs.length > 0) return records;
      removedRepositoryRef = true;
    } else if (isSingleReference(refs)) {
      const found = await this.conflicts(id, HARD | (force ? 0 : SOFT & ~ACTIVE_REFERENCE));
      if (found) throw found;
      for (const r of refs) await this.untag(r, id, records);
    }
    await this.deleteImage(id, records, force, prune, removedRepositoryRef);
    return records;
  }

  private async untag(ref: NamedReference, id: string, records: DeleteResponseItem[], event = true): Promise<void> {
    await this.store.refs.delete(ref);
    records.push({ Untagged: familiarString(ref) });
    // dockerd's untag event carries the image's labels (the image still exists then).
    const labels = this.store.getIncludingHidden(id)?.config.config?.Labels ?? {};
    if (event) this.events.publish('image', 'untag', id, { ...labels, name: id });
  }

  private async conflicts(id: string, mask: number): Promise<DeleteConflict | undefined> {
    if (mask & HARD && this.store.children(id).length > 0) return new DeleteConflict(id, true, false, 'image has dependent child images');
    const users = await this.probe(id);
    const running = users.find((u) => u.running);
    if (mask & HARD && running) return new DeleteConflict(id, true, true, `image is being used by running container ${shortId(running.id)}`);
    if (mask & ACTIVE_REFERENCE && this.store.refs.referencesTo(id).length > 0) {
      return new DeleteConflict(id, false, false, 'image is referenced in multiple repositories');
    }
    const stopped = users.find((u) => !u.running);
    if (mask & STOPPED && stopped) return new DeleteConflict(id, false, true, `image is being used by stopped container ${shortId(stopped.id)}`);
    return undefined;
  }

  private async deleteImage(id: string, records: DeleteResponseItem[], force: boolean, prune: boolean, quiet: boolean): Promise<void> {
    const { store } = this;
    const found = await this.conflicts(id, HARD | (force ? 0 : SOFT));
    if (found) {
      const dangling = store.refs.referencesTo(id).length === 0 && store.children(id).length === 0;
      if (quiet && (!dangling || found.used)) return;
      throw found;
    }
    const img = store.getIncludingHidden(id);
    if (!img) return;
    const parent = img.stored.parent;
    for (const r of store.refs.referencesTo(id)) await this.untag(r, id, records);
    if ((await this.probe(id)).length > 0) await store.updateImage(img, { deleted: true });
    else await store.removeImageRecord(id);
    this.events.publish('image', 'delete', id, { name: id });
    records.push({ Deleted: id });
    for (const diffId of await store.collectGarbage(this.probe)) records.push({ Deleted: diffId });
    if (prune && parent && store.get(parent)) await this.deleteImage(parent, records, false, true, true);
  }

  /** `image prune`: every candidate removed by ID with force, skipping those in use. */
  async pruneImage(id: string): Promise<DeleteResponseItem[]> {
    const records: DeleteResponseItem[] = [];
    if ((await this.probe(id)).length > 0 || this.store.children(id).length > 0) return records;
    try {
      await this.deleteImage(id, records, true, true, false);
    } catch (err) {
      if (!(err instanceof DeleteConflict)) throw err;
    }
    return records;
  }
}
