// The embedded database's own thread. PGlite runs PostgreSQL compiled to WebAssembly, and every
// statement runs synchronously on the thread that owns it; on the server's main thread that
// blocked token streaming for as long as each statement took. Here it runs beside the main thread,
// which only exchanges messages with it (see db-thread.ts for the other side).
import { parentPort, workerData } from 'node:worker_threads';
import fs from 'node:fs';
import type { PGlite, Transaction } from '@electric-sql/pglite';
import type { ThreadReply, ThreadRequest, PgliteInit } from './db-thread.js';
import { errorFields } from './db-thread.js';
import { PreparedStatements } from './pglite-prepared.js';
import { initdbCacheDir, initdbCacheFile, isNewDatabase, readInitdbCache, saveInitdbCache } from './pglite-initdb-cache.js';
import { Upkeep, UPKEEP_ROUNDS, freezeOldTemplates, type UpkeepNotice } from './pglite-upkeep.js';

const port = parentPort!;
const init = workerData as PgliteInit;

async function main() {
  const { PGlite, types } = await import('@electric-sql/pglite');
  let pg: InstanceType<typeof PGlite>;
  const notify = (notice: UpkeepNotice) => port.postMessage({ id: 0, notice } satisfies ThreadReply);
  const openPglite = (database?: string, loadDataDir?: Blob) =>
    PGlite.create(init.dataDir, { parsers: { [types.INT8]: (v: string) => Number(v) }, ...(database && { database }), ...(loadDataDir && { loadDataDir }) });
  try {
    pg = (await openNew(openPglite, notify)) ?? (await openPglite());
    if (init.dataDir) pg = await freezeOldTemplates(pg, openPglite, init.templateFreezeAge ?? TEMPLATE_FREEZE_AGE, notify);
  } catch (err) {
    port.postMessage({ id: 0, error: errorFields(err) } satisfies ThreadReply);
    return;
  }
  const prepared = await PreparedStatements.create(pg);
  port.postMessage({ id: 0, rows: [] } satisfies ThreadReply);

  /** Open transactions by id: the handle, and how to end them (commit or roll back). */
  const txs = new Map<number, { t: Transaction; end: (commit: boolean) => void }>();

  // Statements and transactions received and not yet answered: upkeep runs only when none are.
  let open = 0;
  const rounds = init.upkeep ?? UPKEEP_ROUNDS;
  const upkeep = new Upkeep(pg, rounds.statements, rounds.walBytes, notify);
  const ended = () => {
    open--;
    upkeep.statementEnded(() => open === 0);
  };

  const reply = (id: number, run: () => Promise<unknown[]>) => {
    open++;
    return run().then(
      (rows) => {
        port.postMessage({ id, rows } satisfies ThreadReply);
        ended();
      },
      (err) => {
        port.postMessage({ id, error: errorFields(err) } satisfies ThreadReply);
        ended();
      },
    );
  };

  port.on('message', (m: ThreadRequest) => {
    switch (m.op) {
      case 'query': {
        const q = m.tx === undefined ? pg : txs.get(m.tx)?.t;
        if (!q) {
          port.postMessage({ id: m.id, error: { message: `transaction ${m.tx} is not open` } } satisfies ThreadReply);
          return;
        }
        void reply(m.id, () => prepared.query(pg, q, m.sql, m.params));
        return;
      }
      case 'begin': {
        open++;
        // The transaction stays open (holding PGlite's connection) until 'end' arrives; PGlite
        // queues every other statement behind it, as a single connection does.
        const done = pg.transaction(
          (t) =>
            new Promise<void>((resolve, reject) => {
              txs.set(m.id, { t, end: (commit) => (commit ? resolve() : reject(new RollbackRequested())) });
              port.postMessage({ id: m.id, rows: [] } satisfies ThreadReply);
            }),
        );
        done.then(
          () => {
            txs.delete(m.id);
            port.postMessage({ id: -m.id, rows: [] } satisfies ThreadReply);
            ended();
          },
          (err) => {
            const began = txs.delete(m.id);
            port.postMessage({ id: began ? -m.id : m.id, error: errorFields(err), rolledBack: err instanceof RollbackRequested } satisfies ThreadReply);
            ended();
          },
        );
        return;
      }
      case 'end': {
        const tx = txs.get(m.tx);
        if (!tx) port.postMessage({ id: -m.tx, error: { message: `transaction ${m.tx} is not open` } } satisfies ThreadReply);
        else tx.end(m.commit);
        return;
      }
      case 'close':
        void cachingDone().then(() => pg.close()).then(
          () => port.postMessage({ id: m.id, rows: [] } satisfies ThreadReply),
          (err) => port.postMessage({ id: m.id, error: errorFields(err) } satisfies ThreadReply),
        );
        return;
    }
  });
}

/** The initialized database being written to the cache. */
let caching = Promise.resolve();

/** A close waits for the cache to be written, but not long: a stop must not hang on a busy machine. */
const cachingDone = () => Promise.race([caching, new Promise<void>((resolve) => setTimeout(resolve, CACHE_CLOSE_WAIT_MS).unref())]);
const CACHE_CLOSE_WAIT_MS = 3_000;

/**
 * A database that does not exist yet, made from the cached tarball of a fresh initdb (made and
 * cached here when there is none); undefined for one that exists.
 */
async function openNew(open: (database?: string, loadDataDir?: Blob) => Promise<PGlite>, notify: (n: UpkeepNotice) => void): Promise<PGlite | undefined> {
  if (!isNewDatabase(init.dataDir)) return undefined;
  const file = initdbCacheFile(initdbCacheDir());
  try {
    const tarball = await readInitdbCache(file);
    if (tarball) return await open(undefined, tarball);
  } catch (err) {
    notify({ level: 'warn', msg: `the cached initialized database ${file} did not load (${(err as Error).message}); running initdb instead and caching it again` });
    fs.rmSync(file, { force: true });
    // What the load extracted holds no data yet: initdb starts from an empty folder.
    if (init.dataDir) fs.rmSync(init.dataDir, { recursive: true, force: true });
  }
  const pg = await open();
  // Taken before the migrations (this thread answers no statement yet); compressed and written meanwhile.
  caching = pg
    .dumpDataDir('none')
    .then((t) => saveInitdbCache(file, t))
    .catch((err) => notify({ level: 'debug', msg: 'could not cache the initialized database', file, err: (err as Error).message }));
  return pg;
}

/**
 * Transactions since the template databases were last frozen after which a start freezes them
 * again: PostgreSQL stops writes 2^31 - 3M transactions after the oldest database's horizon.
 */
const TEMPLATE_FREEZE_AGE = 1_000_000_000;

class RollbackRequested extends Error {
  constructor() {
    super('rolled back');
  }
}

void main();
