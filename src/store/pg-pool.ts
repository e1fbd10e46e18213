// PostgreSQL through a pool of `pg` connections, on the event loop (`pg` is asynchronous I/O).
// Each transaction has a connection of its own for its length.
import crypto from 'node:crypto';
import pg from 'pg';
import type { Queryable, Row } from './db.js';
import { isStalePlanError } from './retry.js';

const INT8 = 20;
/** Distinct statement texts beyond this run unnamed (ours are a fixed set; this is a guard). */
const MAX_NAMED = 500;

export interface PgPool extends Queryable {
  tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Connects (creating `schema` when given) and returns the pool; prepared: name each statement. */
export async function openPgPool(url: string, schema: string | undefined, prepared: boolean): Promise<PgPool> {
  if (schema) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    } finally {
      await c.end();
    }
  }
  const typeParser = (oid: number, format?: any) => (oid === INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format));
  const pool = new pg.Pool({ connectionString: url, options: schema ? `-c search_path=${schema}` : undefined, max: 20, types: { getTypeParser: typeParser } as any });
  pool.on('error', () => {
    /* an idle connection died; the pool replaces it on next use */
  });
  const statements = new NamedStatements(prepared);
  let closed = false;
  const run = async <T extends Row>(c: pg.Pool | pg.PoolClient, sql: string, params?: unknown[]): Promise<T[]> => {
    if (closed) throw new Error('the PostgreSQL connection pool is closed');
    try {
      return (await c.query(statements.config(sql, params))).rows as T[];
    } catch (err) {
      if (!statements.stale(err)) throw err;
      return (await c.query(sql, params as any[])).rows as T[];
    }
  };
  return {
    query: (sql, params) => run(pool, sql, params),
    async tx(fn) {
      if (closed) throw new Error('the PostgreSQL connection pool is closed');
      const client = await pool.connect();
      // A checked-out connection that dies between statements emits 'error' (the pool listens only
      // to idle ones): the transaction's next statement fails with it, and it is not reused.
      let lost: Error | null = null;
      const onError = (err: Error) => (lost ??= err);
      client.on('error', onError);
      const release = (err?: Error) => {
        client.removeListener('error', onError);
        client.release(err ?? lost ?? undefined);
      };
      try {
        await client.query('BEGIN');
      } catch (err) {
        release(err as Error);
        throw err;
      }
      const q: Queryable = {
        query: <T extends Row>(sql: string, params?: unknown[]) => (lost ? Promise.reject(lost) : run<T>(client, sql, params)),
      };
      let out;
      try {
        out = await fn(q);
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        release(lost ?? undefined);
        throw err;
      }
      try {
        if (lost) throw lost;
        await client.query('COMMIT');
      } catch (err) {
        release(err as Error); // a connection that failed to end its transaction is not reused
        throw err;
      }
      release();
      return out;
    },
    close: () => {
      closed = true;
      return pool.end();
    },
  };
}

/**
 * Named (prepared) statements: each parameterized statement is parsed and planned once per
 * connection instead of on every call, and its text is not sent again. Off behind a pooler in
 * transaction mode (AIRLOCK_DB_PREPARED=0), which may hand a statement another backend.
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

  /** A table changed under a prepared statement (a newer replica migrated the schema): from then on statements go unnamed; the caller runs it again. */
  stale(err: unknown): boolean {
    if (!this.enabled || !isStalePlanError(err)) return false;
    this.enabled = false;
    return true;
  }
}
