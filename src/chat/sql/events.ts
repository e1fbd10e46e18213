// SQL on chat_events: the durable part of each chat's event log. Drafts (tokens being streamed)
// never reach it; a `message` event is stored as a reference to its message where a replay
// rebuilds exactly what was published.
import type { Queryable } from '../../store/db.js';
import { type Message, type StreamEvent, ev, isDurable } from '../types.js';
import { publishedMessage } from './messages.js';

export async function storeEvents(q: Queryable, events: StreamEvent[]): Promise<void> {
  const durable = durableOnly(events);
  if (!durable.length) return;
  await q.query(
    `INSERT INTO chat_events (chat_id, seq, type, data)
     SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[])`,
    eventColumns(durable),
  );
}

/** The events that are stored (numbered, of a durable type); drafts live only in the stream. */
export function durableOnly(events: StreamEvent[]): StreamEvent[] {
  return events.filter((e) => e.seq !== undefined && isDurable(e.type));
}

/** Four parallel arrays (chat_id, seq, type, data) for an `unnest` insert. */
export function eventColumns(events: StreamEvent[]): unknown[][] {
  return [
    events.map((e) => e.chat_id),
    events.map((e) => e.seq),
    events.map((e) => e.type),
    events.map((e) => {
      const { chat_id: _c, seq: _s, type: _t, ...data } = e;
      return JSON.stringify(data);
    }),
  ];
}

/** The stored form of a message's event: a reference when a replay rebuilds exactly what was published, the message itself otherwise. */
export function storedMessageEvent(chatId: string, m: Message): StreamEvent {
  const rebuilt = publishedMessage({ ...m, interrupted: Boolean(m.interrupted), model: m.model ?? null, usage: m.usage ?? null });
  const same = JSON.stringify({ ...rebuilt, parts: 0 }) === JSON.stringify({ ...m, parts: 0 });
  return ev(chatId, m.seq, 'message', same ? { message_id: m.id } : { message: m });
}

/** Whether an event is stored: a release whose reply was lost with its connection had committed if its last event is there. */
export async function eventStored(q: Queryable, chatId: string, seq: number): Promise<boolean> {
  return (await q.query('SELECT 1 FROM chat_events WHERE chat_id = $1 AND seq = $2', [chatId, seq])).length > 0;
}

export async function lastEventSeq(q: Queryable, chatId: string): Promise<number> {
  const rows = await q.query<{ seq: number | null }>('SELECT max(seq) AS seq FROM chat_events WHERE chat_id = $1', [chatId]);
  return Number(rows[0]?.seq ?? 0);
}

export interface StoredRow {
  seq: number;
  type: StreamEvent['type'];
  data: Record<string, unknown>;
  /** The referenced message's columns, for a `message` event stored as a reference. */
  message: import('./messages.js').MessageColumns | null;
}

/** Stored events after a seq, in order, at most `limit`; a message event stored as a reference comes with its message. */
export function readEvents(q: Queryable, chatId: string, after: number, limit?: number): Promise<StoredRow[]> {
  return q.query<StoredRow>(
    `SELECT e.seq, e.type, e.data,
            CASE WHEN m.id IS NOT NULL THEN json_build_object('id', m.id, 'seq', m.seq, 'role', m.role, 'parts', m.parts,
              'interrupted', m.interrupted, 'model', m.model, 'usage', m.usage) END AS message
     FROM chat_events e
     LEFT JOIN chat_messages m ON e.type = 'message' AND m.chat_id = e.chat_id AND m.id = (e.data->>'message_id')::uuid
     WHERE e.chat_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3`,
    [chatId, after, limit ?? null],
  );
}
