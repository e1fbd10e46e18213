// Session launch for tcp resources: the airlock CLI, a gateway process and real targets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { startTestServer, waitUntil, type TestServer } from './helpers/server.js';
import { GatewayProcess, waitGatewayOnline, runCli, killChildren, echoServer, bulkServer, tempDir } from './helpers/launch.js';
import { ApiClient } from '../src/client/api.js';
import { within } from './helpers/within.js';

let t: TestServer;
let gw: GatewayProcess;
let echo: Awaited<ReturnType<typeof echoServer>>;
let env: NodeJS.ProcessEnv;

before(async () => {
  t = await startTestServer({});
  echo = await echoServer();
  const { token } = await t.admin.post('/api/gateways', { name: 'site-a' });
  gw = new GatewayProcess(t.url, token, { AIRLOCK_LOG_LEVEL: 'debug' });
  gw.start();
  await waitGatewayOnline(t, 'site-a');
  await t.admin.post('/api/resources', { name: 'echo', kind: 'tcp', target: `127.0.0.1:${echo.port}`, gateway: 'site-a' });
  env = { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: t.admin.token };
});

after(async () => {
  killChildren();
  await gw.kill();
  echo.close();
  await t.close();
});

/** Connects to a launched local port, sends `data`, returns what comes back. */
function roundTrip(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    s.on('data', (d) => got.push(d));
    s.on('end', () => resolve(Buffer.concat(got)));
    s.on('error', reject);
    s.end(data);
  });
}

async function launchPort(extraEnv: NodeJS.ProcessEnv = {}, args: string[] = []) {
  const dir = tempDir('airlock-launch-');
  const timingFile = path.join(dir, 'timing.json');
  const run = runCli(['launch', 'echo', '--timing-json', timingFile, ...args], { ...env, ...extraEnv });
  const m = await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+) → echo \((\w+) path\)/);
  return { run, port: Number(m[1]), path: m[2], timingFile };
}

async function lastSession(): Promise<any> {
  const { sessions } = await t.admin.get('/api/sessions?limit=1');
  return sessions[0];
}

test('a tcp resource: a local port forwards to the target; checkpoints; the session is audited', async () => {
  const { run, port, timingFile } = await launchPort({ AIRLOCK_CONNECT_TIMING: '1' });
  const data = crypto.randomBytes(100_000);
  assert.deepEqual(await roundTrip(port, data), data);
  const again = Buffer.from('second connection');
  assert.deepEqual(await roundTrip(port, again), again);
  // The WebRTC stack loads after the relay is on its way; on a busy machine this short session can
  // be over before it has: wait for its offer, so that its checkpoints are there to check.
  await run.waitErr(/\[airlock\] offer_sent/);
  run.proc.kill('SIGINT');
  assert.equal(await run.exited(), 0);
  const { checkpoints } = JSON.parse(fs.readFileSync(timingFile, 'utf8'));
  const names = checkpoints.map((c: any) => c.name);
  for (const n of ['ws_open', 'peer_created', 'offer_sent', 'session', 'tube_ready', 'listening', 'target_connected', 'first_byte']) assert.ok(names.includes(n), `checkpoint ${n} in ${names}`);
  for (const c of checkpoints) assert.ok(c.ms >= 0 && c.delta_ms >= 0);
  assert.match(run.stderr, /\[airlock\] ws_open/);
  // The gateway's report lands right after the client leaves.
  let s = await lastSession();
  for (let i = 0; i < 200 && !(s.ended_at && s.bytes_up >= 100_017); i++) {
    await new Promise((r) => setTimeout(r, 20));
    s = await lastSession();
  }
  assert.equal(s.resource, 'echo');
  assert.equal(s.gateway, 'site-a');
  assert.equal(s.user, 'admin');
  assert.ok(s.ended_at);
  assert.ok(['direct', 'relay'].includes(s.path));
  assert.equal(s.bytes_up, data.length + again.length);
  assert.equal(s.bytes_down, data.length + again.length);
});

