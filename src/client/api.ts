// HTTP and WebSocket client for the Airlock API (used by the CLI, tests and benchmarks).
import WebSocket from 'ws';
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

export class ApiClient {
  constructor(
    readonly baseUrl: string,
    readonly token: string,
    private timeoutMs = 30_000,
  ) {}

  async request<T = any>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const cause = (err as any)?.cause?.code ?? (err as Error).message;
      throw new ApiClientError(0, 'unreachable', `cannot reach the Airlock server at ${this.baseUrl} (${cause})`);
    }
    const text = await res.text();
    let json: any = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    if (!res.ok) {
      throw new ApiClientError(res.status, json?.error?.code ?? 'http_error', json?.error?.message ?? `HTTP ${res.status}: ${text.slice(0, 200)}`);
    }
    return json as T;
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
