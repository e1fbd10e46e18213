// Hostile tube peers: truncated, oversized, misplaced, unknown and random frames of every type,
// and a sender that ignores the flow-control window, down both paths (relay and WebRTC), against a
// real gateway process and a real `airlock launch`. A bad frame ends that one tube with a protocol
// error; the gateway, the server and the client stay up and serve other sessions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startTestServer, waitUntil, type TestServer } from './helpers/server.js';
import { GatewayProcess, waitGatewayOnline, runCli, killChildren, echoServer } from './helpers/launch.js';
import type { ApiClient } from '../src/client/api.js';
import { fuzzCases } from './helpers/tube-fuzz.js';

const FUZZ = fileURLToPath(new URL('./helpers/tube-fuzz.ts', import.meta.url));

let t: TestServer;
let gw: GatewayProcess;
let echo: Awaited<ReturnType<typeof echoServer>>;
let sink: net.Server;
let alice: ApiClient;
let env: NodeJS.ProcessEnv;

before(async () => {
  t = await startTestServer({});
  echo = await echoServer();
  // A target that never reads: what a flood sends can only pile up.
  sink = net.createServer((s) => s.on('error', () => {}).pause());
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
  const { token } = await t.admin.post('/api/gateways', { name: 'gw-fuzz' });
  gw = new GatewayProcess(t.url, token);
  gw.start();
  await waitGatewayOnline(t, 'gw-fuzz');
  await t.admin.post('/api/resources', { name: 'echo', kind: 'tcp', target: `127.0.0.1:${echo.port}`, gateway: 'gw-fuzz' });
  await t.admin.post('/api/resources', { name: 'sink', kind: 'tcp', target: `127.0.0.1:${(sink.address() as net.AddressInfo).port}`, gateway: 'gw-fuzz' });
  alice = await t.user('alice');
  for (const r of ['echo', 'sink']) await t.admin.post(`/api/resources/${r}/grants`, { user: 'alice' });
  env = { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: t.admin.token };
});

after(async () => {
  killChildren();
  await gw.kill();
  echo.close();
  sink.close();
  await t.close();
});

function fuzz(o: Record<string, unknown>): Promise<any> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', FUZZ, JSON.stringify({ server: t.url, ...o })], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 240_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`tube-fuzz exited ${code}: ${err}`));
      resolve(JSON.parse(out.trim().split('\n').pop()!));
    });
  });
}

function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

/** An echo through a real `airlock launch` (a session of its own): the gateway still serves. */
async function echoStillWorks(): Promise<void> {
  const run = runCli(['launch', 'echo'], env);
  const m = await run.waitErr(/Forwarding 127\.0\.0\.1:(\d+)/);
  const data = crypto.randomBytes(50_000);
  const got = await new Promise<Buffer>((resolve, reject) => {
    const s = net.connect(Number(m[1]), '127.0.0.1');
    const parts: Buffer[] = [];
    s.on('data', (d) => parts.push(d));
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
    s.end(data);
  });
  assert.deepEqual(got, data);
  run.proc.kill('SIGINT');
  assert.equal(await run.exited(), 0);
}

for (const path of ['relay', 'direct'] as const) {
  test(`every malformed frame sent to the gateway on the ${path} path ends that session with a protocol error; the gateway serves on`, async () => {
    const pid = gw.proc!.pid!;
    const results = await fuzz({ mode: 'client', token: alice.token, resource: 'echo', path, seed: path === 'relay' ? 7 : 11 });
    const names = Object.keys(fuzzCases(1));
    assert.deepEqual(Object.keys(results).sort(), names.sort());
    for (const [name, r] of Object.entries<any>(results)) {
      // The bad frames all come before any valid use, except the OPEN that is not JSON (which only
      // fails that connection, with a reason) and the EXIT for a connection never opened (ignored).
      if (name === 'OPEN that is not JSON then DATA') {
        assert.match(r.errors['2'] ?? '', /bad open request/, name);
        continue;
      }
      if (name === 'EXIT for a connection never opened') continue;
      assert.match(r.ended ?? 'not ended', /protocol error|tube frame|data channel closed|relay closed/, `${name}: ${JSON.stringify(r)}`);
    }
    assert.equal(gw.proc!.exitCode, null, `the gateway exited: ${gw.log}`);
    assert.equal(gw.proc!.pid, pid);
    assert.doesNotMatch(gw.log, /RangeError|TypeError|uncaught/i);
    // The audit trail says why each of those sessions ended.
    const { sessions } = await t.admin.get('/api/sessions?limit=100');
    const protocolErrors = sessions.filter((s: any) => /protocol error/.test(s.error ?? ''));
    assert.ok(protocolErrors.length >= 10, `sessions ended by a protocol error: ${protocolErrors.length}`);
    assert.deepEqual(await t.admin.get('/healthz').catch(() => ({ ok: true })), { ok: true });
    await echoStillWorks();
  });

  test(`a sender that ignores the window on the ${path} path has its connection closed; the gateway's memory stays bounded`, async () => {
    const pid = gw.proc!.pid!;
    const before = rss(pid);
    const flood = await fuzz({ mode: 'client', token: alice.token, resource: 'sink', path, floodMiB: 64 });
    const f = flood.flood;
    assert.match(f.errors['1'] ?? '', /flow control/, JSON.stringify(f));
    const grown = rss(pid) - before;
    assert.ok(grown < 48 << 20, `the gateway grew by ${Math.round(grown / 1048576)} MiB while a peer sent 64 MiB past the window`);
    assert.equal(gw.proc!.exitCode, null);
  });
}

for (const path of ['relay', 'direct'] as const) {
  test(`\`airlock launch\` answered with malformed frames on the ${path} path ends that session with a clear error, no crash or warning`, async () => {
    const { token } = await t.admin.post('/api/gateways', { name: `rogue-${path}` });
    await t.admin.post('/api/resources', { name: `rogue-${path}`, kind: 'tcp', target: '127.0.0.1:9', gateway: `rogue-${path}` });
    const cases = ['EXIT with 2 bytes', 'WINDOW without its count', 'RESIZE empty', 'OPENED with a payload', 'unknown type 200', 'DATA on connection 0', 'random 3', 'header cut short'];
    const rogue = spawn(process.execPath, ['--import', 'tsx', FUZZ, JSON.stringify({ mode: 'gateway', server: t.url, token, path, only: cases })], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    rogue.stdout.on('data', (d) => (out += d));
    rogue.stderr.on('data', (d) => (out += d));
    try {
      await waitUntil(() => out.includes('"ready":true'), 'the rogue gateway connected');
      for (const name of cases) {
        const run = runCli(['launch', `rogue-${path}`], env);
        const code = await run.exited();
        assert.equal(code, 1, `${name}: exit ${code}; stderr: ${run.stderr}`);
        assert.match(run.stderr, /airlock: the session ended: protocol error: .*tube frame/, name);
        assert.doesNotMatch(run.stderr, /Warning|RangeError|TypeError|\n\s+at /, name);
      }
      assert.ok(out.split('\n').filter((l) => l.includes('"case"')).length >= cases.length, out);
      await echoStillWorks();
    } finally {
      rogue.stdin.end();
      rogue.kill();
    }
  });
}
