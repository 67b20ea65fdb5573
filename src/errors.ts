/**
 * Errors typed by kind. Every layer throws these; the HTTP layer maps a kind to a status in one
 * place (api/http-errors.ts), so domain code never thinks about HTTP.
 */
export type ErrorKind =
  | 'not-found'
  | 'conflict'
  | 'invalid'
  | 'not-modified'
  | 'unavailable'
  | 'forbidden'
  | 'not-implemented'
  | 'internal';

export class PaddockError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PaddockError';
  }
}

export const notFound = (message: string) => new PaddockError('not-found', message);
export const conflict = (message: string) => new PaddockError('conflict', message);
export const invalid = (message: string) => new PaddockError('invalid', message);
export const notModified = (message = '') => new PaddockError('not-modified', message);
export const unavailable = (message: string, cause?: unknown) =>
  new PaddockError('unavailable', message, { cause });
export const notImplemented = (message: string) => new PaddockError('not-implemented', message);
export const internal = (message: string, cause?: unknown) =>
  new PaddockError('internal', message, { cause });

export function errorKind(err: unknown): ErrorKind {
  return err instanceof PaddockError ? err.kind : 'internal';
}
