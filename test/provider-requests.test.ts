// The request bodies the providers send, on the wire: each message's JSON is made once and reused
// by later turns (perMessageJson), so these pin down what a whole history looks like.
import { test, after } from 'node:test';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import assert from 'node:assert/strict';
import { startFakeLlm, type FakeLlm } from './helpers/fake-llm.js';
import { OpenAIProvider } from '../src/chat/providers/openai.js';
import { AnthropicProvider } from '../src/chat/providers/anthropic.js';
import type { Message } from '../src/chat/types.js';
import type { Provider, ToolSpec } from '../src/chat/providers/types.js';

const fakes: FakeLlm[] = [];
after(async () => {
  for (const f of fakes) await f.close();
});

let seq = 0;
const msg = (role: Message['role'], parts: Message['parts']): Message => ({ id: `m${++seq}`, seq, role, parts });
const history: Message[] = [
  msg('user', [{ type: 'text', text: 'What is 2+2, and the time? "quoted" \\ ünïcödé ✓' }]),
  msg('assistant', [
    { type: 'reasoning', text: 'two tools' },
    { type: 'text', text: 'Let me check.' },
    { type: 'tool_call', id: 'call_a', name: 'calculator', args: { expression: '2+2' } },
    { type: 'tool_call', id: 'call_b', name: 'current_time', args: {} },
  ]),
  msg('tool', [
    { type: 'tool_result', tool_call_id: 'call_a', name: 'calculator', output: '4' },
    { type: 'tool_result', tool_call_id: 'call_b', name: 'current_time', output: 'no clock', is_error: true },
  ]),
  msg('assistant', []), // interrupted before any text
  msg('user', [{ type: 'text', text: 'thanks' }]),
];
const tools: ToolSpec[] = [{ name: 'calculator', description: 'adds', parameters: { type: 'object', properties: { messages: { default: 0 } } } }];

async function send(provider: Provider, system: string | null, messages: Message[]): Promise<void> {
  for await (const _ of provider.stream({ model: 'm-1', system, messages, tools, signal: new AbortController().signal, maxTokens: 100 })) {
    /* drain */
  }
}

test('OpenAI: the whole history as chat messages, the same on every turn', async () => {
  const llm = await startFakeLlm('openai');
  fakes.push(llm);
  const p = new OpenAIProvider({ baseUrl: llm.baseUrl, apiKey: 'k', timeoutMs: 10_000 });
  await send(p, 'Be brief.', history);
  await send(p, 'Be brief.', history); // from the per-message cache
  await send(p, null, history.slice(0, 1));
  const expected = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'What is 2+2, and the time? "quoted" \\ ünïcödé ✓' },
    {
      role: 'assistant',
      content: 'Let me check.',
      tool_calls: [
        { id: 'call_a', type: 'function', function: { name: 'calculator', arguments: '{"expression":"2+2"}' } },
        { id: 'call_b', type: 'function', function: { name: 'current_time', arguments: '{}' } },
      ],
    },
    { role: 'tool', tool_call_id: 'call_a', content: '4' },
    { role: 'tool', tool_call_id: 'call_b', content: 'no clock' },
    { role: 'assistant', content: '' },
    { role: 'user', content: 'thanks' },
  ];
  const [first, second, third] = llm.requests;
  assert.deepEqual(first, {
    model: 'm-1',
    stream: true,
    stream_options: { include_usage: true },
    tools: [{ type: 'function', function: tools[0] }],
    max_tokens: 100,
    messages: expected,
  });
  assert.deepEqual(second, first);
  assert.deepEqual(third.messages, [expected[1]]);
});

