// Fake LLM providers speaking the real streaming wire formats: OpenAI chat completions SSE
// (`data: {...}` chunks, tool-call deltas, usage chunk, `data: [DONE]`) and Anthropic messages SSE
// (`event:` + `data:` frames). The test scripts each reply and controls its pacing.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { TITLE_PROMPT } from '../../src/chat/title.js';

export type Step =
  | { text: string }
  | { reasoning: string }
  | { tool: { id: string; name: string; args: unknown } }
  | { wait: Promise<unknown> }
  | { delayMs: number }
  /** Destroys the connection mid-stream (a reset). */
  | { cut: true };

export type Reply = { steps: Step[]; usage?: { input: number; output: number } } | { status: number; body?: unknown; headers?: Record<string, string> };

export type Script = (req: any, n: number) => Reply | Promise<Reply>;

export interface FakeLlm {
  kind: 'openai' | 'anthropic';
  url: string;
  /** Base URL to configure the provider with. */
  baseUrl: string;
  requests: any[];
  titleRequests: any[];
  script: Script;
  /** Resolves when the n-th (1-based) chat request has arrived. */
  waitForRequest(n: number): Promise<any>;
  close(): Promise<void>;
}

export const text = (...pieces: string[]): Reply => ({ steps: pieces.map((t) => ({ text: t })) });

export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

export async function startFakeLlm(kind: 'openai' | 'anthropic', script: Script = () => text('Hello', ' world')): Promise<FakeLlm> {
  const waiters: { n: number; resolve: (r: any) => void }[] = [];
  const fake: FakeLlm = {
    kind,
    url: '',
    baseUrl: '',
    requests: [],
    titleRequests: [],
    script,
    waitForRequest(n) {
      if (fake.requests.length >= n) return Promise.resolve(fake.requests[n - 1]);
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const sockets = new Set<import('node:net').Socket>();
  const server = http.createServer(async (req, res) => {
    let raw = '';
    for await (const c of req) raw += c;
    const path = req.url ?? '';
    const expected = kind === 'openai' ? '/v1/chat/completions' : '/v1/messages';
    if (req.method !== 'POST' || path !== expected) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: `no route ${path}` } }));
      return;
    }
    const body = JSON.parse(raw);
    if (!body.stream) {
      res.writeHead(400).end(JSON.stringify({ error: { message: 'this fake only streams' } }));
      return;
    }
    const isTitle = kind === 'openai' ? body.messages?.[0]?.content === TITLE_PROMPT : body.system === TITLE_PROMPT;
    let reply: Reply;
    if (isTitle) {
      fake.titleRequests.push(body);
      reply = text('Generated title');
    } else {
      fake.requests.push(body);
      const n = fake.requests.length;
      for (const w of waiters.filter((w) => w.n <= n)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(fake.requests[w.n - 1]);
      }
      reply = await fake.script(body, n);
    }
    if ('status' in reply) {
      res.writeHead(reply.status, { 'content-type': 'application/json', ...(reply.headers ?? {}) });
      res.end(JSON.stringify(reply.body ?? errorBody(kind, reply.status)));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    const writer = kind === 'openai' ? openaiWriter(res, body.model) : anthropicWriter(res, body.model);
    writer.start();
    for (const step of reply.steps) {
      if (res.destroyed) return;
      if ('wait' in step) await step.wait;
      else if ('delayMs' in step) await new Promise((r) => setTimeout(r, step.delayMs));
      else if ('cut' in step) {
        req.socket.destroy();
        return;
      } else writer.step(step);
    }
    writer.end(reply.usage ?? { input: 10, output: reply.steps.length });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.baseUrl = kind === 'openai' ? `${fake.url}/v1` : fake.url;
  return fake;
}

/** A tool call's argument fragments: a few characters, as real servers send them; arguments of
 * many MiB (a file a test writes) in 64 KiB pieces, which no real model would send anyway. */
const fragment = (args: string) => (args.length > 1 << 20 ? 1 << 16 : 7);

