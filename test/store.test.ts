// Storage conformance: one set of cases run against each database the server can use, the
// embedded one (PGlite on its own thread) and, with AIRLOCK_TEST_DATABASE_URL, PostgreSQL:
// statement errors keep PostgreSQL's fields, a failed transaction leaves nothing behind, a closed
// database says so, values come back as the same JavaScript types. Then each one's own cases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { within } from './helpers/within.js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PG_URL, openTestDb as openDbOf } from './helpers/server.js';
import { openDb } from '../src/store/db.js';
import { isConnectionError } from '../src/store/retry.js';
import { ToolBox, builtinTools } from '../src/chat/tools/index.js';

const kinds: ('pglite' | 'postgres')[] = ['pglite', ...(PG_URL ? (['postgres'] as const) : [])];

for (const kind of kinds) {
  const openTestDb = () => openDbOf(kind);

  test(`${kind}: statement errors carry their PostgreSQL code; a failed transaction rolls back`, async () => {
    const { db, drop } = await openTestDb();
    try {
      await assert.rejects(db.query('SELECT * FROM no_such_table'), (err: any) => err.code === '42P01' && /no_such_table/.test(err.message));
      await db.query('CREATE TABLE store_t (a int PRIMARY KEY)');
      await assert.rejects(
        db.tx(async (q) => {
          await q.query('INSERT INTO store_t VALUES (1)');
          await q.query('INSERT INTO store_t VALUES (1)'); // duplicate key
        }),
        (err: any) => err.code === '23505',
      );
      await assert.rejects(
        db.tx(async (q) => {
          await q.query('INSERT INTO store_t VALUES (2)');
          throw new Error('changed my mind');
        }),
        /changed my mind/,
      );
      assert.deepEqual(await db.query('SELECT a FROM store_t'), []);
      assert.deepEqual(await db.tx((q) => q.query('INSERT INTO store_t VALUES (3) RETURNING a')), [{ a: 3 }]);
    } finally {
      await drop();
    }
  });

  test(`${kind}: a query after close is refused with a clear error`, async () => {
    const { db, drop } = await openTestDb();
    await drop();
    const closed = db.kind === 'postgres' ? /the PostgreSQL connection pool is closed/ : /embedded database thread exited/;
    await assert.rejects(db.query('SELECT 1'), closed);
    await assert.rejects(db.tx((q) => q.query('SELECT 1')), closed);
  });

  test(`${kind}: parameters round-trip exactly (the embedded database runs them as prepared statements with literals)`, async () => {
    const { db, drop } = await openTestDb();
    try {
      const nasty = [`it's`, `''; DROP TABLE users; --`, 'back\\slash \\\' mixed', '"quoted"', 'ünïcødé ✓ 🚀', '$1 $$ $tag$', 'line\nbreak\ttab', ''];
      const sql = 'SELECT $1::text AS t, $2::text[] AS a, $3::jsonb AS j, $4::bigint AS n, $5::boolean AS b, $6::text AS z, $7::uuid[] AS u';
      const uuids = ['6f1c1c9e-8a3b-4d5e-9f00-123456789abc'];
      for (const s of nasty) {
        const json = { s, nested: [s, null, 1.5] };
        for (let i = 0; i < 2; i++) {
          // The first run prepares the statement, the second runs the prepared one.
          const [row] = await db.query<any>(sql, [s, [s, null, 'x'], JSON.stringify(json), 2 ** 40, false, null, uuids]);
          assert.equal(row.t, s);
          assert.deepEqual(row.a, [s, null, 'x']);
          assert.deepEqual(row.j, json);
          assert.equal(Number(row.n), 2 ** 40);
          assert.equal(row.b, false);
          assert.equal(row.z, null);
          assert.deepEqual(row.u, uuids);
        }
      }
      // Statements that cannot be prepared (several in one text, DDL) still run.
      assert.deepEqual(await db.query('SELECT $1 AS x', ['a']), [{ x: 'a' }]);
      await db.query('CREATE TABLE store_p (a text)');
      await db.query('INSERT INTO store_p VALUES ($1)', ['x']);
      // Errors keep their codes on the prepared path too.
      await assert.rejects(db.query('SELECT $1::uuid AS u', ['not-a-uuid']), (err: any) => err.code === '22P02');
      await assert.rejects(db.query('SELECT $1::uuid AS u', ['not-a-uuid']), (err: any) => err.code === '22P02');
    } finally {
      await drop();
    }
  });

  test(`${kind}: a table that changes under a prepared statement: the statement still runs`, async () => {
    const { db, drop } = await openTestDb();
    try {
      await db.query('CREATE TABLE store_s (a int)');
      await db.query('INSERT INTO store_s VALUES (1)');
      const q = 'SELECT * FROM store_s WHERE a = $1';
      for (let i = 0; i < 3; i++) assert.deepEqual(await db.query(q, [1]), [{ a: 1 }]);
      await db.query('ALTER TABLE store_s ADD COLUMN b text');
      // Every pooled connection that prepared it runs it again.
      for (let i = 0; i < 25; i++) assert.deepEqual(await db.query(q, [1]), [{ a: 1, b: null }]);
    } finally {
      await drop();
    }
  });

  test(`${kind}: a statement first seen outside a transaction while it was open, then inside it, does not wait for itself (the connection was held for good)`, async () => {
    const { db, drop } = await openTestDb();
    try {
      await db.query('CREATE TABLE prep_race (id int PRIMARY KEY, v text)');
      await db.query(`INSERT INTO prep_race VALUES (1, 'one')`);
      const sql = 'SELECT v FROM prep_race WHERE id = $1';
      let outside: Promise<unknown[]> | undefined;
      const inside = await within(
        db.tx(async (q) => {
          // Sent while the transaction holds the connection: on the embedded database its PREPARE
          // queues behind the transaction.
          outside = db.query(sql, [1]);
          return q.query(sql, [1]);
        }),
        'the transaction never finished: its statement waited on a PREPARE queued behind it',
        20_000,
      );
      assert.deepEqual(inside, [{ v: 'one' }]);
      assert.deepEqual(await outside, [{ v: 'one' }]);
    } finally {
      await drop();
    }
  });

  test(`${kind}: step commits that share a statement keep their own fences: a stale one stores nothing, the others commit and release`, async () => {
    const { db, drop } = await openTestDb();
    try {
      const { createUser } = await import('../src/auth/tokens.js');
      const { fencedCommit } = await import('../src/chat/sql/commitSteps.js');
      const { userMessage } = await import('../src/chat/types.js');
      const owner = await createUser(db, `fence-${Date.now()}`, false);
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const [row] = await db.query<{ id: string }>(
          `INSERT INTO chats (owner_id, model, status, worker_id, epoch) VALUES ($1, 'm', 'running', 'w1', 3) RETURNING id`,
          [owner.id],
        );
        ids.push(row!.id);
      }
      await db.query(`INSERT INTO chat_queue (chat_id, content) VALUES ($1, 'queued')`, [ids[3]]);
      const release = (status: string) => ({ status, error: null, actions: null, actionTimeoutMs: 1000, events: [] });
      const msg = (i: number) => ({ ...userMessage(`reply ${i}`, 3 * 1_000_000 + 10 + i), role: 'assistant' as const });
      // Issued together: the first runs alone, the other three share the next statement.
      const results = await Promise.all([
        fencedCommit(db, { chatId: ids[0]!, workerId: 'w1', epoch: 3 }, [msg(0)]),
        fencedCommit(db, { chatId: ids[1]!, workerId: 'w1', epoch: 2 }, [msg(1)], [], release('waiting')), // stale epoch
        fencedCommit(db, { chatId: ids[2]!, workerId: 'w1', epoch: 3 }, [msg(2)], [], release('error')),
        fencedCommit(db, { chatId: ids[3]!, workerId: 'w1', epoch: 3 }, [msg(3)], [], release('waiting')), // queue not empty
      ]);
      assert.deepEqual(results, [
        { fenced: true, released: false },
        { fenced: false, released: false },
        { fenced: true, released: true },
        { fenced: true, released: false },
      ]);
      const chats = await db.query<{ id: string; status: string; worker_id: string | null; n: number }>(
        `SELECT c.id, c.status, c.worker_id, (SELECT count(*) FROM chat_messages m WHERE m.chat_id = c.id)::int AS n FROM chats c WHERE c.id = ANY($1::uuid[])`,
        [ids],
      );
      const byId = new Map(chats.map((c) => [c.id, c]));
      assert.deepEqual(ids.map((id) => [byId.get(id)!.status, byId.get(id)!.worker_id, byId.get(id)!.n]), [
        ['running', 'w1', 1],
        ['running', 'w1', 0],
        ['error', null, 1],
        ['running', 'w1', 1],
      ]);
    } finally {
      await drop();
    }
  });

  test(`${kind}: values come back as the same JavaScript types (bigint and count as numbers, jsonb parsed, timestamps as Dates, uuids as strings)`, async () => {
    const { db, drop } = await openTestDb();
    try {
      const [row] = await db.query<any>(
        `SELECT 9007199254740991::bigint AS big, count(*) AS n, '{"a":[1,null]}'::jsonb AS j, now() AS at, gen_random_uuid() AS id, 1.5::float8 AS f, NULL::text AS z FROM (SELECT 1) x`,
      );
      assert.deepEqual(
        Object.fromEntries(Object.entries(row).map(([k, v]) => [k, v instanceof Date ? 'Date' : v === null ? 'null' : typeof v])),
        { big: 'number', n: 'number', j: 'object', at: 'Date', id: 'string', f: 'number', z: 'null' },
      );
      assert.equal(row.big, 9007199254740991);
      assert.deepEqual(row.j, { a: [1, null] });
    } finally {
      await drop();
    }
  });

  test(`${kind}: FOR UPDATE SKIP LOCKED hands each row to exactly one of several concurrent claimers`, async () => {
    const { db, drop } = await openTestDb();
    try {
      await db.query('CREATE TABLE store_claim (id int PRIMARY KEY, owner text)');
      await db.query('INSERT INTO store_claim SELECT g, NULL FROM generate_series(1, 20) g');
      const claim = (who: string) =>
        db.tx((q) =>
          q.query<{ id: number }>(
            `UPDATE store_claim SET owner = $1 WHERE id IN (SELECT id FROM store_claim WHERE owner IS NULL ORDER BY id LIMIT 5 FOR UPDATE SKIP LOCKED) RETURNING id`,
            [who],
          ),
        );
      const got = (await Promise.all([claim('a'), claim('b'), claim('c'), claim('d'), claim('e')])).flat().map((r) => r.id);
      assert.deepEqual([...got].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i + 1), 'every row claimed once');
    } finally {
      await drop();
    }
  });
}

