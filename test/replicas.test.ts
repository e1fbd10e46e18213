// Several real `airlock server` processes on one PostgreSQL: cross-replica wake, streams that
// resume on another replica, kill -9 of the replica running a turn, a dropped bus connection,
// SIGTERM drain, and a launch whose gateway sits on another replica. PostgreSQL only (the
// embedded database is one process by design): runs in `npm run test:pg` and CI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { StreamRecorder, waitUntil } from './helpers/server.js';
import { startFakeLlm, gate, type FakeLlm, type Reply } from './helpers/fake-llm.js';
import { cluster, PG_URL, type Cluster, type Replica } from './helpers/replicas.js';
import { GatewayProcess, runCli, killChildren, echoServer, waitGatewayOnline } from './helpers/launch.js';
import type { StreamEvent } from '../src/chat/types.js';
import { ApiClient } from '../src/client/api.js';

const skip = PG_URL ? false : 'needs PostgreSQL (npm run test:pg)';
const pgBusOnly = skip || (process.env.AIRLOCK_BUS?.startsWith('nats') ? 'the PostgreSQL bus only' : false);
const words = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i} `);
/** The fake provider's steps that stream `words(prefix, n)`. */
const says = (prefix: string, n: number) => words(prefix, n).map((t) => ({ text: t }));

let llm: FakeLlm;
let script: (n: number) => Reply = () => ({ steps: [{ text: 'ok' }] });
let calls = 0;

before(async () => {
  if (skip) return;
  llm = await startFakeLlm('openai', () => script(++calls));
});
after(async () => {
  killChildren();
  await llm?.close();
});

async function newCluster(extra: NodeJS.ProcessEnv = {}): Promise<Cluster> {
  calls = 0;
  return cluster(
    {
      AIRLOCK_OPENAI_BASE_URL: llm.baseUrl,
      AIRLOCK_OPENAI_API_KEY: 'test-key',
      AIRLOCK_MODEL: 'gpt-test',
      AIRLOCK_LEASE_MS: '1500',
      ...extra,
    },
    // Work must be found by events (wake, lease expiry), not by the safety-net timer.
    ['--sweep-ms', '600000'],
  );
}

/**
 * A client as the docs tell clients to behave: on resync (4001), restart (1012) or a dead
 * replica, reconnect with ?after=<last seq> to the next replica in `targets`.
 */
class ResumingClient {
  events: StreamEvent[] = [];
  private rec!: StreamRecorder;
  private waiters: (() => void)[] = [];
  reconnects = 0;
  constructor(
    private chatId: string,
    private targets: () => Replica[],
  ) {}

  /** What happened, for a failing assertion: each connection and the events it delivered. */
  trace: string[] = [];

  async open(after = 0): Promise<void> {
    this.trace.push(`open after=${after}`);
    for (let i = 0; ; i++) {
      const r = this.targets()[i % this.targets().length]!;
      try {
        this.rec = await StreamRecorder.open(r.api, this.chatId, after);
        break;
      } catch (err) {
        if (i > 40) throw err;
        await new Promise((res) => setTimeout(res, 50));
      }
    }
    const rec = this.rec;
    const take = (evs: StreamEvent[]) => {
      this.trace.push(evs.map((e) => `${e.seq ?? '-'}:${e.type}${e.type === 'status' ? `:${e.status}` : ''}`).join(' '));
      for (const e of evs) if (e.type !== 'resync' && e.type !== 'caught_up') this.events.push(e);
      for (const w of this.waiters.splice(0)) w();
    };
    // Frames that came with the upgrade response can be delivered before open() resumes here.
    take(rec.events);
    const origAdd = (rec as any).add.bind(rec);
    (rec as any).add = (evs: StreamEvent[]) => {
      origAdd(evs);
      take(evs);
    };
    rec.ws.on('close', () => {
      if (this.stopped) return;
      this.reconnects++;
      this.open(this.lastSeq).catch(() => {}); // every target gone: the test's wait reports it
    });
  }

  private stopped = false;
  get lastSeq(): number {
    return this.seqs.at(-1) ?? 0;
  }
  get seqs(): number[] {
    return this.events.filter((e) => e.seq !== undefined).map((e) => e.seq!);
  }
  text(): string {
    // Drafts dropped by history_truncated do not count.
    let out = '';
    for (const e of this.events) {
      if (e.type === 'history_truncated') out = '';
      if (e.type === 'delta' && e.kind === 'text') out += e.text;
    }
    return out;
  }
  /** A hang guard, not a speed check: a lost signal fails the test with what arrived instead of timing the file out. */
  async waitFor(pred: (e: StreamEvent) => boolean, what = pred.toString(), ms = 60_000): Promise<StreamEvent> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.events.find(pred);
      if (hit) return hit;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no event for ${what} in ${ms} ms; got ${JSON.stringify(this.events.map((e) => e.type === 'status' ? e.status : e.type))}`);
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((r) => {
        this.waiters.push(r);
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
    }
  }
  /** Stops reconnecting (its replica is about to die). */
  detach(): void {
    this.stopped = true;
  }
  close(): void {
    this.stopped = true;
    this.rec.ws.close();
  }
}

