import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeLlm, text, gate, type FakeLlm } from './helpers/fake-llm.js';
import { startTestServer, StreamRecorder, providerConfig, type TestServer } from './helpers/server.js';

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

test('a message is answered and streamed: pending → running → waiting', async () => {
  llm.script = () => text('Hel', 'lo', ' there');
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'hi there', system_prompt: 'be brief' });
  assert.equal(chat.status, 'pending');
  assert.equal(chat.title, 'hi there');
  const s = await StreamRecorder.open(u, chat.id, 0);
  await s.waitStatus('waiting');
  // Pieces the provider wrote together arrive as one delta: one to three of them here.
  const types = s.events.filter((e) => e.seq !== undefined).map((e) => (e.type === 'status' ? `status:${e.status}` : e.type));
  assert.deepEqual(
    types.filter((ty, i) => ty !== 'delta' || types[i - 1] !== 'delta'),
    ['message', 'status:pending', 'status:running', 'delta', 'message', 'status:waiting'],
  );
  assert.equal(s.draftText(), 'Hello there');
  const seqs = s.seqs;
  assert.deepEqual([...seqs].sort((a, b) => a - b), seqs, 'seqs ascend');
  const full = await u.get(`/api/chats/${chat.id}`);
  assert.equal(full.status, 'waiting');
  assert.deepEqual(full.messages.map((m: any) => m.role), ['user', 'assistant']);
  assert.equal(full.messages[1].parts[0].text, 'Hello there');
  assert.equal(full.last_seq, seqs[seqs.length - 1]);
  const req = llm.requests[llm.requests.length - 1];
  assert.equal(req.messages[0].role, 'system');
  assert.equal(req.messages[0].content, 'be brief');
  assert.ok(req.tools.some((x: any) => x.function.name === 'calculator'));
  s.close();
});

test('tool loop: the model calls the calculator, gets the result, answers', async () => {
  llm.script = (req) => {
    const last = req.messages[req.messages.length - 1];
    if (last.role === 'tool') return text(`The answer is ${last.content}`);
    return { steps: [{ text: 'Let me compute. ' }, { tool: { id: 'call_1', name: 'calculator', args: { expression: '(2+3)*4' } } }] };
  };
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'what is (2+3)*4?' });
  const s = await StreamRecorder.open(u, chat.id, 0);
  await s.waitStatus('waiting');
  const call = s.events.find((e) => e.type === 'tool_call') as any;
  assert.equal(call.call.name, 'calculator');
  assert.deepEqual(call.call.args, { expression: '(2+3)*4' });
  const result = s.events.find((e) => e.type === 'tool_result') as any;
  assert.equal(result.result.output, '20');
  const full = await u.get(`/api/chats/${chat.id}`);
  assert.deepEqual(full.messages.map((m: any) => m.role), ['user', 'assistant', 'tool', 'assistant']);
  assert.equal(full.messages[3].parts[0].text, 'The answer is 20');
  s.close();
});

test('sending while a turn runs queues the message; the queue is promoted in order', async () => {
  const g = gate();
  llm.script = (req, n) => {
    const last = req.messages[req.messages.length - 1].content;
    if (last === 'first') return { steps: [{ text: 'one' }, { wait: g.promise }, { text: '!' }] };
    return text(`reply to ${last}`);
  };
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'first' });
  const s = await StreamRecorder.open(u, chat.id, 0);
  await s.waitFor((e) => e.type === 'delta');
  const q1 = await u.post(`/api/chats/${chat.id}/messages`, { content: 'second' });
  const q2 = await u.post(`/api/chats/${chat.id}/messages`, { content: 'third' });
  assert.ok(q1.queued && q2.queued);
  const mid = await u.get(`/api/chats/${chat.id}`);
  assert.equal(mid.status, 'running');
  assert.deepEqual(mid.queue.map((x: any) => x.content), ['second', 'third']);
  await s.waitFor((e) => e.type === 'queue' && (e.queue as any[]).length === 2);
  g.open();
  await s.waitStatus('waiting');
  const full = await u.get(`/api/chats/${chat.id}`);
  const texts = full.messages.map((m: any) => `${m.role}:${m.parts.find((p: any) => p.type === 'text')?.text}`);
  assert.deepEqual(texts, ['user:first', 'assistant:one!', 'user:second', 'assistant:reply to second', 'user:third', 'assistant:reply to third']);
  assert.deepEqual(full.queue, []);
  s.close();
});

