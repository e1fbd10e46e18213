// The providers' HTTP client against a real local server: the SSE wire format in awkward pieces,
// error statuses, a stalled provider, an abort, a cut connection, connection reuse, and a burst
// read at once merged into one delta; then the same behaviours of a whole call (request, stream,
// the provider's events).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { ChunkQueue, MAX_QUEUED, decodedCall, ssePost, type SseEvent } from '../src/chat/providers/sse-post.js';
import { ProviderError, mergeEvents, type LlmEvent } from '../src/chat/providers/types.js';
import { OpenAIDecoder } from '../src/chat/providers/openai.js';

const jsonBody = (v: unknown) => Buffer.from(JSON.stringify(v));

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => unknown;
let handler: Handler = (_req, res) => res.end();
let connections = 0;
const server = http.createServer(async (req, res) => {
  for await (const _ of req);
  await handler(req, res);
});
server.on('connection', () => connections++);
const url = await new Promise<string>((r) => server.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/x`)));
after(() => {
  server.closeAllConnections();
  server.close();
});

const opts = (signal = new AbortController().signal, timeoutMs = 10_000) => ({ headers: { authorization: 'Bearer k' }, signal, timeoutMs });
async function collect(it: AsyncIterable<SseEvent[]>): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for await (const batch of it) out.push(...batch);
  return out;
}

test('events split anywhere, CRLF line ends, multi-line data, comments and named events', async () => {
  const wire = ': a comment\r\nevent: first\r\ndata: {"a":1}\r\n\r\ndata: line one\r\ndata: line two\r\n\r\ndata:no-space\n\nevent: last\ndata: ü✓\n\n';
  handler = async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    // One byte per write, so every boundary (inside CRLF, inside a multi-byte character) is hit.
    for (const b of Buffer.from(wire)) {
      res.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    res.end();
  };
  assert.deepEqual(await collect(ssePost(url, jsonBody({ q: 1 }), opts())), [
    { event: 'first', data: '{"a":1}' },
    { event: '', data: 'line one\nline two' },
    { event: '', data: 'no-space' },
    { event: 'last', data: 'ü✓' },
  ]);
});

test('an error status becomes a ProviderError with the body\'s message, retryability and Retry-After', async () => {
  handler = (_req, res) => res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '2' }).end(JSON.stringify({ error: { message: 'slow down' } }));
  await assert.rejects(collect(ssePost(url, jsonBody({}), opts())), (err: any) => err instanceof ProviderError && err.status === 429 && err.retryable && err.retryAfterMs === 2000 && /429: slow down/.test(err.message));
  handler = (_req, res) => res.writeHead(401).end(JSON.stringify({ type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } }));
  await assert.rejects(collect(ssePost(url, jsonBody({}), opts())), (err: any) => err instanceof ProviderError && err.status === 401 && !err.retryable && /invalid x-api-key/.test(err.message));
  handler = (_req, res) => res.writeHead(502).end('<html>bad gateway</html>');
  await assert.rejects(collect(ssePost(url, jsonBody({}), opts())), (err: any) => err.status === 502 && err.retryable && /bad gateway/.test(err.message));
});

test('a provider that stops sending times out (retryable), before and during the stream', async () => {
  handler = () => {}; // never answers
  await assert.rejects(collect(ssePost(url, jsonBody({}), opts(undefined, 200))), (err: any) => err instanceof ProviderError && err.retryable && /timed out/.test(err.message));
  handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: one\n\n'); // then nothing
  };
  const got: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const batch of ssePost(url, jsonBody({}), opts(undefined, 200))) got.push(...batch.map((e) => e.data));
    })(),
    /timed out/,
  );
  assert.deepEqual(got, ['one']);
});

test('an abort ends the call with an AbortError and closes the connection; a cut connection is a retryable error', async () => {
  let closed!: Promise<void>;
  handler = (req, res) => {
    closed = new Promise((r) => res.on('close', () => r()));
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: one\n\n');
  };
  const ac = new AbortController();
  await assert.rejects(
    (async () => {
      for await (const _ of ssePost(url, jsonBody({}), opts(ac.signal))) ac.abort();
    })(),
    (err: any) => err.name === 'AbortError',
  );
  await closed; // the server saw the connection go
  handler = (req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: one\n\n', () => req.socket.destroy());
  };
  await assert.rejects(collect(ssePost(url, jsonBody({}), opts())), (err: any) => err instanceof ProviderError && err.retryable && /connection/.test(err.message));
});

test('a consumer that stops reading while many reads arrive gets every event, in order, when it reads on', async () => {
  const n = 300; // well over the chunks held before the response is paused
  let written!: () => void;
  const allWritten = new Promise<void>((r) => (written = r));
  handler = async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (let i = 0; i < n; i++) {
      res.write(`data: ${i}\n\n`);
      await new Promise((r) => setImmediate(r)); // each its own read
    }
    res.end();
    written();
  };
  const got: string[] = [];
  for await (const batch of ssePost(url, jsonBody({}), opts())) {
    if (!got.length) await allWritten; // the first batch waits until the server has written everything
    got.push(...batch.map((e) => e.data));
  }
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => String(i)));
});

test('the response reader holds a bounded number of chunks: past it the response is paused, and resumed once they are taken', async () => {
  const res = new PassThrough({ encoding: 'utf8' });
  const q = new ChunkQueue(res);
  for (let i = 0; i < MAX_QUEUED * 3; i++) res.write(`${i},`);
  res.end();
  assert.equal(q.held, MAX_QUEUED);
  assert.equal(res.isPaused(), true);
  let all = '';
  for (let c; (c = q.shift() ?? (await q.next())) !== null; ) {
    assert.ok(q.held <= MAX_QUEUED);
    all += c;
  }
  assert.equal(all, Array.from({ length: MAX_QUEUED * 3 }, (_, i) => `${i},`).join(''));
});

test('calls reuse one connection', async () => {
  handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/event-stream' }).end('data: ok\n\n');
  await collect(ssePost(url, jsonBody({}), opts()));
  const before = connections;
  for (let i = 0; i < 5; i++) assert.deepEqual(await collect(ssePost(url, jsonBody({}), opts())), [{ event: '', data: 'ok' }]);
  assert.equal(connections, before);
});

{
  test("the providers: an event that is not JSON and an error inside the stream become ProviderErrors with the provider's words", async () => {
    const { OpenAIProvider } = await import('../src/chat/providers/openai.js');
    const { AnthropicProvider } = await import('../src/chat/providers/anthropic.js');
    const base = new URL(url).origin;
    const openai = new OpenAIProvider({ baseUrl: `${base}/v1`, apiKey: 'k', timeoutMs: 10_000 });
    const anthropic = new AnthropicProvider({ baseUrl: base, apiKey: 'k', timeoutMs: 10_000 });
    const req = () => ({ model: 'm', messages: [], tools: [], signal: new AbortController().signal });
    const drainStream = async (it: AsyncIterable<unknown>) => {
      for await (const _ of it);
    };
    const sends = (body: string) => (handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/event-stream' }).end(body));

    sends('data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: <html>oops</html>\n\n');
    await assert.rejects(drainStream(openai.stream(req())), (err: any) => err instanceof ProviderError && err.retryable && /not JSON: <html>oops<\/html>/.test(err.message));
    sends('data: {"error":{"message":"The server is overloaded"}}\n\n');
    await assert.rejects(drainStream(openai.stream(req())), (err: any) => err instanceof ProviderError && err.retryable && /stream failed: The server is overloaded/.test(err.message));

    sends('event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\nevent: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n');
    await assert.rejects(drainStream(anthropic.stream(req())), (err: any) => err instanceof ProviderError && err.retryable && /stream failed: Overloaded/.test(err.message));
    sends('event: error\ndata: {"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}\n\n');
    await assert.rejects(drainStream(anthropic.stream(req())), (err: any) => err instanceof ProviderError && !err.retryable && /prompt is too long/.test(err.message));
    sends('event: ping\ndata: {not json\n\n');
    await assert.rejects(drainStream(anthropic.stream(req())), (err: any) => err instanceof ProviderError && /not JSON: \{not json/.test(err.message));
  });

  test('a burst written at once is one batch, and each provider merges it into one delta that counts its tokens', async () => {
    const { OpenAIProvider } = await import('../src/chat/providers/openai.js');
    const { AnthropicProvider } = await import('../src/chat/providers/anthropic.js');
    const base = new URL(url).origin;
    const req = () => ({ model: 'm', messages: [], tools: [], signal: new AbortController().signal });
    // The first write is read alone (the response waits for it); the burst after it in one write.
    let release!: () => void;
    const burst = (first: string, rest: string) =>
      (handler = async (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(first);
        await new Promise<void>((r) => (release = r));
        res.end(rest);
      });
    /** The first event (read alone), then, once the burst is let go, all the rest. */
    const firstThenBurst = async (stream: AsyncIterable<unknown>) => {
      const it = stream[Symbol.asyncIterator]();
      const first = (await it.next()).value;
      release();
      const rest: unknown[] = [];
      for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
      return { first, rest };
    };
    const oa = (d: object) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: d }] })}\n\n`;
    burst(oa({ content: 'A' }), oa({ reasoning_content: 'r1' }) + oa({ reasoning_content: 'r2' }) + oa({ content: 'B' }) + oa({ content: 'C' }) + oa({ content: 'D' }) + 'data: [DONE]\n\n');
    const o = await firstThenBurst(new OpenAIProvider({ baseUrl: `${base}/v1`, apiKey: 'k', timeoutMs: 10_000 }).stream(req()));
    assert.deepEqual(o.first, { type: 'text', text: 'A' });
    assert.deepEqual(o.rest, [
      { type: 'reasoning', text: 'r1r2', tokens: 2 },
      { type: 'text', text: 'BCD', tokens: 3 },
      { type: 'finish', reason: 'stop' },
    ]);

    const an = (e: object) => `event: x\ndata: ${JSON.stringify(e)}\n\n`;
    const td = (t: string) => an({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: t } });
    burst(
      an({ type: 'message_start', message: { usage: { input_tokens: 3 } } }) + an({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }) + td('w'),
      td('x') + td('y') + td('z') + an({ type: 'content_block_stop', index: 0 }),
    );
    const a = await firstThenBurst(new AnthropicProvider({ baseUrl: base, apiKey: 'k', timeoutMs: 10_000 }).stream(req()));
    assert.deepEqual(a.first, { type: 'text', text: 'w' });
    assert.deepEqual(a.rest, [
      { type: 'text', text: 'xyz', tokens: 3 },
      { type: 'usage', input_tokens: 3, output_tokens: 0 },
      { type: 'finish', reason: 'end_turn' },
    ]);
  });
}