test('PostgreSQL: a transaction whose connection is killed fails as a connection error (callers retry those) and the next statements run on new connections', { skip: PG_URL ? false : 'needs PostgreSQL (npm run test:pg)' }, async () => {
  const { db, drop } = await openDbOf('postgres');
  try {
    await db.query('CREATE TABLE store_k (a int)');
    await assert.rejects(
      db.tx(async (q) => {
        await q.query('INSERT INTO store_k VALUES (1)');
        const [{ pid }] = await q.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        await db.query('SELECT pg_terminate_backend($1)', [pid]);
        await q.query('INSERT INTO store_k VALUES (2)');
      }),
      (err: unknown) => isConnectionError(err),
    );
    // The killed connection is not reused: nothing of the transaction was kept, and what follows runs.
    for (let i = 0; i < 25; i++) assert.deepEqual(await db.query('SELECT count(*)::int AS n FROM store_k'), [{ n: 0 }]);
    assert.deepEqual(await db.tx((q) => q.query('INSERT INTO store_k VALUES (3) RETURNING a')), [{ a: 3 }]);
  } finally {
    await drop();
  }
});

test('tools with the same name are refused', () => {
  assert.throws(() => ToolBox.withExtra([{ ...builtinTools[0]!, idempotent: false }]), /two tools have the same name "current_time"/);
});

