// The bad-input sweep over every HTTP route and WebSocket endpoint (test/helpers/bad-input.ts), on
// one server and, on PostgreSQL, across two replicas (objects made on one, bad input sent to the
// other). Every answer is a clear 4xx or a socket closed with a reason; the server keeps serving.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeLlm, text, type FakeLlm } from './helpers/fake-llm.js';
import { startTestServer, providerConfig, type TestServer } from './helpers/server.js';
import { cluster, PG_URL } from './helpers/replicas.js';
import { killChildren } from './helpers/launch.js';
import { fixtures, sweepHttp, sweepWebSockets, type SweepTarget } from './helpers/bad-input.js';
import { loadConfig } from '../src/config.js';
import { MAX_CLIENT_FRAME_BYTES } from '../src/server/app.js';
import type { ApiClient } from '../src/client/api.js';

let llm: FakeLlm;
let t: TestServer;

before(async () => {
  llm = await startFakeLlm('openai', () => text('ok'));
  t = await startTestServer(providerConfig(llm));
});
after(async () => {
  killChildren();
  await t.close();
  await llm.close();
});

async function waitIdle(api: ApiClient, chat: string) {
  for (let i = 0; (await api.get(`/api/chats/${chat}`)).status !== 'waiting'; i++) {
    if (i > 3000) throw new Error(`chat ${chat} never got back to waiting`); // a hang guard
    await new Promise((r) => setTimeout(r, 20));
  }
}

const limits = { maxBodyBytes: loadConfig().maxBodyBytes, wsMaxFrameBytes: MAX_CLIENT_FRAME_BYTES };

test('every HTTP route and WebSocket endpoint: bad tokens, ids, bodies and frames get clear refusals', async () => {
  const target: SweepTarget = { setupUrl: t.url, url: t.url, adminToken: t.admin.token, routes: t.server.routes, ...limits };
  const f = await fixtures(target, waitIdle);
  const http = await sweepHttp(target, f);
  const ws = await sweepWebSockets(target, f);
  assert.ok(http > 300 && ws > 30, `${http} HTTP and ${ws} WebSocket checks`);
});

test('the same sweep across replicas: objects made on one replica, bad input sent to another', { skip: PG_URL ? false : 'needs PostgreSQL (npm run test:pg)' }, async () => {
  const c = await cluster({ AIRLOCK_OPENAI_BASE_URL: llm.baseUrl, AIRLOCK_OPENAI_API_KEY: 'k', AIRLOCK_MODEL: 'gpt-test' });
  try {
    const a = await c.start();
    const b = await c.start();
    const target: SweepTarget = { setupUrl: a.url, url: b.url, adminToken: c.token, routes: t.server.routes, ...limits };
    const f = await fixtures(target, waitIdle);
    await sweepHttp(target, f);
    await sweepWebSockets(target, f);
    assert.equal((await fetch(`${a.url}/readyz`)).status, 200);
  } finally {
    await c.close();
  }
});

/** Writes raw bytes to the server (ending the client's side after them) and returns all it answers. */
async function rawRequest(bytes: string): Promise<string> {
  const { default: net } = await import('node:net');
  const u = new URL(t.url);
  return new Promise<string>((resolve, reject) => {
    const s = net.connect(Number(u.port), u.hostname);
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.end(bytes);
  });
}

test('requests the HTTP parser refuses get a JSON error too, and the server keeps serving', async () => {
  const cut = await rawRequest(`POST /api/chats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.admin.token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"title":`);
  assert.match(cut, /^HTTP\/1\.1 400 Bad Request\r\n/);
  assert.match(cut, /content-type: application\/json/);
  assert.match(cut, /\r\n\r\n\{"error":\{"code":"incomplete_body","message":"the request body ended before its declared length"\}\}$/);
  const huge = await rawRequest(`GET /api/chats HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  assert.match(huge, /^HTTP\/1\.1 431 /);
  assert.match(huge, /"code":"headers_too_large"/);
  const garbage = await rawRequest('NOT HTTP AT ALL\r\n\r\n');
  assert.match(garbage, /^HTTP\/1\.1 400 /);
  assert.match(garbage, /"code":"bad_request","message":"malformed HTTP request \(HPE_/);
  assert.ok(await t.admin.get('/api/chats'), 'the server still answers');
});
