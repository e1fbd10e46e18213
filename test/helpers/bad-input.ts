// The bad-input sweep: every HTTP route and every WebSocket endpoint gets missing, malformed and
// expired tokens, unknown / malformed / other users' ids, malformed JSON, wrong JSON types, huge
// bodies and frames. Each must get a clear 4xx with {error:{code,message}} (or, on an open
// socket, a close with a code and a reason), and the server must keep serving. Set-up goes to one
// server (`setupUrl`) and the sweep to another (`url`): on one server they are the same; across
// replicas they are two processes on one database.
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ApiClient } from '../../src/client/api.js';
import { within } from './within.js';

/** Sockets must answer: a hang is a failure with a name, not a test timeout. */
const SOCKET_ANSWER_MS = 10_000;

export interface SweepTarget {
  /** Where the objects are created. */
  setupUrl: string;
  /** Where the bad input goes. */
  url: string;
  adminToken: string;
  routes: { method: string; pattern: string }[];
  maxBodyBytes: number;
  wsMaxFrameBytes: number;
}

export interface Fixtures {
  alice: ApiClient;
  bob: ApiClient;
  /** Expired token of alice's. */
  expired: string;
  gatewayToken: string;
  /** alice's chat (idle, one exchange), its first message, and bob's chat. */
  chat: string;
  message: string;
  bobChat: string;
  resource: string;
  gateway: string;
}

const UNKNOWN = '00000000-0000-4000-8000-000000000000';

/** A valid body and parameter values per route: the sweep fails on a route it does not know. */
function cases(f: Fixtures, other: boolean): Record<string, { params: Record<string, string>; body?: unknown; adminOnly?: boolean }> {
  const chat = other ? f.bobChat : f.chat;
  return {
    'GET /api/me': { params: {} },
    'GET /api/users': { params: {}, adminOnly: true },
    'POST /api/users': { params: {}, body: { name: 'sweep-new' }, adminOnly: true },
    'POST /api/users/:name/disable': { params: { name: 'nobody' }, adminOnly: true },
    'POST /api/users/:name/enable': { params: { name: 'nobody' }, adminOnly: true },
    'POST /api/tokens': { params: {}, body: { name: 'sweep' } },
    'GET /api/tokens': { params: {} },
    'DELETE /api/tokens/:id': { params: { id: UNKNOWN } },
    'POST /api/chats': { params: {}, body: { title: 'sweep' } },
    'GET /api/chats': { params: {} },
    'GET /api/chats/:id': { params: { id: chat } },
    'PATCH /api/chats/:id': { params: { id: chat }, body: { title: 'renamed' } },
    'DELETE /api/chats/:id': { params: { id: chat } },
    'POST /api/chats/:id/archive': { params: { id: chat } },
    'POST /api/chats/:id/unarchive': { params: { id: chat } },
    'POST /api/chats/:id/messages': { params: { id: chat }, body: { content: 'hello' } },
    'PATCH /api/chats/:id/messages/:mid': { params: { id: chat, mid: f.message }, body: { content: 'edited' } },
    'POST /api/chats/:id/interrupt': { params: { id: chat } },
    'DELETE /api/chats/:id/queue/:qid': { params: { id: chat, qid: '1' } },
    'POST /api/chats/:id/tool-results': { params: { id: chat }, body: { results: [{ tool_call_id: 'x', output: 'y' }] } },
    'POST /api/chats/:id/approvals': { params: { id: chat }, body: { tool_call_id: 'x', decision: 'deny' } },
    'GET /api/approvals': { params: {} },
    'GET /api/resources': { params: {} },
    'GET /api/resources/:name': { params: { name: f.resource } },
    'POST /api/resources': { params: {}, body: { name: 'sweep-res', kind: 'tcp', target: '127.0.0.1:9', gateway: f.gateway }, adminOnly: true },
    'DELETE /api/resources/:name': { params: { name: f.resource }, adminOnly: true },
    'GET /api/resources/:name/grants': { params: { name: f.resource }, adminOnly: true },
    'POST /api/resources/:name/grants': { params: { name: f.resource }, body: { user: 'nobody' }, adminOnly: true },
    'DELETE /api/resources/:name/grants/:user': { params: { name: f.resource, user: 'nobody' }, adminOnly: true },
    'GET /api/gateways': { params: {}, adminOnly: true },
    'POST /api/gateways': { params: {}, body: { name: 'sweep-gw' }, adminOnly: true },
    'DELETE /api/gateways/:name': { params: { name: f.gateway }, adminOnly: true },
    'GET /api/sessions': { params: {} },
    'DELETE /api/sessions/:id': { params: { id: UNKNOWN } },
  };
}

