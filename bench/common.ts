// Shared by the chat benchmarks: the fake provider process, an `airlock server` process, the
// per-chat load (send → first delta at a WebSocket client), percentiles.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../src/client/api.js';
import type { StreamEvent } from '../src/chat/types.js';

export const now = () => performance.timeOrigin + performance.now();
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const pct = (xs: number[], p: number) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
export const r2 = (x: number) => Math.round(x * 100) / 100;

export function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

export interface ProviderPacing {
  ttftMs: number;
  tokens: number;
  intervalMs: number;
  burst: number;
}

// The bench's own processes (fake provider, servers, bare relay) go with it: a bench stopped by a
// signal (`timeout`, a CI job's kill) left them running, and the next bench shared the cores with them.
const children = new Set<ChildProcess>();
function started(proc: ChildProcess): ChildProcess {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}
const killChildren = () => {
  for (const c of children) c.kill('SIGKILL');
};
process.once('exit', killChildren);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    killChildren();
    process.exit(128 + os.constants.signals[signal]);
  });
}

/** A helper process of the bench that prints the URL it serves on its first line of output. */
async function startHelper(args: string[]): Promise<{ url: string; pid: number | undefined; close: () => void }> {
  const proc = started(spawn(process.execPath, ['--import', 'tsx', ...args], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.once('data', (d) => resolve(String(d).trim()));
    proc.once('exit', (c) => reject(new Error(`${args[0]} exited ${c}`)));
  });
  return { url, pid: proc.pid, close: () => proc.kill() };
}

/** The fake provider runs in its own process so that its writes do not compete with the clients. */
export async function startProvider(p: ProviderPacing): Promise<{ baseUrl: string; close: () => void }> {
  const { url, close } = await startHelper(['bench/fake-provider.ts', String(p.ttftMs), String(p.tokens), String(p.intervalMs), String(p.burst)]);
  return { baseUrl: url, close };
}

/** bench:chat's floor (bench/bare-relay.ts), in its own process as the server is. */
export function startBareRelay(providerBaseUrl: string): Promise<{ url: string; pid: number | undefined; close: () => void }> {
  return startHelper(['bench/bare-relay.ts', providerBaseUrl]);
}

