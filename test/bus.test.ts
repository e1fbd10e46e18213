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
      b.subscribe('wake', (m) => {
        got.push(Number(m.chat_id));
        if (m.chat_id === '99') done();
      });
      // One batch in flight (a NOTIFY is a round trip), more gathered behind it, then close.
      a.publish('wake', { chat_id: '0' });
      await new Promise((r) => setImmediate(r));
      for (let n = 1; n < 100; n++) a.publish('wake', { chat_id: String(n) });
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
