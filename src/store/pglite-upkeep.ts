// Upkeep of the embedded database. PGlite is PostgreSQL without its background workers, so
// autovacuum never runs, and without it:
// - plans go stale: a prepared statement is planned once (generic plans), for the tables as they
//   were then — empty, on a fresh data folder — and kept; a send batch went on seq-scanning
//   `chats` when there were 100k of them (107 ms instead of 0.15). ANALYZE of a table that has
//   grown replans the statements that read it;
// - the space of updated and deleted rows is never reclaimed (a chat's row is rewritten twice a
//   turn) and transaction ids are never frozen: VACUUM;
// - there is no checkpointer: the write-ahead log grows to max_wal_size (1 GB) before the
//   statement that crosses it makes a checkpoint itself, holding everything meanwhile, and a
//   server killed before that replays all of it when it starts (~1 s per 100 MB here): a
//   CHECKPOINT once `walBeforeCheckpoint` bytes have been written since the last one.
// It is driven by the statements themselves, never by a timer: every `every` statements, at the
// first moment no statement waits, one table at a time (a statement that arrives meanwhile waits
// for that one table only; the rest is done at the next such moment).
import type { PGlite } from '@electric-sql/pglite';

export interface UpkeepNotice {
  level: 'debug' | 'warn';
  msg: string;
  [field: string]: unknown;
}

/** A table is analyzed again once it has this many times the pages it had at its last ANALYZE (and at least MIN_PAGES). */
const GROWTH = 2;
const MIN_PAGES = 8;
/** Every this many rounds, the system catalogs are vacuumed too (they are what the database's frozen-xid horizon waits on). */
const CATALOG_EVERY = 10;

/** Past this age of the templates' horizon a running server asks to be restarted (a start freezes them). */
const TEMPLATES_WARN_AGE = 1_500_000_000;

type Step = { sql: string; table: string; what: 'analyze' | 'vacuum' | 'checkpoint' };

/**
 * PostgreSQL stops writes when the oldest database's frozen-xid horizon is ~2^31 transactions
 * old, and it counts the templates too: template0 and template1, which a PGlite opened on
 * `postgres` cannot vacuum. A start that finds them `maxAge` old opens each in turn (template0
 * takes connections for that moment), freezes it, and opens `postgres` again. Once in about a
 * billion transactions; a server up for longer than that warns in its upkeep (below).
 */
export async function freezeOldTemplates(
  pg: PGlite,
  open: (database?: string) => Promise<PGlite>,
  maxAge: number,
  notice: (n: UpkeepNotice) => void,
): Promise<PGlite> {
  const old = (
    await pg.query<{ datname: string; allow: boolean; age: number }>(
      `SELECT datname, datallowconn AS allow, age(datfrozenxid)::float8 AS age FROM pg_database
       WHERE datname IN ('template0', 'template1') AND age(datfrozenxid) >= $1 ORDER BY datname`,
      [maxAge],
    )
  ).rows;
  if (!old.length) return pg;
  const closed = old.filter((d) => !d.allow).map((d) => d.datname);
  let current: PGlite | null = pg;
  try {
    for (const d of closed) await pg.exec(`ALTER DATABASE ${d} ALLOW_CONNECTIONS true`);
    await pg.close();
    current = null;
    for (const d of old) {
      const t0 = performance.now();
      const t = await open(d.datname);
      try {
        await t.exec('VACUUM FREEZE');
      } finally {
        await t.close();
      }
      notice({ level: 'debug', msg: 'embedded database upkeep: template frozen', database: d.datname, age: d.age, ms: Math.round(performance.now() - t0) });
    }
  } catch (err) {
    // Not a reason to refuse to start: the horizon is still ~a billion transactions away.
    notice({ level: 'warn', msg: 'embedded database upkeep: could not freeze the template databases', err: (err as Error).message });
  }
  current ??= await open();
  for (const d of closed) await current.exec(`ALTER DATABASE ${d} ALLOW_CONNECTIONS false`).catch(() => {});
  return current;
}

/** When upkeep runs: every `statements` statements (when none waits), starting with a checkpoint
 * once `walBytes` of write-ahead log were written since the last. */
export interface UpkeepRounds {
  statements: number;
  walBytes: number;
}

