// HTTP and WebSocket client for the Airlock API (used by the CLI, tests and benchmarks).
import WebSocket from 'ws';
import { keepAliveRequest } from '../keep-alive.js';
import type { StreamEvent } from '../chat/types.js';
import { readUpgradeError, wsBase } from './wire.js';

export class ApiClientError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

// node:http rather than fetch: a call costs a fraction of fetch's CPU (undici's streams and its
// wasm parser took ~1 ms of CPU per call, which 50 benchmark clients sending at once queued in
// front of the tokens they were timing).
interface RawResponse {
  status: number;
  text: string;
}

/** A request with no full answer in this long fails: longer than any of the API's own waits. */
const REQUEST_TIMEOUT_MS = 30_000;

export class ApiClient {
  constructor(
    readonly baseUrl: string,
    readonly token: string,
    private timeoutMs = REQUEST_TIMEOUT_MS,
  ) {}

  async request<T = any>(method: string, path: string, body?: unknown): Promise<T> {
    let res: RawResponse;
    try {
      res = await this.send(method, path, body === undefined ? undefined : JSON.stringify(body));
    } catch (err) {
      const cause = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new ApiClientError(0, 'unreachable', `cannot reach the Airlock server at ${this.baseUrl} (${cause})`);
    }
    const { status, text } = res;
    let json: any = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    if (status < 200 || status >= 300) {
      throw new ApiClientError(status, json?.error?.code ?? 'http_error', json?.error?.message ?? `HTTP ${status}: ${text.slice(0, 200)}`);
    }
    return json as T;
  }

  /** One request and its whole response body; fails when no full answer arrives in timeoutMs. */
  private send(method: string, path: string, payload: string | undefined): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const req = keepAliveRequest(
        new URL(this.baseUrl + path),
        {
          method,
          headers: {
            authorization: `Bearer ${this.token}`,
            ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
          },
        },
        (res) => {
          res.setEncoding('utf8');
          let text = '';
          res.on('data', (c: string) => (text += c));
          res.on('end', () => {
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, text });
          });
          res.on('error', fail);
        },
      );
      const timer = setTimeout(() => req.destroy(Object.assign(new Error(`no answer within ${this.timeoutMs} ms`), { code: 'timeout' })), this.timeoutMs);
      timer.unref();
      function fail(err: Error) {
        clearTimeout(timer);
        reject(err);
      }
      req.on('error', fail);
      req.end(payload);
    });
  }

  get = <T = any>(path: string) => this.request<T>('GET', path);
  post = <T = any>(path: string, body?: unknown) => this.request<T>('POST', path, body ?? {});
  patch = <T = any>(path: string, body?: unknown) => this.request<T>('PATCH', path, body ?? {});
  delete = <T = any>(path: string) => this.request<T>('DELETE', path);

  wsUrl(path: string): string {
    return wsBase(this.baseUrl) + path;
  }

  /** Opens a chat stream; `onEvents` gets each frame's events in order. Resolves once open. */
  openStream(chatId: string, after: number, onEvents: (events: StreamEvent[]) => void): Promise<WebSocket> {
    const ws = new WebSocket(this.wsUrl(`/api/chats/${chatId}/stream?after=${after}`), {
      headers: { authorization: `Bearer ${this.token}` },
      perMessageDeflate: false,
      maxPayload: 64 * 1024 * 1024,
    });
    ws.on('message', (data) => {
      onEvents(JSON.parse(data.toString()) as StreamEvent[]);
    });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (_req, res) => {
        void readUpgradeError(res).then((e) => reject(new ApiClientError(e.status, e.code, e.message)));
      });
      ws.once('error', (err) => reject(new ApiClientError(0, 'unreachable', `cannot open the stream: ${err.message}`)));
    });
  }
}
