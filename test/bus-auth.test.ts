// The replica bus is not trusted: NATS with the credentials and TLS its operators use (private
// nats-server processes started here), and every message signed with the replicas' key, so that
// whoever reaches the bus can neither read a forged message into a replica nor replay a real one.
// The attack from the security review (a forged `open` that sent a gateway, with its token, to a
// relay of the attacker's choosing) is run against a real server and gateway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, nkeys } from '@nats-io/transport-node';
import { WebSocketServer } from 'ws';
import { NatsBus } from '../src/bus/nats.js';
import { BUS_KEY_PURPOSE } from '../src/server/app.js';
import { metrics } from '../src/metrics.js';
import { silentLogger } from '../src/log.js';
import { startTestServer, testSecrets, waitUntil } from './helpers/server.js';
import { GatewayProcess, waitGatewayOnline, runCli, killChildren, tempDir, freePort } from './helpers/launch.js';
import { GatewayDaemon } from '../src/gateway/daemon.js';

const haveNats = fs.existsSync('/usr/sbin/nats-server') || fs.existsSync('/usr/bin/nats-server');
const skip = haveNats ? false : 'needs nats-server (Debian package nats-server)';
const NATS_BIN = fs.existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server';

let dir: string;
let cert: string;
let keyFile: string;
const servers: ChildProcess[] = [];

before(() => {
  dir = tempDir('airlock-nats-');
  cert = path.join(dir, 'cert.pem');
  keyFile = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', cert, '-subj', '/CN=localhost', '-days', '1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
});

after(() => {
  killChildren();
  for (const s of servers) s.kill('SIGKILL');
});

/** A private nats-server on a free port; resolves once it accepts connections. */
async function natsServer(args: string[]): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn(NATS_BIN, ['-a', '127.0.0.1', '-p', String(port), ...args], { stdio: 'ignore' });
  servers.push(proc);
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (up) break;
    if (i > 200 || proc.exitCode !== null) throw new Error(`nats-server ${args.join(' ')} did not start`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return { port, proc };
}

const KEY = crypto.randomBytes(32);
const mac = (key: Buffer, json: string) => crypto.createHmac('sha256', key).update(json).digest('base64url');

/** Two buses (two replicas) on one NATS URL; b records what reaches its 'wake' subscribers. */
async function pair(url: string, ns = `t${crypto.randomBytes(4).toString('hex')}`) {
  const a = await NatsBus.open(url, ns, silentLogger(), KEY);
  const b = await NatsBus.open(url, ns, silentLogger(), KEY);
  const got: unknown[] = [];
  b.subscribe('wake', (m) => got.push(m));
  return { a, b, got, subject: `airlock.bus.${ns}`, close: async () => (await a.close(), await b.close()) };
}

