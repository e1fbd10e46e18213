// Operator-facing surface: /healthz, /readyz, /metrics (auth), request ids, TLS, and the server's
// option mistakes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { startTestServer, waitUntil } from './helpers/server.js';
import { runCli, killChildren, GatewayProcess, waitGatewayOnline, freePort } from './helpers/launch.js';
import { ApiClient } from '../src/client/api.js';

after(() => killChildren());

test('/healthz and /readyz need no token; /metrics is for admins; every response carries a request id', async () => {
  const t = await startTestServer({});
  try {
    const h = await fetch(`${t.url}/healthz`);
    assert.equal(h.status, 200);
    const r = await fetch(`${t.url}/readyz`);
    assert.equal(r.status, 200);
    const ready = await r.json();
    // Readiness only: nothing that names this replica or its bus to an anonymous caller.
    assert.deepEqual(ready, { ready: true });
    const anon = await fetch(`${t.url}/metrics`);
    assert.equal(anon.status, 401);
    assert.equal((await anon.json()).error.code, 'unauthorized');
    const user = await t.user();
    const forbidden = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${user.token}` } });
    assert.equal(forbidden.status, 403);
    const m = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${t.admin.token}`, 'x-request-id': 'trace-42' } });
    assert.equal(m.status, 200);
    assert.equal(m.headers.get('x-request-id'), 'trace-42');
    const text = await m.text();
    for (const name of ['airlock_chat_acquisition_ms', 'airlock_chat_tokens_streamed_total', 'airlock_chat_active_streams', 'airlock_launch_phase_ms', 'airlock_bus_lag_ms']) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'));
    }
    const me = await fetch(`${t.url}/api/me`, { headers: { authorization: `Bearer ${t.admin.token}` } });
    assert.match(me.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
  } finally {
    await t.close();
  }
});