/** Every 2,000 statements: a few seconds of a busy server, so the statistics follow a table that
 * grows; a checkpoint per 256 MB of log bounds the log on disk and the replay after a crash. */
export const UPKEEP_ROUNDS: UpkeepRounds = { statements: 2_000, walBytes: 256 * 2 ** 20 };

export class Upkeep {
  private statements = 0;
  private steps: Step[] = [];
  private running = false;
  private rounds = 0;
  /** Pages of each table when it was last analyzed here (or as pg_class had them when first seen). */
  private analyzedPages = new Map<string, number>();

  constructor(
    private pg: PGlite,
    private every: number,
    /** A round starts with a checkpoint when this many bytes of write-ahead log were written since the last one. */
    private walBeforeCheckpoint: number,
    private notice: (n: UpkeepNotice) => void,
  ) {}

  /** Counts a statement that ended; runs due work when nothing waits (`idle()`). */
  statementEnded(idle: () => boolean): void {
    if (this.every <= 0) return;
    this.statements++;
    if (this.running || !idle()) return;
    if (!this.steps.length && this.statements < this.every) return;
    void this.run(idle);
  }

  private async run(idle: () => boolean): Promise<void> {
    this.running = true;
    try {
      if (!this.steps.length) {
        this.statements = 0;
        this.steps = await this.plan();
      }
      while (this.steps.length && idle()) {
        const step = this.steps.shift()!;
        const t0 = performance.now();
        try {
          await this.pg.exec(step.sql);
          this.notice({ level: 'debug', msg: `embedded database upkeep: ${step.what}`, ...(step.table && { table: step.table }), ms: Math.round(performance.now() - t0) });
        } catch (err) {
          this.notice({ level: 'warn', msg: `embedded database upkeep: ${step.what} failed`, ...(step.table && { table: step.table }), err: (err as Error).message });
        }
      }
    } catch (err) {
      this.notice({ level: 'warn', msg: 'embedded database upkeep failed', err: (err as Error).message });
    } finally {
      this.running = false;
    }
  }

  /** This round's work: a checkpoint when the log has grown, ANALYZE of the tables that grew, then VACUUM of every table. */
  private async plan(): Promise<Step[]> {
    const catalogs = ++this.rounds % CATALOG_EVERY === 0;
    const steps: Step[] = [];
    const [wal] = (
      await this.pg.query<{ bytes: number }>('SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), redo_lsn)::float8 AS bytes FROM pg_control_checkpoint()')
    ).rows;
    if (wal && wal.bytes >= this.walBeforeCheckpoint) steps.push({ sql: 'CHECKPOINT', table: '', what: 'checkpoint' });
    if (catalogs) {
      const [t] = (await this.pg.query<{ age: number }>(`SELECT max(age(datfrozenxid))::float8 AS age FROM pg_database WHERE datname IN ('template0', 'template1')`)).rows;
      if (t && t.age >= TEMPLATES_WARN_AGE)
        this.notice({
          level: 'warn',
          msg: `restart the server soon: the embedded database's template databases are ${t.age} transactions old, and PostgreSQL stops all writes at about 2.1 billion; a start freezes them`,
        });
    }
    const { rows } = await this.pg.query<{ name: string; own: boolean; relpages: number; pages: number }>(
      `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, n.nspname = current_schema() AS own, c.relpages,
              (pg_relation_size(c.oid) / current_setting('block_size')::int)::int AS pages
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r' AND (n.nspname = current_schema() OR ($1::boolean AND n.nspname = 'pg_catalog'))
       ORDER BY n.nspname = current_schema() DESC, c.relname`,
      [catalogs],
    );
    for (const t of rows.filter((r) => r.own)) {
      const before = this.analyzedPages.get(t.name) ?? t.relpages;
      if (!this.analyzedPages.has(t.name)) this.analyzedPages.set(t.name, before);
      if (t.pages >= MIN_PAGES && t.pages >= GROWTH * Math.max(before, 1)) {
        steps.push({ sql: `ANALYZE ${t.name}`, table: t.name, what: 'analyze' });
        this.analyzedPages.set(t.name, t.pages);
      }
    }
    for (const t of rows) steps.push({ sql: `VACUUM ${t.name}`, table: t.name, what: 'vacuum' });
    return steps;
  }
}
