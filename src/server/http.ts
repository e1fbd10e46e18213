// A small router over node:http: JSON in, JSON out, errors as {error:{code,message}}.
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { ApiError, badRequest, notFound } from '../errors.js';
import type { User } from '../auth/tokens.js';

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  user: User;
  /** The parsed JSON body ({} when empty). */
  body: () => Promise<any>;
}

export type RouteHandler = (ctx: Ctx) => Promise<unknown>;

/** A handler may return Reply to set the status; anything else is sent as 200 JSON. */
export class Reply {
  constructor(readonly status: number, readonly body: unknown) {}
}

interface Route {
  method: string;
  parts: string[];
  handler: RouteHandler;
}

export class Router {
  private routes: Route[] = [];

  add(method: string, pattern: string, handler: RouteHandler): this {
    this.routes.push({ method, parts: pattern.split('/').filter(Boolean), handler });
    return this;
  }

  /** Every route as `METHOD /pattern/:param` (the bad-input tests sweep them all). */
  list(): { method: string; pattern: string }[] {
    return this.routes.map((r) => ({ method: r.method, pattern: '/' + r.parts.join('/') }));
  }

  /** Finds a route; throws 404/405 ApiErrors for unknown paths and methods. */
  match(method: string, pathname: string): { handler: RouteHandler; params: Record<string, string> } {
    const segs = pathname.split('/').filter(Boolean);
    let pathMatched = false;
    for (const r of this.routes) {
      const params = matchParts(r.parts, segs);
      if (!params) continue;
      pathMatched = true;
      if (r.method === method) return { handler: r.handler, params };
    }
    if (pathMatched) throw new ApiError(405, 'method_not_allowed', `${method} is not allowed on ${pathname}`);
    throw notFound(`route ${method} ${pathname}`);
  }
}

function matchParts(parts: string[], segs: string[]): Record<string, string> | null {
  if (parts.length !== segs.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (p.startsWith(':')) {
      try {
        params[p.slice(1)] = decodeURIComponent(segs[i]!);
      } catch {
        return null;
      }
    } else if (p !== segs[i]) return null;
  }
  return params;
}

export async function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<any> {
  const tooLarge = () => {
    req.resume();
    return new ApiError(413, 'payload_too_large', `request body is larger than ${maxBytes} bytes`);
  };
  if (Number(req.headers['content-length'] ?? 0) > maxBytes) throw tooLarge();
  // Events, not `for await`: a readable's async iterator cost ~20 µs a request, on every send.
  const { chunks, size } = await new Promise<{ chunks: Buffer[]; size: number }>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.off('data', onData);
        reject(tooLarge());
      } else chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve({ chunks, size }));
    req.once('error', reject);
    req.once('close', () => {
      if (!req.complete) reject(new ApiError(400, 'incomplete_body', 'the request body ended before its declared length'));
    });
  });
  if (size === 0) return {};
  const type = String(req.headers['content-type'] ?? 'application/json');
  if (!type.includes('json')) throw new ApiError(415, 'unsupported_media_type', 'send the body as application/json');
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw badRequest(`the body is not valid JSON: ${(err as Error).message}`, 'invalid_json');
  }
}

/**
 * A request Node's parser refuses (malformed, headers too large, a body cut short before its
 * declared length, too slow) gets the same JSON error as any other, where Node would answer a
 * bare `400 Bad Request`; a connection that is gone, or whose response has started, is closed.
 */
export function clientErrorReply(err: NodeJS.ErrnoException, socket: Duplex): void {
  const started = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage?.headersSent;
  if (!socket.writable || err.code === 'ECONNRESET' || started) {
    socket.destroy();
    return;
  }
  const [status, code, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'headers_too_large', 'the request headers are too large']
      : err.code === 'HPE_INVALID_EOF_STATE'
        ? [400, 'incomplete_body', 'the request body ended before its declared length']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'request_timeout', 'the request did not arrive in time']
          : [400, 'bad_request', `malformed HTTP request (${err.code ?? err.message})`];
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function errorBody(err: unknown): { status: number; body: { error: { code: string; message: string } } } {
  if (err instanceof ApiError) {
    return { status: err.status, body: { error: { code: err.code, message: err.message, ...(err.details ?? {}) } } };
  }
  return { status: 500, body: { error: { code: 'internal', message: 'internal server error' } } };
}
