// npm run bench:agent [-- --quick]: a chat agent's commands on an ssh resource against OpenSSH, in
// one run. A real `airlock server` and `airlock gateway` (processes), a real sshd (throwaway user;
// needs root and openssh-server), and a fake OpenAI-compatible provider in this process whose
// model calls run_command `echo x`, one call per step. Measured per call: from the end of the
// provider's tool-call stream to the command's first output event on the chat's stream (this
// process's clock on both ends). Cold: the first call of a chat (the session opens: token, launch,
// SSH login); warm: the calls after it. The floor: `ssh host echo x` from a fresh process.
// Prints a line per stage on stderr and one JSON line on stdout.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { ApiClient } from '../src/client/api.js';
import { GatewayProcess, haveSshd, startSshd } from '../test/helpers/launch.js';
import { startFakeLlm } from '../test/helpers/fake-llm.js';
import { pct, r2, serverProcess } from './common.js';

const { values } = parseArgs({ options: { quick: { type: 'boolean' }, calls: { type: 'string' }, chats: { type: 'string' } } });
/** Calls in one chat (the first is cold), and chats (each gives one cold call). */
const CALLS = Number(values.calls ?? 20);
const CHATS = Number(values.chats ?? (values.quick ? 5 : 10));
if (!fs.existsSync('dist/main.js')) throw new Error('run `npm run build` first (npm run bench:agent does)');
if (!haveSshd()) throw new Error('bench:agent compares with OpenSSH: it needs root and openssh-server (apt-get install -y openssh-server)');
const log = (s: string) => process.stderr.write(`[bench:agent] ${s}\n`);
const now = () => performance.timeOrigin + performance.now();

// --- set-up -----------------------------------------------------------------------------------
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-bench-agent-'));
const llm = await startFakeLlm('openai');
const { proc: server, url, token: adminToken } = await serverProcess(dir, { AIRLOCK_TITLES: '0', AIRLOCK_OPENAI_BASE_URL: llm.baseUrl, AIRLOCK_OPENAI_API_KEY: 'bench' });
const admin = new ApiClient(url, adminToken);
const { token: gwToken } = await admin.post('/api/gateways', { name: 'bench' });
const gw = new GatewayProcess(url, gwToken, { AIRLOCK_WEBRTC: '0' });
gw.start();
for (let i = 0; !(await admin.get('/api/gateways')).gateways[0].online; i++) {
  if (i > 500) throw new Error(`gateway did not come online: ${gw.log}`);
  await new Promise((r) => setTimeout(r, 20));
}
const keyFile = path.join(dir, 'id_ed25519');
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
const sshd = await startSshd({ authorizedKey: fs.readFileSync(`${keyFile}.pub`, 'utf8') });
await admin.post('/api/resources', { name: 'box', kind: 'ssh', target: `127.0.0.1:${sshd.port}`, gateway: 'bench', credential: { username: sshd.user, password: sshd.password } });
const { token: userToken } = await admin.post('/api/users', { name: 'bench-agent' });
await admin.post('/api/resources/box/grants', { user: 'bench-agent', agent: 'allow' });
const user = new ApiClient(url, userToken);

const cleanup = async () => {
  await gw.kill();
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  await sshd.stop();
  await llm.close();
  fs.rmSync(dir, { recursive: true, force: true });
};

try {
  // --- the agent: one chat per round, CALLS calls each ----------------------------------------
  /** When the provider ended each call's stream, by tool call id. */
  const ended = new Map<string, number>();
  const firstOutput = new Map<string, number>();
  let chatNo = 0;
  llm.script = (req: any) => {
    const calls = req.messages.filter((m: any) => m.role === 'tool').length;
    if (calls >= CALLS) return { steps: [{ text: 'done' }] };
    const id = `c${chatNo}-${calls + 1}`;
    // The reply is written right after this returns: its end is now (to well under a millisecond).
    queueMicrotask(() => ended.set(id, now()));
    return { steps: [{ tool: { id, name: 'run_command', args: { resource: 'box', command: 'echo x' } } }] };
  };
  for (chatNo = 1; chatNo <= CHATS; chatNo++) {
    const chat = await user.post('/api/chats', { message: 'run echo x' });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`chat ${chatNo} did not finish in 120 s`)), 120_000);
      let ws: { close(): void } | null = null;
      const stream = { close: () => ws?.close() };
      void user.openStream(chat.id, 0, (events) => {
        for (const e of events as any[]) {
          if (e.type === 'tool_output' && !firstOutput.has(e.tool_call_id)) firstOutput.set(e.tool_call_id, now());
          if (e.type === 'status' && ['waiting', 'error'].includes(e.status)) {
            clearTimeout(timer);
            stream.close();
            if (e.status === 'error') reject(new Error(`chat ${chatNo} ended in error: ${e.error}`));
            else resolve();
          }
        }
      }).then((w) => (ws = w), reject);
    });
    log(`chat ${chatNo}/${CHATS}: ${CALLS} calls`);
  }
  const cold: number[] = [];
  const warm: number[] = [];
  for (const [id, t] of firstOutput) {
    const ms = t - ended.get(id)!;
    (id.endsWith('-1') ? cold : warm).push(ms);
  }
  if (warm.length !== CHATS * (CALLS - 1)) throw new Error(`expected ${CHATS * (CALLS - 1)} warm calls with output, got ${warm.length}`);

  // --- the floor: OpenSSH from a fresh process ------------------------------------------------
  const sshArgs = ['-i', keyFile, '-p', String(sshd.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', `${sshd.user}@127.0.0.1`];
  const ssh: number[] = [];
  for (let i = 0; i < Math.max(10, CHATS * 2); i++) {
    const t0 = now();
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('ssh', [...sshArgs, 'echo x'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let o = '';
      p.stdout.on('data', (d) => {
        if (!o) ssh.push(now() - t0); // its first output, as for the agent
        o += d;
      });
      p.once('exit', (code) => (code === 0 ? resolve(o) : reject(new Error(`ssh exited ${code}`))));
    });
    if (out.trim() !== 'x') throw new Error(`ssh printed ${JSON.stringify(out)}`);
  }
  log(`ssh: ${ssh.length} runs`);

  const result = {
    agent_exec_p50_ms: r2(pct(warm, 50)),
    agent_exec_p99_ms: r2(pct(warm, 99)),
    agent_exec_cold_p50_ms: r2(pct(cold, 50)),
    ssh_exec_p50_ms: r2(pct(ssh, 50)),
    agent_vs_ssh_x: r2(pct(warm, 50) / pct(ssh, 50)),
    agent_cold_vs_ssh_x: r2(pct(cold, 50) / pct(ssh, 50)),
    calls: warm.length + cold.length,
  };
  log(`warm p50 ${result.agent_exec_p50_ms} ms, cold p50 ${result.agent_exec_cold_p50_ms} ms, ssh p50 ${result.ssh_exec_p50_ms} ms`);
  console.log(JSON.stringify(result));
} finally {
  await cleanup();
}
