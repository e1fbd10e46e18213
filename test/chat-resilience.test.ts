// A worker dying mid-turn, a slow WebSocket client beside a fast one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeLlm, text, gate } from './helpers/fake-llm.js';
import { startTestServer, StreamRecorder, providerConfig, testSecrets, waitUntil, PG_URL } from './helpers/server.js';
import pg from 'pg';
import { startServer } from '../src/server/app.js';
import { ApiClient } from '../src/client/api.js';
import type { Tool } from '../src/chat/tools/index.js';

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
    await s.waitFor((e) => e.type === 'delta' && String(e.text).endsWith('dying '));
    // Let step 1's background write land before the crash, as it would on a live worker.
    await waitUntil(async () => (await u.get(`/api/chats/${chat.id}`)).messages.length === 3);
    a.server.runner!.crash();
    b = await startServer({ db: a.db, bus: a.server.bus, providers: providerConfig(llm), titles: false, runner: fast, secrets: testSecrets() });
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

test('a tool that is not safe to re-run, interrupted by a dead worker, is reported to the model and not run again', async () => {
  const charged: unknown[] = [];
  const neverReturns = gate();
  // A real side effect (it records each charge), declared unsafe to repeat.
  const chargeCard: Tool = {
    name: 'charge_card',
    description: 'Charges the card on file',
    parameters: { type: 'object', properties: { cents: { type: 'number' } } },
    idempotent: false,
    async run(args) {
      charged.push(args);
      await neverReturns.promise; // the worker dies while the charge is in flight
      return 'charged';
    },
  };
  const llm = await startFakeLlm('openai');
  llm.script = (req) => {
    const last = req.messages.at(-1);
    if (last.role === 'user') return { steps: [{ text: 'Charging. ' }, { tool: { id: 'pay1', name: 'charge_card', args: { cents: 500 } } }] };
    return text(last.content.includes('not run again') ? 'I could not confirm the payment; please check before retrying.' : 'Paid.');
  };
  const fast = { leaseMs: 400, heartbeatMs: 100, sweepMs: 100 };
  const a = await startTestServer(providerConfig(llm), { runner: fast, tools: [chargeCard] });
  let b: Awaited<ReturnType<typeof startServer>> | null = null;
  try {
    const u = await a.user();
    const chat = await u.post('/api/chats', { message: 'pay the invoice' });
    const s = await StreamRecorder.open(u, chat.id);
    await waitUntil(async () => charged.length === 1);
    // The call was stored before the tool ran.
    const before = await u.get(`/api/chats/${chat.id}`);
    assert.deepEqual(before.messages.map((m: any) => m.role), ['user', 'assistant']);
    assert.ok(before.messages[1].parts.some((p: any) => p.type === 'tool_call' && p.id === 'pay1'));
    a.server.runner!.crash();
    b = await startServer({ db: a.db, bus: a.server.bus, providers: providerConfig(llm), titles: false, runner: fast, tools: [chargeCard], secrets: testSecrets() });
    await s.waitStatus('waiting');
    assert.equal(charged.length, 1, 'the charge ran once');
    const full = await new ApiClient(b.url, u.token).get(`/api/chats/${chat.id}`);
    assert.deepEqual(full.messages.map((m: any) => m.role), ['user', 'assistant', 'tool', 'assistant']);
    const result = full.messages[2].parts[0];
    assert.equal(result.tool_call_id, 'pay1');
    assert.equal(result.is_error, true);
    assert.match(result.output, /may or may not have taken effect.*not run again/);
    assert.equal(textOf(full.messages[3]), 'I could not confirm the payment; please check before retrying.');
    // Clients saw the report live, marked as an interruption.
    const live = s.events.find((e) => e.type === 'tool_result' && e.interrupted)!;
    assert.equal((live.result as any).tool_call_id, 'pay1');
    assert.equal(s.events.find((e) => e.type === 'history_truncated')?.after_seq, full.messages[1].seq);
    s.close();
  } finally {
    neverReturns.open();
    await b?.close();
    await a.close();
    await llm.close();
  }
});