const fill = (pattern: string, params: Record<string, string>) =>
  pattern.replace(/:(\w+)/g, (_, k: string) => (k in params ? encodeURIComponent(params[k]!) : UNKNOWN));

export async function fixtures(target: SweepTarget, waitIdle: (api: ApiClient, chat: string) => Promise<void>): Promise<Fixtures> {
  const admin = new ApiClient(target.setupUrl, target.adminToken);
  const tag = Math.random().toString(36).slice(2, 8);
  const mk = async (name: string) => new ApiClient(target.setupUrl, (await admin.post('/api/users', { name })).token);
  const alice = await mk(`alice-${tag}`);
  const bob = await mk(`bob-${tag}`);
  const expired = (await alice.post('/api/tokens', { name: 'short', expires_in: 1 })).token;
  const gw = await admin.post('/api/gateways', { name: `gw-${tag}`, group: `g-${tag}` });
  const resource = `res-${tag}`;
  await admin.post('/api/resources', { name: resource, kind: 'tcp', target: '127.0.0.1:9', gateway: `g-${tag}` });
  await admin.post(`/api/resources/${resource}/grants`, { user: `alice-${tag}` });
  const chat = (await alice.post('/api/chats', { message: 'hi' })).id;
  await waitIdle(alice, chat);
  const message = (await alice.get(`/api/chats/${chat}`)).messages[0].id;
  const bobChat = (await bob.post('/api/chats', { title: 'private' })).id;
  await new Promise((r) => setTimeout(r, 1100)); // the short token expires
  const on = (api: ApiClient) => new ApiClient(target.url, api.token);
  return { alice: on(alice), bob: on(bob), expired, gatewayToken: gw.token, chat, message, bobChat, resource, gateway: `gw-${tag}` };
}

export async function raw(url: string, method: string, path: string, opts: { token?: string | null; body?: string } = {}) {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url + path, { method, headers, body: opts.body });
  const text = await res.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* checked below */
  }
  return { status: res.status, json, text };
}

function clearError(r: { status: number; json: any; text: string }, what: string, status?: number | number[]) {
  const ok = status === undefined ? r.status >= 400 && r.status < 500 : ([] as number[]).concat(status).includes(r.status);
  assert.ok(ok, `${what}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
  assert.equal(typeof r.json?.error?.code, 'string', `${what}: error.code in ${r.text.slice(0, 200)}`);
  assert.ok(typeof r.json.error.message === 'string' && r.json.error.message.length > 5, `${what}: error.message`);
}

async function stillServing(target: SweepTarget, f: Fixtures) {
  assert.equal((await fetch(`${target.url}/healthz`)).status, 200);
  assert.equal((await f.alice.get(`/api/chats/${f.chat}`)).id, f.chat);
}

export async function sweepHttp(target: SweepTarget, f: Fixtures): Promise<number> {
  let checks = 0;
  const mine = cases(f, false);
  const theirs = cases(f, true);
  for (const r of target.routes) assert.ok(mine[`${r.method} ${r.pattern}`], `the bad-input sweep does not cover ${r.method} ${r.pattern}`);
  const check = async (what: string, method: string, path: string, opts: Parameters<typeof raw>[3], status?: number | number[]) => {
    clearError(await raw(target.url, method, path, opts), what, status);
    checks++;
  };
  for (const r of target.routes) {
    const c = mine[`${r.method} ${r.pattern}`]!;
    const path = fill(r.pattern, c.params);
    const body = c.body === undefined ? undefined : JSON.stringify(c.body);
    const name = `${r.method} ${r.pattern}`;
    // Tokens: none, malformed, unknown, expired, a gateway's.
    for (const token of [null, 'garbage', 'al_' + 'x'.repeat(40), 'al_', f.expired, f.gatewayToken]) {
      await check(`${name} with token ${String(token).slice(0, 12)}`, r.method, path, { token, body }, 401);
    }
    if (c.adminOnly) {
      await check(`${name} as a non-admin`, r.method, path, { token: f.alice.token, body }, [403, 404]);
    }
    // Ids: unknown, malformed, badly encoded, another user's.
    if (r.pattern.includes(':')) {
      const token = c.adminOnly ? target.adminToken : f.alice.token;
      for (const bad of [UNKNOWN, 'not-an-id', "1'; DROP TABLE chats; --", 'x'.repeat(300)]) {
        const p = r.pattern.replace(/:(\w+)/g, () => encodeURIComponent(bad));
        await check(`${name} with id ${bad.slice(0, 12)}`, r.method, p, { token, body }, [400, 404]);
      }
      await check(`${name} with a badly encoded id`, r.method, r.pattern.replace(/:(\w+)/g, '%E0%A4%A'), { token, body }, [400, 404]);
      if (!c.adminOnly && r.pattern.startsWith('/api/chats/:id')) {
        const t = theirs[name]!;
        await check(`${name} on another user's chat`, r.method, fill(r.pattern, t.params), { token, body }, 404);
      }
    }
    // Bodies: malformed JSON, JSON that is not an object, wrong field types, too large.
    if (c.body !== undefined) {
      const token = c.adminOnly ? target.adminToken : f.alice.token;
      await check(`${name} with invalid JSON`, r.method, path, { token, body: '{"a": ' }, 400);
      for (const b of ['[1,2]', '"text"', '42', 'null', 'true']) await check(`${name} with body ${b}`, r.method, path, { token, body: b }, 400);
      for (const [field, valid] of Object.entries(c.body as Record<string, unknown>)) {
        for (const wrong of [42, true, [], {}, 'x', null]) {
          if (typeof wrong === typeof valid && Array.isArray(wrong) === Array.isArray(valid) && wrong !== null) continue;
          const res = await raw(target.url, r.method, path, { token, body: JSON.stringify({ ...(c.body as object), [field]: wrong }) });
          // Optional fields may take null (unset); anything else of the wrong type is refused.
          if (wrong === null && res.status < 300) continue;
          clearError(res, `${name} with ${field}: ${JSON.stringify(wrong)}`, [400, 404, 409]);
          checks++;
        }
      }
      await check(`${name} with a body over the limit`, r.method, path, { token, body: ' '.repeat(target.maxBodyBytes + 1) }, 413);
    }
  }
  // Unknown routes and methods.
  await check('unknown route', 'GET', '/api/nope', { token: f.alice.token }, 404);
  await check('unknown method', 'PUT', '/api/chats', { token: f.alice.token, body: '{}' }, 405);
  await stillServing(target, f);
  return checks;
}