const isWaiting = (e: StreamEvent) => e.type === 'status' && e.status === 'waiting';
/** A delta ending with t: the pieces a provider wrote together stream as one delta. */
const hasText = (t: string) => (e: StreamEvent) => e.type === 'delta' && String(e.text).endsWith(t);

async function assistantMessages(r: Replica, chatId: string): Promise<any[]> {
  const chat = await r.api.get(`/api/chats/${chatId}`);
  return chat.messages.filter((m: any) => m.role === 'assistant');
}
const textOf = (m: any) => m.parts.filter((p: any) => p.type === 'text').map((p: any) => p.text).join('');

test('a message sent on one replica is run on another and streamed on a third; a client of a killed replica resumes elsewhere with no holes', { skip }, async () => {
  const c = await newCluster();
  try {
    const a = await c.start({ AIRLOCK_CHAT_CONCURRENCY: '0' });
    const w = await c.start();
    const b = await c.start({ AIRLOCK_CHAT_CONCURRENCY: '0' });
    const g = gate();
    script = () => ({ steps: [...says('x', 20), { wait: g.promise }, ...says('y', 20)] });
    const chat = await a.api.post('/api/chats', { title: 'replicas' });
    const ref = new ResumingClient(chat.id, () => [w]);
    const onB = new ResumingClient(chat.id, () => [b]);
    await ref.open();
    const onA2 = new ResumingClient(chat.id, () => [a]);
    await onA2.open();
    await onB.open();
    // A message above NOTIFY's 8000-byte limit crosses the bus by reference.
    const long = 'L'.repeat(20_000);
    await a.api.post(`/api/chats/${chat.id}/messages`, { content: long });
    await onA2.waitFor(hasText('x19 '));
    const userEvent = await onB.waitFor((e) => e.type === 'message' && (e as any).message.role === 'user');
    assert.equal((userEvent as any).message.parts[0].text, long);
    // A client that joins mid-turn on a replica that does not run it gets the unsaved drafts from the owner.
    const late = new ResumingClient(chat.id, () => [b]);
    await late.open(0);
    await late.waitFor(hasText('x19 '));
    // The replica that onA2 streams from dies; it resumes on b.
    const resumed = new ResumingClient(chat.id, () => [b]);
    const before = [...onA2.events];
    onA2.detach();
    await a.kill();
    await resumed.open(before.filter((e) => e.seq !== undefined).at(-1)!.seq!);
    g.open();
    await Promise.all([ref, onB, late, resumed].map((cl) => cl.waitFor(isWaiting)));
    const expected = [...words('x', 20), ...words('y', 20)].join('');
    for (const cl of [ref, onB, late]) assert.equal(cl.text(), expected);
    assert.deepEqual(late.seqs, ref.seqs, 'the late joiner on another replica saw exactly the owner\'s events');
    assert.deepEqual(onB.seqs, ref.seqs);
    const joined = [...before.filter((e) => e.seq !== undefined).map((e) => e.seq!), ...resumed.seqs];
    assert.deepEqual(joined, ref.seqs, 'killed replica + resumed elsewhere = every event once');
    const msgs = await assistantMessages(b, chat.id);
    assert.equal(msgs.length, 1);
    assert.equal(textOf(msgs[0]), expected);
    for (const cl of [ref, onB, late, resumed]) cl.close();
  } finally {
    await c.close();
  }
});

