// Small pieces every WebSocket speaker here needs: the ws(s):// form of a server URL, JSON text
// frames that may be malformed, and the JSON error body of a refused upgrade ({error:{code,message}}).
import type { IncomingMessage } from 'node:http';

/** http://host:port/ → ws://host:port (https → wss), without a trailing slash. */
export function wsBase(url: string): string {
  return url.replace(/\/+$/, '').replace(/^http/, 'ws');
}

/** The parsed JSON value, or undefined (which JSON cannot produce) when the text is not JSON. */
export function parseJson(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export interface UpgradeError {
  status: number;
  code: string;
  message: string;
}

/** Reads the server's answer to a refused WebSocket upgrade ('unexpected-response'). */
export function readUpgradeError(res: IncomingMessage): Promise<UpgradeError> {
  return new Promise((resolve) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => {
      const status = res.statusCode ?? 0;
      const e = parseJson(body)?.error;
      resolve({ status, code: typeof e?.code === 'string' ? e.code : `http_${status}`, message: typeof e?.message === 'string' ? e.message : `HTTP ${status}` });
    });
  });
}
