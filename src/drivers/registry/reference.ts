/**
 * Image references parsed and normalised exactly as Docker does (the grammar of
 * distribution/reference): `busybox` is `docker.io/library/busybox`, a first path component is a
 * registry only when it has a `.` or `:` or is `localhost`, names are lower case, tags are at most
 * 128 word characters, digests are `algorithm:hex`. Messages match dockerd's word for word
 * because clients print them.
 */
import { invalid } from '../../errors';

export const DEFAULT_DOMAIN = 'docker.io';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';
const NAME_TOTAL_LENGTH_MAX = 255;

export interface NamedReference {
  /** Registry host[:port], e.g. "docker.io", "127.0.0.1:5000". */
  domain: string;
  /** Repository path inside the registry, e.g. "library/busybox". */
  path: string;
  tag?: string;
  /** "sha256:<hex>". */
  digest?: string;
}

const alphanumeric = '[a-z0-9]+';
const separator = '(?:[._]|__|[-]+)';
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`;
const domainComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const ipv6 = '\\[(?:[a-fA-F0-9:]+)\\]';
const host = `(?:${domainComponent}(?:\\.${domainComponent})*|${ipv6})`;
const domainAndPort = `${host}(?::[0-9]+)?`;
const tagPattern = '[\\w][\\w.-]{0,127}';
const digestPattern = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}';
const namePattern = `(?:${domainAndPort}/)?${pathComponent}(?:/${pathComponent})*`;

const referenceRegexp = new RegExp(`^(${namePattern})(?::(${tagPattern}))?(?:@(${digestPattern}))?$`);
const anchoredName = new RegExp(`^(?:(${domainAndPort})/)?(${pathComponent}(?:/${pathComponent})*)$`);
const anchoredTag = new RegExp(`^${tagPattern}$`);
const anchoredIdentifier = /^[a-f0-9]{64}$/;

const digestLengths: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/** Validates "algorithm:hex" as go-digest does; returns the digest or throws its message. */
export function parseDigest(s: string): string {
  const i = s.indexOf(':');
  if (i <= 0 || i + 1 === s.length) throw invalid('invalid checksum digest format');
  const algorithm = s.slice(0, i);
  const hex = s.slice(i + 1);
  const length = digestLengths[algorithm];
  if (length === undefined) {
    if (!/^[a-z0-9]+(?:[.+_-][a-z0-9]+)*$/.test(algorithm)) throw invalid('invalid checksum digest format');
    throw invalid('unsupported digest algorithm');
  }
  if (hex.length !== length) throw invalid('invalid checksum digest length');
  if (!/^[a-f0-9]+$/.test(hex)) throw invalid('invalid checksum digest format');
  return s;
}

export function isDigest(s: string): boolean {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}

/** distribution/reference's Parse: a full reference with an explicit domain. */
function parse(s: string): NamedReference {
  const m = referenceRegexp.exec(s);
  if (!m) {
    if (s === '') throw invalid('repository name must have at least one component');
    if (referenceRegexp.test(s.toLowerCase())) throw invalid('repository name must be lowercase');
    throw invalid('invalid reference format');
  }
  if (m[1].length > NAME_TOTAL_LENGTH_MAX) {
    throw invalid(`repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`);
  }
  const name = anchoredName.exec(m[1])!;
  const ref: NamedReference = { domain: name[1] ?? '', path: name[2] };
  if (m[2]) ref.tag = m[2];
  if (m[3]) ref.digest = parseDigest(m[3]);
  return ref;
}

function splitDockerDomain(name: string): [string, string] {
  const i = name.indexOf('/');
  let domain: string;
  let remainder: string;
  const first = i === -1 ? '' : name.slice(0, i);
  if (i === -1 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    domain = DEFAULT_DOMAIN;
    remainder = name;
  } else {
    domain = first;
    remainder = name.slice(i + 1);
  }
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !remainder.includes('/')) remainder = OFFICIAL_REPO_PREFIX + remainder;
  return [domain, remainder];
}

/** Docker's ParseNormalizedNamed: what `docker pull NAME` and `docker tag` accept. */
export function parseNormalizedNamed(s: string): NamedReference {
  if (anchoredIdentifier.test(s)) {
    throw invalid(`invalid repository name (${s}), cannot specify 64-byte hexadecimal strings`);
  }
  const [domain, remainder] = splitDockerDomain(s);
  const tagSep = remainder.indexOf(':');
  const remoteName = tagSep > -1 ? remainder.slice(0, tagSep) : remainder;
  if (remoteName.toLowerCase() !== remoteName) {
    throw invalid(`invalid reference format: repository name (${remoteName}) must be lowercase`);
  }
  return parse(`${domain}/${remainder}`);
}

export type AnyReference = { kind: 'digest'; digest: string } | { kind: 'named'; ref: NamedReference };

/** Docker's ParseAnyReference: a bare 64-hex ID or "sha256:..." is an image ID, else a name. */
export function parseAnyReference(s: string): AnyReference {
  if (anchoredIdentifier.test(s)) return { kind: 'digest', digest: `sha256:${s}` };
  if (isDigest(s)) return { kind: 'digest', digest: s };
  return { kind: 'named', ref: parseNormalizedNamed(s) };
}

export function validateTag(tag: string): string {
  if (!anchoredTag.test(tag)) throw invalid('invalid tag format');
  return tag;
}

/** "docker.io/library/busybox" (no tag or digest). */
export function fullName(ref: NamedReference): string {
  return ref.domain ? `${ref.domain}/${ref.path}` : ref.path;
}

/** The full reference string, e.g. "docker.io/library/busybox:latest". */
export function referenceString(ref: NamedReference): string {
  return fullName(ref) + (ref.tag ? `:${ref.tag}` : '') + (ref.digest ? `@${ref.digest}` : '');
}

/** The short name people type: "busybox", "foo/bar", "127.0.0.1:5000/x". */
export function familiarName(ref: NamedReference): string {
  if (ref.domain !== DEFAULT_DOMAIN) return fullName(ref);
  if (ref.path.startsWith(OFFICIAL_REPO_PREFIX) && !ref.path.slice(OFFICIAL_REPO_PREFIX.length).includes('/')) {
    return ref.path.slice(OFFICIAL_REPO_PREFIX.length);
  }
  return ref.path;
}

export function familiarString(ref: NamedReference): string {
  return familiarName(ref) + (ref.tag ? `:${ref.tag}` : '') + (ref.digest ? `@${ref.digest}` : '');
}

/** Adds ":latest" when a reference has neither tag nor digest (Docker's TagNameOnly). */
export function withDefaultTag(ref: NamedReference): NamedReference {
  return ref.tag || ref.digest ? ref : { ...ref, tag: 'latest' };
}

export function nameOnly(ref: NamedReference): NamedReference {
  return { domain: ref.domain, path: ref.path };
}

export function withTag(ref: NamedReference, tag: string): NamedReference {
  return { domain: ref.domain, path: ref.path, tag: validateTag(tag) };
}

export function withDigest(ref: NamedReference, digest: string): NamedReference {
  return { domain: ref.domain, path: ref.path, digest: parseDigest(digest) };
}

/** Name-only reference (no tag, no digest): `docker push NAME` and `pull -a`. */
export function isNameOnly(ref: NamedReference): boolean {
  return !ref.tag && !ref.digest;
}
