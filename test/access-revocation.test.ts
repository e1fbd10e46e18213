// Who writes the audit trail and what ends a session: a client cannot write its own audit record,
// and revoking a grant or deleting a resource ends the sessions it allowed (real server, real
// gateway process, real `airlock launch`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';
import { startTestServer, waitUntil, type TestServer } from './helpers/server.js';
import { GatewayProcess, waitGatewayOnline, runCli, killChildren, echoServer } from './helpers/launch.js';
import { within } from './helpers/within.js';
import { F, encode } from '../src/tube/frame.js';
import type { ApiClient } from '../src/client/api.js';

let t: TestServer;
let gw: GatewayProcess;
let echo: Awaited<ReturnType<typeof echoServer>>;

before(async () => {
  // One open launch session per user (each test's user has its own): the quota test below.
  t = await startTestServer({}, { settings: { userSessions: 1 } });
  echo = await echoServer();
  const { token } = await t.admin.post('/api/gateways', { name: 'gw-rev' });
  gw = new GatewayProcess(t.url, token);
  gw.start();
  await waitGatewayOnline(t, 'gw-rev');
});

after(async () => {
  killChildren();
  await gw.kill();
  echo.close();
  await t.close();
});

async function resourceFor(user: ApiClient & { name?: string }, name: string, userName: string): Promise<void> {
  await t.admin.post('/api/resources', { name, kind: 'tcp', target: `127.0.0.1:${echo.port}`, gateway: 'gw-rev' });
  await t.admin.post(`/api/resources/${name}/grants`, { user: userName });
}

function roundTrip(port: number, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('end', () => resolve(got));
    s.on('error', reject);
    s.end(data);
  });
}

async function session(id: string): Promise<any> {
  const { sessions } = await t.admin.get('/api/sessions?limit=200');
  return sessions.find((s: any) => s.id === id);
}

