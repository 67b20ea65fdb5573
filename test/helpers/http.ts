/** Plain HTTP GETs on 127.0.0.1, for published-port tests. */
import http from 'node:http';

export function httpGet(port: number, urlPath = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

/** Retries while the server in a just-started container is not listening yet. */
export async function httpGetRetrying(port: number, attempts = 40): Promise<string> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      const body = await httpGet(port);
      if (body) return body;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw last;
}
