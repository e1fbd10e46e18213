// What `airlock chat` prints of a turn's events: drafts as they stream, and from a stored message
// whatever its drafts did not show (a stream resumed from a replica that kept no drafts has only
// the stored messages).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Printer } from '../src/cli/chat-turn.js';
import type { StreamEvent } from '../src/chat/types.js';

function printer() {
  const out = { stdout: '', stderr: '' };
  const p = new Printer(false, { write: (s: string) => ((out.stdout += s), true) }, { write: (s: string) => ((out.stderr += s), true) });
  const feed = (...events: Partial<StreamEvent>[]) => {
    for (const e of events) p.event(e as StreamEvent);
    p.endLine();
  };
  return { out, feed };
}
const delta = (text: string) => ({ type: 'delta', kind: 'text', text }) as const;
const assistant = (parts: unknown[], interrupted = false) => ({ type: 'message', message: { id: 'm', seq: 9, role: 'assistant', parts, interrupted } }) as const;

test('a stored reply adds only what its drafts did not show', () => {
  const { out, feed } = printer();
  feed(delta('Hel'), delta('lo'), assistant([{ type: 'text', text: 'Hello, world' }]));
  assert.equal(out.stdout, 'Hello, world\n');
});

const call = { type: 'tool_call', id: 'c1', name: 'calc', args: { expr: '1+1' } };
const result = { type: 'tool_result', tool_call_id: 'c1', name: 'calc', output: '2' };
const toolMessage = { type: 'message', message: { id: 't', seq: 10, role: 'tool', parts: [result] } } as any;

test('a tool step prints the same live (drafts) and resumed from the database (stored messages only)', () => {
  const live = printer();
  live.feed(
    delta('Let me add.'),
    { type: 'tool_call', call } as any,
    assistant([{ type: 'text', text: 'Let me add.' }, call]),
    { type: 'tool_result', result } as any,
    toolMessage,
    delta('It is 2.'),
    assistant([{ type: 'text', text: 'It is 2.' }]),
  );
  const resumed = printer();
  resumed.feed(assistant([{ type: 'text', text: 'Let me add.' }, call]), toolMessage, assistant([{ type: 'text', text: 'It is 2.' }]));
  for (const { out } of [live, resumed]) {
    assert.equal(out.stdout, 'Let me add.\nIt is 2.\n');
    assert.equal(out.stderr, '⚙ calc({"expr":"1+1"})\n  → 2\n');
  }
});

test('a retried draft is abandoned: the stored reply is not doubled', () => {
  const { out, feed } = printer();
  feed(delta('Half a rep'), { type: 'retry', attempt: 1, max_retries: 3, delay_ms: 10, error: 'reset' } as any, delta('Whole'), assistant([{ type: 'text', text: 'Whole' }]));
  assert.equal(out.stdout, 'Half a rep\nWhole\n');
  assert.match(out.stderr, /retry 1\/3/);
});

test('an interrupted reply is marked', () => {
  const { out, feed } = printer();
  feed(delta('partial'), assistant([{ type: 'text', text: 'partial' }], true));
  assert.equal(out.stdout, 'partial\n');
  assert.equal(out.stderr, '[interrupted]\n');
});

test("a turn that failed mid-draft leaves nothing behind for the next turn's reply", () => {
  const { out, feed } = printer();
  feed(delta('cut sh'), { type: 'status', status: 'error', error: 'provider gone' } as any, { type: 'status', status: 'running' } as any, delta('Fine'), assistant([{ type: 'text', text: 'Fine' }]));
  assert.equal(out.stdout, 'cut sh\nFine\n');
});

test('a reply taken over from a dead server says it starts over only when printed text was not stored', () => {
  const lost = { type: 'history_truncated', after_seq: 1, reason: 'worker_lost' } as any;
  const dropped = printer();
  dropped.feed(delta('first try'), lost, delta('Whole'), assistant([{ type: 'text', text: 'Whole' }]));
  assert.equal(dropped.out.stdout, 'first try\nWhole\n');
  assert.equal(dropped.out.stderr, '[the reply starts over: the server running it stopped]\n');
  const kept = printer();
  kept.feed(delta('Stored'), assistant([{ type: 'text', text: 'Stored' }]), lost);
  assert.equal(kept.out.stdout, 'Stored\n');
  assert.equal(kept.out.stderr, '');
});


test('not on a terminal, only what a reply committed to is printed: an abandoned draft (a retry, a server that died) never reaches stdout', () => {
  const out = { stdout: '', stderr: '' };
  const p = new Printer(false, { write: (s: string) => ((out.stdout += s), true) }, { write: (s: string) => ((out.stderr += s), true) }, false);
  for (const e of [
    delta('Half a rep'),
    { type: 'retry', attempt: 1, max_retries: 3, delay_ms: 10, error: 'overloaded' },
    delta('Who'),
    { type: 'history_truncated', after_seq: 3, reason: 'worker_lost' },
    delta('Whole'),
    assistant([{ type: 'text', text: 'Whole' }]),
  ]) p.event(e as unknown as StreamEvent);
  p.endLine();
  assert.equal(out.stdout, 'Whole\n');
  assert.match(out.stderr, /retry 1\/3 .*the reply starts over/);
  assert.match(out.stderr, /the reply starts over: the server running it stopped/);
});
