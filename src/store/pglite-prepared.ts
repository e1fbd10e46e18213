// Prepared statements for the embedded database. PGlite parses and plans every parameterized
// statement anew, and for our larger statements (the send, the step commit) that is most of their
// cost: about 3 ms each in WebAssembly, 0.9 ms prepared. PGlite has no API for named statements,
// so each distinct statement is PREPAREd once in SQL and run as EXECUTE name('literal', ...), its
// parameters written as quoted literals (safe: standard_conforming_strings is checked to be on).
import type { PGlite, Transaction } from '@electric-sql/pglite';
import { isStalePlanError } from './retry.js';

type Runner = Pick<PGlite, 'query' | 'exec'> | Pick<Transaction, 'query' | 'exec'>;

interface Entry {
  name: string;
  /** Resolves true once prepared; false when the statement cannot be prepared (DDL, untyped parameters). */
  ready: Promise<boolean>;
  /** Whether `ready` has resolved. */
  settled: boolean;
}

/** Statement texts beyond this many run unprepared (our statements are a fixed set; this is a guard). */
const MAX_PREPARED = 500;

export class PreparedStatements {
  private entries = new Map<string, Entry>();
  private n = 0;

  private constructor(private enabled: boolean) {}

  static async create(pg: PGlite): Promise<PreparedStatements> {
    const r = await pg.query<{ standard_conforming_strings: string }>('SHOW standard_conforming_strings');
    const on = r.rows[0]?.standard_conforming_strings === 'on';
    // Prepared statements would otherwise be planned per call for their first five runs.
    if (on) await pg.exec('SET plan_cache_mode = force_generic_plan');
    return new PreparedStatements(on);
  }

  /**
   * Runs a statement, prepared when it can be. `q` is the connection or an open transaction; a
   * statement is only ever prepared outside transactions (a failed PREPARE would abort one).
   */
  async query(pg: PGlite, q: Runner, sql: string, params: unknown[] | undefined): Promise<unknown[]> {
    if (!this.enabled || !params?.length) return (await q.query(sql, params)).rows;
    let entry = this.entries.get(sql);
    if (!entry && q === pg && this.entries.size < MAX_PREPARED) {
      const name = `airlock_s${++this.n}`;
      const e: Entry = { name, ready: Promise.resolve(false), settled: false };
      e.ready = pg.exec(`PREPARE ${name} AS ${sql}`).then(
        () => true,
        () => false,
      );
      void e.ready.then(() => (e.settled = true));
      this.entries.set(sql, (entry = e));
    }
    // Inside a transaction a PREPARE still queued must not be waited for: it may be queued behind
    // this very transaction (a statement first seen outside it while it was open), which would
    // then wait for itself and hold the connection for good. Run this one unprepared.
    if (!entry || (q !== pg && !entry.settled) || !(await entry.ready)) return (await q.query(sql, params)).rows;
    try {
      // The simple protocol (exec): one message instead of parse, describe, bind and execute for
      // the EXECUTE's own text (~60 µs less a statement here, ~10 % of a send's cost); it parses
      // result types the same way. The text is one statement: every parameter is a literal.
      return (await q.exec(`EXECUTE ${entry.name}(${params.map(literal).join(', ')})`))[0]?.rows ?? [];
    } catch (err) {
      // A table changed under the statement (its row type): forget it, run this one unprepared.
      if (!isStalePlanError(err)) throw err;
      this.entries.delete(sql);
      if (q === pg) await pg.exec(`DEALLOCATE ${entry.name}`).catch(() => {});
      return (await q.query(sql, params)).rows;
    }
  }
}

/** A parameter as an SQL literal of unknown type (coerced to the prepared parameter's type). */
export function literal(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  return `'${textOf(v).replace(/'/g, "''")}'`;
}

/** The text form PostgreSQL reads for a parameter (as a driver would send it). */
function textOf(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return arrayText(v);
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return `\\x${Buffer.from(v).toString('hex')}`;
  return JSON.stringify(v);
}

function arrayText(a: unknown[]): string {
  const items = a.map((v) => {
    if (v === null || v === undefined) return 'NULL';
    if (Array.isArray(v)) return arrayText(v);
    return `"${textOf(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  });
  return `{${items.join(',')}}`;
}
