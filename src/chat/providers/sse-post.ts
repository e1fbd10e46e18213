// One streamed provider call: POST a JSON body, read the server-sent events back. Written on
// node:http rather than taken from the providers' SDKs: on the path of every turn and every token,
// the SDKs (fetch, web streams, their SSE decoders) cost 1.4-1.7 ms before the request left and
// 0.7-0.9 ms to the first parsed event, against 0.3 and 0.3 ms here (tmp/sdk.ts, loopback), and
// were the largest part of the server's CPU time per token.
import http from 'node:http';
import type { Readable } from 'node:stream';
import { keepAliveRequest } from '../../keep-alive.js';
import { type LlmEvent, type StreamDecoder, ProviderError, retryAfterMs, retryableStatus } from './types.js';

export interface SseEvent {
  /** The `event:` field, or '' when the server sent none (OpenAI sends none). */
  event: string;
  data: string;
}

export interface SsePostOptions {
  headers: Record<string, string>;
  signal: AbortSignal;
  /** Fails (retryably) when no byte arrives for this long, before or during the stream. */
  timeoutMs: number;
}

/** Error bodies are read up to this many bytes for their message. */
const MAX_ERROR_BODY = 64 * 1024;

/** What an aborted call throws (its name is what callers check). */
export function abortError(): Error {
  const e = new Error('the provider call was aborted');
  e.name = 'AbortError';
  return e;
}

/**
 * A request body as UTF-8 bytes, its last field `messages`, given as JSON array items already
 * serialized (see `perMessageJson`): a turn serializes only the messages new since the last. It
 * is made before the streaming call, not inside the generator (which lives as long as the
 * stream), and kept as bytes, outside the JavaScript heap: a body held as a string for a turn's
 * length was the largest thing the server's young-generation GC copied (a whole chat history).
 */
export function jsonBodyWithMessages(fields: Record<string, unknown>, messageItems: (Buffer | string)[]): Buffer {
  const head = JSON.stringify(fields);
  const parts: Buffer[] = [Buffer.from(`${head.slice(0, -1)}${head.length > 2 ? ',' : ''}"messages":[`)];
  for (const item of messageItems) {
    if (!item.length) continue;
    if (parts.length > 1) parts.push(COMMA);
    parts.push(typeof item === 'string' ? Buffer.from(item) : item);
  }
  parts.push(CLOSE);
  return Buffer.concat(parts);
}
const COMMA = Buffer.from(',');
const CLOSE = Buffer.from(']}');

/**
 * `fn` once per message, kept as bytes: stored messages never change (an edit makes new ones),
 * and a chat's history is sent again with every turn, so each message's JSON is made once. As
 * bytes, outside the JavaScript heap: kept as strings, they were copied by every young-generation
 * GC until promoted, which cost more token latency than serializing the history each turn did.
 */
export function perMessageJson<M extends object>(fn: (m: M) => string): (m: M) => Buffer {
  const cache = new WeakMap<M, Buffer>();
  return (m) => {
    let json = cache.get(m);
    if (json === undefined) cache.set(m, (json = Buffer.from(fn(m))));
    return json;
  };
}

/**
 * Yields the events of each read together: the ones that reached us at one instant, which the
 * providers merge into one stream event (a burst of tokens is one delta, not one each).
 */
export async function* ssePost(url: string, payload: Buffer, opts: SsePostOptions): AsyncGenerator<SseEvent[]> {
  if (opts.signal.aborted) throw abortError();
  const u = new URL(url);
  const req = keepAliveRequest(u, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      'user-agent': 'airlock', // some API front ends refuse requests without one
      'content-length': payload.length,
      ...opts.headers,
    },
  });
  /** Why we ended the request ourselves: reported instead of the socket error it causes. */
  let reason: Error | null = null;
  const stop = (err: Error) => {
    reason ??= err;
    req.destroy(err);
  };
  const onAbort = () => stop(abortError());
  opts.signal.addEventListener('abort', onAbort, { once: true });
  req.setTimeout(opts.timeoutMs, () => stop(new ProviderError(`provider timed out (nothing received for ${opts.timeoutMs} ms, AIRLOCK_LLM_TIMEOUT_MS)`, true)));
  const failure = (err: unknown): Error => {
    if (opts.signal.aborted) return abortError();
    if (reason) return reason;
    if (err instanceof ProviderError) return err;
    return new ProviderError(`provider connection failed: ${(err as Error)?.message ?? String(err)}`, true);
  };
  let finished = false;
  try {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
      req.end(payload);
    }).catch((err) => {
      throw failure(err);
    });
    req.removeAllListeners('error');
    req.on('error', () => {}); // reported through the response stream
    const status = res.statusCode ?? 0;
    if (status < 200 || status >= 300) {
      const text = await readCapped(res).catch(() => '');
      throw new ProviderError(`provider returned ${status}: ${errorMessage(text) || http.STATUS_CODES[status] || 'error'}`, retryableStatus(status), status, retryAfterMs(flatHeaders(res.headers)));
    }
    res.setEncoding('utf8');
    const chunks = new ChunkQueue(res);
    // The text after the last complete event, as the chunks it came in: an event of many MiB (a
    // large tool call) is joined and scanned once when its end arrives, not once per chunk.
    let pending: string[] = [];
    let cr = '';
    try {
      for (let chunk: string | null; (chunk = chunks.shift() ?? (await chunks.next())) !== null; ) {
        let c = cr ? cr + chunk : chunk;
        cr = '';
        if (c.includes('\r')) {
          c = normalizeNewlines(c);
          if (c.endsWith('\r')) [c, cr] = [c.slice(0, -1), '\r']; // half of a CRLF, maybe
        }
        const prev = pending.length ? pending[pending.length - 1]! : '';
        if (!c.includes('\n\n') && !(prev.endsWith('\n') && c.startsWith('\n'))) {
          if (c) pending.push(c);
          continue;
        }
        const buf = pending.length ? pending.join('') + c : c;
        let end: number;
        let start = 0;
        const batch: SseEvent[] = [];
        while ((end = buf.indexOf('\n\n', start)) >= 0) {
          const ev = parseBlockAt(buf, start, end);
          if (ev) batch.push(ev);
          start = end + 2;
        }
        pending = start < buf.length ? [buf.slice(start)] : [];
        if (batch.length) yield batch;
      }
    } catch (err) {
      throw failure(err);
    }
    const buf = pending.join('') + cr;
    if (!res.complete) throw failure(new Error('the connection closed mid-stream'));
    finished = true;
    const last = parseBlock(buf);
    if (last) yield [last];
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
    // Stopped early (interrupt, an error, or the consumer broke off): the connection is mid-response.
    if (!finished && !req.destroyed) req.destroy();
  }
}