/** Messages a socket received from its first frame on (some arrive with the upgrade). */
const inboxes = new WeakMap<WebSocket, { got: any[]; waiters: ((m: any) => void)[] }>();

function nextMessage(ws: WebSocket, what: string, pred: (m: any) => boolean = () => true): Promise<any> {
  const box = inboxes.get(ws)!;
  const i = box.got.findIndex(pred);
  if (i >= 0) return Promise.resolve(box.got.splice(i, 1)[0]);
  return within(
    new Promise((resolve) => {
      const w = (m: any) => {
        if (!pred(m)) return;
        box.waiters.splice(box.waiters.indexOf(w), 1);
        box.got.splice(box.got.indexOf(m), 1);
        resolve(m);
      };
      box.waiters.push(w);
    }),
    what,
    SOCKET_ANSWER_MS,
  );
}

function upgrade(url: string, path: string, token: string | null): Promise<{ status: number; body: any } | WebSocket> {
  return within(new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws') + path, token ? { headers: { authorization: `Bearer ${token}` } } : {});
    ws.on('unexpected-response', (_req, res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode!, body: JSON.parse(b) });
        } catch {
          reject(new Error(`upgrade of ${path}: HTTP ${res.statusCode} without a JSON body: ${b}`));
        }
      });
    });
    const box = { got: [] as any[], waiters: [] as ((m: any) => void)[] };
    inboxes.set(ws, box);
    ws.on('message', (d, isBinary) => {
      if (isBinary) return;
      const m = JSON.parse(String(d));
      box.got.push(m);
      for (const w of [...box.waiters]) w(m);
    });
    ws.on('open', () => resolve(ws));
    ws.on('error', () => {});
  }), `upgrade of ${path}: no answer`, SOCKET_ANSWER_MS);
}