test('turns of one chat sent to alternating replicas: each provider request carries the whole history (no stale cache)', { skip }, async () => {
  const c = await newCluster();
  try {
    const a = await c.start();
    const b = await c.start();
    script = (n) => ({ steps: [{ text: `reply ${n}` }] });
    const chat = await a.api.post('/api/chats', { title: 'alternate' });
    const before = llm.requests.length;
    for (const [i, r] of [a, b, a, b, a].entries()) {
      const cl = await StreamRecorder.open(r.api, chat.id);
      await r.api.post(`/api/chats/${chat.id}/messages`, { content: `question ${i + 1}` });
      const reply = await cl.waitFor((e) => e.type === 'message' && (e as any).message.role === 'assistant' && (e as any).message.parts[0]?.text === `reply ${i + 1}`);
      // This turn's own `waiting` (the replay from seq 0 holds the earlier turns' too): the next
      // send must find the chat released, not still committing this turn.
      await cl.waitFor((e) => e.type === 'status' && e.status === 'waiting' && e.seq! > reply.seq!);
      cl.close();
    }
    // A replica whose cache of the chat went stale (the other one ran it since) starts no early call.
    assert.equal(llm.requests.length - before, 5, 'one provider request per turn');
    const last = llm.requests.slice(before).at(-1);
    const seen = last.messages.map((m: any) => `${m.role}: ${m.content}`);
    assert.deepEqual(seen, ['question 1', 'reply 1', 'question 2', 'reply 2', 'question 3', 'reply 3', 'question 4', 'reply 4', 'question 5'].map((t, i) => `${i % 2 ? 'assistant' : 'user'}: ${t}`));
  } finally {
    await c.close();
  }
});

test('sends on an API-only replica run on a worker elsewhere (its wake signal crosses the bus): one provider request per turn, each message once', { skip }, async () => {
  const c = await newCluster();
  try {
    const api = await c.start({ AIRLOCK_CHAT_CONCURRENCY: '0' });
    await c.start();
    script = (n) => ({ steps: [{ text: `reply ${n}` }] });
    const chat = await api.api.post('/api/chats', { title: 'across' });
    const before = llm.requests.length;
    const cl = await StreamRecorder.open(api.api, chat.id);
    for (let i = 1; i <= 3; i++) {
      await api.api.post(`/api/chats/${chat.id}/messages`, { content: `question ${i}` });
      await cl.waitStatus('waiting', i);
    }
    cl.close();
    assert.equal(llm.requests.length - before, 3, 'one provider request per turn');
    const full = await api.api.get(`/api/chats/${chat.id}`);
    assert.deepEqual(
      full.messages.map((m: any) => m.parts[0].text),
      ['question 1', 'reply 1', 'question 2', 'reply 2', 'question 3', 'reply 3'],
    );
  } finally {
    await c.close();
  }
});

test('kill -9 of the replica running a turn: another replica completes it within the lease, each message once', { skip }, async () => {
  const c = await newCluster();
  try {
    const api = await c.start({ AIRLOCK_CHAT_CONCURRENCY: '0' });
    const w1 = await c.start();
    const w2 = await c.start();
    script = (n) => (n === 1 ? { steps: [...says('lost', 5), { wait: new Promise(() => {}) }] } : { steps: [{ text: 'recovered' }] });
    const chat = await api.api.post('/api/chats', { title: 'kill' });
    const cl = new ResumingClient(chat.id, () => [api]);
    await cl.open();
    await api.api.post(`/api/chats/${chat.id}/messages`, { content: 'hi' });
    await cl.waitFor(hasText('lost4 '));
    const [{ worker_id }] = await c.sql('SELECT worker_id FROM chats WHERE id = $1', [chat.id]);
    const owner = [w1, w2].find((r) => r.workerId === worker_id)!;
    assert.ok(owner, `the chat is owned by one of the replicas (${worker_id})`);
    await owner.kill('SIGKILL');
    await cl.waitFor((e) => e.type === 'history_truncated');
    await cl.waitFor(isWaiting);
    assert.equal(cl.text(), 'recovered');
    const msgs = await assistantMessages(api, chat.id);
    assert.deepEqual(msgs.map(textOf), ['recovered']);
    const users = (await api.api.get(`/api/chats/${chat.id}`)).messages.filter((m: any) => m.role === 'user');
    assert.equal(users.length, 1);
    cl.close();
  } finally {
    await c.close();
  }
});

