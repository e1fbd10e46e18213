// Edit, interrupt and reconnect-with-after in the middle of a turn.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeLlm, text, gate, type FakeLlm } from './helpers/fake-llm.js';
import { startTestServer, StreamRecorder, providerConfig, testSecrets, type TestServer } from './helpers/server.js';
import type { StreamEvent } from '../src/chat/types.js';

let llm: FakeLlm;
let t: TestServer;

before(async () => {
  llm = await startFakeLlm('openai');
  t = await startTestServer(providerConfig(llm));
});
after(async () => {
  await t.close();
  await llm.close();
});

const lastUser = (req: any) => req.messages.filter((m: any) => m.role === 'user').at(-1).content;
const textOf = (m: any) => m.parts.filter((p: any) => p.type === 'text').map((p: any) => p.text).join('');

test('edit truncates the history after the edited message and re-runs', async () => {
  llm.script = (req) => text(`echo: ${lastUser(req)}`);
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'one' });
  const s = await StreamRecorder.open(u, chat.id);
  await s.waitStatus('waiting');
  await u.post(`/api/chats/${chat.id}/messages`, { content: 'two' });
  await s.waitStatus('waiting', 2);
  let full = await u.get(`/api/chats/${chat.id}`);
  assert.deepEqual(full.messages.map(textOf), ['one', 'echo: one', 'two', 'echo: two']);
  // The second turn's history: the worker's cached first turn plus the stored new message.
  assert.deepEqual(llm.requests.at(-1).messages.map((m: any) => m.content), ['one', 'echo: one', 'two']);
  const first = full.messages[0];
  await u.patch(`/api/chats/${chat.id}/messages/${first.id}`, { content: 'uno' });
  await s.waitStatus('waiting', 3);
  full = await u.get(`/api/chats/${chat.id}`);
  assert.deepEqual(full.messages.map(textOf), ['uno', 'echo: uno']);
  const trunc = s.events.find((e) => e.type === 'history_truncated')!;
  assert.equal(trunc.after_seq, first.seq - 1);
  // The provider saw only the edited history.
  assert.deepEqual(llm.requests.at(-1).messages.map((m: any) => m.content), ['uno']);
  s.close();
});

test('edit while a turn runs stops it without keeping its output', async () => {
  const g = gate();
  llm.script = (req) => (lastUser(req) === 'slow' ? { steps: [{ text: 'partial' }, { wait: g.promise }, { text: ' never' }] } : text(`echo: ${lastUser(req)}`));
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'slow' });
  const s = await StreamRecorder.open(u, chat.id);
  await s.waitFor((e) => e.type === 'delta');
  const full = await u.get(`/api/chats/${chat.id}`);
  await u.patch(`/api/chats/${chat.id}/messages/${full.messages[0].id}`, { content: 'fast' });
  await s.waitStatus('waiting');
  g.open();
  const after = await u.get(`/api/chats/${chat.id}`);
  assert.deepEqual(after.messages.map(textOf), ['fast', 'echo: fast']);
  s.close();
});

test('editing: other chats, assistant messages and unknown ids are refused', async () => {
  llm.script = () => text('ok');
  const u = await t.user();
  const other = await t.user();
  const chat = await u.post('/api/chats', { message: 'hello' });
  const s = await StreamRecorder.open(u, chat.id);
  await s.waitStatus('waiting');
  const full = await u.get(`/api/chats/${chat.id}`);
  await assert.rejects(u.patch(`/api/chats/${chat.id}/messages/${full.messages[1].id}`, { content: 'x' }), { status: 400, code: 'not_user_message' });
  await assert.rejects(u.patch(`/api/chats/${chat.id}/messages/${crypto.randomUUID()}`, { content: 'x' }), { status: 404 });
  await assert.rejects(other.patch(`/api/chats/${chat.id}/messages/${full.messages[0].id}`, { content: 'x' }), { status: 404 });
  await assert.rejects(u.patch(`/api/chats/${chat.id}/messages/${full.messages[0].id}`, { content: '' }), { status: 400 });
  s.close();
});