test('airlock server --tls-cert/--tls-key serves HTTPS; option mistakes exit non-zero with a clear message', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-tls-'));
  try {
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-subj', '/CN=localhost', '-days', '1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const env = { AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json') };
    const srv = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'data'), '--tls-cert', cert, '--tls-key', key], env);
    const [, url] = await srv.waitErr(/listening on (https:\/\/\S+)/);
    const body = await new Promise<string>((resolve, reject) => {
      https
        .get(`${url}/healthz`, { ca: fs.readFileSync(cert) }, (res) => {
          let b = '';
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve(b));
        })
        .on('error', reject);
    });
    assert.deepEqual(JSON.parse(body), { ok: true });
    // The CLI's WebSocket client over TLS: a gateway dials in over wss://.
    const tlsEnv = { ...env, NODE_EXTRA_CA_CERTS: cert };
    const created = runCli(['gateway', 'create', 'tls-site', '--json'], tlsEnv);
    assert.equal(await created.exited(), 0, created.stderr);
    const gw = runCli(['gateway', '--server', url!, '--token', JSON.parse(created.stdout).token], { ...tlsEnv, AIRLOCK_LOG_LEVEL: 'info' });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the gateway did not connect over wss: ${gw.stdout}${gw.stderr}`)), 60_000);
      const check = () => /gateway connected/.test(gw.stdout + gw.stderr) && (clearTimeout(timer), resolve());
      gw.proc.stdout!.on('data', check);
      gw.proc.stderr!.on('data', check);
    });
    gw.proc.kill('SIGTERM');
    await gw.exited();
    srv.proc.kill('SIGTERM');
    assert.equal(await srv.exited(), 0);

    const onlyCert = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd2'), '--tls-cert', cert], env);
    assert.equal(await onlyCert.exited(), 2);
    assert.match(onlyCert.stderr, /TLS needs both --tls-cert and --tls-key/);
    const missing = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd3'), '--tls-cert', cert, '--tls-key', path.join(dir, 'nope.pem')], env);
    assert.equal(await missing.exited(), 1);
    assert.match(missing.stderr, /cannot read the TLS certificate or key/);
    const notPem = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd6'), '--tls-cert', key, '--tls-key', key], env);
    assert.equal(await notPem.exited(), 1);
    assert.match(notPem.stderr, /invalid TLS certificate or key/);
    const badPublic = runCli(['server', '--public-url', 'gateway.example'], env);
    assert.equal(await badPublic.exited(), 2);
    assert.match(badPublic.stderr, /--public-url must be an http:\/\/ or https:\/\/ URL/);
    const noNats = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd7'), '--bus', 'nats://127.0.0.1:1'], env);
    assert.equal(await noNats.exited(), 1);
    assert.match(noNats.stderr, /cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);
    // PostgreSQL that cannot be reached: its client thread's error, the password left out.
    const noPg = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd8'), '--database-url', 'postgres://airlock:hunter2@127.0.0.1:1/airlock'], env);
    assert.equal(await noPg.exited(), 1);
    assert.match(noPg.stderr, /cannot open the database at postgres:\/\/airlock:\*+@127\.0\.0\.1:1\/airlock: connect ECONNREFUSED/);
    assert.doesNotMatch(noPg.stderr, /hunter2/);
    const badThread = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd9')], { ...env, AIRLOCK_LLM_TIMEOUT_MS: 'yes' });
    assert.equal(await badThread.exited(), 1);
    assert.match(badThread.stderr, /AIRLOCK_LLM_TIMEOUT_MS must be a non-negative number, got "yes"/);
    const badBus = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd4'), '--bus', 'carrier-pigeon'], env);
    assert.equal(await badBus.exited(), 1);
    assert.match(badBus.stderr, /AIRLOCK_BUS must be local, postgres or a NATS URL/);
    const pgBusOnLite = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd5'), '--bus', 'postgres'], env);
    assert.equal(await pgBusOnLite.exited(), 1);
    assert.match(pgBusOnLite.stderr, /needs a PostgreSQL database/);
    const badSwitch = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'd10')], { ...env, AIRLOCK_WEBRTC: 'maybe' });
    assert.equal(await badSwitch.exited(), 1);
    assert.match(badSwitch.stderr, /AIRLOCK_WEBRTC must be 1 or 0, got "maybe"/);
    // Setting mistakes are found before the database opens: no data folder is made for them.
    for (const d of ['d4', 'd5', 'd9', 'd10']) assert.equal(fs.existsSync(path.join(dir, d)), false, d);
    const badLease = runCli(['server', '--lease-ms', '10'], env);
    assert.equal(await badLease.exited(), 2);
    assert.match(badLease.stderr, /--lease-ms must be a whole number of at least 500, got "10"/);
    const badConc = runCli(['server', '--concurrency', '-1'], env);
    assert.equal(await badConc.exited(), 2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a shutdown that cannot finish in its grace (--shutdown-grace-ms) exits 1 and says where it was stuck', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-stuck-'));
  const env = { AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json'), AIRLOCK_DRAIN_MS: '0' };
  const srv = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'data'), '--shutdown-grace-ms', '300'], env);
  let s: net.Socket | undefined;
  try {
    const [, url] = await srv.waitErr(/listening on (http:\/\/\S+)/);
    const token = (await srv.waitErr(/^\s+(al_\S+)$/m))[1]!;
    const chat = await (await fetch(`${url}/api/chats`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' })).json();
    // A stream client that upgrades and then reads nothing, so it never answers the server's close:
    // closing the listener waits for it (the WebSocket close timeout is 30 s).
    const { port } = new URL(url);
    s = net.connect(Number(port), '127.0.0.1');
    s.write(
      `GET /api/chats/${chat.id}/stream?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    );
    const [head] = await once(s, 'data');
    assert.match(String(head), /^HTTP\/1\.1 101/);
    s.pause();
    srv.proc.kill('SIGTERM');
    assert.equal(await srv.exited(), 1);
    assert.match(srv.stderr, /shutdown did not finish in 300 ms \(stuck draining and closing the server\); exiting/);
  } finally {
    s?.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});


