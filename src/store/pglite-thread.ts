// The main thread's side of the embedded database: PGlite runs in a worker thread
// (pglite-worker.ts) so that its statements, which run synchronously, never block the event loop
// that streams tokens. Queries and transactions are messages; errors come back with their
// PostgreSQL fields (code, detail, constraint, …).
import { Worker } from 'node:worker_threads';
import type { Queryable, Row } from './db.js';
import type { UpkeepNotice } from './pglite-upkeep.js';

export interface ThreadInit {
  /** Undefined: in memory. */
  dataDir?: string;
  /** Age (in transactions) of a template database's frozen horizon at which a start freezes it; tests lower it. */
  templateFreezeAge?: number;
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

export class DatabaseError extends Error {
  code?: string;
  detail?: string;
  constraint?: string;
  constructor(e: NonNullable<ThreadReply['error']>) {
    super(e.message);
    Object.assign(this, e);
  }
}

/** Bundled: dist/pglite-worker.js beside this chunk; from source (tests, under tsx): the .ts file. */
const fromSource = import.meta.url.endsWith('.ts');

export class PgliteThread implements Queryable {
  private worker: Worker;
  private nextId = 1;
  private pending = new Map<number, { resolve: (rows: unknown[]) => void; reject: (err: Error) => void }>();
  private dead: Error | null = null;
  /** Receives the thread's upkeep notices. */
  onNotice: (n: UpkeepNotice) => void = () => {};

  private constructor(init: ThreadInit) {
    const entry = new URL(fromSource ? './pglite-worker.ts' : './pglite-worker.js', import.meta.url);
    // Node 20 does not apply `--import tsx` to workers: from source, register tsx in the worker first.
    this.worker = fromSource
      ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`, { eval: true, workerData: init })
      : new Worker(entry, { workerData: init });
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
    this.worker.on('error', (err) => fail(new Error(`embedded database thread failed: ${err.message}`)));
    this.worker.on('exit', (code) => fail(new Error(`embedded database thread exited (${code})`)));
  }

  static async start(init: ThreadInit, onNotice?: (n: UpkeepNotice) => void): Promise<PgliteThread> {
    const t = new PgliteThread(init);
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