export interface ServerProc {
  url: string;
  /** Printed on the very first start of a database only. */
  token: string | null;
  workerId: string | null;
  proc: ChildProcess;
  dir: string;
  /** Kills it (SIGKILL unless told otherwise) and removes its folder. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** The benches' one user stands in for many (one per chat): the per-user limits are lifted (still checked). */
export const BENCH_USER_LIMITS = {
  AIRLOCK_USER_RUNNING_TURNS: '100000',
  AIRLOCK_USER_CHATS_PER_MINUTE: '100000',
  AIRLOCK_USER_STREAMS: '100000',
  AIRLOCK_USER_SESSIONS: '100000',
};

/** firstStart: a fresh database, whose first server prints the admin token. */
export async function startAirlock(env: NodeJS.ProcessEnv, args: string[] = [], firstStart = true): Promise<ServerProc> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-bench-'));
  const { DATABASE_URL: _ignored, ...parentEnv } = process.env; // only an explicit --database-url counts
  const nodeArgs = process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const proc = started(
    spawn(process.execPath, [...nodeArgs, 'bin/airlock.js', 'server', '--port', '0', '--data-dir', path.join(dir, 'data'), ...args], {
      env: { ...parentEnv, AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json'), AIRLOCK_LOG_LEVEL: process.env.BENCH_SERVER_LOG_LEVEL ?? 'warn', AIRLOCK_TITLES: '0', ...BENCH_USER_LIMITS, ...env },
      stdio: ['ignore', process.env.BENCH_SERVER_LOG ? 'inherit' : 'ignore', 'pipe'],
    }),
  );
  let err = '';
  const found = await new Promise<{ url: string; token: string | null; workerId: string | null }>((resolve, reject) => {
    proc.stderr!.on('data', (d) => {
      if (process.env.BENCH_SERVER_LOG) process.stderr.write(d);
      err += d;
      const m = /listening on (\S+) \(.*?(?:worker (\S+)\)|API only\))/.exec(err);
      const token = /^\s+(al_\S+)$/m.exec(err)?.[1] ?? null;
      if (m && (token || !firstStart)) resolve({ url: m[1]!, token, workerId: m[2] ?? null });
    });
    proc.on('exit', (c) => reject(new Error(`server exited ${c}: ${err}`)));
  });
  return {
    ...found,
    proc,
    dir,
    async stop(signal?: NodeJS.Signals) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(signal ?? (process.env.BENCH_SERVER_NODE_ARGS ? 'SIGINT' : 'SIGKILL'));
        await new Promise((r) => proc.once('exit', r));
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface LoadResult {
  overhead: number[];
  /** Send request start → its HTTP response. */
  send: number[];
  /** Send request start → the provider's first write, minus its TTFT: the overhead before the first token leaves the provider. */
  toProvider: number[];
  /** Send request start → the provider request's arrival. */
  requested: number[];
  token: number[];
  tokens: number;
  seconds: number;
}

/**
 * `chats` chats, each with one WebSocket client on `stream`; each sends `messages` messages
 * (after `warmup` unmeasured ones) on `send` and waits for the turn to end, then waits a random think time of up to
 * `thinkMs` (0: sends at once, so the chats move in lockstep bursts). Overhead = send start → first delta
 * at the client − the provider's TTFT; per token = provider write → client receive.
 */
export async function runLoad(send: ApiClient, stream: ApiClient, chats: number, messages: number, ttftMs: number, thinkMs = 0, warmup = 1): Promise<LoadResult> {
  const overhead: number[] = [];
  const sendMs: number[] = [];
  const toProvider: number[] = [];
  const requested: number[] = [];
  const tokenLat: number[] = [];
  let tokens = 0;
  const ids = await Promise.all(Array.from({ length: chats }, () => send.post('/api/chats', { title: 'bench' })));
  const started = now();
  const stuck = new Map<string, () => string>();
  const debug = Boolean(process.env.BENCH_DEBUG); // what each chat saw last, printed while it waits
  const watchdog = setInterval(() => {
    if (debug) for (const [id, f] of stuck) process.stderr.write(`[bench] waiting on ${id}: ${f()}\n`);
  }, 15_000);
  await Promise.all(
    ids.map(async (chat) => {
      let resolveTurn: ((t: number) => void) | null = null;
      let firstDelta = 0;
      let firstWrite = 0;
      let firstArrived = 0;
      let measuring = false;
      const seen: string[] = [];
      let mNow = 0;
      stuck.set(chat.id, () => `message ${mNow}; ${seen.slice(-12).join(' ')}`);
      const ws = await stream.openStream(chat.id, 0, (events: StreamEvent[]) => {
        const t = now();
        if (debug) {
          for (const e of events) seen.push(`${e.type}${e.type === 'status' ? ':' + e.status : ''}@${e.seq ?? '-'}`);
          if (seen.length > 100) seen.splice(0, seen.length - 12);
        }
        for (const e of events) {
          if (e.type === 'delta') {
            if (!firstDelta) {
              firstDelta = t;
              const [w, arrived] = String(e.text).slice(1).split(' ');
              firstWrite = Number(w) || 0;
              firstArrived = Number(arrived) || 0;
            }
            // A delta carries every token the server read at once ("@write [arrived] " each): each
            // counts, and each is timed from its own write.
            const stamps = String(e.text).split('@');
            for (let k = 1; k < stamps.length; k++) {
              tokens++; // every token streamed counts: the clock runs from before the warm-up turns
              if (measuring) {
                const ts = parseFloat(stamps[k]!);
                if (ts) tokenLat.push(t - ts);
              }
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
      let finished = false;
      ws.on('close', (code, reason) => {
        if (!finished) process.stderr.write(`[bench] chat ${chat.id}: stream closed early (${code} ${reason}); waiting turn: ${resolveTurn !== null}\n`);
      });
      for (let m = 0; m < warmup + messages; m++) {
        // A user reads the reply before writing the next message (0 = every chat sends the moment its turn ends).
        if (thinkMs) await sleep(Math.random() * thinkMs);
        mNow = m;
        measuring = m >= warmup;
        firstDelta = 0;
        const done = new Promise<number>((r) => (resolveTurn = r));
        const turnStart = now();
        await send.post(`/api/chats/${chat.id}/messages`, { content: `message ${m}` });
        const posted = now();
        await done;
        if (measuring) {
          overhead.push(firstDelta - turnStart - ttftMs);
          if (firstWrite) toProvider.push(firstWrite - turnStart - ttftMs);
          if (firstArrived) requested.push(firstArrived - turnStart);
          sendMs.push(posted - turnStart);
        }
      }
      finished = true;
      stuck.delete(chat.id);
      ws.close();
    }),
  );
  clearInterval(watchdog);
  return { overhead, send: sendMs, toProvider, requested, token: tokenLat, tokens, seconds: (now() - started) / 1000 };
}

/** A fresh schema on the PostgreSQL at `base` (dropped by the returned function). */
export async function pgUrlWithSchema(base: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const { default: pg } = await import('pg');
  const schema = `bench_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
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

/**
 * CPU seconds (user + system) a process has used: all its threads, and its main thread alone
 * (the one that carries every token), and the seconds that thread spent ready to run but waiting
 * for a CPU (`mainWait`, from schedstat; null without it). Linux only (/proc); null elsewhere.
 */
export function processCpu(pid: number | undefined): { all: number; main: number; mainWait: number | null; threads: Map<string, number> } | null {
  if (!pid) return null;
  const ticks = (file: string) => {
    // Fields after the command name, which is in parentheses and may hold spaces.
    const f = fs.readFileSync(file, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime (USER_HZ = 100)
  };
  try {
    const threads = new Map<string, number>();
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        threads.set(tid, ticks(`/proc/${pid}/task/${tid}/stat`));
      } catch {
        // the thread ended meanwhile
      }
    }
    let mainWait: number | null = null;
    try {
      mainWait = Number(fs.readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9; // run, wait (ns), slices
    } catch {
      // a kernel without schedstats
    }
    return { all: ticks(`/proc/${pid}/stat`), main: threads.get(String(pid)) ?? 0, mainWait, threads };
  } catch {
    return null;
  }
}

/** CPU seconds each thread used between two samples, by thread id. */
export function threadCpu(a: NonNullable<ReturnType<typeof processCpu>>, b: NonNullable<ReturnType<typeof processCpu>>): [string, number][] {
  return [...b.threads].map(([tid, t]) => [tid, t - (a.threads.get(tid) ?? 0)]);
}

/** CPU seconds between two samples: of the busiest thread other than the main one (the embedded database's), and of all the others. */
export function otherThreadsCpu(a: ReturnType<typeof processCpu>, b: ReturnType<typeof processCpu>, pid: number | undefined): { busiest: number; rest: number } | null {
  if (!a || !b) return null;
  const deltas = threadCpu(a, b).filter(([tid]) => tid !== String(pid)).map(([, s]) => s);
  const busiest = Math.max(0, ...deltas);
  return { busiest, rest: deltas.reduce((x, y) => x + y, 0) - busiest };
}

/** A server's Prometheus metrics, as text. */
async function metricsText(url: string, token: string): Promise<string> {
  return (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
}

/** The values of every series of a metric in Prometheus text, labels or none. */
function seriesValues(text: string, metric: string): number[] {
  return [...text.matchAll(new RegExp(`^${metric}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].map((m) => Number(m[1]));
}

/** One of a server's own Prometheus gauges (the first series), or null. */
export async function serverGauge(url: string, token: string, metric: string): Promise<number | null> {
  return seriesValues(await metricsText(url, token), metric)[0] ?? null;
}

/** The sum of every series of one of a server's own Prometheus metrics (e.g. a histogram's `_sum` by label), or null when it has none. */
export async function serverSum(url: string, token: string, metric: string): Promise<number | null> {
  const values = seriesValues(await metricsText(url, token), metric);
  return values.length ? values.reduce((a, b) => a + b, 0) : null;
}

/** One of a server's own Prometheus histograms, as cumulative [upper bound, count] buckets. */
export async function serverHistogram(url: string, token: string, metric: string): Promise<[number, number][]> {
  const text = await metricsText(url, token);
  const buckets: [number, number][] = [];
  const re = new RegExp(`^${metric}_bucket\\{[^}]*le="([^"]+)"[^}]*\\} (\\S+)$`, 'gm');
  for (const m of text.matchAll(re)) buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  return buckets;
}

/**
 * A quantile of a histogram (linear inside the bucket); with `since`, of what was observed after
 * that earlier reading. null when nothing was observed.
 */
export function histogramQuantile(buckets: [number, number][], q: number, since: [number, number][] = []): number | null {
  const counts = buckets.map(([le, n], i) => [le, n - (since[i]?.[1] ?? 0)] as [number, number]);
  const total = counts.at(-1)?.[1] ?? 0;
  if (!total) return null;
  const want = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of counts) {
    if (count >= want) return le === Infinity ? prevLe : prevLe + ((want - prevCount) / Math.max(1, count - prevCount)) * (le - prevLe);
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/**
 * An `airlock server` process on a fresh data folder in `dir`, on a free port; resolves once it
 * listens and has written its admin token.
 */
export async function serverProcess(dir: string, env: NodeJS.ProcessEnv): Promise<{ proc: ChildProcess; url: string; token: string }> {
  const { BIN, childEnv, freePort } = await import('../test/helpers/launch.js');
  const port = await freePort();
  const proc = spawn(process.execPath, [BIN, 'server', '--data-dir', path.join(dir, 'data'), '--port', String(port)], {
    env: childEnv({ AIRLOCK_LOG_LEVEL: 'warn', ...BENCH_USER_LIMITS, ...env }),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    proc.stderr!.on('data', (d) => {
      err += d;
      if (/listening on/.test(err)) resolve();
    });
    proc.once('exit', () => reject(new Error(`server exited: ${err}`)));
  });
  const tokenFile = path.join(dir, 'data', 'admin-token');
  const readToken = () => (fs.existsSync(tokenFile) ? fs.readFileSync(tokenFile, 'utf8').trim() : '');
  // The file can exist a moment before its content does.
  for (let i = 0; !/^al_/.test(readToken()); i++) {
    if (i > 500) throw new Error('the server wrote no admin token');
    await new Promise((r) => setTimeout(r, 10));
  }
  return { proc, url: `http://127.0.0.1:${port}`, token: readToken() };
}
