/** API versions we serve, and the negotiation rules dockerd applies to a request's /vX.Y prefix. */
import { invalid } from '../errors';

export const MAX_API_VERSION = '1.51';
export const MIN_API_VERSION = '1.24';

export function compareVersions(a: string, b: string): number {
  const [am, an] = a.split('.').map(Number);
  const [bm, bn] = b.split('.').map(Number);
  return am !== bm ? am - bm : an - bn;
}

/** The version a request is served at: its prefix if acceptable, else the newest we speak. */
export function negotiate(requested: string | undefined): string {
  if (!requested) return MAX_API_VERSION;
  if (compareVersions(requested, MAX_API_VERSION) > 0) {
    throw invalid(`client version ${requested} is too new. Maximum supported API version is ${MAX_API_VERSION}`);
  }
  if (compareVersions(requested, MIN_API_VERSION) < 0) {
    throw invalid(
      `client version ${requested} is too old. Minimum supported API version is ${MIN_API_VERSION}, please upgrade your client to a newer version`,
    );
  }
  return requested;
}

/** True when the request's API version is at least `v`. */
export function atLeast(version: string, v: string): boolean {
  return compareVersions(version, v) >= 0;
}
