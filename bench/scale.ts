// Replica benchmark on PostgreSQL (DATABASE_URL, default the local server): real `airlock server`
// processes, a fake provider, N concurrent chats.
//  1. local: one worker replica; chats sent and streamed on it.
//  2. cross-replica: an API-only replica beside it; chats sent and streamed on the API replica
//     and run on the worker, so both the wake and every event cross the bus.
//  3. kill -9: a second worker joins; long replies run on both; one worker is killed mid-run;
//     recovery = kill → the first event of a resumed turn at its client.
// Then every chat's transcript is checked: each user message once, answered exactly once.
// Final line: JSON.
import pg from 'pg';
import { ApiClient } from '../src/client/api.js';
import type { StreamEvent } from '../src/chat/types.js';
import { arg, now, pct, pgUrlWithSchema, r2, runLoad, histogramQuantile, serverHistogram, startAirlock, startProvider, type ServerProc } from './common.js';

const quick = process.argv.includes('--quick');
const CHATS = arg('chats', 200);
const MESSAGES = arg('messages', quick ? 3 : 5);
const TOKENS = arg('tokens', quick ? 20 : 50);
const TTFT_MS = arg('ttft', 50);
const KILL_CHATS = arg('kill-chats', quick ? 40 : 100);
/**
 * Each chat's user waits up to this long (uniformly random) before each message, as people read a
 * reply before they answer; 0 = all 200 send in the same millisecond after every turn (lockstep),
 * which on 2 cores measures the queue in front of whichever replica runs them, not the path across.
 */
const THINK_MS = arg('think', 2000);
const DB = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const log = (m: string) => process.stderr.write(`[bench:scale] ${m}\n`);

