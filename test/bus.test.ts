// The replica buses: what a replica publishes just before it closes (a drain's hand-back wake
// signal) still reaches the other replicas. PostgreSQL NOTIFY with AIRLOCK_TEST_DATABASE_URL,
// NATS when AIRLOCK_BUS is a nats:// URL (npm run test:nats).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { openTestDb, waitUntil, PG_URL } from './helpers/server.js';
import { openBus } from '../src/bus/open.js';
import { silentLogger } from '../src/log.js';
import type { Bus } from '../src/bus/bus.js';
import type { PgBus } from '../src/bus/pg.js';

/** The replicas' shared bus key (every replica derives it from the same AIRLOCK_SECRET_KEY). */
const KEY = crypto.randomBytes(32);

const NATS_URL = process.env.AIRLOCK_BUS?.startsWith('nats://') ? process.env.AIRLOCK_BUS : undefined;

for (const kind of ['postgres', 'nats'] as const) {
  const skip = !PG_URL ? 'needs PostgreSQL (npm run test:pg)' : kind === 'nats' && !NATS_URL ? 'needs NATS (npm run test:nats)' : false;
  test(`${kind} bus: messages published right before close reach the other replicas, in order`, { skip }, async () => {
    const { db, drop } = await openTestDb();
    const spec = kind === 'nats' ? NATS_URL! : 'postgres';
    let a: Bus | undefined;
    let b: Bus | undefined;
    try {
      a = await openBus(db, silentLogger(), KEY, spec);
      b = await openBus(db, silentLogger(), KEY, spec);
      const got: number[] = [];
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      b.subscribe('wake', (m: { n: number }) => {
        got.push(m.n);
        if (m.n === 99) done();
      });
      // One batch in flight (a NOTIFY is a round trip), more gathered behind it, then close.
      a.publish('wake', { n: 0 });
      await new Promise((r) => setImmediate(r));
      for (let n = 1; n < 100; n++) a.publish('wake', { n });
      await a.close();
      a = undefined;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([all, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`got ${got.length} of 100`)), 10_000)))]);
      clearTimeout(timer);
      assert.deepEqual(got, Array.from({ length: 100 }, (_, n) => n));
    } finally {
      await a?.close();
      await b?.close();
      await drop();
    }
  });
}

test('postgres bus: a replica alone sends nothing; one that joins hears everything from the moment its open() returns; alone again once it leaves', { skip: PG_URL ? false : 'needs PostgreSQL (npm run test:pg)' }, async () => {
  const { db, drop } = await openTestDb();
  const quiet = process.env.AIRLOCK_BUS_SOLO_QUIET_MS;
  process.env.AIRLOCK_BUS_SOLO_QUIET_MS = '300';
  let a: PgBus | undefined;
  let b: Bus | undefined;
  try {
    a = (await openBus(db, silentLogger(), KEY, 'postgres')) as PgBus;
    assert.equal(a.isSolo, true, 'no other replica holds the presence lock');
    let sent = 0;
    const send = (a as any).send.bind(a);
    (a as any).send = (json: string, bytes: number) => {
      sent++;
      send(json, bytes);
    };
    const local: number[] = [];
    a.subscribe('wake', (m: { n: number }) => local.push(m.n));
    for (let n = 0; n < 5; n++) a.publish('wake', { n });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(local, [0, 1, 2, 3, 4], 'local subscribers still get every message');
    assert.equal(sent, 0, 'nothing goes to the bus');

    b = await openBus(db, silentLogger(), KEY, 'postgres');
    assert.equal(a.isSolo, false, 'the solo replica heard the joiner before its open() returned');
    const got: number[] = [];
    b.subscribe('wake', (m: { n: number }) => got.push(m.n));
    a.publish('wake', { n: 5 });
    await waitUntil(() => got.length === 1, 'the message to reach the replica that joined', 20_000);
    assert.deepEqual(got, [5]);
    assert.ok(sent > 0);
    // Neither goes solo while the other is there (heartbeats, the shared lock).
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(a.isSolo, false);
    assert.equal((b as PgBus).isSolo, false);

    await b.close();
    b = undefined;
    await waitUntil(() => a!.isSolo, 'the remaining replica to go solo', 20_000);
  } finally {
    if (quiet === undefined) delete process.env.AIRLOCK_BUS_SOLO_QUIET_MS;
    else process.env.AIRLOCK_BUS_SOLO_QUIET_MS = quiet;
    await a?.close();
    await b?.close();
    await drop();
  }
});

test('postgres bus: a replica with AIRLOCK_BUS_SOLO=0 never goes solo, and no other does while it is there', { skip: PG_URL ? false : 'needs PostgreSQL (npm run test:pg)' }, async () => {
  const { db, drop } = await openTestDb();
  const saved = { quiet: process.env.AIRLOCK_BUS_SOLO_QUIET_MS, solo: process.env.AIRLOCK_BUS_SOLO };
  process.env.AIRLOCK_BUS_SOLO_QUIET_MS = '300';
  let a: PgBus | undefined;
  let b: PgBus | undefined;
  try {
    process.env.AIRLOCK_BUS_SOLO = '0';
    a = (await openBus(db, silentLogger(), KEY, 'postgres')) as PgBus;
    delete process.env.AIRLOCK_BUS_SOLO;
    assert.equal(a.isSolo, false, 'alone, but told never to go solo');
    b = (await openBus(db, silentLogger(), KEY, 'postgres')) as PgBus;
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(b.isSolo, false, 'the other replica holds the shared lock');
    await a.close();
    a = undefined;
    await waitUntil(() => b!.isSolo, 'the remaining replica to go solo', 20_000);
  } finally {
    for (const [k, v] of [['AIRLOCK_BUS_SOLO_QUIET_MS', saved.quiet], ['AIRLOCK_BUS_SOLO', saved.solo]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await a?.close();
    await b?.close();
    await drop();
  }
});

test('postgres bus: a replica alone that does not let a new one in (hung) delays its start by the join timeout only, with a warning', { skip: PG_URL ? false : 'needs PostgreSQL (npm run test:pg)' }, async () => {
  const { db, drop } = await openTestDb();
  const { default: pg } = await import('pg');
  const { pino } = await import('pino');
  const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s'))[0]!.s;
  // A "solo replica" that never reads the bus: the presence lock held exclusively, nothing else.
  const hung = new pg.Client({ connectionString: PG_URL });
  await hung.connect();
  const lines: string[] = [];
  let b: PgBus | undefined;
  try {
    await hung.query('SELECT pg_advisory_lock($1, hashtext($2))', [0x41524c4b, `airlock_bus_${schema}`]);
    const log = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });
    b = (await openBus(db, log, KEY, 'postgres')) as PgBus;
    assert.equal(b.isSolo, false, 'it started, and does not go solo beside a replica it cannot account for');
    assert.ok(
      lines.some((l) => JSON.parse(l).msg === 'bus: a replica alone on the bus did not let this one in within 10000 ms; starting anyway'),
      lines.join(''),
    );
    await hung.end(); // the hung replica's connection goes: its lock with it
    await waitUntil(() => b!.isSolo, 'the new replica to go solo once the hung one is gone', 30_000);
  } finally {
    await hung.end().catch(() => {});
    await b?.close();
    await drop();
  }
});