/** An OpenAI stream event of one text delta. */
const oa = (text: string) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: text } }] })}\n\n`;
async function events(it: AsyncIterable<LlmEvent>): Promise<LlmEvent[]> {
  const out: LlmEvent[] = [];
  for await (const e of it) out.push(e);
  return out;
}
const texts = (evs: LlmEvent[]) => evs.flatMap((e) => (e.type === 'text' ? [e.text] : []));

// A whole call, decoded.
const paths = [['on the event loop', (o: ReturnType<typeof opts>) => decodedCall(new OpenAIDecoder(), url, jsonBody({}), o)]] as const;
for (const [where, call] of paths) {
  test(`a call's events, an error status, an error inside the stream after some text (${where})`, async () => {
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/event-stream' }).end(oa('a') + oa('b') + 'data: [DONE]\n\n');
    assert.deepEqual(await events(call(opts())), [
      { type: 'text', text: 'ab', tokens: 2 },
      { type: 'finish', reason: 'stop' },
    ]);
    handler = (_req, res) => res.writeHead(429, { 'retry-after': '2' }).end(JSON.stringify({ error: { message: 'slow down' } }));
    await assert.rejects(events(call(opts())), (err: any) => err instanceof ProviderError && err.status === 429 && err.retryable && err.retryAfterMs === 2000 && /429: slow down/.test(err.message));
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/event-stream' }).end(oa('partial') + 'data: {"error":{"message":"overloaded"}}\n\n');
    const got: LlmEvent[] = [];
    await assert.rejects(
      (async () => {
        for await (const e of call(opts())) got.push(e);
      })(),
      (err: any) => err instanceof ProviderError && err.retryable && /stream failed: overloaded/.test(err.message),
    );
    assert.deepEqual(texts(got), ['partial']);
  });

  test(`a stalled provider times out; an abort ends the call with an AbortError and closes the connection; a cut connection is retryable (${where})`, async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(oa('one')); // then nothing
    };
    await assert.rejects(events(call(opts(undefined, 200))), (err: any) => err instanceof ProviderError && err.retryable && /timed out/.test(err.message));
    let closed!: Promise<void>;
    handler = (_req, res) => {
      closed = new Promise((r) => res.on('close', () => r()));
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(oa('one'));
    };
    const ac = new AbortController();
    await assert.rejects(
      (async () => {
        for await (const _ of call(opts(ac.signal))) ac.abort();
      })(),
      (err: any) => err.name === 'AbortError',
    );
    await closed; // the provider saw the connection go
    handler = (req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(oa('one'), () => req.socket.destroy());
    };
    await assert.rejects(events(call(opts())), (err: any) => err instanceof ProviderError && err.retryable && /connection/.test(err.message));
  });

  test(`a consumer that stops reading while many reads arrive gets every event, in order, when it reads on; calls reuse one connection (${where})`, async () => {
    const n = 300; // well over what is held in flight before the reading stops
    let written!: () => void;
    const allWritten = new Promise<void>((r) => (written = r));
    handler = async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let i = 0; i < n; i++) {
        res.write(oa(`${i} `));
        await new Promise((r) => setImmediate(r)); // each its own read
      }
      res.end('data: [DONE]\n\n');
      written();
    };
    const got: LlmEvent[] = [];
    for await (const e of call(opts())) {
      if (!got.length) await allWritten; // the first event waits until the provider has written everything
      got.push(e);
    }
    assert.equal(texts(got).join(''), Array.from({ length: n }, (_, i) => `${i} `).join(''));
    handler = (_req, res) => res.writeHead(200, { 'content-type': 'text/event-stream' }).end(oa('ok'));
    await events(call(opts()));
    const before = connections;
    for (let i = 0; i < 5; i++) assert.deepEqual(texts(await events(call(opts()))), ['ok']);
    assert.equal(connections, before);
  });
}

test('mergeEvents joins deltas of one kind, keeps the rest in order, and counts the tokens', () => {
  const into: LlmEvent[] = [{ type: 'text', text: 'a' }];
  mergeEvents(into, [{ type: 'text', text: 'bc', tokens: 2 }, { type: 'reasoning', text: 'r' }, { type: 'reasoning', text: 's' }, { type: 'finish', reason: 'stop' }]);
  mergeEvents(into, [{ type: 'text', text: 'd' }]);
  assert.deepEqual(into, [
    { type: 'text', text: 'abc', tokens: 3 },
    { type: 'reasoning', text: 'rs', tokens: 2 },
    { type: 'finish', reason: 'stop' },
    { type: 'text', text: 'd' },
  ]);
});
