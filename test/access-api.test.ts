// Resources, grants, gateways and sessions over HTTP: admin rules, bad input, and that
// credentials never come back and are sealed at rest.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startTestServer, type TestServer } from './helpers/server.js';
import { ApiClient, ApiClientError } from '../src/client/api.js';

let t: TestServer;
before(async () => {
  t = await startTestServer({});
});
after(() => t.close());

async function fails(p: Promise<unknown>, status: number, code?: string): Promise<ApiClientError> {
  const err = await p.then(
    () => assert.fail(`expected HTTP ${status}`),
    (e) => e,
  );
  assert.ok(err instanceof ApiClientError, String(err));
  assert.equal(err.status, status, err.message);
  if (code) assert.equal(err.code, code);
  assert.ok(err.message.length > 5);
  return err;
}

test('resource input is validated field by field', async () => {
  const a = t.admin;
  await fails(a.post('/api/resources', { name: 'x', kind: 'ftp', target: 'h:1', gateway: 'g' }), 400, 'invalid_field');
  await fails(a.post('/api/resources', { name: 'x', target: 'h:1', gateway: 'g' }), 400, 'missing_field');
  await fails(a.post('/api/resources', { name: 'x', kind: 'tcp', gateway: 'g' }), 400, 'missing_field');
  await fails(a.post('/api/resources', { name: 'x', kind: 'tcp', target: 'h:99999', gateway: 'g' }), 400, 'invalid_field');
  await fails(a.post('/api/resources', { name: 'x', kind: 'tcp', target: 'h', gateway: 'g' }), 400, 'invalid_field');
  await fails(a.post('/api/resources', { name: 'bad name', kind: 'tcp', target: 'h:1', gateway: 'g' }), 400, 'invalid_field');
  await fails(a.post('/api/resources', { name: 'x', kind: 'ssh', target: 'h', gateway: 'g' }), 400, 'missing_field');
  await fails(a.post('/api/resources', { name: 'x', kind: 'ssh', target: 'h', gateway: 'g', credential: { username: 'u' } }), 400, 'invalid_field');
  await fails(a.post('/api/resources', { name: 'x', kind: 'tcp', target: 'h:1', gateway: 'g', credential: { username: 'u', password: 'p' } }), 400, 'invalid_field');
  await fails(a.post('/api/resources', { name: 'x', kind: 'tcp', target: 'h:1', gateway: 'g', extra: 1 }), 400, 'unknown_field');
  await fails(a.post('/api/resources', { name: 7, kind: 'tcp', target: 'h:1', gateway: 'g' }), 400, 'invalid_field');
  const r = await a.post('/api/resources', { name: 'x', kind: 'ssh', target: 'host.internal', gateway: 'g', credential: { username: 'u', password: 'hunter2-secret' } });
  assert.equal(r.resource.target, 'host.internal:22');
  assert.equal(r.resource.has_credential, true);
  await fails(a.post('/api/resources', { name: 'x', kind: 'tcp', target: 'h:1', gateway: 'g' }), 409, 'resource_exists');
  // Never returned, and sealed at rest.
  const listed = JSON.stringify(await a.get('/api/resources')) + JSON.stringify(await a.get('/api/resources/x'));
  assert.doesNotMatch(listed, /hunter2|credential_enc|password/);
  const [row] = await t.db.query<{ credential_enc: string }>('SELECT credential_enc FROM resources WHERE name = $1', ['x']);
  assert.match(row!.credential_enc, /^v2\./);
  assert.doesNotMatch(row!.credential_enc, /hunter2/);
});

