// A streamed provider call as events: the server-sent events of each socket read (ssePost), read
// by the provider's decoder into one batch of stream events per read, in order.
import type { LlmEvent, StreamDecoder } from './types.js';
import { type SseEvent, type SsePostOptions, ssePost } from './sse-post.js';

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

/** A whole call's batches: POSTs the body, decodes the stream. */
export function directCall(decoder: StreamDecoder, url: string, payload: Buffer, opts: SsePostOptions): AsyncGenerator<LlmEvent[]> {
  return decodeStream(decoder, ssePost(url, payload, opts));
}

/** What the providers stream: a call's events one by one. */
export async function* decodedCall(decoder: StreamDecoder, url: string, payload: Buffer, opts: SsePostOptions): AsyncGenerator<LlmEvent> {
  for await (const batch of directCall(decoder, url, payload, opts)) yield* batch;
}