test("a client's bye only closes its side: forged end, path, status, error and byte counts never reach the audit trail", async () => {
  const alice = await t.user('bye-alice');
  await resourceFor(alice, 'bye-echo', 'bye-alice');
  const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/api/launch?resource=bye-echo`, { headers: { authorization: `Bearer ${alice.token}` } });
  let id = '';
  const echoed: Buffer[] = [];
  const relay = new Promise<void>((resolve) =>
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        const b = data as Buffer;
        if (b[0] === F.DATA) echoed.push(b.subarray(5));
        return;
      }
      const msg = JSON.parse(data.toString());
      if (msg.type === 'session') id = msg.session;
      if (msg.type === 'relay_ready') resolve();
    }),
  );
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  await within(relay, 'the relay never came up');
  ws.send(encode(F.START, 0));
  ws.send(encode(F.OPEN, 1, '{}'));
  ws.send(encode(F.DATA, 1, 'before the bye'));
  await waitUntil(() => Buffer.concat(echoed).toString() === 'before the bye', 'the echo before the bye');
  ws.send(JSON.stringify({ type: 'bye', path: 'direct', bytes_up: 1, bytes_down: 2, exit_status: 0, error: 'nothing to see here' }));
  ws.send(encode(F.DATA, 1, ' and after'));
  // The server closes the client's socket: nothing flows after a bye.
  assert.equal(await within(closed, 'the launch socket stayed open after the bye'), 1000);
  let s: any;
  await waitUntil(async () => (s = await session(id)) && s.ended_at && s.bytes_up > 0, 'the gateway reported the end');
  assert.equal(s.path, 'relay');
  assert.equal(s.exit_status, null);
  assert.notEqual(s.error, 'nothing to see here');
  assert.equal(s.bytes_up, 'before the bye'.length);
  assert.equal(Buffer.concat(echoed).toString(), 'before the bye');
});

test('ending a session through the API reaches the replica that holds it even when its row already reads as ended', async () => {
  const bob = await t.user('rowend-bob');
  await resourceFor(bob, 'rowend-echo', 'rowend-bob');
  const run = runCli(['launch', 'rowend-echo'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: bob.token });
  const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
  assert.equal(await roundTrip(port, 'hello'), 'hello');
  const [s] = (await bob.get('/api/sessions?limit=1')).sessions;
  // Whatever wrote it (a bug, a hand in the database), the row says ended while the launch runs.
  await t.db.query("UPDATE launch_sessions SET ended_at = now(), error = 'stale' WHERE id = $1", [s.id]);
  await assert.rejects(t.admin.delete(`/api/sessions/${s.id}`), (e: any) => e.status === 409 && e.code === 'session_ended');
  assert.equal(await within(run.exited(), () => `launch still running after it was ended:\n${run.stderr}`), 1);
  assert.match(run.stderr, /the session ended: admin ended it/);
});

test('revoking a grant ends the open sessions it allowed, at once, saying why; other users keep theirs', async () => {
  const carol = await t.user('grant-carol');
  const dave = await t.user('grant-dave');
  await resourceFor(carol, 'grant-echo', 'grant-carol');
  await t.admin.post('/api/resources/grant-echo/grants', { user: 'grant-dave' });
  const mine = runCli(['launch', 'grant-echo'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: carol.token });
  const theirs = runCli(['launch', 'grant-echo'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: dave.token });
  const port = Number((await mine.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
  const port2 = Number((await theirs.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
  assert.equal(await roundTrip(port, 'granted'), 'granted');
  const [s] = (await carol.get('/api/sessions?limit=1')).sessions;
  await t.admin.delete('/api/resources/grant-echo/grants/grant-carol');
  assert.equal(await within(mine.exited(), () => `launch still running after its grant was revoked:\n${mine.stderr}`), 1);
  assert.match(mine.stderr, /the session ended: the grant of "grant-echo" to grant-carol was revoked/);
  assert.match((await session(s.id)).error, /grant of "grant-echo" to grant-carol was revoked/);
  assert.equal(await roundTrip(port2, 'still granted'), 'still granted');
  theirs.proc.kill('SIGINT');
  assert.equal(await theirs.exited(), 0);
});

test('deleting a resource ends its open sessions, at once, saying why', async () => {
  const erin = await t.user('del-erin');
  await resourceFor(erin, 'del-echo', 'del-erin');
  const run = runCli(['launch', 'del-echo'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: erin.token });
  const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
  assert.equal(await roundTrip(port, 'exists'), 'exists');
  const [s] = (await erin.get('/api/sessions?limit=1')).sessions;
  await t.admin.delete('/api/resources/del-echo');
  assert.equal(await within(run.exited(), () => `launch still running after its resource was deleted:\n${run.stderr}`), 1);
  assert.match(run.stderr, /the session ended: the resource "del-echo" was deleted/);
  assert.match((await session(s.id)).error, /the resource "del-echo" was deleted/);
});

test("a user's open launch sessions are capped: the next launch is refused with 429 and says how to end one; other users are not affected", async () => {
  {
    const fay = await t.user('quota-fay');
    await resourceFor(fay, 'quota-echo', 'quota-fay');
    const first = runCli(['launch', 'quota-echo'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: fay.token });
    await first.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/);
    const second = runCli(['launch', 'quota-echo'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: fay.token });
    assert.equal(await second.exited(), 1);
    assert.match(second.stderr, /you have 1 launch sessions open \(the limit per user\); end one first \(airlock session list --open\)/);
    // Someone else still gets in.
    const gus = await t.user('quota-gus');
    await t.admin.post('/api/resources/quota-echo/grants', { user: 'quota-gus' });
    const theirs = runCli(['launch', 'quota-echo'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: gus.token });
    await theirs.waitErr(/Forwarding/);
    for (const r of [first, theirs]) {
      r.proc.kill('SIGINT');
      assert.equal(await r.exited(), 0);
    }
  }
});

test('a reason longer than a WebSocket close frame holds still reaches the client whole (the close carries a shortened one)', async () => {
  const res = `long-${'r'.repeat(59)}`;
  const who = `long-${'u'.repeat(40)}`;
  const u = await t.user(who);
  await resourceFor(u, res, who);
  const run = runCli(['launch', res], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: u.token });
  await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/);
  await t.admin.delete(`/api/resources/${res}/grants/${who}`);
  assert.equal(await within(run.exited(), () => `launch still running: ${run.stderr}`), 1);
  assert.match(run.stderr, new RegExp(`the session ended: the grant of "${res}" to ${who} was revoked`));
});
