// Chat daemon benchmark: N concurrent chats, each with a WebSocket client, against a real
// `airlock server` process (embedded database, and PostgreSQL when DATABASE_URL is set) and a
// fake OpenAI-compatible provider with a fixed time to first token. Measures per message
// send → first delta at the client minus the provider's TTFT ("overhead"), per token provider
// write → client receive, and total tokens/s; then the same load with wake signals disabled
// (the 1 s polling loop of the systems we learn from). Final line: JSON.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../src/client/api.js';
import type { StreamEvent } from '../src/chat/types.js';

const quick = process.argv.includes('--quick');
const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const CHATS = arg('chats', 50);
const MESSAGES = arg('messages', quick ? 3 : 8);
const TOKENS = arg('tokens', quick ? 150 : 300);
const TTFT_MS = arg('ttft', 50);
const TOKEN_INTERVAL_MS = arg('interval', 10);
const BURST = arg('burst', 4);
const POLL_MESSAGES = arg('poll-messages', quick ? 1 : 3);

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function log(msg: string) {
  process.stderr.write(`[bench:chat] ${msg}\n`);
}

/** The fake provider runs in its own process so that its writes do not compete with the clients. */
async function startProvider(): Promise<{ baseUrl: string; close: () => void }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'bench/fake-provider.ts', String(TTFT_MS), String(TOKENS), String(TOKEN_INTERVAL_MS), String(BURST)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const baseUrl = await new Promise<string>((resolve, reject) => {
    proc.stdout!.once('data', (d) => resolve(String(d).trim()));
    proc.once('exit', (c) => reject(new Error(`fake provider exited ${c}`)));
  });
  return { baseUrl, close: () => proc.kill() };
}