test('the relay path alone (WebRTC disabled) carries the session', async () => {
  const { run, port, path: p } = await launchPort({ AIRLOCK_WEBRTC: '0' });
  assert.equal(p, 'relay');
  const data = crypto.randomBytes(300_000);
  assert.deepEqual(await roundTrip(port, data), data);
  // The audit trail shows an open session's path while it runs.
  let s = await lastSession();
  for (let i = 0; i < 200 && s.path !== 'relay'; i++) {
    await new Promise((r) => setTimeout(r, 20));
    s = await lastSession();
  }
  assert.equal(s.path, 'relay');
  assert.equal(s.ended_at, null);
  run.proc.kill('SIGINT');
  assert.equal(await run.exited(), 0);
  assert.doesNotMatch(run.stderr, /moved to the direct path/);
});

test('psql works through a tcp resource', { skip: !fs.existsSync('/usr/bin/psql') && 'psql is not installed' }, async () => {
  await t.admin.post('/api/resources', { name: 'pg', kind: 'tcp', target: '127.0.0.1:5432', gateway: 'site-a' });
  const run = runCli(['launch', 'pg'], env);
  const m = await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/);
  const out = await new Promise<string>((resolve, reject) =>
    execFile('psql', ['-h', '127.0.0.1', '-p', m[1]!, '-U', 'postgres', '-d', 'test', '-XAtc', 'select 6 * 7'], (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message} ${stderr}`)) : resolve(stdout),
    ),
  );
  assert.equal(out.trim(), '42');
  run.proc.kill('SIGINT');
  assert.equal(await run.exited(), 0);
});

/** Reads everything a launched port sends to one connection: sha256 and length. */
function drain(port: number): Promise<{ sha256: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    const s = net.connect(port, '127.0.0.1');
    s.on('data', (d) => {
      hash.update(d);
      bytes += d.length;
    });
    s.on('end', () => resolve({ sha256: hash.digest('hex'), bytes }));
    s.on('error', reject);
  });
}

for (const mode of ['direct', 'relay'] as const) {
  test(`64 MiB through the tube (${mode} path) arrive intact, with many parallel connections beside them`, async () => {
    const bulk = await bulkServer(64 << 20);
    const name = `bulk-${mode}`;
    await t.admin.post('/api/resources', { name, kind: 'tcp', target: `127.0.0.1:${bulk.port}`, gateway: 'site-a' });
    const extra = mode === 'relay' ? { AIRLOCK_WEBRTC: '0' } : {};
    try {
      // On a loaded machine WebRTC sometimes does not connect (the relay then carries the session,
      // as for a user); this test is about the direct path, so it launches again then.
      let run: ReturnType<typeof runCli> | null = null;
      let port = 0;
      for (let attempt = 1; !run; attempt++) {
        const r = runCli(['launch', name], { ...env, ...extra });
        const m = await r.waitErr(/Forwarding 127\.0\.0\.1:(\d+) → \S+ \((\w+) path\)/);
        const direct = mode === 'relay' || m[2] === 'direct' || (await within(r.waitErr(/moved to the direct path/), () => 'no direct path', 20_000).then(() => true, () => false));
        if (direct) {
          run = r;
          port = Number(m[1]);
        } else {
          r.proc.kill('SIGKILL');
          assert.ok(attempt < 3, `the direct path never came up in 3 launches; gateway log:\n${gw.log.slice(-4000)}`);
        }
      }
      const echoRun = runCli(['launch', 'echo'], { ...env, ...extra });
      const echoPort = Number((await echoRun.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
      const big = drain(port);
      // 40 echo connections at once through another tube while the 64 MiB flow.
      const payloads = Array.from({ length: 40 }, (_, i) => crypto.randomBytes(20_000 + i * 1000));
      const echoed = await within(Promise.all(payloads.map((p) => roundTrip(echoPort, p).catch((err: Error) => err))), () => 'the echo connections stalled');
      // What went wrong, when something does (seen twice in CI on the direct path, not reproduced):
      // a cut connection (a reset, with launch's word of why), bytes lost, or changed ones.
      echoed.forEach((b, i) => {
        const sent = payloads[i]!;
        if (b instanceof Error) assert.fail(`echo connection ${i} failed: ${b.message}; client:\n${echoRun.stderr.slice(-2000)}\ngateway log:\n${gw.log.slice(-3000)}`);
        if (b.equals(sent)) return;
        let at = 0;
        while (at < Math.min(b.length, sent.length) && b[at] === sent[at]) at++;
        assert.fail(`echo connection ${i} came back damaged: ${b.length} of ${sent.length} bytes, first difference at ${at}; client:\n${echoRun.stderr.slice(-2000)}\ngateway log:\n${gw.log.slice(-3000)}`);
      });
      const got = await within(big, () => `the 64 MiB transfer stalled on the ${mode} path`);
      assert.equal(got.bytes, 64 << 20);
      assert.equal(got.sha256, bulk.sha256);
      if (mode === 'relay') assert.doesNotMatch(run.stderr, /direct path/);
      run.proc.kill('SIGINT');
      echoRun.proc.kill('SIGINT');
      assert.equal(await run.exited(), 0);
      assert.equal(await echoRun.exited(), 0);
    } finally {
      bulk.close();
    }
  });
}

test('flow control: a local client that reads nothing holds the target back; when it reads, every byte arrives', async () => {
  const bulk = await bulkServer(64 << 20);
  await t.admin.post('/api/resources', { name: 'bulk-paused', kind: 'tcp', target: `127.0.0.1:${bulk.port}`, gateway: 'site-a' });
  const run = runCli(['launch', 'bulk-paused'], env);
  try {
    const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
    const s = net.connect(port, '127.0.0.1');
    s.pause();
    // Wait until the target is held back (nothing more written for a second; bounded).
    let last = -1;
    for (let still = 0, i = 0; still < 5 && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 200));
      still = bulk.written() === last ? still + 1 : 0;
      last = bulk.written();
    }
    // Without flow control the gateway would have read all 64 MiB into memory. With it, what the
    // target got out is the tube window plus the kernels' socket buffers on the way (tens of MiB at most).
    assert.ok(bulk.written() < 48 << 20, `the target wrote ${bulk.written() >> 20} MiB to a client that read nothing`);
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    const done = new Promise<void>((resolve, reject) => {
      s.on('data', (d) => {
        hash.update(d);
        bytes += d.length;
      });
      s.on('end', () => resolve());
      s.on('error', reject);
    });
    s.resume();
    await within(done, () => `the transfer stalled after the client resumed (${bytes} bytes)`);
    assert.equal(bytes, 64 << 20);
    assert.equal(hash.digest('hex'), bulk.sha256);
    run.proc.kill('SIGINT');
    assert.equal(await run.exited(), 0);
  } finally {
    bulk.close();
  }
});

/** How a TCP connection ended, seen from one side: a clean end (with the bytes read) or an error code. */
function outcome(s: net.Socket): Promise<{ end?: number; error?: string }> {
  return new Promise((resolve) => {
    let bytes = 0;
    s.on('data', (d) => (bytes += d.length));
    s.on('end', () => resolve({ end: bytes }));
    s.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
  });
}

test('a reset on one side of a connection reaches the other side as a reset, never as a clean end', async () => {
  // A cut connection must not look whole to the application (a download that looks complete). The
  // resets here come when no data is in flight: a Node (libuv) reader takes a reset that arrives
  // together with data for a clean end (EPOLLHUP after a partial read), whatever the sender did.
  const RESPONSE = 200_000;
  // A target that sends a response, then aborts its connection when the client answers.
  const cutter = net.createServer((s) => {
    s.write(crypto.randomBytes(RESPONSE));
    s.once('data', () => s.resetAndDestroy());
  });
  // A target that records how its connections end.
  const ends: Promise<{ end?: number; error?: string }>[] = [];
  const witness = net.createServer((s) => void ends.push(outcome(s)));
  await Promise.all([cutter, witness].map((srv) => new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()))));
  const portOf = (srv: net.Server) => (srv.address() as net.AddressInfo).port;
  await t.admin.post('/api/resources', { name: 'cutter', kind: 'tcp', target: `127.0.0.1:${portOf(cutter)}`, gateway: 'site-a' });
  await t.admin.post('/api/resources', { name: 'witness', kind: 'tcp', target: `127.0.0.1:${portOf(witness)}`, gateway: 'site-a' });
  try {
    // The target resets: the local application sees a reset, and launch says that the connection was cut.
    const cut = runCli(['launch', 'cutter'], env);
    const cutPort = Number((await cut.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
    const expectReset = async () => {
      const local = net.connect(cutPort, '127.0.0.1');
      let got = 0;
      local.on('data', (d) => {
        got += d.length;
        if (got === RESPONSE) local.write('x');
      });
      const how = await within(outcome(local), () => `no outcome (${got} bytes):\n${cut.stderr}`);
      assert.deepEqual(how, { error: 'ECONNRESET' }, `client:\n${cut.stderr}\ngateway log:\n${gw.log.slice(-3000)}`);
    };
    await expectReset();
    await within(cut.waitErr(/a connection to cutter was cut: read ECONNRESET/), () => `no word of the cut:\n${cut.stderr}`);
    // The session lives on: the next connection gets its bytes (and its reset) the same way.
    await expectReset();
    cut.proc.kill('SIGINT');
    assert.equal(await cut.exited(), 0);

    // The local application resets: the target sees a reset too, not a clean end.
    const w = runCli(['launch', 'witness'], env);
    const wPort = Number((await w.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
    const reached = once(witness, 'connection');
    const local = net.connect(wPort, '127.0.0.1');
    local.write('hello');
    // 'hello' has gone all the way through before the reset (a reset that comes with data can read
    // as a clean end, see above).
    const [target] = (await within(reached, () => `the target was not reached:\n${w.stderr}`)) as [net.Socket];
    await within(once(target, 'data'), () => `'hello' did not reach the target:\n${w.stderr}`);
    local.resetAndDestroy();
    assert.deepEqual(await within(ends[0]!, () => `the target's connection did not end:\n${w.stderr}\ngateway log:\n${gw.log.slice(-2000)}`), { error: 'ECONNRESET' });
    // A clean close still reads as one on the other side.
    const reachedAgain = once(witness, 'connection');
    const clean = net.connect(wPort, '127.0.0.1');
    clean.write('bye');
    const [again] = (await within(reachedAgain, () => `the target was not reached again:\n${w.stderr}`)) as [net.Socket];
    await within(once(again, 'data'), () => `'bye' did not reach the target:\n${w.stderr}`);
    clean.end();
    assert.deepEqual(await within(ends[1]!, () => 'the clean close did not arrive'), { end: 3 });
    clean.destroy();
    w.proc.kill('SIGINT');
    assert.equal(await w.exited(), 0);
  } finally {
    cutter.close();
    witness.close();
  }
});

