// What every bus does, the same cases run against each: in-process (local), PostgreSQL
// LISTEN/NOTIFY (with AIRLOCK_TEST_DATABASE_URL) and NATS (AIRLOCK_BUS=nats://…, npm run
// test:nats). A replica's own subscribers hear it at once and in order; the other replicas hear
// everything in publish order, including what was published right before a close (a drain's
// hand-back wake signal); an unsubscribed handler hears nothing more.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { openTestDb, waitUntil, PG_URL } from './helpers/server.js';
import { openBus } from '../src/bus/open.js';
import { silentLogger } from '../src/log.js';
import type { Bus } from '../src/bus/bus.js';
import type { Db } from '../src/store/db.js';

/** The replicas' shared bus key (every replica derives it from the same AIRLOCK_SECRET_KEY). */
const KEY = crypto.randomBytes(32);

const NATS_URL = process.env.AIRLOCK_BUS?.startsWith('nats://') ? process.env.AIRLOCK_BUS : undefined;

const kinds = [
  { kind: 'local', spec: 'local', skip: false as string | false, remote: false },
  { kind: 'postgres', spec: 'postgres', skip: PG_URL ? false : 'needs PostgreSQL (npm run test:pg)', remote: true },
  { kind: 'nats', spec: NATS_URL ?? '', skip: PG_URL && NATS_URL ? false : 'needs PostgreSQL and NATS (npm run test:nats)', remote: true },
];

/** Two replicas' buses on one database (for local: one, which is the whole deployment). */
async function withBuses(spec: string, fn: (open: () => Promise<Bus>) => Promise<void>): Promise<void> {
  const { db, drop } = await openTestDb();
  const opened: Bus[] = [];
  try {
    await fn(async () => {
      const b = await openBus(db as Db, silentLogger(), KEY, spec);
      opened.push(b);
      return b;
    });
  } finally {
    for (const b of opened) await b.close().catch(() => {});
    await drop();
  }
}

for (const { kind, spec, skip, remote } of kinds) {
  test(`${kind} bus: a replica's own subscribers hear each message at once, in order; an unsubscribed one hears nothing more`, { skip }, async () => {
    await withBuses(spec, async (open) => {
      const a = await open();
      const got: string[] = [];
      const unsub = a.subscribe('wake', (m) => got.push(m.chat_id));
      a.publish('wake', { chat_id: '1' });
      a.publish('wake', { chat_id: '2' });
      assert.deepEqual(got, ['1', '2'], 'synchronously');
      unsub();
      a.publish('wake', { chat_id: '3' });
      assert.deepEqual(got, ['1', '2']);
    });
  });

  test(`${kind} bus: messages published right before close reach the other replicas, in order`, { skip: skip || (!remote && 'one process: there is no other replica') }, async () => {
    await withBuses(spec, async (open) => {
      const a = await open();
      const b = await open();
      const got: number[] = [];
      b.subscribe('wake', (m) => got.push(Number(m.chat_id)));
      // One batch in flight (a NOTIFY is a round trip), more gathered behind it, then close.
      a.publish('wake', { chat_id: '0' });
      await new Promise((r) => setImmediate(r));
      for (let n = 1; n < 100; n++) a.publish('wake', { chat_id: String(n) });
      await a.close();
      await waitUntil(() => got.length === 100, `100 messages (got ${got.length})`, 10_000);
      assert.deepEqual(got, Array.from({ length: 100 }, (_, n) => n));
    });
  });

  test(`${kind} bus: a large batch (over PostgreSQL's NOTIFY limit) arrives whole and in its place`, { skip: skip || (!remote && 'one process: there is no other replica') }, async () => {
    await withBuses(spec, async (open) => {
      const a = await open();
      const b = await open();
      const got: string[] = [];
      b.subscribe('replay_reply', (m) => got.push(`${m.req}:${m.events.length}`));
      const big = Array.from({ length: 400 }, (_, i) => ({ chat_id: 'c', seq: i, type: 'delta', text: 'x'.repeat(100) })) as never[];
      a.publish('replay_reply', { req: 'small1', to: 'b', events: [] });
      a.publish('replay_reply', { req: 'big', to: 'b', events: big });
      await new Promise((r) => setImmediate(r));
      a.publish('replay_reply', { req: 'small2', to: 'b', events: [] });
      await waitUntil(() => got.length === 3, `3 messages (got ${got.join(', ')})`, 10_000);
      assert.deepEqual(got, ['small1:0', 'big:400', 'small2:0']);
    });
  });
}
