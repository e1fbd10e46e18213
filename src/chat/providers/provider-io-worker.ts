// The provider calls' own thread (provider-io.ts is the main thread's side): it sends each streamed
// call's request, reads its server-sent events in the call's format, and passes each read's events on.
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { ssePost } from './sse-post.js';
import { decoderFor } from './decoders.js';
import { ProviderError } from './types.js';
import type { IoReply, IoRequest } from './provider-io.js';
import { IO_WINDOW, decodeStream } from './provider-io.js';
import { num } from '../../config.js';
import { niceThisThread } from '../../thread-priority.js';

const port = parentPort!;
/** Where the replies go (provider-io.ts reads them from its end without waiting for its event loop). */
const replies = (workerData as { replies: MessagePort }).replies;
niceThisThread(num('providerThreadNice'));

interface Call {
  abort: AbortController;
  /** Batches sent and not yet taken by the main thread. */
  unacked: number;
  /** Resumes the reading once the main thread has taken enough. */
  resume: (() => void) | null;
}

const calls = new Map<number, Call>();

/**
 * Replies go out together once per turn of this thread's event loop: when several streams are
 * read at once (the usual case with many chats), the main thread gets one message for all of them.
 */
let outbox: IoReply[] = [];
function send(r: IoReply): void {
  if (!outbox.length) setImmediate(flush);
  outbox.push(r);
}
function flush(): void {
  const batch = outbox;
  outbox = [];
  replies.postMessage(batch);
}

async function run(m: Extract<IoRequest, { op: 'start' }>): Promise<void> {
  const call: Call = { abort: new AbortController(), unacked: 0, resume: null };
  calls.set(m.id, call);
  const payload = Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
  try {
    const sse = ssePost(m.url, payload, { headers: m.headers, signal: call.abort.signal, timeoutMs: m.timeoutMs });
    for await (const events of decodeStream(decoderFor(m.format), sse)) {
      send({ id: m.id, events });
      // Bounded: past the window the response is left unread (its socket pauses) until the main thread catches up.
      if (++call.unacked >= IO_WINDOW) await new Promise<void>((resolve) => (call.resume = resolve));
      if (call.abort.signal.aborted) break;
    }
    send({ id: m.id, done: true });
  } catch (err) {
    const e = err as Error;
    send({
      id: m.id,
      error: {
        name: e?.name ?? 'Error',
        message: e?.message ?? String(err),
        ...(err instanceof ProviderError ? { provider: { retryable: err.retryable, status: err.status, retryAfterMs: err.retryAfterMs } } : {}),
      },
    });
  } finally {
    calls.delete(m.id);
  }
}

port.on('message', (m: IoRequest) => {
  if (m.op === 'start') {
    void run(m);
    return;
  }
  const call = calls.get(m.id);
  if (!call) return;
  if (m.op === 'abort') call.abort.abort();
  else call.unacked -= m.n;
  if (call.resume && (call.abort.signal.aborted || call.unacked < IO_WINDOW)) {
    const r = call.resume;
    call.resume = null;
    r();
  }
});