async function refused(url: string, path: string, token: string | null, status: number[]) {
  const r = await upgrade(url, path, token);
  assert.ok(!(r instanceof WebSocket), `${path} with token ${String(token).slice(0, 10)} was accepted`);
  assert.ok(status.includes(r.status), `${path}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(typeof r.body?.error?.message, 'string');
}

/** Sends `frame` on a fresh socket and expects the server to close it with `code` and a reason. */
async function closesWith(open: () => Promise<WebSocket>, frame: string | Buffer, code: number, reason?: RegExp, what = '') {
  const ws = await open();
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (c, why) => r({ code: c, reason: String(why) })));
  ws.send(frame);
  const got = await within(closed, `${what}: the server did not close the socket`, SOCKET_ANSWER_MS);
  assert.equal(got.code, code, `${what}: closed ${got.code} ${got.reason}`);
  if (reason) assert.match(got.reason, reason, what);
  else assert.ok(got.reason.length > 0 || code === 1009, `${what}: a reason`);
}

export async function sweepWebSockets(target: SweepTarget, f: Fixtures): Promise<number> {
  let checks = 0;
  const u = target.url;
  const ok = async (path: string, token: string) => {
    const r = await upgrade(u, path, token);
    assert.ok(r instanceof WebSocket, `${path}: ${JSON.stringify((r as any).body)}`);
    return r;
  };
  const tokens = [null, 'garbage', 'al_' + 'x'.repeat(40), f.expired, f.gatewayToken];

  // The chat stream: tokens, ids, `after`, and any client frame (it is one-way).
  const stream = `/api/chats/${f.chat}/stream`;
  for (const t of tokens) await refused(u, stream, t, [401]), checks++;
  for (const p of [`/api/chats/${f.bobChat}/stream`, `/api/chats/${UNKNOWN}/stream`, '/api/chats/not-a-uuid/stream']) await refused(u, p, f.alice.token, [404]), checks++;
  for (const after of ['-1', 'abc', '1e3', '99999999999999999999']) await refused(u, `${stream}?after=${after}`, f.alice.token, [400]), checks++;
  await closesWith(() => ok(stream, f.alice.token), '{"type":"send"}', 1008, /one-way/, 'stream text frame'), checks++;
  await closesWith(() => ok(stream, f.alice.token), Buffer.alloc(64), 1008, /one-way/, 'stream binary frame'), checks++;
  await closesWith(() => ok(stream, f.alice.token), Buffer.alloc(target.wsMaxFrameBytes + 1), 1009, undefined, 'stream oversized frame'), checks++;

  // The gateway socket: only a gateway token; only the signalling messages a gateway sends.
  for (const t of [null, 'garbage', f.alice.token, target.adminToken]) await refused(u, '/api/gateway/connect', t, [401]), checks++;
  const gw = () => ok('/api/gateway/connect', f.gatewayToken);
  await closesWith(gw, '{"type": ', 1008, /invalid JSON/, 'gateway invalid JSON'), checks++;
  await closesWith(gw, '[1,2,3]', 1008, /"type"/, 'gateway non-object'), checks++;
  await closesWith(gw, '{"type":"take_over"}', 1008, /unknown message type "take_over"/, 'gateway unknown type'), checks++;
  await closesWith(gw, '{"type":"answer","session":42}', 1008, /session/, 'gateway wrong field type'), checks++;
  await closesWith(gw, Buffer.from([1, 2, 3]), 1003, /text/, 'gateway binary frame'), checks++;
  await closesWith(gw, Buffer.alloc((1 << 20) + 1), 1009, undefined, 'gateway oversized frame'), checks++;

  // Launch: tokens, grants, names; then frames on an open launch socket (a gateway is online).
  const launch = `/api/launch?resource=${f.resource}`;
  for (const t of tokens) await refused(u, launch, t, [401]), checks++;
  await refused(u, launch, f.bob.token, [404]), checks++; // no grant reads as unknown
  for (const p of ['/api/launch', '/api/launch?resource=', `/api/launch?resource=${'x'.repeat(500)}`]) await refused(u, p, f.alice.token, [404]), checks++;
  const gateway = await gw();
  await nextMessage(gateway, 'gateway welcome', (m) => m.type === 'welcome');
  const launchSocket = async () => {
    const ws = await ok(launch, f.alice.token);
    const m = await nextMessage(ws, 'launch: the session message', (m) => m.type === 'session');
    return Object.assign(ws, { session: m.session as string });
  };
  await closesWith(launchSocket, 'not json', 1008, /invalid JSON/, 'launch invalid JSON'), checks++;
  await closesWith(launchSocket, '{"type":"grant_me_admin"}', 1008, /unknown message type/, 'launch unknown type'), checks++;
  await closesWith(launchSocket, '"offer"', 1008, /"type"/, 'launch non-object'), checks++;
  await closesWith(launchSocket, Buffer.alloc((1 << 20) + 1), 1009, undefined, 'launch oversized frame'), checks++;

  // The relay socket: only the session's own gateway; binary frames only.
  const live = await launchSocket();
  const { session } = await nextMessage(gateway, 'the gateway is given the session', (m) => m.type === 'session' && m.session === live.session);
  await refused(u, `/api/gateway/relay/${session}`, f.alice.token, [401]), checks++;
  await refused(u, `/api/gateway/relay/${UNKNOWN}`, f.gatewayToken, [404]), checks++;
  await closesWith(() => ok(`/api/gateway/relay/${session}`, f.gatewayToken), 'text', 1003, /binary/, 'relay text frame'), checks++;
  live.close();
  gateway.close();
  await stillServing(target, f);
  return checks;
}
