// Chat daemon benchmark: N concurrent chats, each with a WebSocket client, against a real
// `airlock server` process (embedded database, and PostgreSQL when DATABASE_URL is set) and a
// fake OpenAI-compatible provider with a fixed time to first token. Measures per message
// send → first delta at the client minus the provider's TTFT ("overhead"), per token provider
// write → client receive, and total tokens/s; then the same load with wake signals disabled
// (the 1 s polling loop of the systems we learn from), and the same load through a bare relay
// (bench/bare-relay.ts: the floor this machine allows). Final line: JSON.
import { ApiClient } from '../src/client/api.js';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { arg, otherThreadsCpu, pct, threadCpu, pgUrlWithSchema, processCpu, r2, runLoad, serverGauge, serverSum, startAirlock, startBareRelay, startProvider } from './common.js';

const quick = process.argv.includes('--quick');
const CHATS = arg('chats', 50);
const MESSAGES = arg('messages', quick ? 5 : 8);
const TOKENS = arg('tokens', quick ? 200 : 300);
const TTFT_MS = arg('ttft', 50);
const TOKEN_INTERVAL_MS = arg('interval', 10);
// 600 tokens/s per chat: the offered load (50 chats, turn gaps included) is ~24k tokens/s, above
// the 20k the daemon must carry; at 400/s the bench itself capped the total at ~18.5k.
const BURST = arg('burst', 6);
const THINK_MS = arg('think', 0);
const WARMUP = arg('warmup', 1);
const POLL_MESSAGES = arg('poll-messages', quick ? 1 : 3);
// 0 skips the floor measurement (bench/bare-relay.ts).
const BARE = arg('bare', 1) !== 0;
// 1 runs Airlock and the bare relay again beside a process that spins on one core (a busy
// neighbour on a shared machine); on by default with --quick.
const BUSY = arg('busy-core', quick ? 1 : 0) !== 0;

const r2Or = (x: number | null) => (x === null ? null : r2(x));

function log(msg: string) {
  process.stderr.write(`[bench:chat] ${msg}\n`);
}

async function scenario(name: string, providerUrl: string, opts: { databaseUrl?: string; polling: boolean }, messages: number) {
  log(`${name}: starting server (${opts.databaseUrl ? 'PostgreSQL' : 'embedded database'}${opts.polling ? ', wake disabled: 1 s polling' : ''})`);
  const srv = await startAirlock(
    {
      AIRLOCK_OPENAI_BASE_URL: providerUrl,
      AIRLOCK_OPENAI_API_KEY: 'bench',
      AIRLOCK_MODEL: 'bench-model',
      AIRLOCK_CHAT_CONCURRENCY: String(Math.max(100, CHATS)),
    },
    [...(opts.databaseUrl ? ['--database-url', opts.databaseUrl] : []), ...(opts.polling ? ['--no-wake', '--sweep-ms', '1000'] : [])],
  );
  try {
    // The server's own event-loop delay over the load (prom-client resets it on every scrape;
    // sampled every 10 ms, so a coarse figure): the part of a token's wait spent in the server.
    const summary = await measure(name, srv.url, srv.token!, srv.proc.pid, messages, {
      lagP99: () => serverGauge(srv.url, srv.token!, 'nodejs_eventloop_lag_p99_seconds'),
      // The main thread's GC pauses, all kinds together (prom-client observes them).
      gcSeconds: () => serverSum(srv.url, srv.token!, 'nodejs_gc_duration_seconds_sum'),
    });
    return { ...summary, rss_mb: rssMb(srv.proc.pid) };
  } finally {
    await srv.stop();
  }
}

/** The floor: the same load through bench/bare-relay.ts, which does nothing but relay. */
async function bareRelay(providerUrl: string, messages: number) {
  log('bare relay: starting (no database, no auth, no event log: the floor of this machine and load)');
  const relay = await startBareRelay(providerUrl);
  try {
    return await measure('bare relay', relay.url, 'none', relay.pid, messages, null);
  } finally {
    relay.close();
  }
}

/** A process's resident memory in MB (null where /proc has none). */
function rssMb(pid: number | undefined): number | null {
  try {
    return Math.round(Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024);
  } catch {
    return null;
  }
}

/** A neighbour that keeps one core busy while fn runs. */
async function besideBusyCore<T>(fn: () => Promise<T>): Promise<T> {
  const spinner = spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' });
  try {
    return await fn();
  } finally {
    spinner.kill('SIGKILL');
  }
}

/** What the server's own metrics tell (null for the bare relay, which has none). */
interface ServerMetrics {
  /** The event loop's delay p99 since the last reading (prom-client resets it on every scrape). */
  lagP99(): Promise<number | null>;
  /** Seconds the main thread has spent in GC pauses since the start. */
  gcSeconds(): Promise<number | null>;
}

