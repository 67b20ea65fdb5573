/**
 * Registry credentials as clients send them, and the `WWW-Authenticate` challenges registries
 * answer with. The docker CLI sends credentials in the `X-Registry-Auth` header as base64url
 * JSON (`{"username","password","serveraddress"}` or `{"identitytoken": ...}`); `POST /auth`
 * sends the same JSON as its body.
 */
import { invalid } from '../../errors';

export interface AuthConfig {
  username?: string;
  password?: string;
  /** base64("user:password"), as in ~/.docker/config.json. */
  auth?: string;
  email?: string;
  serveraddress?: string;
  /** A refresh token from an earlier login (OAuth2 `refresh_token` grant). */
  identitytoken?: string;
  /** A bearer token to send as is. */
  registrytoken?: string;
}

export interface Credentials {
  username?: string;
  password?: string;
  identityToken?: string;
  registryToken?: string;
}

export interface AuthChallenge {
  scheme: string;
  params: Record<string, string>;
}

/** Decodes `X-Registry-Auth`; an absent or empty header means anonymous. */
export function decodeRegistryAuthHeader(header: string | undefined): AuthConfig {
  if (!header || header.trim() === '') return {};
  let text: string;
  try {
    text = Buffer.from(header.trim().replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8');
  } catch {
    throw invalid('invalid X-Registry-Auth header: not base64');
  }
  try {
    const parsed = JSON.parse(text);
    if (parsed === null || typeof parsed !== 'object') return {};
    return parsed as AuthConfig;
  } catch (err) {
    throw invalid(`invalid X-Registry-Auth header: ${(err as Error).message}`);
  }
}

export function credentialsFrom(config: AuthConfig): Credentials {
  let { username, password } = config;
  if (!username && config.auth) {
    const decoded = Buffer.from(config.auth, 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i > 0) {
      username = decoded.slice(0, i);
      password = decoded.slice(i + 1);
    }
  }
  const creds: Credentials = {};
  if (username) creds.username = username;
  if (password) creds.password = password;
  if (config.identitytoken) creds.identityToken = config.identitytoken;
  if (config.registrytoken) creds.registryToken = config.registrytoken;
  return creds;
}

export function hasCredentials(c: Credentials): boolean {
  return Boolean(c.username || c.identityToken || c.registryToken);
}

/**
 * Parses `WWW-Authenticate` (RFC 7235): one or more challenges, each a scheme followed by
 * comma-separated `key=value` or `key="quoted, value"` parameters.
 */
export function parseAuthChallenges(header: string | string[] | undefined): AuthChallenge[] {
  if (!header) return [];
  const text = Array.isArray(header) ? header.join(', ') : header;
  const challenges: AuthChallenge[] = [];
  let i = 0;
  const skipSpaces = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++;
  };
  const token = () => {
    const start = i;
    while (i < text.length && /[A-Za-z0-9!#$%&'*+\-.^_`|~]/.test(text[i])) i++;
    return text.slice(start, i);
  };
  while (i < text.length) {
    skipSpaces();
    while (text[i] === ',') {
      i++;
      skipSpaces();
    }
    const scheme = token();
    if (!scheme) break;
    const challenge: AuthChallenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    for (;;) {
      skipSpaces();
      const save = i;
      const key = token();
      skipSpaces();
      if (!key || text[i] !== '=') {
        // Not `key=`: the scheme of the next challenge (or the end).
        i = save;
        break;
      }
      i++; // '='
      skipSpaces();
      let value = '';
      if (text[i] === '"') {
        i++;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < text.length) i++;
          value += text[i++];
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < text.length && text[i] !== ',' && text[i] !== ' ') i++;
        value = text.slice(start, i);
      }
      challenge.params[key.toLowerCase()] = value;
      skipSpaces();
      if (text[i] === ',') i++;
      else break;
    }
  }
  return challenges;
}

export function basicAuthorization(username: string, password = ''): string {
  return 'Basic ' + Buffer.from(`${username}:${password}`).toString('base64');
}
