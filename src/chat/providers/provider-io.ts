// Streamed provider calls, made from their own thread (provider-io-worker.ts). Every token passes
// through the main thread; what a call costs besides its events does not have to. Sending a
// request (the chat's whole history, a socket write that wakes the provider, the request's
// headers and its connection's bookkeeping) and reading the stream (socket reads, HTTP chunked
// decoding, text decoding, splitting the server-sent events, reading their JSON) took ~0.3 ms per
// turn and most of what the main thread allocated (its garbage collector's pauses stop every
// stream). Here the main thread posts the request and gets each read's events as the chat loop
// takes them (a read's tokens merged into one text event); replies waiting on the port are also
// taken ahead of a turn boundary's callbacks (tokens-first.ts).
import { MessageChannel, type MessagePort, type Worker, receiveMessageOnPort } from 'node:worker_threads';
import { startWorker } from '../../worker-thread.js';
import { type LlmEvent, type StreamDecoder, type StreamFormat, ProviderError, mergeEvents } from './types.js';
import { type SseEvent, type SsePostOptions, abortError, ssePost } from './sse-post.js';
import { num } from '../../config.js';
import { WakeQueue } from './wake-queue.js';
import { addTokenSource } from '../../tokens-first.js';

export type IoRequest =
  | { op: 'start'; id: number; format: StreamFormat; url: string; payload: Uint8Array; headers: Record<string, string>; timeoutMs: number }
  | { op: 'abort'; id: number }
  /** The main thread took n more of the call's batches. */
  | { op: 'ack'; id: number; n: number };

export type IoReply =
  | { id: number; events: LlmEvent[] }
  | { id: number; done: true }
  | { id: number; error: { name: string; message: string; provider?: { retryable: boolean; status?: number; retryAfterMs?: number } } };

/** Batches a call may have in flight to the main thread before the thread stops reading it. */
export const IO_WINDOW = 64;
/** The main thread acknowledges batches in groups of this many. */
const ACK_EVERY = 16;

class Call {
  private queue = new WakeQueue<LlmEvent[]>();
  private taken = 0;

  constructor(
    readonly id: number,
    private io: ProviderIo,
  ) {}

  get ended(): boolean {
    return this.queue.done;
  }

  deliver(m: IoReply): void {
    if ('events' in m) this.queue.push(m.events);
    else this.queue.end('error' in m ? fromWire(m.error) : null);
  }

  fail(err: Error): void {
    this.queue.end(err);
  }

  /**
   * The batches received since the last call as one (their deltas joined, as one read's are),
   * null at the end; throws the call's error. Batches pile up while the main thread is busy; taken
   * one by one, each would be a frame of its own to each client.
   */
  async next(): Promise<LlmEvent[] | null> {
    const b = await this.queue.next();
    if (b === null) return null;
    let n = 1;
    for (let more; (more = this.queue.shift()) !== undefined; n++) mergeEvents(b, more);
    if ((this.taken += n) >= ACK_EVERY) {
      this.io.post({ op: 'ack', id: this.id, n: this.taken });
      this.taken = 0;
    }
    return b;
  }
}

function fromWire(e: Extract<IoReply, { error: unknown }>['error']): Error {
  if (e.name === 'AbortError') return abortError();
  if (e.provider) return new ProviderError(e.message, e.provider.retryable, e.provider.status, e.provider.retryAfterMs);
  return new Error(e.message);
}

class ProviderIo {
  private static current: ProviderIo | null = null;
  private worker: Worker;
  private replies: MessagePort;
  private calls = new Map<number, Call>();
  private nextId = 1;

  static get running(): Worker | null {
    return ProviderIo.current?.worker ?? null;
  }

  /** The thread, started on the first call (and again after one failed). */
  static get(): ProviderIo {
    return (ProviderIo.current ??= new ProviderIo());
  }

  private constructor() {
    // Replies come on a port of their own: one that can be read without waiting for the event
    // loop (receiveMessageOnPort), so that replies that arrived together are taken together.
    const { port1, port2 } = new MessageChannel();
    this.replies = port1;
    this.worker = startWorker(import.meta.url, 'provider-io-worker', { replies: port2 }, [port2]);
    const drain = () => {
      for (let m; (m = receiveMessageOnPort(port1)) !== undefined; ) this.deliver(m.message as IoReply[]);
    };
    port1.on('message', (replies: IoReply[]) => {
      this.deliver(replies);
      drain();
    });
    const removeSource = addTokenSource(drain);
    const fail = (why: string) => {
      if (ProviderIo.current === this) ProviderIo.current = null;
      drain(); // what the thread sent before it ended (its port is not ordered with the exit)
      removeSource();
      port1.close();
      // Retryable: the next attempt starts a new thread.
      for (const c of this.calls.values()) c.fail(new ProviderError(`the provider call's thread ${why}`, true));
      this.calls.clear();
    };
    this.worker.on('error', (err) => fail(`failed: ${err.message}`));
    this.worker.on('exit', (code) => fail(`exited (${code})`));
    // Idle, neither keeps the process alive (unref'd after the listeners: adding one refs them).
    this.worker.unref();
    port1.unref();
  }

