/**
 * Tags and digest references (`repositories.json`, dockerd's layout): full reference string →
 * image ID. Written atomically as one file, so a reference and its image appear together or not.
 */
import path from 'node:path';
import {
  familiarString,
  fullName,
  parseNormalizedNamed,
  referenceString,
  withDefaultTag,
  type NamedReference,
} from '../../drivers/registry/reference';
import { readJson, writeJsonAtomic } from '../../drivers/storage/state-store';

interface RepositoriesFile {
  Repositories: Record<string, Record<string, string>>;
}

export interface ReferenceEntry {
  ref: NamedReference;
  id: string;
}

export class ReferenceStore {
  private readonly byRef = new Map<string, ReferenceEntry>();

  private constructor(private readonly file: string) {}

  static async open(root: string): Promise<ReferenceStore> {
    const store = new ReferenceStore(path.join(root, 'repositories.json'));
    const data = await readJson<RepositoriesFile>(store.file);
    for (const refs of Object.values(data?.Repositories ?? {})) {
      for (const [text, id] of Object.entries(refs)) {
        try {
          const ref = parseNormalizedNamed(text);
          store.byRef.set(referenceString(ref), { ref, id });
        } catch {
          // an unparsable entry can only come from a hand edit: drop it
        }
      }
    }
    return store;
  }

  /** The image a reference names; a bare name means its "latest" tag, as in dockerd. */
  get(ref: NamedReference): string | undefined {
    return this.byRef.get(referenceString(withDefaultTag(ref)))?.id;
  }

  /** References to an image, in dockerd's order (lexical by familiar string). */
  referencesTo(id: string): NamedReference[] {
    return [...this.byRef.values()]
      .filter((e) => e.id === id)
      .map((e) => e.ref)
      .sort((a, b) => (familiarString(a) < familiarString(b) ? -1 : familiarString(a) > familiarString(b) ? 1 : 0));
  }

  byName(name: NamedReference): ReferenceEntry[] {
    const wanted = fullName(name);
    return [...this.byRef.values()].filter((e) => fullName(e.ref) === wanted);
  }

  all(): ReferenceEntry[] {
    return [...this.byRef.values()];
  }

  /** Points `ref` at `id`; returns the image it pointed at before, if another. */
  async set(ref: NamedReference, id: string): Promise<string | undefined> {
    const key = referenceString(ref);
    const previous = this.byRef.get(key)?.id;
    this.byRef.set(key, { ref, id });
    await this.save();
    return previous !== id ? previous : undefined;
  }

  async delete(ref: NamedReference): Promise<boolean> {
    const existed = this.byRef.delete(referenceString(ref));
    if (existed) await this.save();
    return existed;
  }

  async deleteAllFor(id: string): Promise<NamedReference[]> {
    const removed = this.referencesTo(id);
    for (const ref of removed) this.byRef.delete(referenceString(ref));
    if (removed.length) await this.save();
    return removed;
  }

  private async save(): Promise<void> {
    const out: RepositoriesFile = { Repositories: {} };
    for (const [key, { ref, id }] of this.byRef) {
      (out.Repositories[fullName(ref)] ??= {})[key] = id;
    }
    await writeJsonAtomic(this.file, out);
  }
}