test('CLI mistakes get a clear message and a non-zero exit', async () => {
  const cases: [string[], NodeJS.ProcessEnv, number, RegExp][] = [
    [['launch'], env, 2, /usage: airlock launch <resource>/],
    [['launch', 'echo', '--port', '99999'], env, 2, /--port must be a port number/],
    [['launch', 'echo', '--attempts', '0'], env, 2, /--attempts must be a whole number from 1 to 100/],
    [['launch', 'echo'], { ...env, AIRLOCK_WEBRTC: 'perhaps' }, 1, /AIRLOCK_WEBRTC must be 1 or 0, got "perhaps"/],
    [['launch', 'echo', '--exec', 'true'], env, 2, /--exec is for ssh and shell resources; "echo" is a tcp resource/],
    [['gateway'], {}, 2, /needs --server URL \(and its token: --token-file FILE or AIRLOCK_GATEWAY_TOKEN\)/],
    [['gateway', '--server', t.url, '--token', 'algw_not-a-real-token'], {}, 1, /refused the gateway token/],
    [['resource', 'create', 'x', '--kind', 'ssh', '--gateway', 'g', '--target', 'h', '--username', 'u', '--password-env', 'AIRLOCK_NO_SUCH_VAR'], env, 2, /AIRLOCK_NO_SUCH_VAR is empty or unset/],
    [['resource', 'create', 'y', '--kind', 'ftp', '--gateway', 'g'], env, 1, /"kind" must be one of tcp, ssh, shell/],
  ];
  for (const [args, e, code, re] of cases) {
    const run = runCli(args, e, '');
    assert.equal(await run.exited(), code, `${args.join(' ')}: ${run.stderr}`);
    assert.match(run.stderr, re, args.join(' '));
  }
  // A local port that is taken.
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  const taken = (busy.address() as net.AddressInfo).port;
  const run = runCli(['launch', 'echo', '--port', String(taken)], env, '');
  assert.equal(await run.exited(), 1);
  assert.match(run.stderr, new RegExp(`port ${taken} on 127.0.0.1 is in use`));
  busy.close();
});

