// The chat agent on infrastructure: list_resources and run_command through a real gateway, on a
// shell resource and a real sshd, as the chat's owner and never as more.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startFakeLlm, gate, type FakeLlm, type Reply } from './helpers/fake-llm.js';
import { startTestServer, StreamRecorder, providerConfig, type TestServer } from './helpers/server.js';
import { GatewayProcess, killChildren, noShellUser, runCli, shellGatewayArgs, startSshd, haveSshd, waitGatewayOnline, type Sshd } from './helpers/launch.js';
import type { ApiClient } from '../src/client/api.js';

let llm: FakeLlm;
let t: TestServer;
let gw: GatewayProcess;
let sshd: Sshd | null = null;
const noSshd = !haveSshd() && !process.env.CI ? 'needs root and openssh-server (/usr/sbin/sshd); .ci/run installs it' : false;

before(async () => {
  llm = await startFakeLlm('openai');
  t = await startTestServer(providerConfig(llm), { settings: { agentOutputBytes: 2000, approvalTimeoutMs: 4000 } });
  const { token } = await t.admin.post('/api/gateways', { name: 'agents' });
  gw = new GatewayProcess(t.url, token, { AIRLOCK_WEBRTC: '0' }, noShellUser ? [] : shellGatewayArgs());
  gw.start();
  await waitGatewayOnline(t, 'agents');
  for (const name of ['sh-allow', 'sh-ask', 'sh-deny', 'sh-ungranted']) await t.admin.post('/api/resources', { name, kind: 'shell', gateway: 'agents' });
  await t.admin.post('/api/resources', { name: 'db', kind: 'tcp', target: '127.0.0.1:9', gateway: 'agents' });
  if (!noSshd) {
    sshd = await startSshd();
    await t.admin.post('/api/resources', { name: 'box', kind: 'ssh', target: `127.0.0.1:${sshd.port}`, gateway: 'agents', credential: { username: sshd.user, password: sshd.password } });
  }
});

after(async () => {
  killChildren();
  await gw.kill();
  await sshd?.stop();
  await t.close();
  await llm.close();
});

async function agentUser(): Promise<{ u: ApiClient; name: string }> {
  const name = `ops-${Math.random().toString(36).slice(2, 8)}`;
  const u = await t.user(name);
  for (const [resource, agent] of [['sh-allow', 'allow'], ['sh-ask', 'ask'], ['sh-deny', 'deny'], ['db', 'allow'], ['box', 'allow']] as const) {
    if (resource === 'box' && noSshd) continue;
    await t.admin.post(`/api/resources/${resource}/grants`, { user: name, agent });
  }
  return { u, name };
}

/** The model calls one tool, then says what it got back. */
function callsTool(name: string, args: unknown): (req: any) => Reply {
  let n = 0;
  return (req) => {
    const last = req.messages.at(-1);
    if (last.role === 'tool') return { steps: [{ text: `got: ${last.content}` }] };
    return { steps: [{ tool: { id: `call-${++n}`, name, args } }] };
  };
}

/**
 * Follows a chat's stream until its turn ends, as a client should: a stream closed with `resync`
 * (the client fell behind a reply of many MiB) is opened again after the last seq it saw.
 */
async function turnEnded(u: ApiClient, chatId: string): Promise<void> {
  let after = 0;
  for (;;) {
    let socket: { close(): void } | null = null;
    const ended = await new Promise<boolean>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`chat ${chatId}: no end of turn in 120 s`)), 120_000);
      void u
        .openStream(chatId, after, (events) => {
          for (const e of events) {
            if (e.seq !== undefined) after = Math.max(after, e.seq);
            if (e.type === 'status' && (e.status === 'waiting' || e.status === 'error')) {
              clearTimeout(timer);
              resolve(true);
            }
          }
        })
        .then((ws) => {
          socket = ws;
          ws.once('close', () => (clearTimeout(timer), resolve(false)));
        }, reject);
    });
    (socket as { close(): void } | null)?.close();
    if (ended) return;
  }
}

async function runTurn(u: ApiClient, script: (req: any) => Reply, message = 'go') {
  llm.script = script;
  const chat = await u.post('/api/chats', { message });
  const s = await StreamRecorder.open(u, chat.id);
  await turnEnded(u, chat.id);
  const full = await u.get(`/api/chats/${chat.id}`);
  const results = full.messages.flatMap((m: any) => m.parts.filter((p: any) => p.type === 'tool_result'));
  s.close();
  return { chat, s, results };
}