test('Anthropic: consecutive messages of one role share an entry; tool results go back as the user', async () => {
  const llm = await startFakeLlm('anthropic');
  fakes.push(llm);
  const p = new AnthropicProvider({ baseUrl: llm.baseUrl, apiKey: 'k', timeoutMs: 10_000 });
  await send(p, 'Be brief.', history);
  await send(p, 'Be brief.', history);
  const [first, second] = llm.requests;
  assert.deepEqual(first, {
    model: 'm-1',
    max_tokens: 100,
    stream: true,
    system: 'Be brief.',
    tools: [{ name: 'calculator', description: 'adds', input_schema: tools[0]!.parameters }],
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'What is 2+2, and the time? "quoted" \\ ünïcödé ✓' }] },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Let me check.' },
          { type: 'tool_use', id: 'call_a', name: 'calculator', input: { expression: '2+2' } },
          { type: 'tool_use', id: 'call_b', name: 'current_time', input: {} },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'call_a', content: '4' },
          { type: 'tool_result', tool_use_id: 'call_b', content: 'no clock', is_error: true },
        ],
      },
      { role: 'assistant', content: [{ type: 'text', text: '(empty)' }] },
      { role: 'user', content: [{ type: 'text', text: 'thanks' }] },
    ],
  });
  assert.deepEqual(second, first);
});

/** A provider's stream of a fixed SSE body (served by a bare HTTP server): its text, and its other events. */
async function streamOf(make: (baseUrl: string) => Provider, body: string): Promise<{ text: string; other: unknown[] }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const provider = make(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    let text = '';
    const other: unknown[] = [];
    for await (const e of provider.stream({ model: 'm', system: null, messages: [msg('user', [{ type: 'text', text: 'hi' }])], tools: [], signal: new AbortController().signal })) {
      if (e.type === 'text') text += e.text;
      else other.push(e);
    }
    return { text, other };
  } finally {
    server.close();
  }
}

test('OpenAI stream: repeated chunks of shapes other than a bare text delta (usage on each, a finish reason) still yield all they carry', async () => {
  const chunk = (content: string, finish: string | null, usage = '') =>
    `data: {"id":"c","choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}},"finish_reason":${JSON.stringify(finish)}}]${usage}}\n\n`;
  const usage = ',"usage":{"prompt_tokens":4,"completion_tokens":1}';
  const body = [
    'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n',
    chunk('a', null, usage),
    chunk('b', null, usage),
    chunk('c', null),
    chunk('d', null),
    chunk('e', 'length'),
    chunk('f', 'length'),
    'data: [DONE]\n\n',
  ].join('');
  const { text, other } = await streamOf((baseUrl) => new OpenAIProvider({ baseUrl, apiKey: 'k', timeoutMs: 10_000 }), body);
  assert.equal(text, 'abcdef');
  assert.deepEqual(other, [
    { type: 'usage', input_tokens: 4, output_tokens: 1 },
    { type: 'usage', input_tokens: 4, output_tokens: 1 },
    { type: 'finish', reason: 'length' },
  ]);
});

test('Anthropic stream: text deltas read by their text alone, other repeated shapes (a text block start) in full', async () => {
  const ev = (name: string, data: object) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
  const body = [
    ev('message_start', { type: 'message_start', message: { id: 'msg', type: 'message', role: 'assistant', content: [], usage: { input_tokens: 5, output_tokens: 1 } } }),
    ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }),
    ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'a' } }),
    ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'b' } }),
    ev('content_block_stop', { type: 'content_block_stop', index: 0 }),
    ev('content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'text', text: 'c' } }),
    ev('content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'text', text: 'd' } }),
    ev('content_block_stop', { type: 'content_block_stop', index: 1 }),
    ev('message_delta', { type: 'message_delta', delta: { stop_reason: 'max_tokens', stop_sequence: null }, usage: { output_tokens: 7 } }),
    ev('message_stop', { type: 'message_stop' }),
  ].join('');
  const { text, other } = await streamOf((baseUrl) => new AnthropicProvider({ baseUrl, apiKey: 'k', timeoutMs: 10_000 }), body);
  assert.equal(text, 'abcd');
  assert.deepEqual(other, [
    { type: 'usage', input_tokens: 5, output_tokens: 7 },
    { type: 'finish', reason: 'max_tokens' },
  ]);
});