test('deleting a gateway cuts it off: its connection closes, it stops (its token is refused), its open sessions are closed', async () => {
  const { token } = await t.admin.post('/api/gateways', { name: 'doomed' });
  const g = new GatewayProcess(t.url, token);
  g.start();
  try {
    await waitGatewayOnline(t, 'doomed');
    await t.admin.post('/api/resources', { name: 'echo-doomed', kind: 'tcp', target: `127.0.0.1:${echo.port}`, gateway: 'doomed' });
    const run = runCli(['launch', 'echo-doomed'], env);
    const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
    assert.deepEqual(await roundTrip(port, Buffer.from('before')), Buffer.from('before'));
    const open = await lastSession();
    assert.equal(open.ended_at, null);
    await t.admin.delete('/api/gateways/doomed');
    // The gateway learns it at once and stops, saying why.
    const code = await within(new Promise<number | null>((r) => (g.proc!.exitCode !== null ? r(g.proc!.exitCode) : g.proc!.once('exit', (c) => r(c)))), () => `the deleted gateway is still running:\n${g.log}`);
    assert.equal(code, 1);
    assert.match(g.log, /the server refused the gateway token/);
    const { sessions } = await t.admin.get('/api/sessions?limit=50');
    const closed = sessions.find((s: any) => s.id === open.id);
    assert.ok(closed.ended_at);
    assert.match(closed.error, /the gateway was deleted/);
    run.proc.kill('SIGINT');
    await run.exited();
    assert.ok(!(await t.admin.get('/api/gateways')).gateways.some((x: any) => x.name === 'doomed'));
  } finally {
    await g.kill();
  }
});

