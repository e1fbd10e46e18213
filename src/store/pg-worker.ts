// PostgreSQL's client in its own thread (db-thread.ts is the main thread's side). Each statement
// is a socket write that wakes a PostgreSQL backend, and its reply is parsed here: that work,
// ~0.4 ms per chat turn, left the event loop that streams tokens. Unlike the embedded database's
// thread it keeps the main thread's priority: it uses little CPU, in short bursts, and a statement
// that waited for it would hold up a turn.
import crypto from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import type { PgInit, ThreadReply, ThreadRequest } from './db-thread.js';
import { errorFields } from './db-thread.js';
import { isStalePlanError } from './retry.js';
import { num } from '../config.js';

const port = parentPort!;
const init = workerData as PgInit;
const INT8 = 20;

async function main() {
  const options = init.schema ? `-c search_path=${init.schema}` : undefined;
  try {
    if (init.schema) {
      const c = new pg.Client({ connectionString: init.url });
      await c.connect();
      try {
        await c.query(`CREATE SCHEMA IF NOT EXISTS ${init.schema}`);
      } finally {
        await c.end();
      }
    }
  } catch (err) {
    port.postMessage({ id: 0, error: errorFields(err) } satisfies ThreadReply);
    return;
  }
  const typeParser = (oid: number, format?: any) => (oid === INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format));
  const pool = new pg.Pool({ connectionString: init.url, options, max: 20, types: { getTypeParser: typeParser } as any });
  pool.on('error', () => {
    /* an idle client died; the pool replaces it on next use */
  });
  const statements = new NamedStatements(num('dbPrepared') !== 0);
  const run = async (c: pg.Pool | pg.PoolClient, sql: string, params?: unknown[]) => {
    try {
      return (await c.query(statements.config(sql, params))).rows;
    } catch (err) {
      if (!statements.stale(err)) throw err;
      return (await c.query(sql, params as any[])).rows;
    }
  };
  port.postMessage({ id: 0, rows: [] } satisfies ThreadReply);

  /** Open transactions by id, each on its own connection. */
  const txs = new Map<number, OpenTx>();
  const endTx = (tx: OpenTx, err: Error | null) => {
    tx.client.removeListener('error', tx.onError);
    tx.client.release(err ?? tx.lost ?? undefined);
  };
  const reply = (id: number, work: Promise<unknown[]>) =>
    work.then(
      (rows) => port.postMessage({ id, rows } satisfies ThreadReply),
      (err) => port.postMessage({ id, error: errorFields(err) } satisfies ThreadReply),
    );

  port.on('message', (m: ThreadRequest) => {
    switch (m.op) {
      case 'query': {
        if (m.tx === undefined) {
          void reply(m.id, run(pool, m.sql, m.params));
          return;
        }
        const tx = txs.get(m.tx);
        if (!tx) port.postMessage({ id: m.id, error: { message: `transaction ${m.tx} is not open` } } satisfies ThreadReply);
        else if (tx.lost) port.postMessage({ id: m.id, error: errorFields(tx.lost) } satisfies ThreadReply);
        else void reply(m.id, run(tx.client, m.sql, m.params));
        return;
      }
      case 'begin':
        void reply(
          m.id,
          pool.connect().then(async (client) => {
            const tx: OpenTx = { client, lost: null, onError: (err) => (tx.lost ??= err) };
            // A checked-out connection that dies between statements emits 'error' (the pool
            // listens only to idle ones): unheard, it would end the thread.
            client.on('error', tx.onError);
            try {
              await client.query('BEGIN');
            } catch (err) {
              endTx(tx, err as Error);
              throw err;
            }
            txs.set(m.id, tx);
            return [];
          }),
        );
        return;
      case 'end': {
        const tx = txs.get(m.tx);
        if (!tx) {
          port.postMessage({ id: -m.tx, error: { message: `transaction ${m.tx} is not open` } } satisfies ThreadReply);
          return;
        }
        txs.delete(m.tx);
        const ending = tx.lost ? Promise.reject(tx.lost) : tx.client.query(m.commit ? 'COMMIT' : 'ROLLBACK');
        void reply(
          -m.tx,
          ending.then(
            () => {
              endTx(tx, null);
              return [];
            },
            (err) => {
              endTx(tx, err); // a connection that failed to end its transaction is not reused
              throw err;
            },
          ),
        );
        return;
      }
      case 'close':
        void reply(m.id, pool.end().then(() => []));
        return;
    }
  });
}

interface OpenTx {
  client: pg.PoolClient;
  /** Why its connection died between statements: what its next statement and its end fail with. */
  lost: Error | null;
  onError: (err: Error) => void;
}

/**
 * Named (prepared) statements on PostgreSQL: each parameterized statement is parsed and planned
 * once per connection instead of on every call, and its text is not sent again. The send
 * statement took 1.1-1.7 ms unnamed and 0.8-0.9 ms named (tmp/pgnamed.ts, loopback).
 */
class NamedStatements {
  private names = new Map<string, string>();

  constructor(private enabled: boolean) {}

  config(sql: string, params?: unknown[]): { name?: string; text: string; values?: any[] } {
    if (!this.enabled || !params?.length) return { text: sql, values: params as any[] };
    let name = this.names.get(sql);
    if (!name) {
      if (this.names.size >= MAX_NAMED) return { text: sql, values: params as any[] };
      name = `airlock_${crypto.createHash('sha1').update(sql).digest('hex').slice(0, 24)}`;
      this.names.set(sql, name);
    }
    return { name, text: sql, values: params as any[] };
  }

  /**
   * A table changed under a prepared statement (a newer replica migrated the schema): PostgreSQL
   * refuses its old plan's row type. From then on statements go unnamed; the caller runs it again.
   */
  stale(err: unknown): boolean {
    if (!this.enabled || !isStalePlanError(err)) return false;
    this.enabled = false;
    return true;
  }
}

/** Distinct statement texts beyond this run unnamed (ours are a fixed set; this is a guard). */
const MAX_NAMED = 500;

void main();