test('the bus connections of a replica are terminated mid-stream: its clients resync and resume with no holes, the turn completes', { skip: pgBusOnly }, async () => {
  const c = await newCluster();
  try {
    const a = await c.start({ AIRLOCK_CHAT_CONCURRENCY: '0' });
    const w = await c.start();
    const g = gate();
    script = () => ({ steps: [...says('p', 10), { wait: g.promise }, ...says('q', 10)] });
    const chat = await a.api.post('/api/chats', { title: 'bus drop' });
    const ref = new ResumingClient(chat.id, () => [w]);
    const cl = new ResumingClient(chat.id, () => [a]);
    await ref.open();
    await cl.open();
    await a.api.post(`/api/chats/${chat.id}/messages`, { content: 'hi' });
    await cl.waitFor(hasText('p9 '));
    const killed = await c.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [`airlock-bus ${a.replicaId}`]);
    assert.equal(killed.length, 2, 'the listening and the sending connection');
    // Released only once the client was told to resync, so the rest crosses a reconnected bus.
    while (cl.reconnects === 0) await new Promise((r) => setTimeout(r, 20));
    g.open();
    await Promise.all([ref.waitFor(isWaiting), cl.waitFor(isWaiting)]);
    assert.equal(cl.text(), [...words('p', 10), ...words('q', 10)].join(''));
    assert.deepEqual(cl.seqs, ref.seqs, cl.trace.join('\n'));
    ref.close();
    cl.close();
  } finally {
    await c.close();
  }
});