/** A whole call's events: POSTs the body and decodes the stream, a read's events together (what was decoded before an error still streams). */
export async function* decodedCall(decoder: StreamDecoder, url: string, payload: Buffer, opts: SsePostOptions): AsyncGenerator<LlmEvent> {
  for await (const batch of ssePost(url, payload, opts)) {
    const out: LlmEvent[] = [];
    try {
      decoder.read(batch, out);
    } finally {
      yield* out;
    }
  }
  yield* decoder.end();
}

/** An event's data as JSON; a provider that sends anything else is failing (retryably). */
export function eventJson(data: string): any {
  try {
    return JSON.parse(data);
  } catch {
    throw new ProviderError(`provider sent an event that is not JSON: ${data.slice(0, 200)}`, true);
  }
}

/** CRLF or CR line ends as LF; a trailing CR is kept (it may be half of a CRLF: the caller holds it for the next chunk). */
function normalizeNewlines(s: string): string {
  const tail = s.endsWith('\r') ? '\r' : '';
  return s.slice(0, s.length - tail.length).replace(/\r\n?/g, '\n') + tail;
}

/** The event of the block buf[start, end): a lone `data: ` line (every OpenAI event) without copying it first. */
function parseBlockAt(buf: string, start: number, end: number): SseEvent | null {
  if (buf.startsWith('data: ', start)) {
    const nl = buf.indexOf('\n', start);
    if (nl < 0 || nl >= end) return { event: '', data: buf.slice(start + 6, end) };
  }
  return parseBlock(buf.slice(start, end));
}

/**
 * A response's text chunks as they arrive, read one at a time: lighter than the stream's async
 * iterator, which allocated more per read than anything else on a token's way in. Holds at most
 * MAX_QUEUED chunks (the response is paused meanwhile).
 */
export class ChunkQueue {
  private items: string[] = [];
  private head = 0;
  private ended = false;
  private error: unknown = null;
  private wake: (() => void) | null = null;

  constructor(private res: Readable) {
    res.on('data', (c: string) => {
      this.items.push(c);
      this.notify();
      if (this.held >= MAX_QUEUED) res.pause();
    });
    res.on('end', () => this.end());
    res.on('error', (err) => this.end(err));
    // Closed without an end: the caller finds the response incomplete.
    res.on('close', () => this.end());
  }

  /** Chunks received and not yet taken. */
  get held(): number {
    return this.items.length - this.head;
  }

  /** The next queued chunk, or undefined when none is queued (then await next()). */
  shift(): string | undefined {
    if (this.head === this.items.length) return undefined;
    const item = this.items[this.head++]!;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
      if (this.res.isPaused() && !this.ended) this.res.resume();
    }
    return item;
  }

  /** The next chunk once one arrives; null at the end; throws the response's error once the chunks before it are taken. */
  async next(): Promise<string | null> {
    for (;;) {
      const item = this.shift();
      if (item !== undefined) return item;
      if (this.ended) {
        if (this.error) throw this.error;
        return null;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private end(err: unknown = null): void {
    if (this.ended) return;
    this.ended = true;
    this.error = err;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
}
export const MAX_QUEUED = 64;

function parseBlock(block: string): SseEvent | null {
  let event = '';
  let data: string | null = null;
  for (const line of block.split('\n')) {
    if (line.startsWith('data:')) {
      const v = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
      data = data === null ? v : `${data}\n${v}`;
    } else if (line.startsWith('event:')) event = line.slice(line.charCodeAt(6) === 32 ? 7 : 6);
  }
  return data === null ? null : { event, data };
}

async function readCapped(res: http.IncomingMessage): Promise<string> {
  let out = '';
  for await (const c of res) {
    out += String(c);
    if (out.length > MAX_ERROR_BODY) {
      res.destroy();
      break;
    }
  }
  return out;
}

/** The message of an OpenAI ({error:{message}}) or Anthropic ({type:'error',error:{message}}) error body. */
function errorMessage(text: string): string {
  try {
    const j = JSON.parse(text);
    const m = j?.error?.message ?? j?.message ?? (typeof j?.error === 'string' ? j.error : undefined);
    if (typeof m === 'string') return m;
  } catch {
    /* not JSON */
  }
  return text.trim().slice(0, 300);
}

function flatHeaders(h: http.IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}