function errorBody(kind: string, status: number) {
  const message = status === 429 ? 'Rate limit reached' : status >= 500 ? 'The server had an error' : 'Invalid request';
  return kind === 'openai'
    ? { error: { message, type: status === 429 ? 'rate_limit_error' : 'invalid_request_error', code: null } }
    : { type: 'error', error: { type: status === 429 ? 'rate_limit_error' : 'invalid_request_error', message } };
}

interface Writer {
  start(): void;
  step(s: Step): void;
  end(usage: { input: number; output: number }): void;
}

function openaiWriter(res: http.ServerResponse, model: string): Writer {
  const base = { id: 'chatcmpl-fake', object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model };
  const send = (o: unknown) => res.write(`data: ${JSON.stringify(o)}\n\n`);
  let toolIndex = 0;
  let finish = 'stop';
  return {
    start: () => send({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] }),
    step(s) {
      if ('text' in s) send({ ...base, choices: [{ index: 0, delta: { content: s.text }, finish_reason: null }] });
      else if ('reasoning' in s) send({ ...base, choices: [{ index: 0, delta: { reasoning_content: s.reasoning }, finish_reason: null }] });
      else if ('tool' in s) {
        finish = 'tool_calls';
        const args = typeof s.tool.args === 'string' ? s.tool.args : JSON.stringify(s.tool.args);
        const index = toolIndex++;
        send({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index, id: s.tool.id, type: 'function', function: { name: s.tool.name, arguments: '' } }] }, finish_reason: null }] });
        // Arguments arrive in fragments, as real servers send them.
        for (let i = 0; i < args.length; i += fragment(args)) {
          send({ ...base, choices: [{ index: 0, delta: { tool_calls: [{ index, function: { arguments: args.slice(i, i + fragment(args)) } }] }, finish_reason: null }] });
        }
      }
    },
    end(usage) {
      send({ ...base, choices: [{ index: 0, delta: {}, finish_reason: finish }] });
      send({ ...base, choices: [], usage: { prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output } });
      res.end('data: [DONE]\n\n');
    },
  };
}

function anthropicWriter(res: http.ServerResponse, model: string): Writer {
  const send = (event: string, data: Record<string, unknown>) => res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
  let index = -1;
  let open: 'text' | 'thinking' | null = null;
  let stop = 'end_turn';
  const close = () => {
    if (open) send('content_block_stop', { index });
    open = null;
  };
  const ensure = (kind: 'text' | 'thinking') => {
    if (open === kind) return;
    close();
    index++;
    open = kind;
    send('content_block_start', { index, content_block: kind === 'text' ? { type: 'text', text: '' } : { type: 'thinking', thinking: '' } });
  };
  return {
    start: () =>
      send('message_start', {
        message: { id: 'msg_fake', type: 'message', role: 'assistant', content: [], model, stop_reason: null, stop_sequence: null, usage: { input_tokens: 10, output_tokens: 1 } },
      }),
    step(s) {
      if ('text' in s) {
        ensure('text');
        send('content_block_delta', { index, delta: { type: 'text_delta', text: s.text } });
      } else if ('reasoning' in s) {
        ensure('thinking');
        send('content_block_delta', { index, delta: { type: 'thinking_delta', thinking: s.reasoning } });
      } else if ('tool' in s) {
        close();
        index++;
        stop = 'tool_use';
        send('content_block_start', { index, content_block: { type: 'tool_use', id: s.tool.id, name: s.tool.name, input: {} } });
        const args = typeof s.tool.args === 'string' ? s.tool.args : JSON.stringify(s.tool.args);
        for (let i = 0; i < args.length; i += fragment(args)) send('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: args.slice(i, i + fragment(args)) } });
        send('content_block_stop', { index });
      }
    },
    end(usage) {
      close();
      send('message_delta', { delta: { stop_reason: stop, stop_sequence: null }, usage: { output_tokens: usage.output } });
      send('message_stop', {});
      res.end();
    },
  };
}