test('interrupt mid-stream keeps the partial reply, marks it, then runs the queue', async () => {
  const g = gate();
  llm.script = (req) => (lastUser(req) === 'long story' ? { steps: [{ text: 'Once upon' }, { text: ' a time' }, { wait: g.promise }, { text: ' unseen' }] } : text(`echo: ${lastUser(req)}`));
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'long story' });
  const s = await StreamRecorder.open(u, chat.id);
  await s.waitFor((e) => e.type === 'delta' && String(e.text).endsWith(' a time'));
  await u.post(`/api/chats/${chat.id}/messages`, { content: 'next' });
  const r = await u.post(`/api/chats/${chat.id}/interrupt`);
  assert.equal(r.interrupted, true);
  await s.waitStatus('waiting');
  g.open();
  const full = await u.get(`/api/chats/${chat.id}`);
  assert.deepEqual(full.messages.map(textOf), ['long story', 'Once upon a time', 'next', 'echo: next']);
  assert.equal(full.messages[1].interrupted, true);
  assert.equal(full.messages[3].interrupted, false);
  // The next turn's prompt carries the partial reply before the queued message.
  assert.deepEqual(llm.requests.at(-1).messages.map((m: any) => m.content), ['long story', 'Once upon a time', 'next']);
  const again = await u.post(`/api/chats/${chat.id}/interrupt`);
  assert.equal(again.interrupted, false);
  s.close();
});

test('send with busy=interrupt stops the turn and runs the new message', async () => {
  const g = gate();
  llm.script = (req) => (lastUser(req) === 'a' ? { steps: [{ text: 'aaa' }, { wait: g.promise }] } : text(`echo: ${lastUser(req)}`));
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'a' });
  const s = await StreamRecorder.open(u, chat.id);
  await s.waitFor((e) => e.type === 'delta');
  const r = await u.post(`/api/chats/${chat.id}/messages`, { content: 'b', busy: 'interrupt' });
  assert.ok(r.queued);
  await s.waitFor((e) => e.type === 'message' && (e.message as any).role === 'assistant' && textOf(e.message) === 'echo: b');
  await s.waitStatus('waiting');
  g.open();
  const full = await u.get(`/api/chats/${chat.id}`);
  assert.deepEqual(full.messages.map(textOf), ['a', 'aaa', 'b', 'echo: b']);
  s.close();
});

test('a client reconnecting with after=SEQ mid-turn gets exactly what it missed', async () => {
  const gates = [gate(), gate()];
  const words = Array.from({ length: 30 }, (_, i) => `w${i} `);
  llm.script = () => ({
    steps: [...words.slice(0, 10).map((w) => ({ text: w })), { wait: gates[0]!.promise }, ...words.slice(10, 20).map((w) => ({ text: w })), { wait: gates[1]!.promise }, ...words.slice(20).map((w) => ({ text: w }))],
  });
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'count' });
  const whole = await StreamRecorder.open(u, chat.id);
  const first = await StreamRecorder.open(u, chat.id);
  await first.waitFor((e) => e.type === 'delta' && String(e.text).endsWith('w9 '));
  first.close();
  const lastSeq = Math.max(...first.seqs);
  gates[0]!.open();
  await whole.waitFor((e) => e.type === 'delta' && String(e.text).endsWith('w19 '));
  // Reconnect in the middle of the turn (deltas 10-19 were produced while away).
  const second = await StreamRecorder.open(u, chat.id, lastSeq);
  await second.waitFor((e) => e.type === 'caught_up');
  gates[1]!.open();
  await second.waitStatus('waiting');
  await whole.waitStatus('waiting');
  const seqEvents = (r: StreamRecorder) => r.events.filter((e) => e.seq !== undefined);
  const combined = [...seqEvents(first), ...seqEvents(second)];
  const seqs = combined.map((e) => e.seq);
  assert.equal(new Set(seqs).size, seqs.length, 'no duplicates');
  assert.deepEqual(seqs, seqEvents(whole).map((e) => e.seq), 'no holes: same events as a client that stayed');
  const strip = (e: StreamEvent) => JSON.stringify(e);
  assert.deepEqual(combined.map(strip), seqEvents(whole).map(strip));
  assert.equal(first.draftText() + second.draftText(), words.join(''));
  whole.close();
  second.close();
});

