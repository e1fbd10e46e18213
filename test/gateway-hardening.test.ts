// The gateway's own trust boundary, against a real server and real gateway processes: shells run
// only when allowed and only as another, unprivileged account with a clean environment; the token
// stays off the command line; a second connection with a live gateway's token is refused; a
// gateway that stops answering goes offline within seconds and one that loses the server
// reconnects by itself.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import WebSocket from 'ws';
import { startTestServer, waitUntil, type TestServer } from './helpers/server.js';
import { GatewayProcess, waitGatewayOnline, runCli, killChildren, echoServer, noShellUser, shellGatewayArgs, testShellUser, tempDir } from './helpers/launch.js';
import { within } from './helpers/within.js';

let t: TestServer;
let echo: Awaited<ReturnType<typeof echoServer>>;
let env: NodeJS.ProcessEnv;
const gateways: GatewayProcess[] = [];

before(async () => {
  t = await startTestServer({});
  echo = await echoServer();
  env = { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: t.admin.token, AIRLOCK_WEBRTC: '0' };
});

after(async () => {
  killChildren();
  for (const g of gateways) await g.kill();
  echo.close();
  await t.close();
});

/** A registered gateway process of its own group, with one tcp (echo) and one shell resource. */
async function gateway(name: string, args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}, url = t.url): Promise<{ gw: GatewayProcess; token: string }> {
  const { token } = await t.admin.post('/api/gateways', { name });
  await t.admin.post('/api/resources', { name: `${name}-echo`, kind: 'tcp', target: `127.0.0.1:${echo.port}`, gateway: name });
  await t.admin.post('/api/resources', { name: `${name}-sh`, kind: 'shell', gateway: name });
  const gw = new GatewayProcess(url, token, extraEnv, args);
  gateways.push(gw);
  gw.start();
  await waitGatewayOnline(t, name);
  return { gw, token };
}

async function echoes(resource: string): Promise<void> {
  const run = runCli(['launch', resource], env);
  const port = Number((await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/))[1]);
  const got = await new Promise<string>((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let d = '';
    s.on('data', (c) => (d += c));
    s.on('end', () => resolve(d));
    s.on('error', reject);
    s.end('ping');
  });
  assert.equal(got, 'ping');
  run.proc.kill('SIGINT');
  assert.equal(await run.exited(), 0);
}

test('a gateway started without --allow-shell refuses shell resources with a clear message', async () => {
  await gateway('noshell');
  const run = runCli(['launch', 'noshell-sh', '--exec', 'id'], env, '');
  assert.equal(await run.exited(), 5);
  assert.match(run.stderr, /this gateway does not serve shell resources \(its operator can start it with --allow-shell --shell-user USER\)/);
  assert.equal(run.stdout, '');
  await echoes('noshell-echo'); // its other resources work
});

test('shell options the gateway cannot use safely stop it at start with a clear message', async () => {
  const cases: [string[], RegExp][] = [
    [['--allow-shell'], /--allow-shell needs --shell-user USER/],
    [['--shell-user', 'nobody'], /--shell-user goes with --allow-shell/],
    [['--allow-shell', '--shell-user', 'no-such-account-here'], /there is no user "no-such-account-here"/],
    [['--allow-shell', '--shell-user', 'root'], /"root" is root; shells must run as an unprivileged account/],
  ];
  for (const [args, re] of cases) {
    const run = runCli(['gateway', '--server', t.url, ...args], { AIRLOCK_GATEWAY_TOKEN: 'algw_whatever' });
    assert.equal(await run.exited(), 2, `${args.join(' ')}: ${run.stderr}`);
    assert.match(run.stderr, re);
  }
});

