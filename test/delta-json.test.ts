// The providers' event parser that decodes only the changing string of a repeated event shape:
// whatever it is given, it must return exactly what JSON.parse would (and fail where it fails).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeltaJson } from '../src/chat/providers/delta-json.js';
import { ProviderError } from '../src/chat/providers/types.js';

const openaiChunk = (content: string, extra = '') =>
  `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":${JSON.stringify(content)}},"logprobs":null,"finish_reason":null}]${extra}}`;

/** Texts a model may stream, and bodies that only look like one string. */
const texts = ['Hello', '', ' world', 'a"b', 'back\\slash', 'line\nbreak', 'tab\tand\u0001control', '😀 emoji', '\u2028sep', '"},"x":{"', '\\', 'ünïcödé', 'content":"'];

test('delta events of one shape parse exactly as JSON.parse does', () => {
  const p = new DeltaJson('content');
  for (const t of [...texts, ...texts.reverse()]) {
    const data = openaiChunk(t);
    assert.deepEqual(p.parse(data), JSON.parse(data), `content ${JSON.stringify(t)}`);
  }
  assert.equal(p.reused, texts.length * 2 - 1, 'every event after the first is read by its string alone');
});

test('a body that would end the string early or add fields is parsed in full, not spliced in', () => {
  const p = new DeltaJson('content');
  p.parse(openaiChunk('learn the shape'));
  // Hand-made event texts with the learned prefix and suffix around a body that is not one string.
  const prefix = openaiChunk('X').split('X')[0]!;
  const suffix = openaiChunk('X').split('X')[1]!;
  for (const body of ['a","role":"system', 'a\\"', 'ends\\\\"', 'x"},{"index":1,"delta":{"content":"y']) {
    const data = prefix + body + suffix;
    let expected: unknown;
    try {
      expected = JSON.parse(data);
    } catch {
      assert.throws(() => p.parse(data), ProviderError, `body ${body}`);
      continue;
    }
    assert.deepEqual(p.parse(data), expected, `body ${body}`);
  }
});

test('other shapes between deltas (role, tool calls, finish, usage) parse in full and leave the deltas right', () => {
  const p = new DeltaJson('content');
  const events = [
    `{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
    openaiChunk('one'),
    openaiChunk('two'),
    `{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{\\"a\\":"}}]},"finish_reason":null}]}`,
    openaiChunk('three'),
    `{"id":"c","choices":[{"index":0,"delta":{"content":null},"finish_reason":"stop"}]}`,
    `{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`,
    openaiChunk('four', ',"usage":null'),
    openaiChunk('five', ',"usage":null'),
    // Two strings under the key: ambiguous, never learned.
    `{"a":{"content":"x"},"b":{"content":"y"}}`,
    `{"a":{"content":"z"},"b":{"content":"y"}}`,
  ];
  for (const e of events) assert.deepEqual(p.parse(e), JSON.parse(e), e);
  assert.ok(p.reused >= 3, `reused ${p.reused}`);
});

test('results do not share what a caller may change: each delta object is new', () => {
  const p = new DeltaJson('content');
  const a = p.parse(openaiChunk('a'));
  const b = p.parse(openaiChunk('b'));
  const c = p.parse(openaiChunk('c'));
  assert.notEqual(b.choices[0].delta, c.choices[0].delta);
  assert.equal(a.choices[0].delta.content, 'a');
  assert.equal(b.choices[0].delta.content, 'b');
  assert.equal(c.choices[0].delta.content, 'c');
});

test("Anthropic's text deltas parse as JSON.parse does", () => {
  const p = new DeltaJson('text');
  const events = [
    `{"type":"message_start","message":{"id":"m","usage":{"input_tokens":3,"output_tokens":1}}}`,
    `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
    ...texts.map((t) => `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":${JSON.stringify(t)}}}`),
    `{"type":"content_block_stop","index":0}`,
  ];
  for (const e of events) assert.deepEqual(p.parse(e), JSON.parse(e), e);
  assert.equal(p.reused, texts.length - 1);
});

test('an event that is not JSON is a retryable provider error, as before', () => {
  const p = new DeltaJson('content');
  p.parse(openaiChunk('x'));
  assert.throws(() => p.parse('{"id":'), (err: unknown) => err instanceof ProviderError && err.retryable);
});

test('textOf: a hit is the changing string alone, and shapedWith(it) is what JSON.parse gives', () => {
  const p = new DeltaJson('content');
  assert.equal(p.textOf(openaiChunk('first')), undefined, 'nothing learned yet');
  p.parseFull(openaiChunk('first'));
  for (const t of texts) {
    const data = openaiChunk(t);
    const hit = p.textOf(data);
    assert.equal(hit, t);
    assert.deepEqual(p.shapedWith(hit!), JSON.parse(data));
  }
  assert.equal(p.textOf(openaiChunk('x', ',"usage":null')), undefined, 'another shape is a miss');
});