async function main() {
  const fast = await startProvider({ ttftMs: TTFT_MS, tokens: TOKENS, intervalMs: 10, burst: 2 });
  // Long replies (3 s) so that the kill lands mid-turn.
  const slow = await startProvider({ ttftMs: TTFT_MS, tokens: 150, intervalMs: 20, burst: 1 });
  const db = await pgUrlWithSchema(DB);
  const procs: ServerProc[] = [];
  const env = (providerUrl: string, extra: NodeJS.ProcessEnv = {}) => ({
    AIRLOCK_OPENAI_BASE_URL: providerUrl,
    AIRLOCK_OPENAI_API_KEY: 'bench',
    AIRLOCK_MODEL: 'bench-model',
    AIRLOCK_CHAT_CONCURRENCY: String(CHATS + KILL_CHATS),
    AIRLOCK_LEASE_MS: '2000',
    AIRLOCK_SECRET_KEY: '11'.repeat(32),
    ...extra,
  });
  const start = async (providerUrl: string, extra: NodeJS.ProcessEnv = {}, first = false) => {
    const p = await startAirlock(env(providerUrl, extra), ['--database-url', db.url], first);
    procs.push(p);
    return p;
  };
  const out: Record<string, number> = {};
  let busLag: number | null = null;
  let acquisition: number | null = null;
  try {
    log(`local: 1 worker replica, ${CHATS} chats × ${MESSAGES} messages × ${TOKENS} tokens, think time up to ${THINK_MS} ms`);
    const w1 = await start(fast.baseUrl, {}, true);
    const token = w1.token!;
    const onW1 = new ApiClient(w1.url, token, 120_000);
    const local = await runLoad(onW1, onW1, CHATS, MESSAGES, TTFT_MS, THINK_MS);
    log(`local: overhead p50 ${r2(pct(local.overhead, 50))} ms, p99 ${r2(pct(local.overhead, 99))} ms; send → provider request p50 ${r2(pct(local.requested, 50))} ms`);

    log(`cross-replica: sent and streamed on an API-only replica, run on the worker`);
    const api = await start(fast.baseUrl, { AIRLOCK_CHAT_CONCURRENCY: '0' });
    const acquiredBefore = await serverHistogram(w1.url, token, 'airlock_chat_acquisition_ms');
    const onApi = new ApiClient(api.url, token, 120_000);
    const cross = await runLoad(onApi, onApi, CHATS, MESSAGES, TTFT_MS, THINK_MS);
    log(`cross-replica: overhead p50 ${r2(pct(cross.overhead, 50))} ms, p99 ${r2(pct(cross.overhead, 99))} ms, ${Math.round(cross.tokens / cross.seconds)} tokens/s; send → provider request p50 ${r2(pct(cross.requested, 50))} ms`);
    // Where the difference goes, as the replicas measured it: the bus hop, and wake → claimed.
    busLag = histogramQuantile(await serverHistogram(api.url, token, 'airlock_bus_lag_ms'), 0.5);
    acquisition = histogramQuantile(await serverHistogram(w1.url, token, 'airlock_chat_acquisition_ms'), 0.5, acquiredBefore);
    const fmt = (x: number | null) => (x === null ? '-' : `${r2(x)} ms`);
    log(`cross-replica: bus lag p50 ${fmt(busLag)} (measured by the API replica), committed → claimed p50 ${fmt(acquisition)} (by the worker)`);

    log(`kill -9: a second worker joins; ${KILL_CHATS} long replies; one worker is killed mid-run`);
    // Both workers now answer with the slow provider.
    const w2 = await start(slow.baseUrl);
    const w1b = await start(slow.baseUrl);
    await w1.stop('SIGTERM'); // the fast worker leaves (its turns are done), telling the others it takes no more
    const victims = [w2, w1b];
    const chats = await Promise.all(Array.from({ length: KILL_CHATS }, () => onApi.post('/api/chats', { title: 'kill' })));
    let killedAt = 0;
    let recoveredAt = 0;
    const finished = chats.map(
      (chat) =>
        new Promise<void>((resolve, reject) => {
          let truncatedSeen = false;
          void onApi.openStream(chat.id, 0, (events: StreamEvent[]) => {
            for (const e of events) {
              if (e.type === 'history_truncated') truncatedSeen = true;
              if (killedAt && truncatedSeen && !recoveredAt && e.type === 'delta') recoveredAt = now();
              if (e.type === 'status' && e.status === 'waiting') resolve();
              if (e.type === 'status' && e.status === 'error') reject(new Error(`chat failed: ${e.error}`));
            }
          });
        }),
    );
    await Promise.all(chats.map((c) => onApi.post(`/api/chats/${c.id}/messages`, { content: 'long reply please' })));
    await new Promise((r) => setTimeout(r, 1000));
    // Kill the worker that runs the most of them (one worker often claims them all at once).
    const owners = new pg.Client({ connectionString: db.url });
    await owners.connect();
    const counts = (
      await owners.query<{ worker_id: string; n: number }>(
        `SELECT worker_id, count(*)::int AS n FROM chats WHERE status = 'running' AND worker_id = ANY($1) GROUP BY 1 ORDER BY 2 DESC`,
        [victims.map((v) => v.workerId)],
      )
    ).rows;
    await owners.end();
    const victim = victims.find((v) => v.workerId === counts[0]?.worker_id);
    if (!victim) throw new Error(`no running turns to interrupt (owners: ${JSON.stringify(counts)}); raise --kill-chats or the reply length`);
    log(`killing the worker running ${counts[0]!.n} of ${KILL_CHATS} turns`);
    victim.proc.kill('SIGKILL');
    killedAt = now();
    log('killed one worker');
    await Promise.all(finished);
    const recovery = recoveredAt ? (recoveredAt - killedAt) / 1000 : NaN;
    log(`all turns done; recovery ${r2(recovery)} s`);

    // Transcript check over every chat of the run.
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const rows = (
      await c.query<{ chat_id: string; users: number; assistants: number; dup_users: number }>(
        `SELECT chat_id,
                count(*) FILTER (WHERE role = 'user')::int AS users,
                count(*) FILTER (WHERE role = 'assistant')::int AS assistants,
                (count(*) FILTER (WHERE role = 'user') - count(DISTINCT seq) FILTER (WHERE role = 'user'))::int AS dup_users
         FROM chat_messages WHERE NOT deleted GROUP BY chat_id`,
      )
    ).rows;
    await c.end();
    let lost = 0;
    let duplicated = 0;
    for (const r of rows) {
      lost += Math.max(0, r.users - r.assistants);
      duplicated += Math.max(0, r.assistants - r.users) + r.dup_users;
    }
    Object.assign(out, {
      xreplica_overhead_p50_ms: r2(pct(cross.overhead, 50)),
      xreplica_overhead_p99_ms: r2(pct(cross.overhead, 99)),
      local_overhead_p50_ms: r2(pct(local.overhead, 50)),
      local_overhead_p99_ms: r2(pct(local.overhead, 99)),
      xreplica_vs_local_x: r2(pct(cross.overhead, 50) / Math.max(0.01, pct(local.overhead, 50))),
      xreplica_bus_lag_p50_ms: busLag === null ? -1 : r2(busLag),
      xreplica_claim_p50_ms: acquisition === null ? -1 : r2(acquisition),
      chats: CHATS,
      tokens_per_s: Math.round(cross.tokens / cross.seconds),
      recovery_s: r2(recovery),
      lost_messages: lost,
      duplicated_messages: duplicated,
      transcripts_checked: rows.length,
    });
  } finally {
    await Promise.all(procs.map((p) => p.stop().catch(() => {})));
    fast.close();
    slow.close();
    await db.drop();
  }
  console.log(JSON.stringify(out));
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
