// Per-user limits (one user must not take every worker slot, socket or session of a replica),
// and a long chat's history replayed in pages rather than one frame.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startTestServer, providerConfig, StreamRecorder, type TestServer } from './helpers/server.js';
import { startFakeLlm, gate, type FakeLlm } from './helpers/fake-llm.js';
import { REPLAY_PAGE } from '../src/chat/hub.js';
import { EPOCH_SPAN } from '../src/chat/types.js';

/** Sets AIRLOCK_* variables for the rest of one test. */
function withEnv(vars: Record<string, string>): () => void {
  const old = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  return () => {
    for (const [k, v] of Object.entries(old)) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  };
}

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

test("a user's running turns are capped: the next turn answers 429 too_many_turns, other users are not affected, and a slot frees when a turn ends", async () => {
  const restore = withEnv({ AIRLOCK_USER_RUNNING_TURNS: '2' });
  cleanups.push(restore);
  const hold = gate();
  const llm: FakeLlm = await startFakeLlm('openai', () => ({ steps: [{ wait: hold.promise }, { text: 'done' }] }));
  const t: TestServer = await startTestServer(providerConfig(llm));
  cleanups.push(() => llm.close(), () => t.close());
  const alice = await t.user();
  const bob = await t.user();
  const a1 = await alice.post('/api/chats', { message: 'one' });
  const a2 = await alice.post('/api/chats', { message: 'two' });
  await llm.waitForRequest(2);
  await assert.rejects(alice.post('/api/chats', { message: 'three' }), (e: any) => e.status === 429 && e.code === 'too_many_turns' && /2 turns running or waiting/.test(e.message));
  const idle = await alice.post('/api/chats', { title: 'idle' });
  await assert.rejects(alice.post(`/api/chats/${idle.id}/messages`, { content: 'now' }), (e: any) => e.status === 429 && e.code === 'too_many_turns');
  // A running chat still takes queued messages (no new turn).
  assert.ok((await alice.post(`/api/chats/${a1.id}/messages`, { content: 'later' })).queued);
  // Another user is not held back.
  await bob.post('/api/chats', { message: 'mine' });
  await llm.waitForRequest(3);
  hold.open();
  const s = await StreamRecorder.open(alice, a2.id);
  await s.waitStatus('waiting');
  s.close();
  // a1 goes on with its queued message; a2's slot is free again.
  const sent = await alice.post(`/api/chats/${idle.id}/messages`, { content: 'now' });
  assert.ok(sent.message);
});

test('new chats per user per minute are capped (429 too_many_chats)', async () => {
  const restore = withEnv({ AIRLOCK_USER_CHATS_PER_MINUTE: '3' });
  cleanups.push(restore);
  const t = await startTestServer({});
  cleanups.push(() => t.close());
  const carol = await t.user();
  for (let i = 0; i < 3; i++) await carol.post('/api/chats', { title: `c${i}` });
  await assert.rejects(carol.post('/api/chats', { title: 'one too many' }), (e: any) => e.status === 429 && e.code === 'too_many_chats');
  await (await t.user()).post('/api/chats', { title: 'someone else' });
});

test('chat stream sockets per user are capped on a server: the next upgrade answers 429 with a JSON error', async () => {
  const restore = withEnv({ AIRLOCK_USER_STREAMS: '2' });
  const t = await startTestServer({});
  restore();
  cleanups.push(() => t.close());
  const dave = await t.user();
  const chat = await dave.post('/api/chats', { title: 'watched' });
  const open = [await StreamRecorder.open(dave, chat.id), await StreamRecorder.open(dave, chat.id)];
  await assert.rejects(StreamRecorder.open(dave, chat.id), (e: any) => e.status === 429 && e.code === 'too_many_streams');
  open[0]!.close();
  await new Promise<void>((r) => open[0]!.ws.once('close', () => r()));
  const again = await StreamRecorder.open(dave, chat.id);
  again.close();
  open[1]!.close();
});

test("a long chat's history is replayed in pages, each its own frame, every event once and in order", async () => {
  const t = await startTestServer({});
  cleanups.push(() => t.close());
  const erin = await t.user();
  const chat = await erin.post('/api/chats', { title: 'long' });
  const n = REPLAY_PAGE * 5 + 17;
  // A long history, written straight into the database (the events a turn-heavy chat gathers).
  const seqs = Array.from({ length: n }, (_, i) => EPOCH_SPAN * (i + 1) + 1);
  await t.db.query(
    `INSERT INTO chat_events (chat_id, seq, type, data) SELECT $1, s, 'status', '{"status":"waiting"}'::jsonb FROM unnest($2::bigint[]) AS s`,
    [chat.id, seqs],
  );
  const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/api/chats/${chat.id}/stream?after=0`, { headers: { authorization: `Bearer ${erin.token}` } });
  const frames: any[][] = [];
  await new Promise<void>((resolve, reject) => {
    ws.on('message', (d) => {
      const evs = JSON.parse(d.toString());
      frames.push(evs);
      if (evs.some((e: any) => e.type === 'caught_up')) resolve();
    });
    ws.on('error', reject);
  });
  ws.close();
  const got = frames.flat().filter((e) => e.seq !== undefined).map((e) => e.seq);
  assert.deepEqual(got, seqs);
  assert.ok(frames.length >= 5, `${frames.length} frames`);
  assert.ok(frames.every((f) => f.length <= REPLAY_PAGE + 5), `frame sizes ${frames.map((f) => f.length)}`);
  assert.equal(frames.at(-1)!.find((e: any) => e.type === 'caught_up').last_seq, seqs.at(-1));
});