test('revoking the API token a launch was opened with ends the session at once', async () => {
  const tok = await t.admin.post('/api/tokens', { name: 'short-lived laptop' });
  const run = runCli(['launch', 'echo'], { ...env, AIRLOCK_TOKEN: tok.token });
  const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
  assert.deepEqual(await roundTrip(port, Buffer.from('still mine')), Buffer.from('still mine'));
  await t.admin.delete(`/api/tokens/${tok.id}`);
  assert.equal(await within(run.exited(), () => `launch still running after its token was revoked:\n${run.stderr}`), 1);
  assert.match(run.stderr, /the session ended: the API token was revoked/);
});

test('disabling a user ends its launch sessions at once', async () => {
  const name = `leaver-${Math.random().toString(36).slice(2, 8)}`;
  const { token } = await t.admin.post('/api/users', { name });
  await t.admin.post('/api/resources/echo/grants', { user: name });
  const run = runCli(['launch', 'echo'], { ...env, AIRLOCK_TOKEN: token });
  const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
  assert.deepEqual(await roundTrip(port, Buffer.from('last day')), Buffer.from('last day'));
  await t.admin.post(`/api/users/${name}/disable`, {});
  assert.equal(await within(run.exited(), () => `launch still running after its user was disabled:\n${run.stderr}`), 1);
  assert.match(run.stderr, /the session ended: the user was disabled/);
  // The audit trail says why it ended.
  const [s] = (await t.admin.get('/api/sessions?limit=1')).sessions;
  assert.equal(s.user, name);
  assert.equal(s.error, 'the user was disabled');
});

