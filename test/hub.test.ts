// The stream hub's replay against a database that is ahead of this replica's bus: an event the
// replay read from the database and the bus delivers afterwards reaches the client once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StreamHub, type Sink } from '../src/chat/hub.js';
import { LocalBus } from '../src/bus/bus.js';
import type { Db } from '../src/store/db.js';
import type { StreamEvent } from '../src/chat/types.js';

const CHAT = '00000000-0000-0000-0000-000000000001';

test('an event read by the replay and then delivered by the bus is sent once; later ones still arrive', async () => {
  // The database already has the turn's end (seq 5), which the bus has not delivered here yet.
  const db = {
    kind: 'pglite',
    query: async () => [{ seq: 5, type: 'status', data: { status: 'waiting' }, message: null }],
  } as unknown as Db;
  const bus = new LocalBus();
  const hub = new StreamHub(db, bus);
  const got: StreamEvent[] = [];
  const sink: Sink = { push: (events) => got.push(...events), resync: () => assert.fail('no resync expected') };
  try {
    await hub.subscribe(CHAT, 4, sink, async () => []);
    bus.publish('events', { chat_id: CHAT, seq: 5, type: 'status', status: 'waiting' });
    bus.publish('events', { chat_id: CHAT, seq: 6, type: 'status', status: 'pending' });
    assert.deepEqual(
      got.map((e) => `${e.seq ?? '-'}:${e.type}`),
      ['5:status', '-:caught_up', '6:status'],
    );
  } finally {
    hub.close();
  }
});