async function measure(name: string, url: string, token: string, pid: number | undefined, messages: number, server: ServerMetrics | null) {
  log(`${name}: ${CHATS} chats × ${messages} messages × ${TOKENS} tokens (TTFT ${TTFT_MS} ms, ${BURST} tokens every ${TOKEN_INTERVAL_MS} ms per chat)`);
  const api = new ApiClient(url, token, 120_000);
  // The clients' own event loop: a token waits in it too before the bench sees it.
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  await server?.lagP99();
  const gc0 = await server?.gcSeconds();
  const cpu0 = processCpu(pid);
  const r = await runLoad(api, api, CHATS, messages, TTFT_MS, THINK_MS, WARMUP);
  const cpu1 = processCpu(pid);
  const other = otherThreadsCpu(cpu0, cpu1, pid);
  if (process.env.BENCH_THREADS && cpu0 && cpu1) {
    const per = threadCpu(cpu0, cpu1).map(([tid, s]) => [tid, Math.round(s * 1e3)] as const).filter(([, ms]) => ms > 0);
    log(`${name}: CPU ms by thread (main ${pid}): ${per.sort((a, b) => b[1] - a[1]).map(([tid, ms]) => `${tid}:${ms}`).join(' ')}`);
  }
  const serverLagP99 = (await server?.lagP99()) ?? null;
  const gc1 = await server?.gcSeconds();
  loop.disable();
  const summary = {
    overhead_p50_ms: r2(pct(r.overhead, 50)),
    overhead_p99_ms: r2(pct(r.overhead, 99)),
    send_p50_ms: r2(pct(r.send, 50)),
    to_provider_p50_ms: r2(pct(r.toProvider, 50)),
    provider_request_p50_ms: r2(pct(r.requested, 50)),
    token_p50_ms: r2(pct(r.token, 50)),
    token_p99_ms: r2(pct(r.token, 99)),
    tokens_per_s: Math.round(r.tokens / r.seconds),
    client_loop_delay_p99_ms: r2(loop.percentile(99) / 1e6),
    server_loop_delay_p99_ms: serverLagP99 === null ? null : r2(serverLagP99 * 1000),
    // Per second of load, the ms the main thread stood still for its GC: every token that
    // arrives meanwhile waits (about 40 % of the tokens read late, in the seventeenth session).
    server_gc_ms_per_s: gc0 != null && gc1 != null ? r2(((gc1 - gc0) * 1e3) / r.seconds) : null,
    // The server's CPU per token streamed, all threads and its main thread (the one every
    // token passes through): steadier than latency figures on a shared machine.
    server_cpu_us_per_token: cpu0 && cpu1 ? r2(((cpu1.all - cpu0.all) * 1e6) / r.tokens) : null,
    server_main_cpu_us_per_token: cpu0 && cpu1 ? r2(((cpu1.main - cpu0.main) * 1e6) / r.tokens) : null,
    // Of the other threads: the busiest (the embedded database's) and
    // the rest (the database's thread, V8's compiler and GC helpers, libuv's pool).
    server_busiest_other_cpu_us_per_token: r2Or(other && (other.busiest * 1e6) / r.tokens),
    server_rest_cpu_us_per_token: r2Or(other && (other.rest * 1e6) / r.tokens),
    // Per second of load, the ms the main thread was ready to run but waited for a CPU: the
    // machine's cores taken by the server's other threads, the bench's clients and its provider.
    server_main_cpu_wait_ms_per_s: cpu0?.mainWait != null && cpu1?.mainWait != null ? r2(((cpu1.mainWait - cpu0.mainWait) * 1e3) / r.seconds) : null,
    messages: r.overhead.length,
  };
  log(`${name}: ${JSON.stringify(summary)}`);
  return summary;
}

async function main() {
  if (!fs.existsSync('dist/main.js')) throw new Error('run `npm run build` first (npm run bench:chat does)');
  const provider = await startProvider({ ttftMs: TTFT_MS, tokens: TOKENS, intervalMs: TOKEN_INTERVAL_MS, burst: BURST });
  const out: Record<string, number | string> = {};
  try {
    const emb = await scenario('embedded', provider.baseUrl, { polling: false }, MESSAGES);
    const poll = await scenario('embedded-polling', provider.baseUrl, { polling: true }, POLL_MESSAGES);
    const bare = BARE ? await bareRelay(provider.baseUrl, MESSAGES) : null;
    const busy = BUSY
      ? await besideBusyCore(async () => ({
          emb: await scenario('embedded beside a busy core', provider.baseUrl, { polling: false }, MESSAGES),
          bare: await bareRelay(provider.baseUrl, MESSAGES),
        }))
      : null;
    const x = (a: number | null, b: number | null) => (a === null || b === null ? null : r2(a / Math.max(b, 0.01)));
    Object.assign(out, {
      overhead_p50_ms: emb.overhead_p50_ms,
      overhead_p99_ms: emb.overhead_p99_ms,
      token_p50_ms: emb.token_p50_ms,
      token_p99_ms: emb.token_p99_ms,
      polling_overhead_p50_ms: poll.overhead_p50_ms,
      polling_overhead_p99_ms: poll.overhead_p99_ms,
      wake_speedup_x: r2(poll.overhead_p50_ms / Math.max(emb.overhead_p50_ms, 0.01)),
      ...(bare
        ? {
            bare_overhead_p50_ms: bare.overhead_p50_ms,
            bare_token_p50_ms: bare.token_p50_ms,
            bare_token_p99_ms: bare.token_p99_ms,
            token_p99_vs_bare_x: r2(emb.token_p99_ms / Math.max(bare.token_p99_ms, 0.01)),
            server_cpu_us_per_token: emb.server_cpu_us_per_token,
            bare_cpu_us_per_token: bare.server_cpu_us_per_token,
            cpu_vs_bare_x: x(emb.server_cpu_us_per_token, bare.server_cpu_us_per_token),
          }
        : { server_cpu_us_per_token: emb.server_cpu_us_per_token }),
      ...(busy
        ? {
            busy_overhead_p50_ms: busy.emb.overhead_p50_ms,
            busy_token_p99_ms: busy.emb.token_p99_ms,
            busy_bare_token_p99_ms: busy.bare.token_p99_ms,
            busy_token_p99_vs_bare_x: x(busy.emb.token_p99_ms, busy.bare.token_p99_ms),
          }
        : {}),
      server_rss_mb: emb.rss_mb,
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