test('list_resources shows what the owner may use and its approval setting; denied and ungranted resources are not there', async () => {
  const { u } = await agentUser();
  const { results } = await runTurn(u, callsTool('list_resources', {}));
  const listed = JSON.parse(results[0].output);
  assert.deepEqual(
    listed.map((r: any) => [r.name, r.kind, r.approval]),
    [['db', 'tcp', 'allow'], ...(noSshd ? [] : [['box', 'ssh', 'allow']]), ['sh-allow', 'shell', 'allow'], ['sh-ask', 'shell', 'ask']].sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
  );
});

test('run_command on an allowed shell resource streams its output and returns the exit status; a second command reuses the session', { skip: noShellUser }, async () => {
  const { u } = await agentUser();
  llm.script = (() => {
    let n = 0;
    return (req: any) => {
      const last = req.messages.at(-1);
      if (last.role === 'tool' && n >= 2) return { steps: [{ text: 'done' }] };
      n++;
      const command = n === 1 ? 'echo hello; echo oops >&2; exit 3' : 'printf second';
      return { steps: [{ tool: { id: `c${n}`, name: 'run_command', args: { resource: 'sh-allow', command } } }] };
    };
  })();
  const chat = await u.post('/api/chats', { message: 'run things' });
  const s = await StreamRecorder.open(u, chat.id);
  await s.waitStatus('waiting');
  const full = await u.get(`/api/chats/${chat.id}`);
  const results = full.messages.flatMap((m: any) => m.parts.filter((p: any) => p.type === 'tool_result'));
  assert.match(results[0].output, /^exit status 3 \(session [0-9a-f-]{36}\)\n/);
  assert.match(results[0].output, /hello/);
  assert.match(results[0].output, /oops/);
  assert.match(results[1].output, /^exit status 0 \(session [0-9a-f-]{36}\)\nsecond$/);
  const session = /session ([0-9a-f-]{36})/.exec(results[0].output)![1];
  assert.equal(/session ([0-9a-f-]{36})/.exec(results[1].output)![1], session, 'the second command ran in the same session');
  // Output streamed live, as tool_output events of its call.
  const streamed = (from: string) => s.events.filter((e) => e.type === 'tool_output' && e.tool_call_id === 'c1' && e.stream === from).map((e) => e.text).join('');
  assert.equal(streamed('stdout'), 'hello\n');
  assert.equal(streamed('stderr'), 'oops\n');
  // The session is in the owner's audit trail, and names the chat that opened it.
  const { sessions } = await u.get('/api/sessions');
  const row = sessions.find((x: any) => x.id === session);
  assert.equal(row.resource, 'sh-allow');
  assert.equal(row.chat_id, chat.id);
  s.close();
});