async function startAirlock(providerUrl: string, opts: { databaseUrl?: string; polling: boolean }): Promise<{ url: string; token: string; proc: ChildProcess; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-bench-'));
  const args = ['bin/airlock.js', 'server', '--port', '0', '--data-dir', path.join(dir, 'data')];
  if (opts.databaseUrl) args.push('--database-url', opts.databaseUrl);
  const { DATABASE_URL: _ignored, ...parentEnv } = process.env; // the embedded run must not pick it up
  const proc = spawn(process.execPath, [...(process.env.BENCH_SERVER_NODE_ARGS?.split(' ') ?? []), ...args], {
    env: {
      ...parentEnv,
      AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json'),
      AIRLOCK_OPENAI_BASE_URL: providerUrl,
      AIRLOCK_OPENAI_API_KEY: 'bench',
      AIRLOCK_MODEL: 'bench-model',
      AIRLOCK_LOG_LEVEL: 'warn',
      AIRLOCK_CHAT_CONCURRENCY: String(Math.max(100, CHATS)),
      ...(opts.polling ? { AIRLOCK_CHAT_WAKE: '0', AIRLOCK_SWEEP_MS: '1000' } : {}),
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  const found = await new Promise<{ url: string; token: string }>((resolve, reject) => {
    proc.stderr!.on('data', (d) => {
      err += d;
      const url = /listening on (\S+)/.exec(err)?.[1];
      const token = /^\s+(al_\S+)$/m.exec(err)?.[1];
      if (url && token) resolve({ url, token });
    });
    proc.on('exit', (c) => reject(new Error(`server exited ${c}: ${err}`)));
  });
  return { ...found, proc, dir };
}

interface Result {
  overhead: number[];
  token: number[];
  tokens: number;
  seconds: number;
}

async function runLoad(url: string, token: string, messages: number): Promise<Result> {
  const api = new ApiClient(url, token, 120_000);
  const overhead: number[] = [];
  const tokenLat: number[] = [];
  let tokens = 0;
  const chats = await Promise.all(Array.from({ length: CHATS }, () => api.post('/api/chats', { title: 'bench' })));
  // Warm-up: one message per chat, not measured (connection pools, JIT).
  const started = now();
  await Promise.all(
    chats.map(async (chat) => {
      let resolveTurn: ((t: number) => void) | null = null;
      let firstDelta = 0;
      let turnStart = 0;
      let measuring = false;
      const ws = await api.openStream(chat.id, 0, (events: StreamEvent[]) => {
        const t = now();
        for (const e of events) {
          if (e.type === 'delta') {
            if (!firstDelta) firstDelta = t;
            if (measuring) {
              tokens++;
              const ts = Number(String(e.text).slice(1));
              if (ts) tokenLat.push(t - ts);
            }
          } else if (e.type === 'status' && e.status === 'waiting' && resolveTurn) {
            const r = resolveTurn;
            resolveTurn = null;
            r(t);
          } else if (e.type === 'status' && e.status === 'error') {
            throw new Error(`chat failed: ${e.error}`);
          }
        }
      });
      for (let m = 0; m <= messages; m++) {
        measuring = m > 0;
        firstDelta = 0;
        const done = new Promise<number>((r) => (resolveTurn = r));
        turnStart = now();
        await api.post(`/api/chats/${chat.id}/messages`, { content: `message ${m}` });
        await done;
        if (measuring) overhead.push(firstDelta - turnStart - TTFT_MS);
      }
      ws.close();
    }),
  );
  return { overhead, token: tokenLat, tokens, seconds: (now() - started) / 1000 };
}

const pct = (xs: number[], p: number) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const r2 = (x: number) => Math.round(x * 100) / 100;

async function scenario(name: string, providerUrl: string, opts: { databaseUrl?: string; polling: boolean }, messages: number) {
  log(`${name}: starting server (${opts.databaseUrl ? 'PostgreSQL' : 'embedded database'}${opts.polling ? ', wake disabled: 1 s polling' : ''})`);
  const srv = await startAirlock(providerUrl, opts);
  try {
    log(`${name}: ${CHATS} chats × ${messages} messages × ${TOKENS} tokens (TTFT ${TTFT_MS} ms, ${BURST} tokens every ${TOKEN_INTERVAL_MS} ms per chat)`);
    const r = await runLoad(srv.url, srv.token, messages);
    const summary = {
      overhead_p50_ms: r2(pct(r.overhead, 50)),
      overhead_p99_ms: r2(pct(r.overhead, 99)),
      token_p50_ms: r2(pct(r.token, 50)),
      token_p99_ms: r2(pct(r.token, 99)),
      tokens_per_s: Math.round(r.tokens / r.seconds),
      messages: r.overhead.length,
    };
    log(`${name}: ${JSON.stringify(summary)}`);
    return summary;
  } finally {
    srv.proc.kill(process.env.BENCH_SERVER_NODE_ARGS ? 'SIGINT' : 'SIGKILL');
    await new Promise((r) => srv.proc.once('exit', r));
    fs.rmSync(srv.dir, { recursive: true, force: true });
  }
}

async function pgUrlWithSchema(base: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const { default: pg } = await import('pg');
  const schema = `bench_${process.pid}`;
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema}`);
  await c.end();
  const u = new URL(base);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return {
    url: u.toString(),
    drop: async () => {
      const d = new pg.Client({ connectionString: base });
      await d.connect();
      await d.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await d.end();
    },
  };
}

async function main() {
  if (!fs.existsSync('dist/main.js')) throw new Error('run `npm run build` first (npm run bench:chat does)');
  const provider = await startProvider();
  const out: Record<string, number | string> = {};
  try {
    const emb = await scenario('embedded', provider.baseUrl, { polling: false }, MESSAGES);
    const poll = await scenario('embedded-polling', provider.baseUrl, { polling: true }, POLL_MESSAGES);
    Object.assign(out, {
      overhead_p50_ms: emb.overhead_p50_ms,
      overhead_p99_ms: emb.overhead_p99_ms,
      token_p50_ms: emb.token_p50_ms,
      token_p99_ms: emb.token_p99_ms,
      polling_overhead_p50_ms: poll.overhead_p50_ms,
      polling_overhead_p99_ms: poll.overhead_p99_ms,
      wake_speedup_x: r2(poll.overhead_p50_ms / Math.max(emb.overhead_p50_ms, 0.01)),
      chats: CHATS,
      tokens_per_s: emb.tokens_per_s,
      messages_measured: emb.messages,
    });
    const dbUrl = process.env.DATABASE_URL;
    if (dbUrl) {
      const pg = await pgUrlWithSchema(dbUrl);
      try {
        const p = await scenario('postgres', provider.baseUrl, { databaseUrl: pg.url, polling: false }, MESSAGES);
        Object.assign(out, {
          pg_overhead_p50_ms: p.overhead_p50_ms,
          pg_overhead_p99_ms: p.overhead_p99_ms,
          pg_token_p99_ms: p.token_p99_ms,
          pg_tokens_per_s: p.tokens_per_s,
        });
      } finally {
        await pg.drop();
      }
    }
  } finally {
    provider.close();
  }
  console.log(JSON.stringify(out));
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
