// A chat agent across replicas on PostgreSQL: the turn runs on one replica, the person's approval
// reaches another, and the gateway is connected to a third.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeLlm, type FakeLlm } from './helpers/fake-llm.js';
import { StreamRecorder } from './helpers/server.js';
import { GatewayProcess, killChildren, noShellUser, shellGatewayArgs } from './helpers/launch.js';
import { PG_URL, cluster, type Cluster, type Replica } from './helpers/replicas.js';
import { ApiClient } from '../src/client/api.js';

const skip = !PG_URL ? 'needs PostgreSQL (npm run test:pg)' : noShellUser;

let llm: FakeLlm | null = null;
let c: Cluster | null = null;
let gw: GatewayProcess | null = null;
after(async () => {
  killChildren();
  await gw?.kill();
  await c?.close();
  await llm?.close();
});

test('a call waits on the replica running the turn, is approved on another, and runs through a gateway on a third', { skip }, async () => {
  llm = await startFakeLlm('openai', (req: any) => {
    const last = req.messages.at(-1);
    if (last.role === 'tool') return { steps: [{ text: `ran: ${last.content.split('\n')[1]}` }] };
    return { steps: [{ tool: { id: 'across', name: 'run_command', args: { resource: 'far-shell', command: 'echo across replicas' } } }] };
  });
  c = await cluster({ AIRLOCK_OPENAI_BASE_URL: llm.baseUrl, AIRLOCK_OPENAI_API_KEY: 'test-key', AIRLOCK_MODEL: 'gpt-test' });
  const worker = await c.start(); // the only replica that runs turns
  const api = await c.start({ AIRLOCK_CHAT_CONCURRENCY: '0' });
  const gatewayHome = await c.start({ AIRLOCK_CHAT_CONCURRENCY: '0' });
  const { token } = await worker.api.post('/api/gateways', { name: 'far' });
  // The gateway may open relay sockets to the other replicas (the worker's agent session is held there).
  gw = new GatewayProcess(gatewayHome.url, token, { AIRLOCK_WEBRTC: '0' }, [...shellGatewayArgs(), '--relay-origin', 'http://127.0.0.1:*']);
  gw.start();
  for (let i = 0; !(await worker.api.get('/api/gateways')).gateways[0].online; i++) {
    if (i > 500) throw new Error(`gateway did not come online: ${gw.log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await worker.api.post('/api/resources', { name: 'far-shell', kind: 'shell', gateway: 'far' });
  const { token: userToken } = await worker.api.post('/api/users', { name: 'far-user' });
  await worker.api.post('/api/resources/far-shell/grants', { user: 'far-user', agent: 'ask' });
  const asUser = (r: Replica) => new ApiClient(r.url, userToken);
  const onWorker = asUser(worker);
  const onApi = asUser(api);

  const chat = await onWorker.post('/api/chats', { message: 'run it far away' });
  const s = await StreamRecorder.open(onWorker, chat.id);
  const req = await s.waitFor((e) => e.type === 'approval_required');
  // Listed and decided on a replica that runs no turns.
  assert.deepEqual((await onApi.get('/api/approvals')).approvals.map((a: any) => a.tool_call_id), [req.tool_call_id]);
  const { approval } = await onApi.post(`/api/chats/${chat.id}/approvals`, { tool_call_id: req.tool_call_id, decision: 'approve' });
  assert.equal(approval.decided_by, 'far-user');
  await s.waitStatus('waiting');
  const full = await onApi.get(`/api/chats/${chat.id}`);
  const result = full.messages.flatMap((m: any) => m.parts.filter((p: any) => p.type === 'tool_result'))[0];
  assert.match(result.output, /^exit status 0 \(session [0-9a-f-]{36}\)\nacross replicas\n$/);
  assert.match(full.messages.at(-1).parts[0].text, /ran: across replicas/);
  // The session is in the audit trail on every replica, with the chat that opened it.
  const { sessions } = await onApi.get('/api/sessions');
  assert.equal(sessions.find((x: any) => x.resource === 'far-shell')?.chat_id, chat.id);
  s.close();
});
