// Bad input gets a clear 4xx with {error:{code,message}}; users only see their own chats.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startFakeLlm, text, type FakeLlm } from './helpers/fake-llm.js';
import { startTestServer, StreamRecorder, providerConfig, type TestServer } from './helpers/server.js';
import { ApiClient } from '../src/client/api.js';

let llm: FakeLlm;
let t: TestServer;

before(async () => {
  llm = await startFakeLlm('openai', () => text('ok'));
  t = await startTestServer(providerConfig(llm));
});
after(async () => {
  await t.close();
  await llm.close();
});

async function raw(method: string, path: string, opts: { token?: string | null; body?: string; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  const token = opts.token === undefined ? t.admin.token : opts.token;
  if (token) headers.authorization = `Bearer ${token}`;
  if (opts.body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const res = await fetch(t.url + path, { method, headers, body: opts.body });
  const json = await res.json().catch(() => null);
  return { status: res.status, json };
}

function assertError(r: { status: number; json: any }, status: number, code?: string) {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.equal(typeof r.json?.error?.message, 'string');
  assert.ok(r.json.error.message.length > 0);
  if (code) assert.equal(r.json.error.code, code);
}

test('every endpoint needs a valid token', async () => {
  assertError(await raw('GET', '/api/chats', { token: null }), 401, 'unauthorized');
  assertError(await raw('GET', '/api/chats', { token: 'al_notarealtoken' }), 401, 'unauthorized');
  assertError(await raw('GET', '/api/chats', { token: 'garbage' }), 401);
  assertError(await raw('GET', '/api/chats', { headers: { authorization: 'Basic abc' }, token: null }), 401);
  assertError(await raw('POST', '/api/chats', { token: null, body: '{}' }), 401);
  assert.equal((await raw('GET', '/healthz', { token: null })).status, 200);
});

test('expired tokens are refused', async () => {
  const u = await t.user();
  const tok = await u.post('/api/tokens', { name: 'short', expires_in: 1 });
  assert.equal((await raw('GET', '/api/me', { token: tok.token })).status, 200);
  // Verified tokens are cached for a moment, but never past their expiry.
  await new Promise((r) => setTimeout(r, 1100));
  assertError(await raw('GET', '/api/me', { token: tok.token }), 401);
});

test('tokens: listed without their secrets, revoked at once (cached or not); others\' tokens answer 404; admins may revoke any', async () => {
  const u = await t.user();
  const other = await t.user();
  const second = await u.post('/api/tokens', { name: 'laptop' });
  assert.equal((await raw('GET', '/api/me', { token: second.token })).status, 200); // now in the cache
  const chat = await u.post('/api/chats', { title: 'watched' });
  const stream = await StreamRecorder.open(new ApiClient(t.url, second.token), chat.id);
  await stream.waitFor((e) => e.type === 'caught_up');
  const { tokens } = await u.get('/api/tokens');
  assert.deepEqual(tokens.map((x: any) => x.name), ['initial', 'laptop']);
  assert.deepEqual(tokens.map((x: any) => x.current), [true, false]);
  assert.ok(tokens.every((x: any) => !('token' in x) && !('token_hash' in x) && x.prefix.startsWith('al_')));
  assert.ok(!JSON.stringify(tokens).includes(second.token));
  // Someone else's token, or no token id at all, is not found.
  assertError(await raw('DELETE', `/api/tokens/${second.id}`, { token: other.token }), 404, 'not_found');
  assertError(await raw('DELETE', '/api/tokens/not-a-uuid', { token: u.token }), 404, 'not_found');
  assert.deepEqual(await u.delete(`/api/tokens/${second.id}`), { revoked: true });
  assertError(await raw('GET', '/api/me', { token: second.token }), 401, 'unauthorized');
  // Its open streams are closed too.
  await new Promise<void>((r) => (stream.closed ? r() : stream.ws.once('close', () => r())));
  assert.equal(stream.closed!.code, 4401);
  assertError(await raw('DELETE', `/api/tokens/${second.id}`, { token: u.token }), 404, 'not_found');
  // An admin revokes another user's token; that user is locked out at once.
  const [own] = (await other.get('/api/tokens')).tokens;
  assert.equal((await raw('GET', '/api/me', { token: other.token })).status, 200);
  assert.deepEqual(await t.admin.delete(`/api/tokens/${own.id}`), { revoked: true });
  assertError(await raw('GET', '/api/me', { token: other.token }), 401);
});

test('an admin disables a user: its tokens stop working at once (cached or not) and its streams close; enabling lets it back in', async () => {
  const name = `leaver-${Math.random().toString(36).slice(2, 8)}`;
  const u = await t.user(name);
  const second = await u.post('/api/tokens', { name: 'laptop' });
  assert.equal((await raw('GET', '/api/me', { token: u.token })).status, 200); // now in the cache
  const chat = await u.post('/api/chats', { title: 'watched' });
  const stream = await StreamRecorder.open(new ApiClient(t.url, second.token), chat.id);
  await stream.waitFor((e) => e.type === 'caught_up');
  // Only an admin may, never on itself, and only on a user that exists.
  assertError(await raw('POST', `/api/users/${name}/disable`, { token: u.token }), 403, 'forbidden');
  assertError(await raw('POST', '/api/users/admin/disable'), 409, 'self_disable');
  assertError(await raw('POST', '/api/users/nobody-here/disable'), 404, 'not_found');
  const { user } = await t.admin.post(`/api/users/${name}/disable`, {});
  assert.equal(user.name, name);
  assert.ok(user.disabled_at);
  for (const token of [u.token, second.token]) {
    const r = await raw('GET', '/api/me', { token });
    assertError(r, 401, 'unauthorized');
    assert.match(r.json.error.message, /user is disabled/);
  }
  await new Promise<void>((r) => (stream.closed ? r() : stream.ws.once('close', () => r())));
  assert.deepEqual(stream.closed, { code: 4401, reason: 'the user was disabled' });
  // Disabling again keeps the first time; the list shows it.
  assert.equal((await t.admin.post(`/api/users/${name}/disable`, {})).user.disabled_at, user.disabled_at);
  const listed = (await t.admin.get('/api/users')).users.find((x: any) => x.name === name);
  assert.equal(listed.disabled_at, user.disabled_at);
  // Its chats stay; enabled again, its tokens work again.
  const enabled = await t.admin.post(`/api/users/${name}/enable`, {});
  assert.equal(enabled.user.disabled_at, null);
  assert.equal((await u.get(`/api/chats/${chat.id}`)).id, chat.id);
  assert.equal((await raw('GET', '/api/me', { token: second.token })).status, 200);
});

test('malformed bodies: invalid JSON, wrong types, unknown fields, oversized', async () => {
  assertError(await raw('POST', '/api/chats', { body: '{"message": ' }), 400, 'invalid_json');
  assertError(await raw('POST', '/api/chats', { body: '[1,2]' }), 400);
  assertError(await raw('POST', '/api/chats', { body: '"x"' }), 400);
  assertError(await raw('POST', '/api/chats', { body: JSON.stringify({ message: 42 }) }), 400, 'invalid_field');
  assertError(await raw('POST', '/api/chats', { body: JSON.stringify({ message: '' }) }), 400, 'invalid_field');
  assertError(await raw('POST', '/api/chats', { body: JSON.stringify({ mesage: 'typo' }) }), 400, 'unknown_field');
  assertError(await raw('POST', '/api/chats', { body: JSON.stringify({ tools: 'x' }) }), 400);
  assertError(await raw('POST', '/api/chats', { body: JSON.stringify({ tools: [{ name: 'calculator' }] }) }), 400);
  assertError(await raw('POST', '/api/chats', { body: JSON.stringify({ tools: [{ name: 'bad name!' }] }) }), 400);
  assertError(await raw('POST', '/api/chats', { body: 'x=1', headers: { 'content-type': 'text/plain' } }), 415);
  assertError(await raw('POST', '/api/chats', { body: JSON.stringify({ message: 'a'.repeat(100_001) }) }), 400, 'too_long');
  assertError(await raw('POST', '/api/chats', { body: JSON.stringify({ message: 'a'.repeat(2_000_000) }) }), 413, 'payload_too_large');
  const chat = await t.admin.post('/api/chats', { title: 'x' });
  assertError(await raw('POST', `/api/chats/${chat.id}/messages`, { body: JSON.stringify({ content: ['x'] }) }), 400);
  assertError(await raw('POST', `/api/chats/${chat.id}/messages`, { body: JSON.stringify({ content: 'x', busy: 'later' }) }), 400);
  assertError(await raw('POST', `/api/chats/${chat.id}/messages`, { body: JSON.stringify({}) }), 400, 'missing_field');
  assertError(await raw('GET', '/api/chats?limit=0'), 400);
  assertError(await raw('GET', '/api/chats?archived=maybe'), 400);
  assertError(await raw('PATCH', `/api/chats/${chat.id}`, { body: JSON.stringify({ archived: 'yes' }) }), 400);
  assertError(await raw('POST', '/api/tokens', { body: JSON.stringify({ expires_in: -5 }) }), 400);
});

test('unknown routes, methods and ids', async () => {
  assertError(await raw('GET', '/api/nothing'), 404, 'not_found');
  assertError(await raw('PUT', '/api/chats'), 405, 'method_not_allowed');
  assertError(await raw('GET', '/api/chats/not-a-uuid'), 404);
  assertError(await raw('GET', `/api/chats/${crypto.randomUUID()}`), 404);
  assertError(await raw('DELETE', `/api/chats/${crypto.randomUUID()}/queue/1`), 404);
  const chat = await t.admin.post('/api/chats', { title: 'x' });
  assertError(await raw('DELETE', `/api/chats/${chat.id}/queue/99999`), 404);
  assertError(await raw('DELETE', `/api/chats/${chat.id}/queue/abc`), 404);
  assertError(await raw('PATCH', `/api/chats/${chat.id}/messages/zzz`, { body: '{"content":"x"}' }), 404);
});

test("a user never sees another user's chats: 404, exactly like an unknown id", async () => {
  const alice = await t.user();
  const bob = await t.user();
  const chat = await alice.post('/api/chats', { message: 'secret' });
  const paths: [string, string, unknown?][] = [
    ['GET', `/api/chats/${chat.id}`],
    ['PATCH', `/api/chats/${chat.id}`, { title: 'mine' }],
    ['POST', `/api/chats/${chat.id}/messages`, { content: 'hi' }],
    ['POST', `/api/chats/${chat.id}/interrupt`],
    ['POST', `/api/chats/${chat.id}/archive`],
    ['POST', `/api/chats/${chat.id}/tool-results`, { results: [{ tool_call_id: 'a', output: 'b' }] }],
    ['DELETE', `/api/chats/${chat.id}`],
  ];
  for (const [method, path, body] of paths) {
    const r = await raw(method, path, { token: bob.token, body: body === undefined ? undefined : JSON.stringify(body) });
    const unknown = await raw(method, path.replace(chat.id, crypto.randomUUID()), { token: bob.token, body: body === undefined ? undefined : JSON.stringify(body) });
    assertError(r, 404, 'not_found');
    assert.deepEqual(r.json, unknown.json, `${method} ${path} tells nothing an unknown id would not`);
  }
  const list = await bob.get('/api/chats');
  assert.ok(!list.chats.some((c: any) => c.id === chat.id));
  await assert.rejects(StreamRecorder.open(bob, chat.id), { status: 404 });
  // Alice still has it.
  assert.equal((await alice.get(`/api/chats/${chat.id}`)).id, chat.id);
});

test('only admins manage users', async () => {
  const u = await t.user();
  await assert.rejects(u.post('/api/users', { name: 'eve' }), { status: 403, code: 'forbidden' });
  await assert.rejects(u.get('/api/users'), { status: 403 });
  const name = `dup-${Date.now()}`;
  await t.admin.post('/api/users', { name });
  await assert.rejects(t.admin.post('/api/users', { name }), { status: 409, code: 'user_exists' });
});

test('stream endpoint: bad token, bad after, unknown chat, and client frames are refused', async () => {
  const u = await t.user();
  const chat = await u.post('/api/chats', { title: 'x' });
  await assert.rejects(new ApiClient(t.url, 'al_wrong').openStream(chat.id, 0, () => {}), { status: 401 });
  await assert.rejects(u.openStream(chat.id, -1, () => {}), { status: 400, code: 'invalid_after' });
  await assert.rejects(u.openStream(chat.id, 'abc' as any, () => {}), { status: 400 });
  await assert.rejects(u.openStream(crypto.randomUUID(), 0, () => {}), { status: 404 });
  const ws = new WebSocket(u.wsUrl('/api/other'), { headers: { authorization: `Bearer ${u.token}` } });
  const status = await new Promise((r) => ws.once('unexpected-response', (_q, res) => r(res.statusCode)));
  assert.equal(status, 404);
  // The stream is one-way: a client frame closes it with a reason; a huge frame too.
  for (const payload of ['hello', 'x'.repeat(200_000)]) {
    const s = await StreamRecorder.open(u, chat.id);
    s.ws.send(payload);
    const code = await new Promise<number>((r) => s.ws.once('close', (c) => r(c)));
    assert.ok(code === 1008 || code === 1009, `closed with ${code}`);
  }
  // And the server keeps serving.
  assert.equal((await u.get(`/api/chats/${chat.id}`)).id, chat.id);
});

test('archive and delete', async () => {
  const u = await t.user();
  const chat = await u.post('/api/chats', { message: 'hi' });
  const s = await StreamRecorder.open(u, chat.id);
  await s.waitStatus('waiting');
  await u.post(`/api/chats/${chat.id}/archive`);
  assert.ok(!(await u.get('/api/chats')).chats.some((c: any) => c.id === chat.id));
  assert.ok((await u.get('/api/chats?archived=true')).chats.some((c: any) => c.id === chat.id));
  await assert.rejects(u.post(`/api/chats/${chat.id}/messages`, { content: 'x' }), { status: 409, code: 'archived' });
  await u.post(`/api/chats/${chat.id}/unarchive`);
  await u.delete(`/api/chats/${chat.id}`);
  await s.waitFor((e) => e.type === 'deleted');
  await assert.rejects(u.get(`/api/chats/${chat.id}`), { status: 404 });
  s.close();
});

test('chat settings: model and system prompt per chat', async () => {
  const u = await t.user();
  const chat = await u.post('/api/chats', { title: 't', model: 'gpt-special', system_prompt: 'You are terse.' });
  assert.equal(chat.model, 'gpt-special');
  const upd = await u.patch(`/api/chats/${chat.id}`, { system_prompt: 'You are verbose.', title: 'renamed' });
  assert.equal(upd.system_prompt, 'You are verbose.');
  assert.equal(upd.title, 'renamed');
  const s = await StreamRecorder.open(u, chat.id);
  await u.post(`/api/chats/${chat.id}/messages`, { content: 'hi' });
  await s.waitStatus('waiting');
  const req = llm.requests.at(-1);
  assert.equal(req.model, 'gpt-special');
  assert.equal(req.messages[0].content, 'You are verbose.');
  s.close();
});

test('the API client: a server that never answers fails after its timeout, an error page that is not JSON reads as HTTP status and text', async () => {
  const http = await import('node:http');
  const silent = http.createServer(() => {}); // takes the request, never answers
  const html = http.createServer((_req, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<html>bad gateway</html>'));
  const listen = (s: import('node:http').Server) => new Promise<string>((r) => s.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(s.address() as import('node:net').AddressInfo).port}`)));
  try {
    await assert.rejects(new ApiClient(await listen(silent), 'al_x', 300).get('/api/me'), (err: any) => err.status === 0 && err.code === 'unreachable' && /cannot reach the Airlock server at .* \(timeout\)/.test(err.message));
    await assert.rejects(new ApiClient(await listen(html), 'al_x').get('/api/me'), (err: any) => err.status === 502 && err.code === 'http_error' && err.message === 'HTTP 502: <html>bad gateway</html>');
  } finally {
    silent.closeAllConnections();
    silent.close();
    html.closeAllConnections();
    html.close();
  }
});