test('a send to an idle chat that still holds queued messages (a worker died with them) queues behind them', async () => {
  llm.script = (req) => text(`reply to ${req.messages[req.messages.length - 1].content}`);
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'first' });
  const s = await StreamRecorder.open(u, chat.id, 0);
  await s.waitStatus('waiting');
  await t.db.query(`INSERT INTO chat_queue (chat_id, content) VALUES ($1, 'older')`, [chat.id]);
  const sent = await u.post(`/api/chats/${chat.id}/messages`, { content: 'newer' });
  assert.equal(sent.message, null);
  assert.equal(sent.queued.content, 'newer', 'the caller is told its own message is queued, not handed the one that runs');
  await s.waitFor((e) => e.type === 'message' && (e.message as any).parts[0].text === 'reply to newer');
  const full = await u.get(`/api/chats/${chat.id}`);
  const texts = full.messages.map((m: any) => `${m.role}:${m.parts[0].text}`);
  assert.deepEqual(texts, ['user:first', 'assistant:reply to first', 'user:older', 'assistant:reply to older', 'user:newer', 'assistant:reply to newer']);
  s.close();
});

test('a burst of sends (one statement for many chats): each chat answers once; a second send in the burst queues', async () => {
  const g = gate(); // holds the first chat's first turn until the burst is answered
  llm.script = (req) => {
    const last = req.messages[req.messages.length - 1].content;
    const firstTurn = req.messages.filter((m: any) => m.role === 'user').length === 1;
    return (last === 'm0' || last === 'again') && firstTurn ? { steps: [{ wait: g.promise }, { text: `re: ${last}` }] } : text(`re: ${last}`);
  };
  const u = await t.user();
  const chats = await Promise.all(Array.from({ length: 12 }, () => u.post('/api/chats', {})));
  const streams = await Promise.all(chats.map((c) => StreamRecorder.open(u, c.id, 0)));
  // All at once, and the first chat twice: the two sends to it cannot share a statement.
  const sends = await Promise.all([
    ...chats.map((c, i) => u.post(`/api/chats/${c.id}/messages`, { content: `m${i}` })),
    u.post(`/api/chats/${chats[0].id}/messages`, { content: 'again' }),
  ]);
  assert.equal(sends.filter((s) => s.message).length, 12);
  assert.equal(sends.filter((s) => s.queued).length, 1, 'the second send to a running chat is queued');
  // Which of the two sends to the first chat the server took first is up to it (they race); the other is the queued one.
  assert.ok(sends[0].queued || sends[12].queued, 'the queued send is one of the first chat\'s');
  const [first, second] = sends[12].queued ? ['m0', 'again'] : ['again', 'm0'];
  g.open();
  // The queued message is promoted in the same run: one `waiting`, after the second reply.
  await streams[0]!.waitFor((e) => e.type === 'message' && (e as any).message.parts[0]?.text === `re: ${second}`);
  await Promise.all(streams.map((s) => s.waitStatus('waiting')));
  for (const [i, c] of chats.entries()) {
    const full = await u.get(`/api/chats/${c.id}`);
    const texts = full.messages.map((m: any) => `${m.role}:${m.parts[0].text}`);
    assert.deepEqual(texts, i === 0 ? [`user:${first}`, `assistant:re: ${first}`, `user:${second}`, `assistant:re: ${second}`] : [`user:m${i}`, `assistant:re: m${i}`]);
  }
  for (const s of streams) s.close();
});

