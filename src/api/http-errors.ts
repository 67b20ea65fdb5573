/** The one place where error kinds become HTTP statuses, with dockerd's `{"message": ...}` body. */
import { errorKind, type ErrorKind } from '../errors';

const statusByKind: Record<ErrorKind, number> = {
  'not-found': 404,
  conflict: 409,
  invalid: 400,
  'not-modified': 304,
  unavailable: 503,
  forbidden: 403,
  'not-implemented': 501,
  internal: 500,
};

export function httpStatusOf(err: unknown): number {
  return statusByKind[errorKind(err)];
}

export function errorBody(err: unknown): { message: string } {
  return { message: err instanceof Error ? err.message : String(err) };
}