test('the embedded database keeps itself up: a table that grew is analyzed (its prepared plans follow) and vacuumed, the log checkpointed, when no statement waits', async () => {
  const notices: { msg: string; table?: string }[] = [];
  const collect = (fields: any, msg: string) => notices.push({ msg, table: fields.table });
  const db = await openDb({ memory: true, log: { debug: collect, warn: collect } as any, upkeep: { statements: 20, walBytes: 2 ** 20 } });

  try {
    await db.query('CREATE TABLE upkeep_t (id uuid PRIMARY KEY, owner uuid NOT NULL)');
    const lookup = 'SELECT t.id FROM unnest($1::uuid[]) AS i(id) JOIN upkeep_t t ON t.id = i.id';
    const one = [crypto.randomUUID()];
    await db.query(lookup, [one]); // prepared and planned now, for an empty table
    await db.query('INSERT INTO upkeep_t SELECT gen_random_uuid(), gen_random_uuid() FROM generate_series(1, 20000)');
    const [{ lsn }] = await db.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
    const plan = async () => {
      const [{ name }] = await db.query<{ name: string }>(`SELECT name FROM pg_prepared_statements WHERE statement LIKE '%JOIN upkeep_t t%'`);
      return (await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN EXECUTE ${name}('{${one[0]}}')`)).map((r) => r['QUERY PLAN']).join('\n');
    };
    assert.match(await plan(), /Seq Scan on upkeep_t/, 'the plan made for the empty table');
    const stats = async () =>
      (await db.query<{ a: boolean; v: boolean }>(`SELECT last_analyze IS NOT NULL AS a, last_vacuum IS NOT NULL AS v FROM pg_stat_user_tables WHERE relname = 'upkeep_t'`))[0];
    for (let i = 0; !((await stats())?.a && (await stats())?.v); i++) {
      if (i > 500) assert.fail(`no upkeep; notices: ${JSON.stringify(notices)}`);
      await db.query(lookup, [one]);
    }
    assert.match(await plan(), /Index (Only )?Scan using upkeep_t_pkey/);
    // The inserts wrote more than 1 MB of log: the round began with a checkpoint.
    assert.ok(notices.some((n) => n.msg.endsWith('checkpoint')), JSON.stringify(notices));
    const [{ after }] = await db.query<{ after: boolean }>('SELECT redo_lsn >= $1::pg_lsn AS after FROM pg_control_checkpoint()', [lsn]);
    assert.ok(after, 'a checkpoint after the inserts');
    assert.ok(notices.some((n) => n.msg.endsWith('analyze') && n.table === 'public.upkeep_t'), JSON.stringify(notices));
    assert.ok(notices.some((n) => n.msg.endsWith('vacuum') && n.table === 'public.chats'), 'every table is vacuumed');
  } finally {
    await db.close();
  }
});

test("a start freezes the embedded database's template databases when they are old (PostgreSQL would stop writes), and keeps the data", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-templates-'));
  const notices: { msg: string; database?: string }[] = [];
  const log = { debug: (f: any, msg: string) => notices.push({ msg, database: f.database }), warn: () => {} } as any;
  try {
    let db = await openDb({ dataDir: dir });
    await db.query('CREATE TABLE kept (a int)');
    await db.query('INSERT INTO kept VALUES (42)');
    for (let i = 0; i < 30; i++) await db.query('UPDATE kept SET a = 42'); // transactions the templates' horizon falls behind by
    const ages = async () =>
      Object.fromEntries((await db.query<{ datname: string; age: number }>(`SELECT datname, age(datfrozenxid)::int AS age FROM pg_database WHERE datname LIKE 'template%'`)).map((r) => [r.datname, r.age]));
    const before = await ages();
    assert.ok(before.template0 >= 30 && before.template1 >= 30, JSON.stringify(before));
    await db.close();
    db = await openDb({ dataDir: dir, templateFreezeAge: 1, log }); // every template is at least 1 transaction old
    try {
      const after = await ages();
      assert.ok(after.template0 <= 3 && after.template1 <= 3, JSON.stringify(after)); // a transaction or two since
      assert.deepEqual(
        notices.filter((n) => n.msg.endsWith('template frozen')).map((n) => n.database),
        ['template0', 'template1'],
      );
      assert.deepEqual(await db.query('SELECT a FROM kept'), [{ a: 42 }]);
      const [{ allow }] = await db.query<{ allow: boolean }>(`SELECT datallowconn AS allow FROM pg_database WHERE datname = 'template0'`);
      assert.equal(allow, false, 'template0 takes no connections again');
    } finally {
      await db.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('embedded upkeep failures are reported and do not stop it: a failing step warns with its table and error, the next steps run; a template freeze that fails warns and the database opens anyway', async () => {
  const { PGlite } = await import('@electric-sql/pglite');
  const { Upkeep, freezeOldTemplates } = await import('../src/store/pglite-upkeep.js');
  const pg = await PGlite.create();
  try {
    await pg.exec('CREATE TABLE upkeep_bad (a int)');
    await pg.exec('CREATE TABLE upkeep_t2 (a int)'); // vacuumed after upkeep_bad (tables go by name)
    const notices: any[] = [];
    // The database as the upkeep sees it, with VACUUM of one table failing (a full disk, say).
    const failing = {
      query: pg.query.bind(pg),
      exec: (sql: string) => (sql.includes('upkeep_bad') ? Promise.reject(new Error('could not extend file: No space left on device')) : pg.exec(sql)),
    } as unknown as InstanceType<typeof PGlite>;
    const upkeep = new Upkeep(failing, 1, 2 ** 40, (n) => notices.push(n));
    upkeep.statementEnded(() => true);
    for (let i = 0; i < 500 && !notices.some((n) => n.table === 'public.upkeep_t2'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(
      notices.filter((n) => n.level === 'warn'),
      [{ level: 'warn', msg: 'embedded database upkeep: vacuum failed', table: 'public.upkeep_bad', err: 'could not extend file: No space left on device' }],
    );
    assert.ok(notices.some((n) => n.msg === 'embedded database upkeep: vacuum' && n.table === 'public.upkeep_t2'), 'the steps after it ran');
  } finally {
    await pg.close().catch(() => {});
  }
  const fresh = await PGlite.create();
  const notices: any[] = [];
  const open = async (database?: string) => {
    if (database) throw new Error(`database "${database}" cannot be opened`);
    return PGlite.create();
  };
  const back = await freezeOldTemplates(fresh, open, 1, (n) => notices.push(n));
  try {
    assert.deepEqual((await back.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
    assert.deepEqual(notices, [
      { level: 'warn', msg: 'embedded database upkeep: could not freeze the template databases', err: 'database "template0" cannot be opened' },
    ]);
  } finally {
    await back.close();
  }
});

test('a new embedded database is copied from the cached result of initdb when there is a safe one; an unsafe or broken cache is made again', async () => {
  const { PGlite } = await import('@electric-sql/pglite');
  const { initdbCacheFile, readInitdbCache } = await import('../src/store/pglite-initdb-cache.js');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-initdb-cache-'));
  const cache = path.join(root, 'airlock');
  const file = initdbCacheFile(cache);
  const saved = process.env.XDG_CACHE_HOME;
  process.env.XDG_CACHE_HOME = root; // read by the database thread, which copies the environment when it starts
  const hasMarker = async (db: Awaited<ReturnType<typeof openDb>>) => (await db.query(`SELECT to_regclass('public.from_cache') IS NOT NULL AS has`))[0]!.has as boolean;
  const open = async (opts: Parameters<typeof openDb>[0]) => {
    const warnings: string[] = [];
    const db = await openDb({ ...opts, log: { debug: () => {}, warn: (_f: unknown, msg: string) => warnings.push(msg) } as any });
    try {
      return { marker: await hasMarker(db), warnings };
    } finally {
      await db.close(); // waits for the cache to be written
    }
  };
  try {
    // No cache yet: initdb runs, and what it made is cached, readable by this user only; another
    // PGlite version's file goes.
    fs.mkdirSync(cache, { mode: 0o700 });
    fs.writeFileSync(path.join(cache, 'pglite-0.0.1-initdb.tar.gz'), 'old');
    fs.writeFileSync(path.join(cache, 'notes.txt'), 'not ours');
    assert.deepEqual(await open({ dataDir: path.join(root, 'a') }), { marker: false, warnings: [] });
    assert.deepEqual(fs.readdirSync(cache).sort(), ['notes.txt', path.basename(file)]);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(cache).mode & 0o777, 0o700);
    // It holds initdb's result only: no migration, no data of the database that made it.
    const plain = await PGlite.create({ loadDataDir: (await readInitdbCache(file))! });
    assert.deepEqual((await plain.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`)).rows, [{ n: 0 }]);
    // A marked cache shows where the next new databases come from.
    await plain.exec('CREATE TABLE from_cache (a int)');
    const marked = Buffer.from(await (await plain.dumpDataDir('gzip')).arrayBuffer());
    await plain.close();
    fs.writeFileSync(file, marked);
    assert.deepEqual(await open({ memory: true }), { marker: true, warnings: [] });
    assert.deepEqual(await open({ dataDir: path.join(root, 'b') }), { marker: true, warnings: [] });
    // A database that exists is opened as it is.
    assert.deepEqual(await open({ dataDir: path.join(root, 'a') }), { marker: false, warnings: [] });
    // A cache another user could have written is not used, and is replaced.
    fs.chmodSync(file, 0o666);
    assert.deepEqual(await open({ memory: true }), { marker: false, warnings: [] });
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    // A cache that does not load: a warning, initdb instead, and a good cache again.
    fs.writeFileSync(file, marked.subarray(0, marked.length >> 1));
    const broken = await open({ dataDir: path.join(root, 'c') });
    assert.equal(broken.marker, false);
    assert.equal(broken.warnings.length, 1);
    assert.match(broken.warnings[0]!, /the cached initialized database .* did not load \(.*\); running initdb instead/);
    assert.deepEqual(await open({ dataDir: path.join(root, 'd') }), { marker: false, warnings: [] });
    assert.ok(fs.statSync(file).size > marked.length / 2, 'cached again whole');
    // A cache that cannot be written (its folder would be under a file): the database opens all the same.
    fs.writeFileSync(path.join(root, 'plain-file'), '');
    process.env.XDG_CACHE_HOME = path.join(root, 'plain-file');
    assert.deepEqual(await open({ memory: true }), { marker: false, warnings: [] });
  } finally {
    if (saved === undefined) delete process.env.XDG_CACHE_HOME;
    else process.env.XDG_CACHE_HOME = saved;
    fs.rmSync(root, { recursive: true, force: true });
  }
});