test('SIGTERM drains a replica: its running turn moves to another replica at once, its clients reconnect, it exits 0', { skip }, async () => {
  const c = await newCluster({ AIRLOCK_DRAIN_MS: '300', AIRLOCK_LEASE_MS: '60000' });
  try {
    const w1 = await c.start();
    const w2 = await c.start();
    script = (n) => (n === 1 ? { steps: [{ text: 'before ' }, { wait: new Promise(() => {}) }] } : { steps: [{ text: 'after drain' }] });
    const chat = await w1.api.post('/api/chats', { title: 'drain' });
    await w1.api.post(`/api/chats/${chat.id}/messages`, { content: 'hi' });
    const [{ worker_id }] = await (async () => {
      for (let i = 0; ; i++) {
        const rows = await c.sql(`SELECT worker_id FROM chats WHERE id = $1 AND status = 'running'`, [chat.id]);
        if (rows.length) return rows;
        if (i > 3000) throw new Error(`the chat never ran: ${JSON.stringify(await c.sql('SELECT status, worker_id FROM chats WHERE id = $1', [chat.id]))}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const owner = [w1, w2].find((r) => r.workerId === worker_id)!;
    const other = owner === w1 ? w2 : w1;
    const cl = new ResumingClient(chat.id, () => [owner, other].filter((r) => r.run.proc.exitCode === null));
    await cl.open();
    await cl.waitFor(hasText('before '));
    // A 60 s lease: only the hand-back can move the turn this soon.
    assert.equal(await owner.kill('SIGTERM'), 0, `the drained replica's stderr:\n${owner.run.stderr.slice(-3000)}`);
    await cl.waitFor(isWaiting);
    assert.equal(cl.text(), 'after drain');
    assert.ok(cl.reconnects >= 1);
    const msgs = await assistantMessages(other, chat.id);
    assert.deepEqual(msgs.map(textOf), ['after drain']);
    cl.close();
  } finally {
    await c.close();
  }
});

for (const relayOnly of [true, false]) {
  test(`launch through a gateway connected to another replica (${relayOnly ? 'relay path' : 'WebRTC on'})`, { skip }, async () => {
    const c = await newCluster();
    const echo = await echoServer();
    let gw: GatewayProcess | undefined;
    try {
      const home = await c.start();
      const away = await c.start();
      const { token } = await home.api.post('/api/gateways', { name: 'site-x' });
      await home.api.post('/api/resources', { name: 'echo-x', kind: 'tcp', target: `127.0.0.1:${echo.port}`, gateway: 'site-x' });
      const webrtc = relayOnly ? { AIRLOCK_WEBRTC: '0' } : {};
      // Replicas on one host, each on its own port: the gateway may relay to any of them.
      gw = new GatewayProcess(home.url, token, webrtc, ['--relay-origin', 'http://127.0.0.1:*']);
      gw.start();
      await waitGatewayOnline({ admin: away.api }, 'site-x');
      const run = runCli(['launch', 'echo-x'], { AIRLOCK_SERVER: away.url, AIRLOCK_TOKEN: c.token, ...webrtc });
      const m = await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+) → echo-x \((\w+) path\)/);
      const payload = Buffer.from('across replicas '.repeat(1000));
      const back = await new Promise<Buffer>((resolve, reject) => {
        const s = net.connect(Number(m[1]), '127.0.0.1');
        const got: Buffer[] = [];
        s.on('data', (d) => got.push(d));
        s.on('end', () => resolve(Buffer.concat(got)));
        s.on('error', reject);
        s.end(payload);
      });
      assert.ok(back.equals(payload));
      run.proc.kill('SIGINT');
      assert.equal(await run.exited(), 0);
      const { sessions } = await home.api.get('/api/sessions');
      assert.equal(sessions[0].resource, 'echo-x');
    } finally {
      await gw?.kill();
      echo.close();
      await c.close();
    }
  });
}

test('revocations reach every replica: a user disabled on one is refused on another at once (its cached token, its stream there), and a session ended through a third replica closes where it runs', { skip }, async () => {
  const c = await newCluster({ AIRLOCK_AUTH_CACHE_MS: '600000' }); // only the bus can make a replica forget a token
  const echo = await echoServer();
  let gw: GatewayProcess | undefined;
  try {
    const [a, b, third] = [await c.start(), await c.start(), await c.start()];
    const name = `leaver-${Date.now().toString(36)}`;
    const { token } = await a.api.post('/api/users', { name });
    const onB = new ApiClient(b.url, token);
    const chat = await onB.post('/api/chats', { title: 'on b' });
    const stream = await StreamRecorder.open(onB, chat.id);
    await stream.waitFor((e) => e.type === 'caught_up');
    assert.equal((await onB.get('/api/me')).user.name, name); // verified and cached on b
    await a.api.post(`/api/users/${name}/disable`, {});
    await new Promise<void>((r) => (stream.closed ? r() : stream.ws.once('close', () => r())));
    assert.deepEqual(stream.closed, { code: 4401, reason: 'the user was disabled' });
    await assert.rejects(onB.get('/api/me'), (e: any) => e.status === 401 && /user is disabled/.test(e.message));
    await a.api.post(`/api/users/${name}/enable`, {});

    // A launch through b (the gateway on a), ended through the third replica.
    const { token: gwToken } = await a.api.post('/api/gateways', { name: 'site-r' });
    await a.api.post('/api/resources', { name: 'echo-r', kind: 'tcp', target: `127.0.0.1:${echo.port}`, gateway: 'site-r' });
    await a.api.post('/api/resources/echo-r/grants', { user: name });
    gw = new GatewayProcess(a.url, gwToken, {}, ['--relay-origin', 'http://127.0.0.1:*']);
    gw.start();
    await waitGatewayOnline({ admin: b.api }, 'site-r');
    const run = runCli(['launch', 'echo-r'], { AIRLOCK_SERVER: b.url, AIRLOCK_TOKEN: token });
    await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+) → echo-r/);
    const [s] = (await third.api.get('/api/sessions?limit=1')).sessions;
    assert.equal(s.ended_at, null);
    assert.deepEqual(await third.api.delete(`/api/sessions/${s.id}`), { ended: true });
    assert.equal(await run.exited(), 1);
    assert.match(run.stderr, /the session ended: admin ended it/);
    const [ended] = (await a.api.get('/api/sessions?limit=1')).sessions;
    assert.equal(ended.error, 'ended by admin');
  } finally {
    await gw?.kill();
    echo.close();
    await c.close();
  }
});