test('a session is ended through the API (by an admin, or by its own user with `airlock session end`): the launch stops at once, the audit trail says who', async () => {
  const name = `ender-${Math.random().toString(36).slice(2, 8)}`;
  const { token } = await t.admin.post('/api/users', { name });
  const user = new ApiClient(t.url, token);
  const other = await t.user();
  await t.admin.post('/api/resources/echo/grants', { user: name });
  const launch = async () => {
    const run = runCli(['launch', 'echo'], { ...env, AIRLOCK_TOKEN: token });
    const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
    assert.deepEqual(await roundTrip(port, Buffer.from('working')), Buffer.from('working'));
    const [s] = (await user.get('/api/sessions?limit=1')).sessions;
    assert.equal(s.ended_at, null);
    return { run, id: s.id as string };
  };
  const byAdmin = await launch();
  // The open sessions are the ones to end.
  const open = (await t.admin.get('/api/sessions?open=true')).sessions;
  assert.ok(open.some((s: any) => s.id === byAdmin.id));
  assert.ok(open.every((s: any) => s.ended_at === null));
  assert.ok((await t.admin.get('/api/sessions?open=false')).sessions.every((s: any) => s.ended_at !== null));
  const listedOpen = runCli(['session', 'list', '--open'], { ...env, AIRLOCK_TOKEN: token });
  assert.equal(await listedOpen.exited(), 0, listedOpen.stderr);
  assert.match(listedOpen.stdout, new RegExp(`^${byAdmin.id}\\s.*\\sopen\\s`, 'm'));
  // Someone else's session, or no session at all, is not found.
  await assert.rejects(other.delete(`/api/sessions/${byAdmin.id}`), (e: any) => e.status === 404);
  await assert.rejects(t.admin.delete('/api/sessions/not-a-uuid'), (e: any) => e.status === 404);
  assert.deepEqual(await t.admin.delete(`/api/sessions/${byAdmin.id}`), { ended: true });
  assert.equal(await within(byAdmin.run.exited(), () => `launch still running after its session was ended:\n${byAdmin.run.stderr}`), 1);
  assert.match(byAdmin.run.stderr, /the session ended: admin ended it/);
  const ended = (await t.admin.get('/api/sessions?limit=50')).sessions.find((s: any) => s.id === byAdmin.id);
  assert.ok(ended.ended_at);
  assert.equal(ended.error, 'ended by admin');
  await assert.rejects(t.admin.delete(`/api/sessions/${byAdmin.id}`), (e: any) => e.status === 409 && e.code === 'session_ended');
  // Its own user ends one from another terminal.
  const own = await launch();
  const cli = runCli(['session', 'end', own.id], { ...env, AIRLOCK_TOKEN: token });
  assert.equal(await cli.exited(), 0, cli.stderr);
  assert.match(cli.stdout, /Ended session/);
  assert.equal(await within(own.run.exited(), () => `launch still running after its user ended it:\n${own.run.stderr}`), 1);
  assert.match(own.run.stderr, new RegExp(`the session ended: ${name} ended it`));
  const listed = runCli(['session', 'list', '--limit', '2'], { ...env, AIRLOCK_TOKEN: token });
  assert.equal(await listed.exited(), 0, listed.stderr);
  assert.match(listed.stdout, new RegExp(`^${own.id}\\s.*error: ended by ${name}`, 'm'));
  const none = runCli(['session', 'list', '--open'], { ...env, AIRLOCK_TOKEN: token });
  assert.equal(await none.exited(), 0, none.stderr);
  assert.equal(none.stdout.trim(), 'No open sessions.');
});

test('200 connections at once through one launch: short and long, checksummed both ways; nothing leaks and nothing is warned', async () => {
  // Relay only: the descriptors are counted, and a direct path coming up midway would add its own
  // (UDP sockets, the WebRTC threads' event fds). Then with WebRTC on, the path moving under load.
  for (const webrtc of ['0', '1']) {
    const { run, port } = await launchPort({ AIRLOCK_WEBRTC: webrtc });
    const pid = run.proc.pid!;
    const fds = () => fs.readdirSync(`/proc/${pid}/fd`).length;
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
    // One connection first: what the process holds with the tube up and a connection made.
    const warm = crypto.randomBytes(1000);
    assert.deepEqual(await roundTrip(port, warm), warm);
    const fdsBefore = fds();
    const rssBefore = rss();
    const one = async (i: number) => {
      const data = crypto.randomBytes(i % 2 ? 1 << 20 : 1 + ((i * 97) % 4096));
      const back = await roundTrip(port, data);
      assert.equal(crypto.createHash('sha256').update(back).digest('hex'), crypto.createHash('sha256').update(data).digest('hex'), `connection ${i}`);
    };
    await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
    if (webrtc === '0') {
      // The connections are gone on both sides: the process is back to what it held before.
      await waitUntil(() => fds() <= fdsBefore, `the descriptors of the 200 connections closed (${fdsBefore} before)`);
      // Memory: the first round grows the heap towards its working size (100 MiB were in flight
      // at once; V8 keeps what it grew for a while). A leak of what a round moves would add ~100
      // MiB a round: two more rounds must add far less than that.
      const afterFirst = rss();
      for (let round = 2; round <= 3; round++) {
        await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
        await waitUntil(() => fds() <= fdsBefore, `the descriptors of round ${round}'s connections closed (${fdsBefore} before)`);
      }
      const grown = rss() - afterFirst;
      assert.ok(grown < 64 << 20, `RSS grew by ${Math.round(grown / 1048576)} MiB over two more rounds of 200 connections (${Math.round((afterFirst - rssBefore) / 1048576)} MiB in the first)`);
    }
    run.proc.kill('SIGINT');
    assert.equal(await run.exited(), 0);
    assert.doesNotMatch(run.stderr, /Warning|MaxListeners|\n\s+at /);
  }
  assert.doesNotMatch(gw.log, /Warning|MaxListeners/);
});
