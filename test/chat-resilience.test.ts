// A worker dying mid-turn, a slow WebSocket client beside a fast one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeLlm, text, gate } from './helpers/fake-llm.js';
import { startTestServer, StreamRecorder, providerConfig } from './helpers/server.js';
import { startServer } from '../src/server/app.js';
import { ApiClient } from '../src/client/api.js';

const textOf = (m: any) => m.parts.filter((p: any) => p.type === 'text').map((p: any) => p.text).join('');

test('a worker killed mid-turn: the lease expires, another worker completes the chat, no duplicate reply', async () => {
  const g = gate();
  const llm = await startFakeLlm('openai');
  const fast = { leaseMs: 400, heartbeatMs: 100, sweepMs: 100 };
  const a = await startTestServer(providerConfig(llm), { runner: fast });
  let b: Awaited<ReturnType<typeof startServer>> | null = null;
  try {
    // Step 1 finishes (tool call + result are stored), step 2 hangs: the worker dies inside it.
    llm.script = (req, n) => {
      if (n === 1) return { steps: [{ tool: { id: 'c1', name: 'calculator', args: { expression: '1+1' } } }] };
      if (n === 2) return { steps: [{ text: 'dying ' }, { wait: g.promise }] };
      return text('The answer is 2.');
    };
    const u = await a.user();
    const chat = await u.post('/api/chats', { message: 'what is 1+1?' });
    const s = await StreamRecorder.open(u, chat.id);
    await s.waitFor((e) => e.type === 'delta' && e.text === 'dying ');
    // Let step 1's background write land before the crash, as it would on a live worker.
    await waitUntil(async () => (await u.get(`/api/chats/${chat.id}`)).messages.length === 3);
    a.server.runner!.crash();
    b = await startServer({ db: a.db, bus: a.server.bus, providers: providerConfig(llm), titles: false, runner: fast });
    await s.waitStatus('waiting');
    g.open();
    const full = await new ApiClient(b.url, u.token).get(`/api/chats/${chat.id}`);
    assert.deepEqual(full.messages.map((m: any) => m.role), ['user', 'assistant', 'tool', 'assistant']);
    assert.equal(textOf(full.messages[3]), 'The answer is 2.');
    const ids = full.messages.map((m: any) => m.id);
    assert.equal(new Set(ids).size, ids.length);
    // Clients were told to drop what the dead worker streamed after the last stored message.
    const trunc = s.events.find((e) => e.type === 'history_truncated')!;
    assert.equal(trunc.reason, 'worker_lost');
    assert.equal(trunc.after_seq, full.messages[2].seq);
    // The restarted step saw the stored tool result, and the calculator did not run twice.
    assert.equal(s.events.filter((e) => e.type === 'tool_result').length, 1);
    s.close();
  } finally {
    await b?.close();
    await a.close();
    await llm.close();
  }
});

test('a slow client is told to resync; a fast client beside it gets every event', async () => {
  process.env.AIRLOCK_WS_QUEUE_BYTES = '4194304';
  // Long enough that the write timeout (which also bounds how long the resync notice may wait
  // behind unread bytes) cannot fire before the test resumes the paused reader, however slow
  // the machine: this test is about the byte bound.
  process.env.AIRLOCK_WS_WRITE_TIMEOUT_MS = '240000';
  const llm = await startFakeLlm('openai');
  const t = await startTestServer(providerConfig(llm));
  const release = gate();
  try {
    const chunk = 'x'.repeat(4000);
    const pieces = 8000; // ~32 MB: more than the kernel buffers between a paused reader and the server
    // Short pauses let the fast reader (in this same process) keep up; the paused one cannot.
    llm.script = () => ({
      steps: [...Array.from({ length: pieces }, (_, i) => (i % 200 === 199 ? [{ text: `${i}:${chunk}` }, { delayMs: 5 }] : [{ text: `${i}:${chunk}` }])).flat(), { wait: release.promise }, { text: 'END' }],
    });
    const u = await t.user();
    const chat = await u.post('/api/chats', { title: 'bulk' });
    const fast = await StreamRecorder.open(u, chat.id);
    const slow = await StreamRecorder.open(u, chat.id);
    await slow.waitFor((e) => e.type === 'caught_up');
    (slow.ws as any)._socket.pause(); // stops reading: the server's send queue grows
    await u.post(`/api/chats/${chat.id}/messages`, { content: 'go' });
    await fast.waitFor((e) => e.type === 'delta' && String(e.text).startsWith(`${pieces - 1}:`));
    release.open();
    await fast.waitStatus('waiting');
    const deltas = fast.events.filter((e) => e.type === 'delta');
    assert.equal(deltas.length, pieces + 1);
    deltas.slice(0, pieces).forEach((e, i) => assert.ok(String(e.text).startsWith(`${i}:`)));
    (slow.ws as any)._socket.resume();
    await new Promise<void>((r) => (slow.closed ? r() : slow.ws.once('close', () => r())));
    const resync = slow.events.find((e) => e.type === 'resync');
    assert.ok(resync, 'the slow client got a resync event');
    assert.equal(slow.closed!.code, 4001);
    // It recovers by reconnecting from the last seq it saw: no holes, no duplicates.
    const last = Math.max(0, ...slow.seqs);
    const again = await StreamRecorder.open(u, chat.id, last);
    await again.waitFor((e) => e.type === 'caught_up');
    const all = [...slow.seqs, ...again.seqs];
    assert.deepEqual(all, fast.seqs);
    again.close();
    fast.close();
  } finally {
    release.open();
    delete process.env.AIRLOCK_WS_QUEUE_BYTES;
    delete process.env.AIRLOCK_WS_WRITE_TIMEOUT_MS;
    await t.close();
    await llm.close();
  }
});

async function waitUntil(cond: () => Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 20));
}
