// Statements that failed because the connection broke (a restarted or failed-over PostgreSQL, a
// terminated backend, a reset): a new connection from the pool may well succeed. Callers retry
// only statements that are safe to run again (see fencedCommit).
import { retryDelay } from '../backoff.js';

export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  // 08: connection exception; 57P01-03: admin shutdown, crash shutdown, cannot connect now.
  if (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03') return true;
  if (['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT'].includes(code)) return true;
  return typeof e?.message === 'string' && /Connection terminated|connection ended|Connection is closed/i.test(e.message);
}

/**
 * A table changed under a prepared statement (a schema migration, perhaps by a newer replica):
 * PostgreSQL refuses to run the old plan because its row type changed. Run unprepared, it works.
 */
export function isStalePlanError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  return e?.code === '0A000' && typeof e.message === 'string' && /cached plan must not change result type/.test(e.message);
}

/** 5 retries from 50 ms doubling to 2 s (~3 s in all): a failover or a restarted PostgreSQL is
 * usually back within that; a longer outage fails the step, which the lease then recovers. */
const DB_RETRIES = 5;
const DB_RETRY_BASE_MS = 50;
const DB_RETRY_MAX_MS = 2_000;

/** Runs fn again on connection errors, with backoff, up to DB_RETRIES times. */
export async function retryOnConnectionError<T>(fn: (attempt: number) => Promise<T>, onRetry?: (err: unknown, attempt: number) => void): Promise<T> {
  const retries = DB_RETRIES;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= retries || !isConnectionError(err)) throw err;
      onRetry?.(err, attempt + 1);
      await new Promise((r) => setTimeout(r, retryDelay(attempt, DB_RETRY_BASE_MS, DB_RETRY_MAX_MS)));
    }
  }
}
