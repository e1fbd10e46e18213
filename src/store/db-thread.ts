// The main thread's side of the embedded database's thread. PGlite (pglite-worker.ts) runs its
// statements synchronously, so it runs in a worker thread that never blocks the event loop that
// streams tokens. Queries and transactions are messages; errors come back with their PostgreSQL
// fields (code, detail, constraint, …).
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../worker-thread.js';
import type { Queryable, Row } from './db.js';
import type { UpkeepNotice, UpkeepRounds } from './pglite-upkeep.js';

/** What the embedded database's thread opens. */
export interface PgliteInit {
  /** Undefined: in memory. */
  dataDir?: string;
  /** Age (in transactions) of a template database's frozen horizon at which a start freezes it; tests lower it. */
  templateFreezeAge?: number;
  /** How often upkeep runs (default UPKEEP_ROUNDS). */
  upkeep?: UpkeepRounds;
}

/** Each thread's entry file (beside this one) and what it is given. */
export interface ThreadKinds {
  'pglite-worker': PgliteInit;
}

export type ThreadRequest =
  | { op: 'query'; id: number; sql: string; params?: unknown[]; tx?: number }
  | { op: 'begin'; id: number }
  | { op: 'end'; id: number; tx: number; commit: boolean }
  | { op: 'close'; id: number };

export interface ThreadReply {
  /** 0: start-up; a request's id; minus a transaction's id: how that transaction ended. */
  id: number;
  rows?: unknown[];
  error?: { message: string; code?: string; detail?: string; hint?: string; constraint?: string; table?: string; column?: string; severity?: string };
  rolledBack?: boolean;
  /** With id 0 after start-up: what the thread's upkeep did (pglite-upkeep.ts). */
  notice?: UpkeepNotice;
}

/** An error's message and PostgreSQL fields, as a thread sends them back. */
export function errorFields(err: unknown): ThreadReply['error'] {
  const e = err as Record<string, unknown> & Error;
  const out: NonNullable<ThreadReply['error']> = { message: e?.message ?? String(err) };
  for (const k of ['code', 'detail', 'hint', 'constraint', 'table', 'column', 'severity'] as const) {
    if (typeof e?.[k] === 'string') out[k] = e[k] as string;
  }
  return out;
}

export class DatabaseError extends Error {
  code?: string;
  detail?: string;
  constraint?: string;
  constructor(e: NonNullable<ThreadReply['error']>) {
    super(e.message);
    Object.assign(this, e);
  }
}

export class DbThread implements Queryable {
  private worker: Worker;
  private nextId = 1;
  private pending = new Map<number, { resolve: (rows: unknown[]) => void; reject: (err: Error) => void }>();
  private dead: Error | null = null;
  /** Receives the thread's upkeep notices. */
  onNotice: (n: UpkeepNotice) => void = () => {};

  private constructor(kind: keyof ThreadKinds, init: ThreadKinds[keyof ThreadKinds]) {
    this.worker = startWorker(import.meta.url, kind, init);
    this.worker.on('message', (m: ThreadReply) => {
      if (m.notice) return this.onNotice(m.notice);
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error && !m.rolledBack) p.reject(new DatabaseError(m.error));
      else p.resolve(m.rows ?? []);
    });
    const fail = (err: Error) => {
      this.dead = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    const name = 'embedded database thread';
    this.worker.on('error', (err) => fail(new Error(`${name} failed: ${err.message}`)));
    this.worker.on('exit', (code) => fail(new Error(`${name} exited (${code})`)));
  }

  static async start<K extends keyof ThreadKinds>(kind: K, init: ThreadKinds[K], onNotice?: (n: UpkeepNotice) => void): Promise<DbThread> {
    const t = new DbThread(kind, init);
    if (onNotice) t.onNotice = onNotice;
    try {
      await t.wait(0);
    } catch (err) {
      await t.worker.terminate();
      throw err;
    }
    return t;
  }

  private wait(id: number): Promise<unknown[]> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  private send(req: ThreadRequest, waitFor = req.id): Promise<unknown[]> {
    const p = this.wait(waitFor);
    if (!this.dead) this.worker.postMessage(req);
    return p;
  }

  query<T extends Row = Row>(sql: string, params?: unknown[], tx?: number): Promise<T[]> {
    return this.send({ op: 'query', id: this.nextId++, sql, params, tx }) as Promise<T[]>;
  }

  async tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T> {
    const tx = this.nextId++;
    await this.send({ op: 'begin', id: tx });
    const q: Queryable = { query: <R extends Row>(sql: string, params?: unknown[]) => this.query<R>(sql, params, tx) };
    let out: T;
    try {
      out = await fn(q);
    } catch (err) {
      await this.send({ op: 'end', id: this.nextId++, tx, commit: false }, -tx).catch(() => {});
      throw err;
    }
    await this.send({ op: 'end', id: this.nextId++, tx, commit: true }, -tx);
    return out;
  }

  async close(): Promise<void> {
    if (!this.dead) await this.send({ op: 'close', id: this.nextId++ });
    await this.worker.terminate();
  }
}