  private deliver(replies: IoReply[]): void {
    for (const m of replies) {
      const call = this.calls.get(m.id);
      if (!call) continue;
      call.deliver(m);
      if (call.ended && this.calls.delete(m.id) && !this.calls.size) this.refWhileBusy();
    }
  }

  /** While a call is in flight the thread keeps the process alive, as the call's socket would. */
  private refWhileBusy(): void {
    if (this.calls.size) {
      this.worker.ref();
      this.replies.ref();
    } else {
      this.worker.unref();
      this.replies.unref();
    }
  }

  post(m: IoRequest): void {
    this.worker.postMessage(m);
  }

  start(format: StreamFormat, url: string, payload: Buffer, opts: SsePostOptions): Call {
    const call = new Call(this.nextId++, this);
    this.calls.set(call.id, call);
    if (this.calls.size === 1) this.refWhileBusy();
    const start: IoRequest = { op: 'start', id: call.id, format, url, payload, headers: opts.headers, timeoutMs: opts.timeoutMs };
    // A body that owns its memory moves to the thread instead of being copied (a chat's whole history).
    const owns = payload.byteOffset === 0 && payload.byteLength === payload.buffer.byteLength && !(payload.buffer instanceof SharedArrayBuffer);
    this.worker.postMessage(start, owns ? [payload.buffer as ArrayBuffer] : []);
    return call;
  }

  abort(call: Call): void {
    if (call.ended || !this.calls.delete(call.id)) return;
    if (!this.calls.size) this.refWhileBusy();
    this.post({ op: 'abort', id: call.id });
  }
}

/** The provider calls' thread, if one is running (tests end it to see calls fail over to a new one). */
export function providerThread(): Worker | null {
  return ProviderIo.running;
}

/** A call's events, read by the provider calls' thread: a batch per read (reads that piled up, as one), then the stream's end (decoder.end()). */
export async function* threadedCall(format: StreamFormat, url: string, payload: Buffer, opts: SsePostOptions): AsyncGenerator<LlmEvent[]> {
  if (opts.signal.aborted) throw abortError();
  const io = ProviderIo.get();
  const call = io.start(format, url, payload, opts);
  const onAbort = () => {
    io.abort(call);
    call.fail(abortError());
  };
  opts.signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (let batch: LlmEvent[] | null; (batch = await call.next()) !== null; ) yield batch;
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
    io.abort(call); // stopped early (the consumer broke off): the thread drops the connection
  }
}

/** The same on the event loop. */
export async function* directCall(decoder: StreamDecoder, url: string, payload: Buffer, opts: SsePostOptions): AsyncGenerator<LlmEvent[]> {
  yield* decodeStream(decoder, ssePost(url, payload, opts));
}

/** The events of a stream of server-sent event batches: a batch per read (what came before an error, then the error), then the end. */
export async function* decodeStream(decoder: StreamDecoder, batches: AsyncIterable<SseEvent[]>): AsyncGenerator<LlmEvent[]> {
  for await (const batch of batches) {
    const out: LlmEvent[] = [];
    try {
      decoder.read(batch, out);
    } catch (err) {
      if (out.length) yield out; // what was read before the error still streams
      throw err;
    }
    if (out.length) yield out;
  }
  yield decoder.end();
}

/**
 * How the providers make a streamed call: from the provider calls' thread (which makes its own
 * decoder for `format`), or on the event loop with `decoder()`.
 */
export async function* decodedCall(threaded: boolean, format: StreamFormat, decoder: () => StreamDecoder, url: string, payload: Buffer, opts: SsePostOptions): AsyncGenerator<LlmEvent> {
  const batches = threaded ? threadedCall(format, url, payload, opts) : directCall(decoder(), url, payload, opts);
  for await (const batch of batches) yield* batch;
}

/** AIRLOCK_PROVIDER_THREAD: whether calls go from the thread (the server reads it at start; a provider made without `threaded` reads it per call). */
export const providerThreadOn = (): boolean => num('providerThread') !== 0;
