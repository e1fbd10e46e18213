// The storage layer's failure paths: statement errors keep PostgreSQL's fields, a failed
// transaction leaves nothing behind, a closed database says so. Runs on the embedded database
// (its own thread) and, with AIRLOCK_TEST_DATABASE_URL, on PostgreSQL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestDb } from './helpers/server.js';
import { openDb } from '../src/store/db.js';
import { ToolBox, builtinTools } from '../src/chat/tools/index.js';

test('statement errors carry their PostgreSQL code; a failed transaction rolls back', async () => {
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

test('the embedded database: a query after close is refused with a clear error', async () => {
  const db = await openDb({ memory: true });
  await db.close();
  await assert.rejects(db.query('SELECT 1'), /embedded database thread exited/);
});

test('tools with the same name are refused', () => {
  assert.throws(() => ToolBox.withExtra([{ ...builtinTools[0]!, idempotent: false }]), /two tools have the same name "current_time"/);
});