test('memory keeps the last turn as streamed; a client from further back gets older turns from the database, messages in place of drafts', async () => {
  llm.script = (req) => text(`re ${lastUser(req)} `, 'and more');
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'one' });
  const live = await StreamRecorder.open(u, chat.id);
  await live.waitStatus('waiting');
  for (const [i, m] of ['two', 'three'].entries()) {
    await u.post(`/api/chats/${chat.id}/messages`, { content: m });
    await live.waitStatus('waiting', i + 2);
  }
  const ends = live.events.filter((e) => e.type === 'status' && e.status === 'waiting').map((e) => e.seq!);
  const late = await StreamRecorder.open(u, chat.id, 0);
  await late.waitFor((e) => e.type === 'caught_up');
  const seqd = (r: StreamRecorder) => r.events.filter((e) => e.seq !== undefined);
  const lastTurn = (r: StreamRecorder) => seqd(r).filter((e) => e.seq! > ends[1]!);
  // The last turn: exactly what the live client saw, drafts included.
  assert.deepEqual(lastTurn(late).map((e) => JSON.stringify(e)), lastTurn(live).map((e) => JSON.stringify(e)));
  assert.ok(lastTurn(late).some((e) => e.type === 'delta'));
  // Before it: the stored events only (each message once, in order), no drafts.
  const before = seqd(late).filter((e) => e.seq! <= ends[1]!);
  assert.ok(before.every((e) => e.type !== 'delta'), 'no drafts of older turns');
  assert.deepEqual(
    before.filter((e) => e.type === 'message').map((e) => textOf((e as any).message)),
    ['one', 're one and more', 'two', 're two and more'],
  );
  assert.deepEqual(before.map((e) => e.seq), [...before.map((e) => e.seq!)].sort((a, b) => a - b));
  assert.equal(late.draftText(), 're three and more');
  live.close();
  late.close();
});

test('a client joining after the turn replays the stored events in order', async () => {
  llm.script = () => text('a', 'b', 'c');
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'x' });
  const live = await StreamRecorder.open(u, chat.id);
  await live.waitStatus('waiting');
  const late = await StreamRecorder.open(u, chat.id, 0);
  await late.waitFor((e) => e.type === 'caught_up');
  // Drafts are still in memory, so the late client sees exactly what the live one saw.
  assert.deepEqual(late.seqs, live.seqs);
  const mid = await StreamRecorder.open(u, chat.id, live.seqs[3]!);
  await mid.waitFor((e) => e.type === 'caught_up');
  assert.deepEqual(mid.seqs, live.seqs.slice(4));
  live.close();
  late.close();
  mid.close();
});

test('a server that has nothing in memory replays the durable events exactly from the database', async () => {
  const { startServer } = await import('../src/server/app.js');
  const { ApiClient } = await import('../src/client/api.js');
  const { isDurable } = await import('../src/chat/types.js');
  llm.script = (req) => {
    const last = req.messages.at(-1);
    if (last.role === 'tool') return text('sum is ', last.content);
    return { steps: [{ text: 'computing' }, { tool: { id: 'k1', name: 'calculator', args: { expression: '40+2' } } }] };
  };
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'add' });
  const live = await StreamRecorder.open(u, chat.id);
  await live.waitStatus('waiting');
  const other = await startServer({ db: t.db, providers: {}, runner: false, secrets: testSecrets() });
  try {
    const cold = await StreamRecorder.open(new ApiClient(other.url, u.token), chat.id, 0);
    await cold.waitFor((e) => e.type === 'caught_up');
    const durable = (r: StreamRecorder) => r.events.filter((e) => e.seq !== undefined && isDurable(e.type)).map((e) => JSON.parse(JSON.stringify(e)));
    assert.deepEqual(durable(cold), durable(live));
    assert.deepEqual(cold.events.filter((e) => e.type === 'message').map((e: any) => e.message.role), ['user', 'assistant', 'tool', 'assistant']);
    cold.close();
    // A step's reply is stored once: its event refers to the message row, and the replay above rebuilt it.
    const stored = await t.db.query<{ data: any }>(`SELECT data FROM chat_events WHERE chat_id = $1 AND type = 'message' ORDER BY seq`, [chat.id]);
    assert.deepEqual(stored.map((r) => Object.keys(r.data)), [['message'], ['message_id'], ['message_id'], ['message_id']]);
  } finally {
    await other.close();
  }
  live.close();
});