test('a denied, ungranted or unknown resource answers the same; tcp and a call that needs approval do not run', async () => {
  const { u } = await agentUser();
  const msg = async (resource: string) => (await runTurn(u, callsTool('run_command', { resource, command: 'id' }))).results[0];
  const unknown = await msg('no-such-thing');
  assert.equal(unknown.is_error, true);
  for (const r of ['sh-deny', 'sh-ungranted']) {
    const got = await msg(r);
    assert.equal(got.is_error, true);
    assert.equal(got.output.replace(r, 'X'), unknown.output.replace('no-such-thing', 'X'));
  }
  assert.match((await msg('db')).output, /tcp resource: run_command works on ssh and shell resources/);
  // A call no one decides is denied at the deadline (AIRLOCK_APPROVAL_TIMEOUT_MS) and does not run.
  const ask = await msg('sh-ask');
  assert.equal(ask.is_error, true);
  assert.match(ask.output, /not approved \(no one decided in time/);
  assert.deepEqual((await u.get('/api/approvals')).approvals, []);
  const bad = (await runTurn(u, callsTool('run_command', { resource: 'sh-allow' }))).results[0];
  assert.match(bad.output, /"command" is required/);
  const badTimeout = (await runTurn(u, callsTool('run_command', { resource: 'sh-allow', command: 'id', timeout_s: 0 }))).results[0];
  assert.match(badTimeout.output, /timeout_s must be an integer from 1 to 3600/);
  const badMax = (await runTurn(u, callsTool('read_file', { resource: 'sh-allow', path: 'x', max_bytes: 'lots' }))).results[0];
  assert.match(badMax.output, /max_bytes must be an integer from 1 to 16777216/);
});

test('output past AIRLOCK_AGENT_OUTPUT_BYTES is cut for the model with a note of how much', { skip: noShellUser }, async () => {
  const { u } = await agentUser();
  const { results } = await runTurn(u, callsTool('run_command', { resource: 'sh-allow', command: 'head -c 10000 /dev/zero | tr "\\0" x' }));
  const out = results[0].output as string;
  assert.match(out, /^exit status 0/);
  assert.equal(out.split('\n')[1], 'x'.repeat(2000));
  assert.match(out, /\[output cut: 8000 more bytes not shown \(the limit is 2000 bytes\)\]/);
});

test('an interrupt stops a running command and the result says so', { skip: noShellUser }, async () => {
  const { u } = await agentUser();
  const started = gate();
  const marker = `/tmp/airlock-agent-marker-${process.pid}`;
  fs.rmSync(marker, { force: true });
  llm.script = (req: any) => {
    const last = req.messages.at(-1);
    if (last.role === 'tool') return { steps: [{ text: 'ok' }] };
    return { steps: [{ tool: { id: 'slow', name: 'run_command', args: { resource: 'sh-allow', command: `echo begun; sleep 3; echo late > ${marker}` } } }] };
  };
  const chat = await u.post('/api/chats', { message: 'slow' });
  const s = await StreamRecorder.open(u, chat.id);
  await s.waitFor((e) => e.type === 'tool_output' && /begun/.test(String(e.text)));
  started.open();
  const t0 = Date.now();
  await u.post(`/api/chats/${chat.id}/interrupt`);
  await s.waitStatus('waiting');
  assert.ok(Date.now() - t0 < 10_000);
  const full = await u.get(`/api/chats/${chat.id}`);
  const result = full.messages.flatMap((m: any) => m.parts.filter((p: any) => p.type === 'tool_result'))[0];
  assert.match(result.output, /interrupted/);
  // The command was stopped on the gateway, not left to run.
  await new Promise((r) => setTimeout(r, 3500));
  assert.equal(fs.existsSync(marker), false, 'the interrupted command went on running');
  s.close();
});

test('run_command on an ssh resource runs through the gateway with the injected credential', { skip: noSshd }, async () => {
  const { u } = await agentUser();
  const { results } = await runTurn(u, callsTool('run_command', { resource: 'box', command: 'whoami' }));
  assert.match(results[0].output, new RegExp(`^exit status 0 \\(session [0-9a-f-]{36}\\)\\n${sshd!.user}\\n$`));
  assert.doesNotMatch(results[0].output, new RegExp(sshd!.password));
});

/** Starts a turn whose model calls run_command twice on sh-ask (the second after the first's result). */
async function askingTurn(u: ApiClient, commands: string[]) {
  let n = 0;
  llm.script = (req: any) => {
    const last = req.messages.at(-1);
    if (last.role === 'tool' && n >= commands.length) return { steps: [{ text: 'finished' }] };
    const command = commands[n++]!;
    return { steps: [{ tool: { id: `ask-${n}`, name: 'run_command', args: { resource: 'sh-ask', command } } }] };
  };
  const chat = await u.post('/api/chats', { message: 'needs approval' });
  return { chat, s: await StreamRecorder.open(u, chat.id) };
}

const results = async (u: ApiClient, chatId: string) =>
  (await u.get(`/api/chats/${chatId}`)).messages.flatMap((m: any) => m.parts.filter((p: any) => p.type === 'tool_result'));

test('a call on an ask resource waits for the owner: approve runs it, the decision is stored and shown; others cannot decide', { skip: noShellUser }, async () => {
  const { u, name } = await agentUser();
  const other = await t.user();
  const { chat, s } = await askingTurn(u, ['echo approved-run']);
  const req = await s.waitFor((e) => e.type === 'approval_required');
  assert.equal(req.tool_call_id, 'ask-1');
  assert.equal(req.resource, 'sh-ask');
  assert.deepEqual(req.args, { resource: 'sh-ask', command: 'echo approved-run', timeout_s: 60 });
  const shown = await u.get(`/api/chats/${chat.id}`);
  assert.equal(shown.status, 'requires_approval');
  assert.deepEqual(shown.approvals.map((a: any) => a.tool_call_id), ['ask-1']);
  assert.deepEqual((await u.get('/api/approvals')).approvals.map((a: any) => [a.chat_id, a.tool_call_id]), [[chat.id, 'ask-1']]);
  // Bad input: another user's chat reads as not found; an unknown call, a bad decision.
  await assert.rejects(other.post(`/api/chats/${chat.id}/approvals`, { tool_call_id: 'ask-1', decision: 'approve' }), (e: any) => e.status === 404);
  await assert.rejects(u.post(`/api/chats/${chat.id}/approvals`, { tool_call_id: 'nope', decision: 'approve' }), (e: any) => e.status === 404);
  await assert.rejects(u.post(`/api/chats/${chat.id}/approvals`, { tool_call_id: 'ask-1', decision: 'maybe' }), (e: any) => e.status === 400 && e.code === 'invalid_field');
  const { approval } = await u.post(`/api/chats/${chat.id}/approvals`, { tool_call_id: 'ask-1', decision: 'approve' });
  assert.equal(approval.decision, 'approve');
  assert.equal(approval.decided_by, name);
  await assert.rejects(u.post(`/api/chats/${chat.id}/approvals`, { tool_call_id: 'ask-1', decision: 'deny' }), (e: any) => e.status === 409 && e.code === 'already_decided');
  await s.waitStatus('waiting');
  const decided = s.events.find((e) => e.type === 'approval_decided')!;
  assert.equal(decided.approved, true);
  assert.equal(decided.by, name);
  assert.match((await results(u, chat.id))[0].output, /^exit status 0 \(session [0-9a-f-]{36}\)\napproved-run\n$/);
  // The stored events replay the approval to a client that comes later.
  const late = await StreamRecorder.open(u, chat.id, 0);
  await late.waitFor((e) => e.type === 'caught_up');
  assert.deepEqual(late.events.filter((e) => e.type.startsWith('approval_')).map((e) => e.type), ['approval_required', 'approval_decided']);
  late.close();
  s.close();
});

test('approve_chat approves the tool on the resource for the rest of the chat; deny returns the reason to the model and nothing runs', { skip: noShellUser }, async () => {
  const { u, name } = await agentUser();
  const first = await askingTurn(u, ['echo one', 'echo two']);
  await first.s.waitFor((e) => e.type === 'approval_required');
  await u.post(`/api/chats/${first.chat.id}/approvals`, { tool_call_id: 'ask-1', decision: 'approve_chat' });
  await first.s.waitStatus('waiting');
  assert.equal(first.s.events.filter((e) => e.type === 'approval_required').length, 1, 'the second call was not asked about');
  const out = await results(u, first.chat.id);
  assert.match(out[0].output, /\none\n$/);
  assert.match(out[1].output, /\ntwo\n$/);
  first.s.close();

  const second = await askingTurn(u, ['touch /tmp/airlock-denied-marker']);
  await second.s.waitFor((e) => e.type === 'approval_required');
  await u.post(`/api/chats/${second.chat.id}/approvals`, { tool_call_id: 'ask-1', decision: 'deny', reason: 'not on a Friday' });
  await second.s.waitStatus('waiting');
  const denied = (await results(u, second.chat.id))[0];
  assert.equal(denied.is_error, true);
  assert.match(denied.output, new RegExp(`not approved \\(denied by ${name}: not on a Friday\\); it did not run`));
  second.s.close();
});

test('an interrupt while a call waits for approval cancels it and ends the turn', { skip: noShellUser }, async () => {
  const { u } = await agentUser();
  const { chat, s } = await askingTurn(u, ['echo never']);
  await s.waitFor((e) => e.type === 'approval_required');
  await u.post(`/api/chats/${chat.id}/interrupt`);
  await s.waitStatus('waiting');
  assert.match((await results(u, chat.id))[0].output, /interrupted/);
  assert.deepEqual((await u.get('/api/approvals')).approvals, []);
  await assert.rejects(u.post(`/api/chats/${chat.id}/approvals`, { tool_call_id: 'ask-1', decision: 'approve' }), (e: any) => e.status === 409);
  s.close();
});

test('airlock chat says what waits for approval and how to decide; airlock approvals lists and approves it; the command output streams to the chat', { skip: noShellUser }, async () => {
  const { u } = await agentUser();
  const env = { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: u.token };
  let n = 0;
  llm.script = (req: any) => {
    const last = req.messages.at(-1);
    if (last.role === 'tool') return { steps: [{ text: `the command said: ${last.content.split('\n')[1]}` }] };
    return { steps: [{ tool: { id: `cli-${++n}`, name: 'run_command', args: { resource: 'sh-ask', command: 'echo from-the-gateway' } } }] };
  };
  const chat = runCli(['chat', 'please run it'], env);
  const [, chatId, call] = await chat.waitErr(/airlock approvals approve (\S+) (\S+)/);
  const list = runCli(['approvals'], env);
  assert.equal(await list.exited(), 0);
  assert.match(list.stdout, new RegExp(`${chatId} ${call}  run on sh-ask: echo from-the-gateway`));
  const approve = runCli(['approvals', 'approve', chatId!, call!], env);
  assert.equal(await approve.exited(), 0);
  assert.match(approve.stdout, /Approved cli-1\./);
  assert.equal(await chat.exited(), 0);
  assert.match(chat.stdout, /the command said: from-the-gateway/);
  assert.match(chat.stderr, /\[approved by /);
  assert.match(chat.stderr, /from-the-gateway/); // streamed as the command printed it
  const again = runCli(['approvals', 'deny', chatId!, call!], env);
  assert.equal(await again.exited(), 1);
  assert.match(again.stderr, /already decided/);
  assert.doesNotMatch(again.stderr, /at .*\.js/);
  const usage = runCli(['approvals', 'approve'], env);
  assert.equal(await usage.exited(), 2);
});

/** The model makes these calls one per step, then stops. */
function callsInTurn(calls: { name: string; args: unknown }[]): (req: any) => Reply {
  return (req) => {
    const done = req.messages.filter((m: any) => m.role === 'tool').length;
    if (done >= calls.length) return { steps: [{ text: 'done' }] };
    return { steps: [{ tool: { id: `f${done + 1}`, ...calls[done]! } }] };
  };
}

for (const resource of ['sh-allow', 'box']) {
  test(`write_file and read_file on ${resource}: text with a mode, binary as base64, a 10 MiB file whole, a cut read, a missing file`, { skip: resource === 'box' ? noSshd : noShellUser }, async () => {
    const { u } = await agentUser();
    const crypto = await import('node:crypto');
    const dir = `/tmp/airlock-files-${process.pid}-${resource}`;
    const bin = crypto.randomBytes(1024);
    const big = crypto.randomBytes(10 << 20);
    const { results } = await runTurn(
      u,
      callsInTurn([
        { name: 'run_command', args: { resource, command: `mkdir -p ${dir}` } },
        { name: 'write_file', args: { resource, path: `${dir}/note's.txt`, content: 'héllo\nworld\n', mode: '600' } },
        { name: 'read_file', args: { resource, path: `${dir}/note's.txt` } },
        { name: 'run_command', args: { resource, command: `stat -c %a ${dir}/note*` } },
        { name: 'write_file', args: { resource, path: `${dir}/blob`, content: bin.toString('base64'), encoding: 'base64' } },
        { name: 'read_file', args: { resource, path: `${dir}/blob` } },
        { name: 'write_file', args: { resource, path: `${dir}/big`, content: big.toString('base64'), encoding: 'base64' } },
        { name: 'read_file', args: { resource, path: `${dir}/big`, max_bytes: 10 << 20 } },
        { name: 'read_file', args: { resource, path: `${dir}/big`, max_bytes: 100 } },
        { name: 'read_file', args: { resource, path: `${dir}/nothing-here` } },
        { name: 'run_command', args: { resource, command: `rm -rf ${dir}` } },
      ]),
    );
    assert.match(results[1].output, /^wrote 13 bytes to .*note's\.txt/);
    assert.equal(results[2].output.split('\n').slice(1).join('\n'), 'héllo\nworld\n');
    assert.match(results[2].output, /: 13 bytes \(session/);
    assert.match(results[3].output, /\n600\n$/);
    assert.match(results[5].output, /1024 bytes \(session [0-9a-f-]{36}\), not UTF-8 text: base64\n/);
    assert.equal(results[5].output.split('\n')[1], bin.toString('base64'));
    assert.match(results[6].output, /^wrote 10485760 bytes/);
    assert.ok(Buffer.from(results[7].output.split('\n')[1], 'base64').equals(big), 'the 10 MiB file came back whole');
    assert.match(results[8].output, /\[file cut: 10485660 more bytes not shown \(max_bytes 100\)\]$/);
    assert.equal(results[9].is_error, true);
    assert.match(results[9].output, /no such file/);
  });
}

for (const how of ['the session is ended', 'the grant is revoked', 'the user is disabled'] as const) {
  test(`a running command stops when ${how}, and the result says why`, { skip: noShellUser }, async () => {
    const { u, name } = await agentUser();
    llm.script = (req: any) => {
      const last = req.messages.at(-1);
      if (last.role === 'tool') return { steps: [{ text: 'ok' }] };
      return { steps: [{ tool: { id: 'long', name: 'run_command', args: { resource: 'sh-allow', command: 'echo started; sleep 30' } } }] };
    };
    const chat = await u.post('/api/chats', { message: 'long' });
    const s = await StreamRecorder.open(u, chat.id);
    await s.waitFor((e) => e.type === 'tool_output' && /started/.test(String(e.text)));
    const t0 = Date.now();
    if (how === 'the session is ended') {
      const { sessions } = await u.get('/api/sessions?open=true');
      await u.delete(`/api/sessions/${sessions.find((x: any) => x.chat_id === chat.id).id}`);
    } else if (how === 'the grant is revoked') await t.admin.delete(`/api/resources/sh-allow/grants/${name}`);
    else await t.admin.post(`/api/users/${name}/disable`);
    const why = { 'the session is ended': /ended it/, 'the grant is revoked': /grant .* was revoked/, 'the user is disabled': /no longer valid|disabled/ }[how];
    if (how === 'the user is disabled') {
      // The owner's streams close too; the stored result says why the command stopped.
      const result = await (async () => {
        for (;;) {
          const [row] = await t.db.query<{ parts: any }>(`SELECT parts FROM chat_messages WHERE chat_id = $1 AND role = 'tool'`, [chat.id]);
          if (row) return row.parts[0];
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      assert.match(result.output, /^stopped: /);
      assert.match(result.output, why);
    } else {
      await s.waitStatus('waiting');
      const result = (await results(u, chat.id))[0];
      assert.match(result.output, /^stopped: /);
      assert.match(result.output, why);
    }
    assert.ok(Date.now() - t0 < 10_000, 'stopped at once');
    s.close();
  });
}

test('airlock chat on a terminal asks about a call that waits, and a key decides it: [a]lways approves the rest of the chat', { skip: noShellUser }, async () => {
  const pty = await import('@lydell/node-pty');
  const { BIN, childEnv } = await import('./helpers/launch.js');
  const { u } = await agentUser();
  let n = 0;
  llm.script = (req: any) => {
    const last = req.messages.at(-1);
    if (last.role === 'tool' && n >= 2) return { steps: [{ text: 'all done' }] };
    n++;
    return { steps: [{ tool: { id: `tty-${n}`, name: 'run_command', args: { resource: 'sh-ask', command: `echo key-${n}` } } }] };
  };
  const term = pty.spawn(process.execPath, [BIN, 'chat', 'two calls please'], { name: 'xterm', cols: 150, rows: 40, env: childEnv({ AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: u.token }) as Record<string, string> });
  let screen = '';
  term.onData((d) => (screen += d.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '')));
  const exited = new Promise<number>((r) => term.onExit(({ exitCode }) => r(exitCode)));
  const waitScreen = async (re: RegExp) => {
    for (let i = 0; !re.test(screen); i++) {
      if (i > 3000) throw new Error(`no ${re} on the terminal:\n${screen}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await waitScreen(/approve\? \[y\]es \/ \[a\]lways in this chat \/ \[n\]o/);
  term.write('a'); // this call, and the same tool on the same resource for the rest of the chat
  await waitScreen(/all done/);
  assert.equal(await exited, 0);
  assert.match(screen, /key-1/);
  assert.match(screen, /key-2/);
  assert.equal(screen.match(/approve\? \[y\]es/g)!.length, 1, 'the second call was approved by the rule, not asked about');
});