test('a shell runs as the --shell-user account with a clean environment: the gateway token is nowhere it can read', { skip: noShellUser }, async () => {
  const { gw, token } = await gateway('shellgw', shellGatewayArgs(), { SECRET_DEMO: 'gateway-only' });
  const user = testShellUser();
  const uid = execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim();
  const pid = gw.proc!.pid!;
  const probe = [
    'id -un; id -u; pwd',
    'echo "--- env"; env',
    `echo "--- cmdline"; tr "\\0" " " < /proc/${pid}/cmdline; echo`,
    `echo "--- environ"; cat /proc/${pid}/environ 2>&1 | tr "\\0" "\\n"`,
    `echo "--- parent"; tr "\\0" " " < /proc/$PPID/cmdline`,
  ].join('; ');
  const run = runCli(['launch', 'shellgw-sh', '--exec', probe], env, '');
  assert.equal(await run.exited(), 0, run.stderr);
  const out = run.stdout;
  const [who, id, cwd] = out.split('\n');
  assert.equal(who, user);
  assert.equal(id, uid);
  assert.equal(cwd, `/home/${user}`);
  assert.ok(!out.includes(token), 'the gateway token reached the shell');
  assert.doesNotMatch(out, /algw_|AIRLOCK_|SECRET_DEMO|gateway-only/);
  assert.match(out, /--- environ\n.*Permission denied/);
  const envLines = out.split('--- env\n')[1]!.split('--- cmdline')[0]!.trim().split('\n').map((l) => l.split('=')[0]);
  assert.deepEqual(envLines.filter((k) => !['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'PWD', 'SHLVL', '_'].includes(k!)), []);
});

test('the gateway token: from a file only its owner reads, or the environment; --token warns that every local user can read it', async () => {
  const { token } = await t.admin.post('/api/gateways', { name: 'tokfile' });
  const dir = tempDir('airlock-tok-');
  const file = path.join(dir, 'gw.token');
  fs.writeFileSync(file, `${token}\n`, { mode: 0o644 });
  fs.chmodSync(file, 0o644);
  const open = runCli(['gateway', '--server', t.url, '--token-file', file], {});
  assert.equal(await open.exited(), 2);
  assert.match(open.stderr, new RegExp(`the token file ${file} can be read by other users; run: chmod 600 ${file}`));
  fs.chmodSync(file, 0o600);
  const ok = runCli(['gateway', '--server', t.url, '--token-file', file], {});
  await waitGatewayOnline(t, 'tokfile');
  assert.doesNotMatch(fs.readFileSync(`/proc/${ok.proc.pid}/cmdline`, 'utf8'), /algw_/);
  ok.proc.kill('SIGTERM');
  assert.equal(await ok.exited(), 0);
  const argv = runCli(['gateway', '--server', t.url, '--token', token], {});
  await argv.waitErr(/warning: --token puts the gateway token where every local user can read it/);
  argv.proc.kill('SIGTERM');
  await argv.exited();
  const none = runCli(['gateway', '--server', t.url], { AIRLOCK_GATEWAY_TOKEN: '' });
  assert.equal(await none.exited(), 2);
  assert.match(none.stderr, /needs its token: --token-file FILE \(or AIRLOCK_GATEWAY_TOKEN\)/);
  // `gateway create` shows that way of running it, not --token.
  const created = runCli(['gateway', 'create', 'tokfile2'], env);
  assert.equal(await created.exited(), 0, created.stderr);
  assert.match(created.stdout, /--token-file tokfile2\.token/);
  assert.doesNotMatch(created.stdout, /--token algw_/);
});

/** Opens a WebSocket as the gateway would; resolves with the HTTP status of a refusal, or 101. */
function connectAsGateway(token: string): Promise<{ status: number; body: string; ws?: WebSocket }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/api/gateway/connect`, { headers: { authorization: `Bearer ${token}` } });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    ws.on('open', () => resolve({ status: 101, body: '', ws }));
    ws.on('error', () => {});
  });
}

test('a second connection with the token of a live gateway is refused (409), logged and told to the live one; a gateway that stopped answering is replaced', async () => {
  const { gw, token } = await gateway('takeover');
  const second = await connectAsGateway(token);
  assert.equal(second.status, 409);
  assert.equal(JSON.parse(second.body).error.code, 'gateway_connected');
  await waitUntil(() => /another connection .* presented this gateway's token and was refused/.test(gw.log), 'the live gateway was told');
  await echoes('takeover-echo'); // the real gateway still serves
  // Frozen, the first no longer answers: a new connection (a restarted gateway) gets in.
  gw.proc!.kill('SIGSTOP');
  try {
    const third = await within(connectAsGateway(token), 'no answer to the connection that replaces a frozen gateway', 10_000);
    assert.equal(third.status, 101);
    third.ws!.close();
  } finally {
    gw.proc!.kill('SIGCONT');
  }
  await waitGatewayOnline(t, 'takeover');
  await echoes('takeover-echo');
});

test('a gateway that stops answering goes offline within seconds (launches fail at once with gateway_offline); when it wakes it reconnects by itself', async () => {
  const { gw } = await gateway('frozen');
  gw.proc!.kill('SIGSTOP');
  const stoppedAt = Date.now();
  try {
    await waitGatewayOnline(t, 'frozen', false);
    const took = Date.now() - stoppedAt;
    assert.ok(took < 10_000, `offline after ${took} ms`);
    const run = runCli(['launch', 'frozen-echo', '--attempts', '1'], env);
    assert.equal(await run.exited(), 4);
    assert.match(run.stderr, /no gateway of "frozen" is online/);
  } finally {
    gw.proc!.kill('SIGCONT');
  }
  await waitGatewayOnline(t, 'frozen');
  await echoes('frozen-echo');
});

test('a gateway whose server stops answering (a dead network path) notices within seconds and reconnects', async () => {
  // A proxy between the gateway and the server that can freeze its connections: bytes stop
  // flowing both ways, yet no side sees a close.
  const live = new Set<net.Socket>();
  let frozen = new Set<net.Socket>();
  const proxy = net.createServer((a) => {
    const b = net.connect(t.server.port, '127.0.0.1');
    a.on('error', () => {});
    b.on('error', () => {});
    for (const [x, y] of [[a, b], [b, a]] as const) {
      x.on('data', (d) => {
        if (frozen.has(x)) return;
        y.write(d);
      });
      x.on('close', () => y.destroy());
    }
    live.add(a).add(b);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  try {
    const { gw } = await gateway('netcut', [], {}, `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`);
    frozen = new Set(live); // the connections open now stop carrying anything; new ones flow
    await waitUntil(() => /lost the server; reconnecting/.test(gw.log), 'the gateway noticed the dead path', 15_000);
    await waitGatewayOnline(t, 'netcut');
    await echoes('netcut-echo');
  } finally {
    for (const s of live) s.destroy();
    proxy.close();
  }
});