test('sessions are closed in the audit trail when their gateway could not report it: reports wait for the server, a restarted gateway is asked what it still has', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-restart-'));
  const dataDir = path.join(dir, 'data');
  const env = { AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json') };
  const target = net.createServer((s) => s.on('error', () => {}).pipe(s)); // echoes
  target.listen(0, '127.0.0.1');
  await once(target, 'listening');
  const port = await freePort(); // the same address every time: the gateway dials it back
  let adminToken = '';
  const start = async () => {
    const srv = runCli(['server', '--port', String(port), '--data-dir', dataDir], env);
    const [, url] = await srv.waitErr(/listening on (http:\/\/\S+)/);
    // The first start prints the admin's token (its file may exist before it is written).
    adminToken ||= (await srv.waitErr(/^\s+(al_\S+)$/m))[1]!;
    return { srv, url: url!, admin: new ApiClient(url!, adminToken, 10_000) };
  };
  const gateways: GatewayProcess[] = [];
  const servers: Awaited<ReturnType<typeof start>>[] = [];
  // 90 s: a client killed while its tube is on the direct path says nothing; the gateway learns it
  // only when WebRTC's liveness checks give up on the peer, about 30 s later (more on a slow host).
  const until = (what: string, cond: () => Promise<boolean>) =>
    waitUntil(cond, what, 90_000).catch((err) => {
      throw new Error(`${err.message}; gateway log:\n${gateways.map((g) => g.log).join('\n')}`);
    });
  const session = async (api: ApiClient) => (await api.get('/api/sessions?limit=1')).sessions[0];
  // A launch that has carried bytes both ways, so its tube is up at both ends (a session that
  // carried nothing may end before the gateway's side had a path, and is then reported without one).
  const launch = async (api: ApiClient, url: string) => {
    const run = runCli(['launch', 'svc'], { ...env, AIRLOCK_SERVER: url, AIRLOCK_TOKEN: api.token });
    const [, local] = await run.waitErr(/Forwarding (\S+:\d+)/);
    const [host, lport] = local!.split(/:(?=\d+$)/);
    const c = net.connect(Number(lport), host);
    c.on('error', () => {});
    c.write('ping');
    await once(c, 'data');
    return run;
  };
  try {
    const first = await start();
    servers.push(first);
    const { token } = await first.admin.post('/api/gateways', { name: 'site' });
    await first.admin.post('/api/resources', { name: 'svc', kind: 'tcp', target: `127.0.0.1:${(target.address() as net.AddressInfo).port}`, gateway: 'site' });
    gateways.push(new GatewayProcess(first.url, token));
    gateways[0]!.start();
    await waitGatewayOnline(first, 'site');

    // 1. The server and the client die; the gateway lives on, sees the session end while the
    // server is away, and reports it once it is back.
    const a = await launch(first.admin, first.url);
    const s1 = await session(first.admin);
    first.srv.proc.kill('SIGKILL');
    a.proc.kill('SIGKILL');
    await Promise.all([first.srv.exited(), a.exited()]);
    const second = await start();
    servers.push(second);
    // A restarted server lists no gateway as online until it connects again.
    assert.deepEqual((await second.admin.get('/api/gateways')).gateways.map((g: any) => g.online), [false]);
    await waitGatewayOnline(second, 'site');
    await until('the report of the session that ended meanwhile', async () => Boolean((await session(second.admin)).ended_at));
    const r1 = await session(second.admin);
    assert.equal(r1.id, s1.id);
    assert.ok(['relay', 'direct'].includes(r1.path), `path ${r1.path}`);
    assert.ok(r1.bytes_up >= 4 && r1.bytes_down >= 4, `bytes ${r1.bytes_up}/${r1.bytes_down}`);
    assert.doesNotMatch(String(r1.error), /no longer had/);

    // 2. Everything dies; a new gateway process (same token) has no sessions: the server closes
    // the one left open when it connects.
    const b = await launch(second.admin, second.url);
    const s2 = await session(second.admin);
    second.srv.proc.kill('SIGKILL');
    b.proc.kill('SIGKILL');
    await gateways[0]!.kill();
    await Promise.all([second.srv.exited(), b.exited()]);
    const third = await start();
    servers.push(third);
    assert.equal((await session(third.admin)).ended_at, null, 'open until its gateway says otherwise');
    gateways.push(new GatewayProcess(third.url, token));
    gateways[1]!.start();
    await waitGatewayOnline(third, 'site');
    await until('the lost session to be closed', async () => Boolean((await session(third.admin)).ended_at));
    const r2 = await session(third.admin);
    assert.equal(r2.id, s2.id);
    assert.match(r2.error, /the gateway no longer had the session/);
    third.srv.proc.kill('SIGTERM');
    assert.equal(await third.srv.exited(), 0);
  } finally {
    for (const g of gateways) await g.kill();
    for (const { srv } of servers) if (srv.proc.exitCode === null && srv.proc.signalCode === null) (srv.proc.kill('SIGKILL'), await srv.exited());
    target.close();
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
  }
});
