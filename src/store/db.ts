// One query API over the embedded database (PGlite in a data folder) and PostgreSQL (`pg`).
import path from 'node:path';
import { migrate } from './migrations.js';
import { acquireDataDirLock } from './lockfile.js';
import { makePrivateDir } from './private-dir.js';
import type { UpkeepRounds } from './pglite-upkeep.js';
import type { Logger } from '../log.js';

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
  /** Embedded only: where the database thread's upkeep reports (debug: what it did; warn: what failed). */
  log?: Pick<Logger, 'debug' | 'warn'>;
  /** Embedded only (tests): the age of a template database at which a start freezes it (pglite-upkeep.ts). */
  templateFreezeAge?: number;
  /** Embedded only (tests): how often upkeep runs (default UPKEEP_ROUNDS). */
  upkeep?: UpkeepRounds;
  /** PostgreSQL: prepare each statement once per connection (AIRLOCK_DB_PREPARED; default true). */
  prepared?: boolean;
}

/** Where the embedded database keeps its files inside a data folder. */
export const embeddedDbDir = (dataDir: string) => path.join(dataDir, 'pgdata');

export async function openDb(opts: OpenDbOptions): Promise<Db> {
  const db = opts.url ? await openPostgres(opts.url, opts.schema, opts.prepared ?? true) : await openPglite(opts);
  try {
    await migrate(db);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}

async function openPglite(opts: OpenDbOptions): Promise<Db> {
  const { DbThread } = await import('./db-thread.js');
  let release: (() => void) | undefined;
  let dir: string | undefined;
  if (!opts.memory) {
    dir = path.resolve(opts.dataDir ?? '.airlock');
    const repaired = makePrivateDir(dir);
    if (repaired) opts.log?.warn({ dir, entries: repaired }, 'the data folder was open to other users: took their access off');
    release = await acquireDataDirLock(dir);
  }
  const log = opts.log;
  let thread;
  try {
    thread = await DbThread.start(
      'pglite-worker',
      { dataDir: dir ? embeddedDbDir(dir) : undefined, templateFreezeAge: opts.templateFreezeAge, upkeep: opts.upkeep },
      log && (({ level, msg, ...fields }) => log[level](fields, msg)),
    );
  } catch (err) {
    release?.();
    throw err;
  }
  // A new database's files are copied out of initdb's in-memory filesystem with its mode, 0666
  // (the files PostgreSQL creates later are 0600); the folder, 0700 from the start, kept them
  // out of reach meanwhile.
  if (dir) makePrivateDir(dir);
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

async function openPostgres(url: string, schema: string | undefined, prepared: boolean): Promise<Db> {
  if (schema && !/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`invalid schema name ${schema}`);
  const { openPgPool } = await import('./pg-pool.js');
  const pool = await openPgPool(url, schema, prepared);
  return {
    kind: 'postgres',
    pg: { connectionString: url, options: schema ? `-c search_path=${schema}` : undefined },
    query: (sql, params) => pool.query(sql, params),
    tx: (fn) => pool.tx(fn),
    close: () => pool.close(),
  };
}
