// Revocations lost on the bus are made up for: a replica whose bus connection broke checks every
// cached token, open stream, launch session and gateway connection against the database once it
// is back. The lost messages are made real by changing the database behind the bus's back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startTestServer, StreamRecorder, PG_URL, waitUntil } from './helpers/server.js';
import { GatewayProcess, waitGatewayOnline, runCli, killChildren, echoServer } from './helpers/launch.js';
import { ApiClient } from '../src/client/api.js';
import { within } from './helpers/within.js';

const skip = PG_URL ? false : 'needs PostgreSQL (npm run test:pg)';

test('after a bus gap, a replica ends what lost revocations would have: cached tokens, streams, launch sessions, deleted gateways', { skip }, async () => {
  const cacheMs = process.env.AIRLOCK_AUTH_CACHE_MS;
  process.env.AIRLOCK_AUTH_CACHE_MS = '600000'; // only the gap check can make it forget
  const t = await startTestServer({});
  process.env.AIRLOCK_AUTH_CACHE_MS = cacheMs ?? '';
  if (cacheMs === undefined) delete process.env.AIRLOCK_AUTH_CACHE_MS;
  const echo = await echoServer();
  const gws: GatewayProcess[] = [];
  try {
    assert.equal(t.server.bus.kind, 'postgres');
    // One user whose token is revoked, one whose grant is, one gateway that is deleted.
    const { user: u1, token: tok1 } = await t.admin.post('/api/users', { name: 'gap-u1' });
    const { token: tok2 } = await t.admin.post('/api/users', { name: 'gap-u2' });
    const one = new ApiClient(t.url, tok1);
    const chat = await one.post('/api/chats', { title: 'mine' });
    const stream = await StreamRecorder.open(one, chat.id);
    await stream.waitFor((e) => e.type === 'caught_up');
    assert.equal((await one.get('/api/me')).user.name, 'gap-u1'); // cached

    const { token: gwTok } = await t.admin.post('/api/gateways', { name: 'gap-gw' });
    const { token: doomedTok } = await t.admin.post('/api/gateways', { name: 'gap-doomed' });
    for (const [tok, name] of [[gwTok, 'gap-gw'], [doomedTok, 'gap-doomed']] as const) {
      const g = new GatewayProcess(t.url, tok);
      gws.push(g);
      g.start();
      await waitGatewayOnline(t, name);
    }
    await t.admin.post('/api/resources', { name: 'gap-echo', kind: 'tcp', target: `127.0.0.1:${echo.port}`, gateway: 'gap-gw' });
    await t.admin.post('/api/resources/gap-echo/grants', { user: 'gap-u2' });
    const run = runCli(['launch', 'gap-echo'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: tok2 });
    const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
    await new Promise<void>((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => s.end('x'));
      s.on('data', () => resolve());
      s.on('error', reject);
    });

    // The changes whose bus messages this replica never gets.
    await t.db.query('DELETE FROM api_tokens WHERE user_id = $1', [u1.id]);
    await t.db.query(`DELETE FROM grants WHERE resource_id = (SELECT id FROM resources WHERE name = 'gap-echo')`);
    await t.db.query(`DELETE FROM gateways WHERE name = 'gap-doomed'`);
    assert.equal((await one.get('/api/me')).user.name, 'gap-u1', 'still cached before the gap');

    // The bus connection breaks; the replica reconnects and checks.
    const killed = await t.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [`airlock-bus ${t.server.bus.replicaId}`]);
    assert.ok(killed.length >= 1);
    await within(new Promise<void>((r) => (stream.closed ? r() : stream.ws.once('close', () => r()))), 'the revoked token\'s stream stayed open');
    // Closed for the token (4401), or first told to resync by the gap (4001): either way the
    // client's way back in is refused.
    assert.ok([4001, 4401].includes(stream.closed!.code), JSON.stringify(stream.closed));
    await assert.rejects(StreamRecorder.open(one, chat.id), (e: any) => e.status === 401);
    await assert.rejects(one.get('/api/me'), (e: any) => e.status === 401);
    assert.equal(await within(run.exited(), () => `launch still running after its grant went: ${run.stderr}`), 1);
    assert.match(run.stderr, /access to the resource was withdrawn/);
    await waitUntil(() => gws[1]!.proc!.exitCode !== null, 'the deleted gateway was cut off and stopped');
    assert.match(gws[1]!.log, /this gateway was deleted|refused the gateway token/);
  } finally {
    killChildren();
    for (const g of gws) await g.kill();
    echo.close();
    await t.close();
  }
});
