// Early start (chat/early-start.ts): the call starts at once, is taken over whole (first event
// included) or aborted unread, is confirmed only by an unchanged chat, and an announced one that
// is never claimed is aborted after its timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EarlyStart, PendingEarly } from '../src/chat/early-start.js';
import { ToolBox } from '../src/chat/tools/index.js';
import type { Providers } from '../src/chat/providers/index.js';
import type { LlmEvent, LlmRequest } from '../src/chat/providers/types.js';
import type { Message } from '../src/chat/types.js';

function fakeProviders() {
  const calls: LlmRequest[] = [];
  const provider = {
    name: 'fake',
    async *stream(req: LlmRequest): AsyncIterable<LlmEvent> {
      calls.push(req);
      for (const text of ['a', 'b', 'c']) {
        if (req.signal.aborted) throw new Error('aborted');
        yield { type: 'text', text };
        await new Promise((r) => setTimeout(r, 5));
      }
    },
  };
  return { calls, providers: { get: async (model: string) => ({ provider, model }) } as unknown as Providers };
}

const msg = (id: string, text: string): Message => ({ id, seq: Number(id.slice(2)), role: 'user', parts: [{ type: 'text', text }] });
const settings = { model: 'm1', system_prompt: 'be brief', client_tools: [] };
const cached = { messages: [msg('m-1', 'hi'), { ...msg('m-2', 'hello'), role: 'assistant' as const }], epoch: 7, settings };

test('nothing cached, or no settings cached: no early call', () => {
  const { providers, calls } = fakeProviders();
  assert.equal(EarlyStart.start(undefined, msg('m-3', 'q'), providers, new ToolBox()), null);
  assert.equal(EarlyStart.start({ messages: [], epoch: 1 }, msg('m-3', 'q'), providers, new ToolBox()), null);
  assert.equal(calls.length, 0);
});

test('the call starts at once with the cached history plus the message; the run gets every event, the first included', async () => {
  const { providers, calls } = fakeProviders();
  const sent = msg('m-3', 'q');
  const early = EarlyStart.start(cached, sent, providers, new ToolBox())!;
  await new Promise((r) => setImmediate(r));
  assert.equal(calls.length, 1, 'started before anyone asked for an event');
  assert.deepEqual(calls[0]!.messages.map((m) => m.id), ['m-1', 'm-2', 'm-3']);
  assert.equal(calls[0]!.system, 'be brief');
  assert.ok(early.confirmedBy(settings, 7, 2));
  assert.ok(!early.confirmedBy(settings, 8, 2), 'another epoch: someone changed the chat');
  assert.ok(!early.confirmedBy(settings, 7, 3), 'a message stored after the cached ones');
  assert.ok(!early.confirmedBy(settings, 7, 1), 'the last cached message is not stored');
  assert.ok(!early.confirmedBy(settings, 7, null), 'no message stored');
  assert.ok(!early.confirmedBy({ ...settings, model: 'm2' }, 7, 2), 'another model');
  assert.ok(early.matches(settings, [...cached.messages, sent]));
  assert.ok(!early.matches(settings, [...cached.messages, msg('m-4', 'other')]));
  const texts: string[] = [];
  for await (const e of early.events(new AbortController().signal)) if (e.type === 'text') texts.push(e.text);
  assert.deepEqual(texts, ['a', 'b', 'c']);
});

test("abort() aborts the call's signal; the run's own abort reaches a taken-over call", async () => {
  const { providers, calls } = fakeProviders();
  const early = EarlyStart.start(cached, msg('m-3', 'q'), providers, new ToolBox())!;
  await new Promise((r) => setImmediate(r));
  early.abort();
  assert.ok(calls[0]!.signal.aborted);

  const taken = EarlyStart.start(cached, msg('m-5', 'q'), providers, new ToolBox())!;
  const run = new AbortController();
  const seen: string[] = [];
  await assert.rejects(async () => {
    for await (const e of taken.events(run.signal)) {
      if (e.type === 'text') seen.push(e.text);
      run.abort();
    }
  }, /aborted/);
  assert.deepEqual(seen, ['a']);
  assert.ok(calls[1]!.signal.aborted);
});

test('an announced call whose claim never comes is aborted after the timeout; a taken one is not', async () => {
  const { providers, calls } = fakeProviders();
  const pending = new PendingEarly(() => 20);
  pending.put('c1', EarlyStart.start(cached, msg('m-3', 'q'), providers, new ToolBox())!);
  pending.put('c2', EarlyStart.start(cached, msg('m-4', 'q'), providers, new ToolBox())!);
  const kept = pending.take('c2');
  await new Promise((r) => setTimeout(r, 60));
  assert.ok(calls[0]!.signal.aborted, 'never claimed: aborted');
  assert.ok(kept && !calls[1]!.signal.aborted);
  assert.equal(pending.take('c1'), undefined);
  kept!.abort();
});