test('NATS with user and password over TLS: replicas configured so talk; a wrong password, plain text or a missing file fail clearly, with no secret in the message', { skip }, async () => {
  const { port } = await natsServer(['--user', 'airlock', '--pass', 's3cret-pw', '--tls', '--tlscert', cert, '--tlskey', keyFile]);
  const good = `tls://airlock:s3cret-pw@127.0.0.1:${port}?ca=${encodeURIComponent(cert)}`;
  const p = await pair(good);
  try {
    p.a.publish('wake', { chat_id: 'one' });
    await waitUntil(() => p.got.length === 1, 'the message over TLS');
    assert.deepEqual(p.got, [{ chat_id: 'one' }]);
  } finally {
    await p.close();
  }
  const dataDir = path.join(dir, 'cli-data');
  const cases: [string, RegExp][] = [
    [`tls://airlock:wrong@127.0.0.1:${port}?ca=${cert}`, /cannot connect to NATS at tls:\/\/127\.0\.0\.1:\d+: .*(Authorization|authorization)/],
    [`nats://airlock:s3cret-pw@127.0.0.1:${port}`, /cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+/],
    [`tls://airlock:s3cret-pw@127.0.0.1:${port}?ca=/nonexistent/ca.pem`, /cannot read the ca file \/nonexistent\/ca\.pem/],
    [`tls://127.0.0.1:${port}?cert=${cert}`, /a TLS client certificate needs both cert= and key=/],
    [`nats://127.0.0.1:${port}?password=x`, /unknown NATS option "password"/],
  ];
  for (const [bus, re] of cases) {
    const run = runCli(['server', '--port', '0', '--data-dir', dataDir, '--bus', bus], { AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json') });
    assert.equal(await run.exited(), 1, `${bus}: ${run.stderr}`);
    assert.match(run.stderr, re, bus);
    assert.doesNotMatch(run.stderr, /s3cret-pw|wrong@|\n\s+at /, bus);
  }
});

test('NATS with a token, and with an nkey seed file', { skip }, async () => {
  const tok = await natsServer(['--auth', 'tok-123456']);
  const t = await pair(`nats://tok-123456@127.0.0.1:${tok.port}`);
  try {
    t.a.publish('wake', { chat_id: 'via token' });
    await waitUntil(() => t.got.length === 1, 'the message with a token');
  } finally {
    await t.close();
  }
  await assert.rejects(NatsBus.open(`nats://not-the-token@127.0.0.1:${tok.port}`, 'x', silentLogger(), KEY));

  const user = nkeys.createUser();
  const conf = path.join(dir, 'nkey.conf');
  fs.writeFileSync(conf, `authorization: { users: [ { nkey: "${user.getPublicKey()}" } ] }\n`);
  const seedFile = path.join(dir, 'user.nk');
  fs.writeFileSync(seedFile, new TextDecoder().decode(user.getSeed()), { mode: 0o600 });
  const nk = await natsServer(['-c', conf]);
  const n = await pair(`nats://127.0.0.1:${nk.port}?nkey=${encodeURIComponent(seedFile)}`);
  try {
    n.a.publish('wake', { chat_id: 'via nkey' });
    await waitUntil(() => n.got.length === 1, 'the message with an nkey');
  } finally {
    await n.close();
  }
  await assert.rejects(NatsBus.open(`nats://127.0.0.1:${nk.port}`, 'x', silentLogger(), KEY));
});

test('a message not signed with the replicas\' key, sent again, or too old is dropped and counted; real ones go on', { skip }, async () => {
  const { port } = await natsServer([]);
  const url = `nats://127.0.0.1:${port}`;
  const p = await pair(url);
  // Someone else on the bus: reads what replicas send, publishes what it likes.
  const spy = await connect({ servers: `127.0.0.1:${port}` });
  const captured: Uint8Array[] = [];
  spy.subscribe(p.subject, {
    callback: (_e, m) => {
      captured.push(m.data);
    },
  });
  await spy.flush();
  const rejected = async (reason: string) => ((await metrics.busRejected.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0);
  try {
    p.a.publish('wake', { chat_id: 'real' });
    await waitUntil(() => p.got.length === 1 && captured.length === 1, 'the real message');
    const [bad, replay, stale] = [await rejected('bad_mac'), await rejected('replay'), await rejected('stale')];
    // The same bytes again: a replay.
    spy.publish(p.subject, captured[0]!);
    // Unsigned, as a forger without the key writes it; signed with another key; signed but old.
    const forged = (n: number, ts = Date.now()) => JSON.stringify({ o: 'r-attacker', n, ts, b: [['wake', { chat_id: 'forged' }]] });
    spy.publish(p.subject, forged(1));
    spy.publish(p.subject, `${forged(2)}\n${mac(crypto.randomBytes(32), forged(2))}`);
    const old = forged(3, Date.now() - 3600_000);
    spy.publish(p.subject, `${old}\n${mac(KEY, old)}`);
    await spy.flush();
    // Both replicas hear the forgeries (and count them); only b hears a's message again.
    await waitUntil(async () => (await rejected('replay')) === replay + 1 && (await rejected('bad_mac')) === bad + 4 && (await rejected('stale')) === stale + 2, 'the rejections');
    // What a replica sends next still arrives, once.
    p.a.publish('wake', { chat_id: 'after' });
    await waitUntil(() => p.got.length === 2, 'the next real message');
    assert.deepEqual(p.got, [{ chat_id: 'real' }, { chat_id: 'after' }]);
  } finally {
    await spy.close();
    await p.close();
  }
});

test('the review\'s attack: a forged `open` on the bus makes no gateway dial the attacker, and even a replica\'s own message cannot choose the relay URL', { skip }, async () => {
  const { port } = await natsServer([]);
  const secrets = testSecrets();
  const bus = await NatsBus.open(`nats://127.0.0.1:${port}`, 'public', silentLogger(), secrets.deriveKey(BUS_KEY_PURPOSE));
  const t = await startTestServer({}, { bus, secrets });
  // The attacker's relay: it would receive the gateway's token and a shell.
  const attacker = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(attacker, 'listening');
  const dialled: string[] = [];
  attacker.on('connection', (_ws, req) => dialled.push(String(req.headers.authorization)));
  const gwProc: GatewayProcess[] = [];
  let spy: Awaited<ReturnType<typeof connect>> | undefined;
  let insider: NatsBus | undefined;
  try {
    const { gateway, token } = await t.admin.post('/api/gateways', { name: 'target-gw' });
    await t.admin.post('/api/resources', { name: 'target-sh', kind: 'shell', gateway: 'target-gw' });
    const g = new GatewayProcess(t.url, token);
    gwProc.push(g);
    g.start();
    await waitGatewayOnline(t, 'target-gw');
    const replica = bus.replicaId;
    const open = (from: string) => ({
      to: replica,
      kind: 'open',
      session: crypto.randomUUID(),
      from,
      gateway_id: gateway.id,
      user: 'mallory',
      resource: { name: 'target-sh', kind: 'shell', target: '' },
      resource_id: crypto.randomUUID(),
      credential_enc: null,
      relay_url: `ws://127.0.0.1:${(attacker.address() as net.AddressInfo).port}`,
    });
    // 1. From outside: unsigned.
    spy = await connect({ servers: `127.0.0.1:${port}` });
    const body = JSON.stringify({ o: 'r-attacker', n: 1, ts: Date.now(), b: [['signal', open('r-attacker')]] });
    spy.publish('airlock.bus.public', body);
    // 2. From a replica with the key (an insider, or a bug): the relay URL in the message is not
    // used; a replica that never registered gets nothing.
    insider = await NatsBus.open(`nats://127.0.0.1:${port}`, 'public', silentLogger(), secrets.deriveKey(BUS_KEY_PURPOSE));
    insider.publish('signal', open(insider.replicaId) as never);
    await spy.flush();
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(dialled, [], 'the gateway dialled the attacker');
    assert.doesNotMatch(g.log, /session/i);
    const { sessions } = await t.admin.get('/api/sessions');
    assert.equal(sessions.length, 0);
  } finally {
    await spy?.close();
    await insider?.close();
    for (const g of gwProc) await g.kill();
    attacker.close();
    await t.close();
    await bus.close();
  }
});

test('a gateway opens relay sockets only to its server\'s origin or a --relay-origin, whatever the server says', async () => {
  // A control plane that tells the gateway to relay elsewhere (a compromised or confused server).
  const control = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(control, 'listening');
  const attacker = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(attacker, 'listening');
  const dialled: string[] = [];
  attacker.on('connection', (_ws, req) => dialled.push(req.url ?? ''));
  const attackerUrl = `ws://127.0.0.1:${(attacker.address() as net.AddressInfo).port}`;
  const reports: any[] = [];
  control.on('connection', (ws) => {
    ws.on('message', (d) => reports.push(JSON.parse(d.toString())));
    ws.send(JSON.stringify({ type: 'welcome', gateway: 'gw' }));
    ws.send(JSON.stringify({ type: 'session', session: crypto.randomUUID(), user: 'u', resource: { name: 'r', kind: 'tcp', target: '127.0.0.1:9' }, credential: null, relay_url: attackerUrl }));
  });
  const server = `http://127.0.0.1:${(control.address() as net.AddressInfo).port}`;
  const gw = new GatewayDaemon({ server, token: 'algw_test', log: silentLogger(), shellAs: null, direct: null });
  gw.start();
  try {
    await waitUntil(() => reports.some((r) => r.type === 'ended'), 'the gateway refused the session');
    const ended = reports.find((r) => r.type === 'ended');
    assert.match(ended.error, /does not dial relay URL .* \(not its --server origin nor a --relay-origin\)/);
    assert.deepEqual(dialled, []);
  } finally {
    gw.stop();
  }
  // Told of that origin (a pattern), it does.
  const allowed = new GatewayDaemon({ server, token: 'algw_test', log: silentLogger(), shellAs: null, direct: null, relayOrigins: ['http://127.0.0.1:*'] });
  reports.length = 0;
  allowed.start();
  try {
    await waitUntil(() => dialled.length === 1, 'the relay to an allowed origin');
    assert.match(dialled[0]!, /^\/api\/gateway\/relay\//);
  } finally {
    allowed.stop();
    control.close();
    attacker.close();
  }
});

test('a server whose NATS server went away shuts down at once (its client no longer reconnects forever)', { skip }, async () => {
  const nats = await natsServer([]);
  const data = tempDir('airlock-natsdown-');
  const srv = runCli(['server', '--port', '0', '--data-dir', data, '--bus', `nats://127.0.0.1:${nats.port}`], { AIRLOCK_CLI_CONFIG: path.join(data, 'cli.json') });
  await srv.waitErr(/listening on/);
  nats.proc.kill('SIGKILL');
  await srv.waitErr(/lost the NATS connection|bus:/).catch(() => undefined);
  const started = Date.now();
  srv.proc.kill('SIGTERM');
  assert.equal(await srv.exited(), 0, srv.stderr);
  assert.ok(Date.now() - started < 8000, `shutdown took ${Date.now() - started} ms`);
});
