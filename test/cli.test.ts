// The `airlock` binary as a user runs it: server on the embedded database, login, chat with live
// streaming and Ctrl-C, list/show, the data-folder lock, and CLI errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as pty from '@lydell/node-pty';
import { startFakeLlm, gate, type FakeLlm } from './helpers/fake-llm.js';
import { freePort } from './helpers/launch.js';
import { waitUntil, StreamRecorder } from './helpers/server.js';
import { ApiClient } from '../src/client/api.js';

/** Resolves with the first truthy value of get(), polled (a hang guard of 60 s). */
async function waitFor<T>(get: () => T | undefined | null): Promise<T> {
  let v: T | undefined | null;
  await waitUntil(() => Boolean((v = get())), get.toString());
  return v!;
}

const BIN = path.resolve('bin/airlock.js');
let llm: FakeLlm;
let dir: string;
let server: ChildProcess;
let serverUrl: string;
let env: NodeJS.ProcessEnv;
let firstStart = '';

function run(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { env: opts.env ?? env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    if (opts.input !== undefined) p.stdin.end(opts.input);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

before(async () => {
  llm = await startFakeLlm('openai');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-cli-'));
  env = {
    ...process.env,
    AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json'),
    AIRLOCK_OPENAI_BASE_URL: llm.baseUrl,
    AIRLOCK_OPENAI_API_KEY: 'k',
    AIRLOCK_MODEL: 'gpt-test',
    AIRLOCK_LOG_LEVEL: process.env.DBG_LEVEL ?? 'warn',
  };
  delete env.AIRLOCK_TOKEN;
  delete env.AIRLOCK_SERVER;
  server = spawn(process.execPath, [BIN, 'server', '--data-dir', path.join(dir, 'data'), '--port', '0'], { env });
  serverUrl = await new Promise<string>((resolve, reject) => {
    server.stderr!.on('data', (d) => {
      if (process.env.DBG_FILE) fs.appendFileSync(process.env.DBG_FILE, d);
      firstStart += d;
      const m = /listening on (http:\/\/\S+)/.exec(firstStart);
      if (m && /logged in as admin/.test(firstStart)) resolve(m[1]!);
    });
    server.on('exit', (c) => reject(new Error(`server exited ${c}: ${firstStart}`)));
  });
});

after(async () => {
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  await llm.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('first start creates the admin, prints its token and logs the CLI in', async () => {
  const token = /^\s+(al_\S+)$/m.exec(firstStart)![1];
  assert.equal(fs.readFileSync(path.join(dir, 'data', 'admin-token'), 'utf8').trim(), token);
  assert.deepEqual(JSON.parse(fs.readFileSync(env.AIRLOCK_CLI_CONFIG!, 'utf8')), { server: serverUrl, token });
});

test('a second server on the same data folder exits with a clear message', async () => {
  const r = await run(['server', '--data-dir', path.join(dir, 'data'), '--port', '0']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /data folder .* is in use by another Airlock process \(pid \d+\)/);
});

test('airlock chat MESSAGE streams the reply and exits 0; list and show', async () => {
  llm.script = () => ({ steps: [{ text: 'Hello' }, { text: ', CLI' }] });
  const r = await run(['chat', 'hi from the cli']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'Hello, CLI\n');
  const chatId = /chat (\S+)/.exec(r.stderr)![1]!;
  const list = await run(['chat', 'list']);
  assert.match(list.stdout, new RegExp(`${chatId}\\s+waiting`));
  const show = await run(['chat', 'show', chatId]);
  assert.match(show.stdout, /you> hi from the cli/);
  assert.match(show.stdout, /assistant> Hello, CLI/);
  llm.script = () => ({ steps: [{ text: 'second answer' }] });
  const cont = await run(['chat', '--chat', chatId, 'and again']);
  assert.equal(cont.code, 0, cont.stderr);
  assert.equal(cont.stdout, 'second answer\n');
  const piped = await run(['chat', '--chat', chatId], { input: 'from stdin\n' });
  assert.equal(piped.code, 0, piped.stderr);
  const json = JSON.parse((await run(['chat', 'show', chatId, '--json'])).stdout);
  assert.deepEqual(json.messages.filter((m: any) => m.role === 'user').map((m: any) => m.parts[0].text), ['hi from the cli', 'and again', 'from stdin']);
  // Archive, list archived, refused send, unarchive.
  assert.equal((await run(['chat', 'archive', chatId])).code, 0);
  assert.doesNotMatch((await run(['chat', 'list'])).stdout, new RegExp(chatId));
  assert.match((await run(['chat', 'list', '--archived'])).stdout, new RegExp(chatId));
  const refused = await run(['chat', '--chat', chatId, 'still there?']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /archived; unarchive it first/);
  const back = await run(['chat', 'unarchive', chatId]);
  assert.equal(back.code, 0, back.stderr);
  assert.match((await run(['chat', 'list'])).stdout, new RegExp(chatId));
});

test('Ctrl-C during a reply interrupts the turn: partial reply kept, exit 130', async () => {
  const g = gate();
  llm.script = () => ({ steps: [{ text: 'partial words' }, { wait: g.promise }, { text: ' never shown' }] });
  const p = chatInBackground(['tell me a long story']);
  await p.printed('partial words');
  p.proc.kill('SIGINT');
  const code = await p.closed;
  g.open();
  assert.equal(code, 130, p.stderr);
  assert.match(p.stderr, /interrupt/);
  const chatId = /chat (\S+)/.exec(p.stderr)![1]!;
  const json = JSON.parse((await run(['chat', 'show', chatId, '--json'])).stdout);
  const reply = json.messages[1];
  assert.equal(reply.interrupted, true);
  assert.equal(reply.parts[0].text, 'partial words');
});

/** `airlock chat ARGS` in a real pseudo-terminal: what it has shown (escape sequences dropped), waits on it, its exit code. */
function chatInTerminal(args: string[]) {
  const term = pty.spawn(process.execPath, [BIN, 'chat', ...args], { name: 'xterm', cols: 120, rows: 40, env: env as Record<string, string> });
  const t = {
    term,
    screen: '',
    exited: new Promise<number>((r) => term.onExit(({ exitCode }) => r(exitCode))),
    /** Until `re` matches what was shown from offset `from` on. */
    waitFor: (re: RegExp, from = 0) =>
      waitUntil(() => re.test(t.screen.slice(from)), String(re), 30_000).catch((err) => {
        throw new Error(`${err.message} in:\n${t.screen}`);
      }),
  };
  term.onData((d) => (t.screen += d.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '')));
  return t;
}

/** `airlock chat ARGS` in the background (no terminal): what it has printed, waits on it, its exit code. */
function chatInBackground(args: string[], childEnv: NodeJS.ProcessEnv = env, live = true) {
  // --live: these tests watch the reply arrive; without it a pipe gets each reply once stored.
  const proc = spawn(process.execPath, [BIN, 'chat', ...(live ? ['--live'] : []), ...args], { env: childEnv });
  const t = {
    proc,
    stdout: '',
    stderr: '',
    closed: new Promise<number>((r) => proc.on('close', (c) => r(c ?? -1))),
    /** Until `text` is on stdout; fails if the command ends first. */
    printed: (text: string) =>
      new Promise<void>((resolve, reject) => {
        const check = () => t.stdout.includes(text) && resolve();
        check();
        proc.stdout.on('data', check);
        proc.once('close', () => reject(new Error(`airlock chat ended without printing ${JSON.stringify(text)}; stderr:\n${t.stderr}`)));
      }),
  };
  proc.stdout.on('data', (d) => (t.stdout += d));
  proc.stderr.on('data', (d) => (t.stderr += d));
  return t;
}

test('interactive session: Ctrl-C interrupts the reply, lines typed meanwhile follow it, Ctrl-C on an empty prompt quits', async () => {
  const g = gate();
  llm.script = (req) => {
    const last = req.messages[req.messages.length - 1].content;
    if (last === 'tell me a story') return { steps: [{ text: 'once upon' }, { wait: g.promise }, { text: ' never shown' }] };
    return { steps: [{ text: `re: ${last}` }] };
  };
  const session = chatInTerminal([]);
  const { term, waitFor } = session;
  try {
    await waitFor(/you> /);
    term.write('tell me a story\r');
    await waitFor(/once upon/);
    term.write('and then?\r'); // not echoed into the reply; sent when it ends
    await waitFor(/\[sent when this reply ends\] and then\?/);
    term.write('still typ'); // unfinished: back in the prompt after the replies
    term.write('\x03');
    await waitFor(/\[interrupted\]/);
    const afterInterrupt = session.screen.indexOf('[interrupted]');
    await waitFor(/you> and then\?\s+re: and then\?/, afterInterrupt);
    await waitFor(/re: and then\?\s+you> still typ$/, afterInterrupt);
    term.write('\x15'); // Ctrl-U: clear it
    await waitFor(/you> $/, session.screen.length - 12);
    term.write('one\rtwo\r'); // pasted: the second line arrives with the first
    await waitFor(/re: one\s+you> two\s+re: two\s+you> $/, afterInterrupt);
    term.write('half typed');
    await waitFor(/you> half typed$/, afterInterrupt);
    term.write('\x03'); // clears the line
    await waitFor(/you> $/, session.screen.length - 6);
    term.write('\x03'); // quits
    assert.equal(await session.exited, 0, session.screen);
  } finally {
    g.open();
    term.kill();
  }
  const chatId = /chat (\S+)/.exec(session.screen)![1]!;
  const json = JSON.parse((await run(['chat', 'show', chatId, '--json'])).stdout);
  assert.deepEqual(
    json.messages.map((m: any) => [m.role, m.parts[0].text, Boolean(m.interrupted)]),
    [
      ['user', 'tell me a story', false],
      ['assistant', 'once upon', true],
      ['user', 'and then?', false],
      ['assistant', 're: and then?', false],
      ['user', 'one', false],
      ['assistant', 're: one', false],
      ['user', 'two', false],
      ['assistant', 're: two', false],
    ],
  );
  // Continuing it interactively shows its last exchange first.
  const again = chatInTerminal(['--chat', chatId]);
  await again.waitFor(/you> $/);
  again.term.write('\x04');
  assert.equal(await again.exited, 0, again.screen);
  assert.match(again.screen, /\(6 earlier messages: airlock chat show \S+\)\s+you> two\s+assistant> re: two\s+continuing chat/);
});

test('a reply outlives its server: killed mid-turn, the CLI reconnects and the restarted server finishes it; a server that stays gone ends the command with a clear error', async () => {
  const port = await freePort();
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-cli-restart-'));
  const env2 = { ...env, AIRLOCK_CLI_CONFIG: path.join(d, 'cli.json'), AIRLOCK_LEASE_MS: '1000' };
  const startServer = async () => {
    const srv = spawn(process.execPath, [BIN, 'server', '--data-dir', path.join(d, 'data'), '--port', String(port)], { env: env2 });
    let err = '';
    await new Promise<void>((resolve, reject) => {
      srv.stderr!.on('data', (c) => {
        err += c;
        if (/listening on/.test(err) && (/logged in as admin/.test(err) || !/First start/.test(err))) resolve();
      });
      srv.on('exit', (c) => reject(new Error(`server exited ${c}: ${err}`)));
    });
    return srv;
  };
  const g = gate();
  const never = gate(); // the last reply: its server is killed while it waits
  const calls = new Map<string, number>();
  const piped = gate(); // the piped command's partial reply has gone out
  llm.script = (req) => {
    const last = req.messages[req.messages.length - 1].content as string;
    const n = (calls.get(last) ?? 0) + 1;
    calls.set(last, n);
    if (last === 'and now?') return { steps: [{ text: 'cut off' }, { wait: never.promise }] };
    if (n > 1) return { steps: [{ text: 'the whole answer' }] };
    // The live one's partial goes out after the piped one's was written (a thenable runs when
    // its step is reached): once the live one has printed it, the piped one has it too.
    const written = { then: (r: () => void) => (piped.open(), r()) } as unknown as Promise<void>;
    if (last === 'survive that') return { steps: [{ text: 'first try' }, { wait: written }, { wait: g.promise }] };
    return { steps: [{ wait: piped.promise }, { text: 'first try' }, { wait: g.promise }] };
  };
  let second: ChildProcess | null = null;
  try {
    const first = await startServer();
    // Both follow a reply whose server is killed mid-way: the live one (a terminal would show
    // the same) keeps the abandoned part and marks it; the piped one prints only the stored reply.
    const pipedChat = chatInBackground(['survive that'], env2, false);
    const p = chatInBackground(['survive this'], env2);
    await p.printed('first try');
    // The piped command prints nothing before the reply is stored: a stream of its chat beside it
    // shows when the server has sent it the partial reply (to every subscriber in one go).
    await waitUntil(() => /chat (\S+)/.test(pipedChat.stderr), 'the piped command named its chat');
    const cli = JSON.parse(fs.readFileSync(env2.AIRLOCK_CLI_CONFIG, 'utf8'));
    const beside = await StreamRecorder.open(new ApiClient(cli.server, cli.token), /chat (\S+)/.exec(pipedChat.stderr)![1]!);
    await beside.waitFor((e) => e.type === 'delta' && e.text === 'first try');
    beside.close();
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    g.open(); // the dead server's provider call: nothing reads it any more
    second = await startServer();
    assert.equal(await p.closed, 0, p.stderr);
    assert.equal(p.stdout, 'first try\nthe whole answer\n');
    assert.match(p.stderr, /the stream closed .*reconnecting/);
    assert.match(p.stderr, /the reply starts over/);
    assert.equal(await pipedChat.closed, 0, pipedChat.stderr);
    assert.equal(pipedChat.stdout, 'the whole answer\n');
    assert.match(pipedChat.stderr, /the reply starts over/);
    const chatId = /chat (\S+)/.exec(p.stderr)![1]!;
    const shown = JSON.parse((await run(['chat', 'show', chatId, '--json'], { env: env2 })).stdout);
    assert.deepEqual(shown.messages.map((m: any) => m.parts[0].text), ['survive this', 'the whole answer']);
    // The server goes and does not come back: the command gives up after AIRLOCK_STREAM_RECONNECT_MS.
    const q = chatInBackground(['--chat', chatId, 'and now?'], { ...env2, AIRLOCK_STREAM_RECONNECT_MS: '1500' });
    await q.printed('cut off');
    second.kill('SIGKILL');
    await new Promise((r) => second!.once('exit', r));
    second = null;
    assert.equal(await q.closed, 1, q.stderr);
    assert.match(q.stderr, /lost the chat's stream and could not reconnect for \d+ s: cannot (reach the Airlock server|open the stream)/);
  } finally {
    g.open();
    never.open();
    second?.kill('SIGTERM');
    if (second) await new Promise((r) => second!.once('exit', r));
    fs.rmSync(d, { recursive: true, force: true });
  }
});

test('a chat deleted while its reply streams ends `airlock chat` with a message, exit 1', async () => {
  const g = gate();
  llm.script = () => ({ steps: [{ text: 'soon gone' }, { wait: g.promise }] });
  const p = chatInBackground(['delete me mid-reply']);
  await p.printed('soon gone');
  const chatId = /chat (\S+)/.exec(p.stderr)![1]!;
  assert.equal((await run(['chat', 'delete', chatId])).code, 0);
  assert.equal(await p.closed, 1, p.stderr);
  g.open();
  assert.match(p.stderr, /the chat was deleted/);
});

test('airlock chat --chat ID while another turn runs: the message queues and each command prints only its own reply', async () => {
  const g = gate();
  llm.script = (req) => {
    const last = req.messages[req.messages.length - 1].content;
    return last === 'busy turn' ? { steps: [{ text: 'not yours' }, { wait: g.promise }, { text: ' at all' }] } : { steps: [{ text: `re: ${last}` }] };
  };
  const first = chatInBackground(['busy turn']);
  await first.printed('not yours');
  const chatId = /chat (\S+)/.exec(first.stderr)![1]!;
  const queued = async (n: number) => {
    let queue: { content: string }[] = [];
    await waitUntil(async () => (queue = JSON.parse((await run(['chat', 'show', chatId, '--json'])).stdout).queue).length === n, `the queue holding ${n}`);
    return queue.map((q) => q.content);
  };
  const second = run(['chat', '--chat', chatId, 'my question']);
  await queued(1);
  // Ctrl-C while a message waits in the queue takes it off the queue.
  const third = chatInBackground(['--chat', chatId, 'never mind']);
  await queued(2);
  third.proc.kill('SIGINT');
  assert.equal(await third.closed, 130, third.stderr);
  assert.match(third.stderr, /off the queue/);
  assert.deepEqual(await queued(1), ['my question']);
  g.open();
  const r = await second;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 're: my question\n');
  assert.match(r.stderr, /queued: it runs when the turn before it ends/);
  assert.equal(await first.closed, 0, first.stderr);
  assert.equal(first.stdout, 'not yours at all\n');
});

test('a token revoked while its reply streams ends `airlock chat` with the refusal, exit 1 (no endless reconnecting)', async () => {
  const g = gate();
  llm.script = () => ({ steps: [{ text: 'for a while' }, { wait: g.promise }] });
  const { id, token } = JSON.parse((await run(['token', 'create', '--name', 'revoked-mid-reply', '--json'])).stdout);
  const p = chatInBackground(['keep talking'], { ...env, AIRLOCK_TOKEN: token });
  await p.printed('for a while');
  assert.equal((await run(['token', 'revoke', id])).code, 0);
  assert.equal(await p.closed, 1, p.stderr);
  g.open();
  assert.match(p.stderr, /the stream closed \(the API token was revoked\); reconnecting…/);
  assert.match(p.stderr, /airlock: the API token is unknown or has expired/);
});

test('a reply that starts over after a provider error: a pipe gets only the reply, the live output marks the abandoned part', async () => {
  const token = /^\s+(al_\S+)$/m.exec(firstStart)![1]!;
  for (const live of [false, true]) {
    let n = 0;
    const cut = gate();
    llm.script = () => (++n === 1 ? { steps: [{ text: 'Half a rep' }, { wait: cut.promise }, { cut: true }] } : { steps: [{ text: 'The whole reply' }] });
    const p = chatInBackground([`try again ${live}`], env, live);
    // The stream is cut once the partial reply has reached the chat's clients.
    const chatId = (await waitFor(() => /^chat (\S+)$/m.exec(p.stderr)?.[1]))!;
    const watcher = await new ApiClient(serverUrl, token).openStream(chatId, 0, (evs) => evs.some((e) => e.type === 'delta') && cut.open());
    if (live) await p.printed('Half a rep');
    await cut.promise;
    watcher.close();
    assert.equal(await p.closed, 0, p.stderr);
    assert.equal(p.stdout, live ? 'Half a rep\nThe whole reply\n' : 'The whole reply\n');
    if (live) assert.match(p.stderr, /\[provider error, retry 1\/\d+ in \d+ ms: .*; the reply starts over\]/);
  }
});

test('a reader that goes away (| head) ends `airlock chat` quietly', async () => {
  const g = gate();
  llm.script = () => ({ steps: [{ text: 'first line\n' }, { wait: g.promise }, ...Array.from({ length: 50 }, (_, i) => ({ text: `more ${i}\n` }))] });
  const p = spawn(process.execPath, [BIN, 'chat', '--live', 'talk a lot'], { env });
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  await new Promise<void>((resolve) => p.stdout.once('data', () => resolve()));
  p.stdout.destroy(); // the reader is gone: the next writes fail with EPIPE
  g.open();
  const code = await new Promise<number>((r) => p.on('close', (c) => r(c ?? -1)));
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /EPIPE|Error|\n\s+at /);
});

test('airlock token create, list and revoke', async () => {
  const created = await run(['token', 'create', '--name', 'ci-bot', '--json']);
  assert.equal(created.code, 0, created.stderr);
  const { id, token } = JSON.parse(created.stdout);
  const list = await run(['token', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, new RegExp(`${id}\\s+al_\\S+…\\s+ci-bot`));
  assert.match(list.stdout, /\(this one\)/);
  assert.ok(!list.stdout.includes(token), 'no secret in the list');
  const revoked = await run(['token', 'revoke', id]);
  assert.equal(revoked.code, 0, revoked.stderr);
  const gone = await run(['chat', 'list', '--token', token]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /unknown or has expired/);
  const again = await run(['token', 'revoke', id]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /token not found/);
});

test('airlock user disable and enable', async () => {
  const created = await run(['user', 'create', 'cli-leaver', '--json']);
  assert.equal(created.code, 0, created.stderr);
  const { token } = JSON.parse(created.stdout);
  assert.equal((await run(['chat', 'list', '--token', token])).code, 0);
  const disabled = await run(['user', 'disable', 'cli-leaver']);
  assert.equal(disabled.code, 0, disabled.stderr);
  assert.match(disabled.stdout, /Disabled user cli-leaver/);
  const refused = await run(['chat', 'list', '--token', token]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /this user is disabled/);
  assert.match((await run(['user', 'list'])).stdout, /cli-leaver\s+disabled since \S+/);
  const self = await run(['user', 'disable', 'admin']);
  assert.equal(self.code, 1);
  assert.match(self.stderr, /cannot disable yourself/);
  const usage = await run(['user', 'disable']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /usage: airlock user disable NAME/);
  assert.equal((await run(['user', 'enable', 'cli-leaver'])).code, 0);
  const unknownUser = await run(['user', 'disable', 'nobody-at-all']);
  assert.equal(unknownUser.code, 1);
  assert.match(unknownUser.stderr, /user "nobody-at-all" not found/);
  assert.equal((await run(['chat', 'list', '--token', token])).code, 0);
  assert.doesNotMatch((await run(['user', 'list'])).stdout, /cli-leaver\s+disabled/);
});

test('airlock session end: a missing id is a usage error, an unknown one is not found', async () => {
  const usage = await run(['session', 'end']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /usage: airlock session end ID/);
  const unknown = await run(['session', 'end', '00000000-0000-0000-0000-000000000000']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /session not found/);
  const malformed = await run(['session', 'end', 'not-an-id']);
  assert.equal(malformed.code, 1);
  assert.match(malformed.stderr, /session not found/);
});

test('titles are generated after the first turn', async () => {
  llm.script = () => ({ steps: [{ text: 'ok' }] });
  const r = await run(['chat', 'name this chat please']);
  const chatId = /chat (\S+)/.exec(r.stderr)![1]!;
  for (;;) {
    const json = JSON.parse((await run(['chat', 'show', chatId, '--json'])).stdout);
    if (json.title === 'Generated title') break;
    await new Promise((res) => setTimeout(res, 50));
  }
});

test('CLI errors: unknown chat, unknown command, no token, provider error', async () => {
  const show = await run(['chat', 'show', crypto.randomUUID()]);
  assert.equal(show.code, 1);
  assert.match(show.stderr, /chat not found/);
  const unknown = await run(['frobnicate']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
  const badFlag = await run(['chat', '--nope']);
  assert.equal(badFlag.code, 2);
  const noToken = await run(['chat', 'list'], { env: { ...env, AIRLOCK_CLI_CONFIG: path.join(dir, 'none.json') } });
  assert.equal(noToken.code, 1);
  assert.match(noToken.stderr, /no API token: run `airlock login/);
  const badLogin = await run(['login', '--server', serverUrl, '--token', 'al_bad'], { env: { ...env, AIRLOCK_CLI_CONFIG: path.join(dir, 'x.json') } });
  assert.equal(badLogin.code, 1);
  assert.match(badLogin.stderr, /unknown or has expired/);
  const notUrl = await run(['login', '--server', 'localhost:7070', '--token', 'al_x'], { env: { ...env, AIRLOCK_CLI_CONFIG: path.join(dir, 'x.json') } });
  assert.equal(notUrl.code, 2);
  assert.match(notUrl.stderr, /the server must be an http:\/\/ or https:\/\/ URL \(got "localhost:7070"\)/);
  const down = await run(['chat', 'list', '--server', 'http://127.0.0.1:9']);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach the Airlock server/);
  llm.script = () => ({ status: 400, body: { error: { message: 'model does not exist' } } });
  const failed = await run(['chat', 'hello']);
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /model does not exist/);
  const badSetting = await run(['server', '--port', '0', '--data-dir', path.join(dir, 'unused')], { env: { ...env, AIRLOCK_LEASE_MS: 'abc' } });
  assert.equal(badSetting.code, 1);
  assert.equal(badSetting.stderr, 'airlock: AIRLOCK_LEASE_MS must be a non-negative number, got "abc"\n', 'one line, no stack trace');
  const help = await run(['chat', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Ctrl-C interrupts/);
});

test("README's configuration table is `airlock env`'s (every setting, its default and meaning)", async () => {
  const { settingsTable } = await import('../src/config.js');
  const readme = fs.readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const rows = (t: string) => t.split('\n').filter((l) => l.startsWith('| `AIRLOCK_'));
  assert.deepEqual(rows(readme), rows(settingsTable()));
});
