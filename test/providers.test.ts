// Both provider wire formats end to end, retries of transient errors, permanent errors,
// client-side tools (requires_action) and the "no provider configured" error.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeLlm, text, gate, type FakeLlm } from './helpers/fake-llm.js';
import { startTestServer, StreamRecorder, providerConfig, type TestServer } from './helpers/server.js';
import { LLM_RETRY } from '../src/chat/run.js';

/** The provider retries' count, with delays short enough for a test. */
const QUICK_RETRY = { ...LLM_RETRY, baseMs: 5, maxMs: 50 };

const textOf = (m: any) => m.parts.filter((p: any) => p.type === 'text').map((p: any) => p.text).join('');

for (const kind of ['openai', 'anthropic'] as const) {
  describe(`${kind} provider`, () => {
    let llm: FakeLlm;
    let t: TestServer;
    before(async () => {
      llm = await startFakeLlm(kind);
      t = await startTestServer(providerConfig(llm), { runner: { llmRetry: QUICK_RETRY } });
    });
    after(async () => {
      await t.close();
      await llm.close();
    });

    test('streams text and reasoning, records usage', async () => {
      llm.script = () => ({ steps: [{ reasoning: 'thinking…' }, { text: 'Hi' }, { text: '!' }], usage: { input: 12, output: 3 } });
      const u = await t.user();
      const chat = await u.post('/api/chats', { message: 'hello' });
      const s = await StreamRecorder.open(u, chat.id);
      await s.waitStatus('waiting');
      assert.equal(s.draftText('reasoning'), 'thinking…');
      assert.equal(s.draftText('text'), 'Hi!');
      const full = await u.get(`/api/chats/${chat.id}`);
      const reply = full.messages[1];
      assert.equal(textOf(reply), 'Hi!');
      assert.deepEqual(reply.parts[0], { type: 'reasoning', text: 'thinking…' });
      assert.equal(reply.usage.output_tokens, 3);
      s.close();
    });

    test('tool calls with fragmented arguments run, and the result goes back to the model', async () => {
      llm.script = (req) => {
        const hasResult = kind === 'openai' ? req.messages.at(-1).role === 'tool' : JSON.stringify(req.messages.at(-1)).includes('tool_result');
        if (hasResult) return text('done');
        return { steps: [{ tool: { id: 'call_a', name: 'calculator', args: { expression: '2^10' } } }, { tool: { id: 'call_b', name: 'current_time', args: { timezone: 'Europe/Paris' } } }] };
      };
      const u = await t.user();
      const chat = await u.post('/api/chats', { message: 'compute' });
      const s = await StreamRecorder.open(u, chat.id);
      await s.waitStatus('waiting');
      const results = s.events.filter((e) => e.type === 'tool_result').map((e: any) => e.result);
      assert.equal(results.find((r) => r.name === 'calculator').output, '1024');
      assert.match(JSON.parse(results.find((r) => r.name === 'current_time').output).iso, /^\d{4}-/);
      const req = llm.requests.at(-1);
      if (kind === 'openai') {
        assert.equal(req.messages[1].tool_calls.length, 2);
        assert.deepEqual(req.messages.slice(2).map((m: any) => m.tool_call_id), ['call_a', 'call_b']);
      } else {
        assert.deepEqual(req.messages.map((m: any) => m.role), ['user', 'assistant', 'user']);
        assert.deepEqual(req.messages[2].content.map((b: any) => b.tool_use_id), ['call_a', 'call_b']);
      }
      s.close();
    });

    test('429 then success: a retry event, then the reply', async () => {
      let calls = 0;
      llm.script = () => (++calls === 1 ? { status: 429, headers: { 'retry-after-ms': '10' } } : text('recovered'));
      const before = llm.requests.length;
      const u = await t.user();
      const chat = await u.post('/api/chats', { message: 'hello' });
      const s = await StreamRecorder.open(u, chat.id);
      await s.waitStatus('waiting');
      const retry = s.events.find((e) => e.type === 'retry')!;
      assert.equal(retry.status_code, 429);
      assert.equal(retry.attempt, 1);
      assert.equal(llm.requests.length - before, 2);
      assert.equal(textOf((await u.get(`/api/chats/${chat.id}`)).messages[1]), 'recovered');
      s.close();
    });

    test('a connection reset mid-stream is retried; the client is told to drop the draft', async () => {
      let calls = 0;
      const seen = gate();
      llm.script = () => (++calls === 1 ? { steps: [{ text: 'half' }, { wait: seen.promise }, { cut: true }] } : text('whole'));
      const u = await t.user();
      const chat = await u.post('/api/chats', { message: 'hello' });
      const s = await StreamRecorder.open(u, chat.id);
      await s.waitFor((e) => e.type === 'delta');
      seen.open();
      await s.waitStatus('waiting');
      const deltas = s.events.filter((e) => e.type === 'delta');
      const retry = s.events.find((e) => e.type === 'retry')!;
      assert.equal(retry.draft, deltas[0]!.draft, 'the retry names the abandoned draft');
      assert.equal(textOf((await u.get(`/api/chats/${chat.id}`)).messages[1]), 'whole');
      s.close();
    });

    test('a permanent error (401) ends the turn in error with a readable message', async () => {
      llm.script = () => ({ status: 401, body: kind === 'openai' ? { error: { message: 'Incorrect API key provided' } } : { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } } });
      const u = await t.user();
      const chat = await u.post('/api/chats', { message: 'hello' });
      const s = await StreamRecorder.open(u, chat.id);
      const st = await s.waitStatus('error');
      assert.match(String(st.error), /401/);
      assert.ok(!s.events.some((e) => e.type === 'retry'));
      const full = await u.get(`/api/chats/${chat.id}`);
      assert.equal(full.status, 'error');
      assert.match(full.last_error, /401.*(Incorrect API key|invalid x-api-key)/);
      // After an error, a new message runs a new turn.
      llm.script = () => text('fine now');
      await u.post(`/api/chats/${chat.id}/messages`, { content: 'again' });
      await s.waitStatus('waiting');
      s.close();
    });

    test('retries are bounded: persistent 503 ends in error after the last attempt', async () => {
      llm.script = () => ({ status: 503 });
      const before = llm.requests.length;
      const u = await t.user();
      const chat = await u.post('/api/chats', { message: 'hello' });
      const s = await StreamRecorder.open(u, chat.id);
      await s.waitStatus('error');
      assert.equal(s.events.filter((e) => e.type === 'retry').length, 4);
      assert.equal(llm.requests.length - before, 5);
      s.close();
    });

    test('client-side tools park the chat in requires_action until results arrive', async () => {
      llm.script = (req) => {
        const s = JSON.stringify(req.messages.at(-1));
        if (s.includes('sunny')) return text('It is sunny.');
        return { steps: [{ tool: { id: 'w1', name: 'get_weather', args: { city: 'Oslo' } } }] };
      };
      const u = await t.user();
      const chat = await u.post('/api/chats', {
        message: 'weather?',
        tools: [{ name: 'get_weather', description: 'weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } } } }],
      });
      const s = await StreamRecorder.open(u, chat.id);
      const ar = await s.waitFor((e) => e.type === 'action_required');
      assert.deepEqual(ar.calls, [{ tool_call_id: 'w1', name: 'get_weather', args: { city: 'Oslo' } }]);
      await s.waitStatus('requires_action');
      const mid = await u.get(`/api/chats/${chat.id}`);
      assert.equal(mid.status, 'requires_action');
      assert.equal(mid.pending_actions.length, 1);
      await assert.rejects(u.post(`/api/chats/${chat.id}/tool-results`, { results: [{ tool_call_id: 'nope', output: 'x' }] }), { status: 400, code: 'invalid_tool_results' });
      await assert.rejects(u.post(`/api/chats/${chat.id}/tool-results`, { results: [] }), { status: 400 });
      await u.post(`/api/chats/${chat.id}/tool-results`, { results: [{ tool_call_id: 'w1', output: 'sunny, 21°C' }] });
      await s.waitStatus('waiting');
      const full = await u.get(`/api/chats/${chat.id}`);
      assert.equal(textOf(full.messages.at(-1)), 'It is sunny.');
      await assert.rejects(u.post(`/api/chats/${chat.id}/tool-results`, { results: [{ tool_call_id: 'w1', output: 'x' }] }), { status: 409 });
      s.close();
    });
  });
}

test('with no provider configured, sending fails fast and says how to configure one', async () => {
  const t = await startTestServer({});
  try {
    const u = await t.user();
    await assert.rejects(u.post('/api/chats', { message: 'hi' }), (err: any) => err.status === 422 && err.code === 'no_provider' && /AIRLOCK_OPENAI_API_KEY/.test(err.message));
    const chat = await u.post('/api/chats', { title: 'empty' });
    assert.equal(chat.status, 'waiting');
    await assert.rejects(u.post(`/api/chats/${chat.id}/messages`, { content: 'hi' }), { status: 422, code: 'no_provider' });
    const full = await u.get(`/api/chats/${chat.id}`);
    assert.equal(full.messages.length, 0, 'nothing stored');
    // A model naming an unconfigured provider is refused the same way.
    const t2 = await startTestServer({ openai: { baseUrl: 'http://127.0.0.1:9/v1' } }, { db: t.db });
    try {
      const u2 = new (await import('../src/client/api.js')).ApiClient(t2.url, u.token);
      await assert.rejects(u2.post('/api/chats', { message: 'hi', model: 'anthropic:claude-x' }), (err: any) => err.status === 422 && /anthropic provider.*this server has: openai.*AIRLOCK_ANTHROPIC_API_KEY/.test(err.message));
    } finally {
      await t2.server.close();
    }
  } finally {
    await t.close();
  }
});
