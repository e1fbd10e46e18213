// One query API over the embedded database (PGlite in a data folder) and PostgreSQL (`pg`).
import fs from 'node:fs';
import path from 'node:path';
import { migrate } from './migrations.js';
import { acquireDataDirLock } from './lockfile.js';

export type Row = Record<string, any>;

export interface Queryable {
  query<T extends Row = Row>(sql: string, params?: unknown[]): Promise<T[]>;
}

export interface Db extends Queryable {
  readonly kind: 'pglite' | 'postgres';
  /** PostgreSQL only: how to open more connections (the replica bus). */
  readonly pg?: { connectionString: string; options?: string };
  /** Runs fn in one transaction; commits when it resolves, rolls back when it throws. */
  tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface OpenDbOptions {
  /** postgres://… for PostgreSQL; otherwise the embedded database in dataDir. */
  url?: string;
  dataDir?: string;
  /** PostgreSQL schema to use (created if missing); tests give each file its own. */
  schema?: string;
  /** Embedded only: keep everything in memory (tests). */
  memory?: boolean;
}

const INT8 = 20;

export async function openDb(opts: OpenDbOptions): Promise<Db> {
  const db = opts.url ? await openPostgres(opts.url, opts.schema) : await openPglite(opts);
  try {
    await migrate(db);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}

async function openPglite(opts: OpenDbOptions): Promise<Db> {
  const { PgliteThread } = await import('./pglite-thread.js');
  let release: (() => void) | undefined;
  let dir: string | undefined;
  if (!opts.memory) {
    dir = path.resolve(opts.dataDir ?? '.airlock');
    fs.mkdirSync(dir, { recursive: true });
    release = acquireDataDirLock(dir);
  }
  let thread;
  try {
    thread = await PgliteThread.start({ dataDir: dir ? path.join(dir, 'pgdata') : undefined });
  } catch (err) {
    release?.();
    throw err;
  }
  return {
    kind: 'pglite',
    query: (sql, params) => thread.query(sql, params),
    tx: (fn) => thread.tx(fn),
    async close() {
      try {
        await thread.close();
      } finally {
        release?.();
      }
    },
  };
}

async function openPostgres(url: string, schema?: string): Promise<Db> {
  const { default: pgmod } = await import('pg');
  const typeParser = (oid: number, format?: any) =>
    oid === INT8 ? (v: string) => Number(v) : pgmod.types.getTypeParser(oid, format);
  const options = schema ? `-c search_path=${schema}` : undefined;
  if (schema) {
    if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`invalid schema name ${schema}`);
    const c = new pgmod.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    } finally {
      await c.end();
    }
  }
  const pool = new pgmod.Pool({ connectionString: url, options, max: 20, types: { getTypeParser: typeParser } as any });
  pool.on('error', () => {
    /* an idle client died; the pool replaces it on next use */
  });
  return {
    kind: 'postgres',
    pg: { connectionString: url, options },
    async query<T extends Row>(sql: string, params?: unknown[]) {
      return (await pool.query(sql, params as any[])).rows as T[];
    },
    async tx(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const q: Queryable = {
          async query<T extends Row>(sql: string, params?: unknown[]) {
            return (await client.query(sql, params as any[])).rows as T[];
          },
        };
        const out = await fn(q);
        await client.query('COMMIT');
        return out;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        client.release();
      }
    },
    async close() {
      await pool.end();
    },
  };
}