test("a step commit whose PostgreSQL connection is terminated is retried: the turn completes, every message once", { skip: PG_URL ? false : 'needs PostgreSQL (npm run test:pg)' }, async () => {
  const g = gate();
  const llm = await startFakeLlm('openai');
  llm.script = (req, n) => {
    if (n === 1) return { steps: [{ text: 'Let me compute. ' }, { wait: g.promise }, { tool: { id: 'c1', name: 'calculator', args: { expression: '6*7' } } }] };
    return text('It is 42.');
  };
  const t = await startTestServer(providerConfig(llm));
  const locker = new pg.Client({ connectionString: PG_URL });
  const killer = new pg.Client({ connectionString: PG_URL });
  await locker.connect();
  await killer.connect();
  try {
    const schema = (await t.db.query<{ s: string }>('SELECT current_schema() AS s'))[0]!.s;
    const u = await t.user();
    const chat = await u.post('/api/chats', { message: 'what is 6*7?' });
    const s = await StreamRecorder.open(u, chat.id);
    await s.waitFor((e) => e.type === 'delta');
    // Hold the chat's row: the step's commit (it checks the fence with FOR UPDATE) blocks, and the
    // backend it blocks in is terminated, as a failover or an admin would.
    await locker.query('BEGIN');
    await locker.query(`SELECT 1 FROM ${schema}.chats WHERE id = $1 FOR UPDATE`, [chat.id]);
    g.open();
    let pid: number | undefined;
    while (!pid) {
      const rows = await killer.query(
        `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO chat_messages%'`,
      );
      pid = rows.rows[0]?.pid;
      if (!pid) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal((await killer.query('SELECT pg_terminate_backend($1) AS ok', [pid])).rows[0].ok, true);
    await locker.query('ROLLBACK');
    await s.waitStatus('waiting');
    const full = await u.get(`/api/chats/${chat.id}`);
    assert.deepEqual(full.messages.map((m: any) => m.role), ['user', 'assistant', 'tool', 'assistant']);
    assert.equal(full.messages[2].parts[0].output, '42');
    assert.equal(textOf(full.messages[3]), 'It is 42.');
    assert.equal(full.status, 'waiting');
    assert.equal(s.events.filter((e) => e.type === 'error').length, 0);
    const seqs = s.events.filter((e) => e.seq !== undefined).map((e) => e.seq!);
    assert.equal(new Set(seqs).size, seqs.length, 'no event twice');
    s.close();
  } finally {
    g.open();
    await locker.end().catch(() => {});
    await killer.end().catch(() => {});
    await t.close();
    await llm.close();
  }
});

test('a slow client is told to resync; a fast client beside it gets every event', async () => {
  // 16 MiB: the fast reader (in this process, with the server and the fake provider) keeps up
  // with margin on a loaded machine (at 8 MiB it fell behind on a slow VM running two suites at
  // once); the paused one still overflows it (32 MB sent).
  // The write timeout is long enough (it also bounds how long the resync notice may wait behind
  // unread bytes) that it cannot fire before the test resumes the paused reader, however slow
  // the machine: this test is about the byte bound.
  const streamLimits = { queueBytes: 16 * 1024 * 1024, writeTimeoutMs: 240_000 };
  const llm = await startFakeLlm('openai');
  const t = await startTestServer(providerConfig(llm), { streamLimits });
  const release = gate();
  try {
    const chunk = 'x'.repeat(4000);
    const pieces = 8000; // ~32 MB: more than the kernel buffers between a paused reader and the server
    // Pauses after every 400 KB let the fast reader (in this same process) catch up; the paused one cannot.
    llm.script = () => ({
      steps: [...Array.from({ length: pieces }, (_, i) => (i % 100 === 99 ? [{ text: `${i}:${chunk}` }, { delayMs: 25 }] : [{ text: `${i}:${chunk}` }])).flat(), { wait: release.promise }, { text: 'END' }],
    });
    const u = await t.user();
    const chat = await u.post('/api/chats', { title: 'bulk' });
    const fast = await StreamRecorder.open(u, chat.id);
    const slow = await StreamRecorder.open(u, chat.id);
    await slow.waitFor((e) => e.type === 'caught_up');
    (slow.ws as any)._socket.pause(); // stops reading: the server's send queue grows
    await u.post(`/api/chats/${chat.id}/messages`, { content: 'go' });
    await fast.waitFor((e) => e.type === 'delta' && String(e.text).includes(`${pieces - 1}:`));
    release.open();
    await fast.waitStatus('waiting');
    // Every piece, in order, once (pieces read together stream as one delta).
    assert.equal(fast.draftText(), Array.from({ length: pieces }, (_, i) => `${i}:${chunk}`).join('') + 'END');
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
    await t.close();
    await llm.close();
  }
});

test("a heartbeat whose statement ran while a turn ended does not cancel the chat's next turn, claimed meanwhile", async () => {
  const { openTestDb } = await import('./helpers/server.js');
  const own = await openTestDb();
  // The heartbeat's statement is held at will: it runs, then its result waits for the test.
  const held: { hold: { release: () => void; ran: Promise<void> } | null } = { hold: null };
  let captured!: () => void;
  const heartbeatHeld = new Promise<void>((r) => (captured = r));
  let armed = false;
  const db = Object.create(own.db) as typeof own.db;
  db.query = (async (sql: string, params?: unknown[]) => {
    if (!armed || !sql.startsWith('UPDATE chats SET lease_until')) return own.db.query(sql, params);
    armed = false;
    let release!: () => void;
    let ran!: () => void;
    const released = new Promise<void>((r) => (release = r));
    held.hold = { release, ran: new Promise<void>((r) => (ran = r)) };
    captured();
    await waitForTurnEnd; // the statement runs once the first turn has ended: it finds the chat released
    const rows = await own.db.query(sql, params);
    ran();
    await released; // ...and its result comes back after the next turn started
    return rows;
  }) as typeof own.db.query;
  let turnEnded!: () => void;
  const waitForTurnEnd = new Promise<void>((r) => (turnEnded = r));
  const first = gate();
  const second = gate(); // keeps the second turn running until the heartbeat's result is in
  const llm = await startFakeLlm('openai', (req) =>
    req.messages.at(-1).content === 'one'
      ? { steps: [{ text: 'first ' }, { wait: first.promise }, { text: 'reply' }] }
      : { steps: [{ text: 'second ' }, { wait: second.promise }, { text: 'reply' }] },
  );
  const t = await startTestServer(providerConfig(llm), { db, runner: { heartbeatMs: 50 } });
  try {
    const u = await t.user();
    const chat = await u.post('/api/chats', { message: 'one' });
    const s = await StreamRecorder.open(u, chat.id, 0);
    await s.waitFor((e) => e.type === 'delta');
    armed = true; // the next heartbeat includes this running turn
    await heartbeatHeld;
    first.open();
    await s.waitStatus('waiting');
    turnEnded();
    await held.hold!.ran; // it found the chat released: the turn's run is not in its result
    // Claimed for this worker by the send itself: its run is active when the send returns.
    await u.post(`/api/chats/${chat.id}/messages`, { content: 'two' });
    await s.waitFor((e) => e.type === 'delta' && String(e.text).endsWith('second '));
    held.hold!.release();
    await new Promise((r) => setImmediate(r)); // the heartbeat has handled its result (a wrong cancel would land now)
    second.open();
    await s.waitFor((e) => e.type === 'message' && (e as any).message.parts[0]?.text === 'second reply');
    await s.waitStatus('waiting', 2);
    // The second turn ran once, start to end: it was not stopped and resumed after its lease ran out.
    assert.equal(s.events.filter((e) => e.type === 'history_truncated').length, 0);
    assert.equal(s.events.filter((e) => e.type === 'status' && e.status === 'running').length, 2);
    s.close();
  } finally {
    await t.close();
    await own.drop();
    await llm.close();
  }
});

test('a stream socket never hands the client an event it resumed after (one that reaches this replica late)', async () => {
  const { WebSocketServer, WebSocket } = await import('ws');
  const { ChatStreamSocket } = await import('../src/server/chat-stream.js');
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  try {
    const serverSide = new Promise<InstanceType<typeof WebSocket>>((r) => wss.once('connection', (ws) => r(ws)));
    const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as import('node:net').AddressInfo).port}`);
    const got: any[] = [];
    const done = new Promise<void>((r) => client.on('message', (d) => {
      got.push(...JSON.parse(String(d)));
      if (got.some((e) => e.type === 'caught_up')) r();
    }));
    const stream = new ChatStreamSocket(await serverSide, 10);
    const e = (seq: number | undefined, type: string) => ({ chat_id: 'c', type, ...(seq === undefined ? {} : { seq }) }) as any;
    stream.push([e(9, 'delta'), e(10, 'status'), e(11, 'delta'), e(undefined, 'queue'), e(undefined, 'caught_up')]);
    await done;
    assert.deepEqual(got.map((x) => [x.seq, x.type]), [[11, 'delta'], [undefined, 'queue'], [undefined, 'caught_up']]);
    client.close();
  } finally {
    wss.close();
  }
});