test('only admins manage; users see only granted resources; others read as not found', async () => {
  await t.admin.post('/api/resources', { name: 'shared', kind: 'tcp', target: '127.0.0.1:9', gateway: 'g' });
  await t.admin.post('/api/resources', { name: 'private', kind: 'tcp', target: '127.0.0.1:9', gateway: 'g' });
  const u = await t.user('carol');
  await fails(u.post('/api/resources', { name: 'mine', kind: 'tcp', target: 'h:1', gateway: 'g' }), 403, 'forbidden');
  await fails(u.post('/api/gateways', { name: 'gx' }), 403);
  await fails(u.get('/api/gateways'), 403);
  await fails(u.post('/api/resources/shared/grants', { user: 'carol' }), 403);
  await fails(t.admin.post('/api/resources/shared/grants', { user: 'nobody' }), 404);
  await fails(t.admin.post('/api/resources/nothing/grants', { user: 'carol' }), 404);
  assert.equal((await t.admin.post('/api/resources/shared/grants', { user: 'carol' })).grant.agent, 'ask');
  assert.deepEqual((await u.get('/api/resources')).resources.map((r: any) => r.name), ['shared']);
  // The agent setting: granting again changes it (and only it); a bad value is a 400 that names the choices.
  await fails(t.admin.post('/api/resources/shared/grants', { user: 'carol', agent: 'sometimes' }), 400, 'invalid_field');
  assert.equal((await t.admin.post('/api/resources/shared/grants', { user: 'carol', agent: 'allow' })).grant.agent, 'allow');
  assert.equal((await t.admin.post('/api/resources/shared/grants', { user: 'carol' })).grant.agent, 'allow');
  assert.deepEqual((await t.admin.get('/api/resources/shared/grants')).grants.map((g: any) => [g.name, g.agent]), [['carol', 'allow']]);
  const missing = await fails(u.get('/api/resources/nothing'), 404);
  const denied = await fails(u.get('/api/resources/private'), 404);
  assert.equal(denied.message.replace('private', 'X'), missing.message.replace('nothing', 'X'));
  await t.admin.delete('/api/resources/shared/grants/carol');
  await fails(t.admin.delete('/api/resources/shared/grants/carol'), 404);
  assert.deepEqual((await u.get('/api/resources')).resources, []);
});

test('a gateway token acts only as its gateway; launch sockets check tokens, grants and gateways', async () => {
  const { token, gateway } = await t.admin.post('/api/gateways', { name: 'edge', group: 'dc1' });
  assert.equal(gateway.group, 'dc1');
  assert.equal(gateway.online, false);
  await fails(t.admin.post('/api/gateways', { name: 'edge' }), 409, 'gateway_exists');
  await fails(new ApiClient(t.url, token).get('/api/me'), 401);
  await fails(new ApiClient(t.url, token).get('/api/resources'), 401);
  await t.admin.post('/api/resources', { name: 'behind-edge', kind: 'tcp', target: '127.0.0.1:9', gateway: 'dc1' });
  const upgrade = (path: string, bearer: string) =>
    new Promise<{ status: number; body: any }>((resolve) => {
      const ws = new WebSocket(t.url.replace('http', 'ws') + path, { headers: { authorization: `Bearer ${bearer}` } });
      ws.on('unexpected-response', (_req, res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(b) }));
      });
      ws.on('open', () => {
        ws.close();
        resolve({ status: 101, body: null });
      });
    });
  assert.equal((await upgrade('/api/launch?resource=behind-edge', 'al_bogus')).status, 401);
  assert.equal((await upgrade('/api/launch?resource=behind-edge', token)).status, 401);
  assert.equal((await upgrade('/api/gateway/connect', t.admin.token)).status, 401);
  assert.equal((await upgrade('/api/launch?resource=nope', t.admin.token)).status, 404);
  const offline = await upgrade('/api/launch?resource=behind-edge', t.admin.token);
  assert.equal(offline.status, 503);
  assert.equal(offline.body.error.code, 'gateway_offline');
  assert.match(offline.body.error.message, /no gateway of "dc1" is online/);
  assert.equal((await upgrade('/api/gateway/relay/00000000-0000-0000-0000-000000000000', token)).status, 404);
  const u = await t.user();
  assert.deepEqual((await u.get('/api/sessions')).sessions, []);
  for (const bad of ['abc', '0', '1001', '2.5']) await fails(u.get(`/api/sessions?limit=${bad}`), 400, 'invalid_field');
  for (const bad of ['yes', '1', '']) await fails(u.get(`/api/sessions?open=${bad}`), 400, 'invalid_field');
  assert.deepEqual((await u.get('/api/sessions?open=true')).sessions, []);
});