test('an interrupted reply replays from the database as it was streamed', async () => {
  const { startServer } = await import('../src/server/app.js');
  const { ApiClient } = await import('../src/client/api.js');
  const g = gate();
  llm.script = () => ({ steps: [{ text: 'half a' }, { wait: g.promise }, { text: ' never' }] });
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'go' });
  const live = await StreamRecorder.open(u, chat.id);
  await live.waitFor((e) => e.type === 'delta');
  await u.post(`/api/chats/${chat.id}/interrupt`);
  await live.waitStatus('waiting');
  g.open();
  const other = await startServer({ db: t.db, providers: {}, runner: false, secrets: testSecrets() });
  try {
    const cold = await StreamRecorder.open(new ApiClient(other.url, u.token), chat.id, 0);
    await cold.waitFor((e) => e.type === 'caught_up');
    const messages = (r: StreamRecorder) => r.events.filter((e) => e.type === 'message').map((e) => JSON.parse(JSON.stringify(e)));
    assert.deepEqual(messages(cold), messages(live));
    assert.equal((messages(cold)[1] as any).message.interrupted, true);
    cold.close();
  } finally {
    await other.close();
  }
  live.close();
});

test("a stop command for an earlier run of the chat (late on the bus) does not stop the run that holds it now", async () => {
  const g = gate();
  llm.script = () => ({ steps: [{ text: 'partial ' }, { wait: g.promise }, { text: 'done' }] });
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'go' });
  const s = await StreamRecorder.open(u, chat.id, 0);
  const running = await s.waitFor((e) => e.type === 'status' && e.status === 'running');
  await s.waitFor((e) => e.type === 'delta');
  const { epochOf } = await import('../src/chat/types.js');
  const epoch = epochOf(running.seq!);
  // As an edit or interrupt of the chat's previous run would publish it, arriving only now.
  t.server.bus.publish('control', { chat_id: chat.id, action: 'cancel', epoch: epoch - 1 });
  t.server.bus.publish('control', { chat_id: chat.id, action: 'interrupt', epoch: epoch - 2 });
  g.open();
  const reply = await s.waitFor((e) => e.type === 'message' && (e as any).message.role === 'assistant');
  assert.equal((reply as any).message.parts[0].text, 'partial done');
  assert.ok(!(reply as any).message.interrupted);
  await s.waitStatus('waiting');
  // Not stopped and resumed after its lease ran out: one run, start to end.
  assert.equal(s.events.filter((e) => e.type === 'history_truncated').length, 0);
  assert.equal(s.events.filter((e) => e.type === 'status' && e.status === 'running').length, 1);
  s.close();
});

test("deleting a chat removes its messages, events and queue from the database; the owner's other chats keep theirs", async () => {
  llm.script = () => text('ok');
  const u = await t.user();
  const kept = await u.post('/api/chats', { message: 'keep' });
  const gone = await u.post('/api/chats', { message: 'drop' });
  for (const c of [kept, gone]) {
    const r = await StreamRecorder.open(u, c.id);
    await r.waitStatus('waiting');
    r.close();
  }
  const counts = async (id: string) =>
    (
      await t.db.query<{ m: number; e: number; q: number }>(
        `SELECT (SELECT count(*)::int FROM chat_messages WHERE chat_id = $1) AS m, (SELECT count(*)::int FROM chat_events WHERE chat_id = $1) AS e,
                (SELECT count(*)::int FROM chat_queue WHERE chat_id = $1) AS q`,
        [id],
      )
    )[0]!;
  assert.ok((await counts(gone.id)).m >= 2);
  const before = await counts(kept.id);
  await u.delete(`/api/chats/${gone.id}`);
  assert.deepEqual(await counts(gone.id), { m: 0, e: 0, q: 0 });
  assert.deepEqual(await counts(kept.id), before);
  await assert.rejects(u.get(`/api/chats/${gone.id}`), (e: any) => e.status === 404);
});
