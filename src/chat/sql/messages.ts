// SQL on chat_messages: a chat's history. Messages are never changed, only marked deleted (an
// edit), and a new one always gets a higher seq.
import type { Queryable } from '../../store/db.js';
import type { Message, Part } from '../types.js';

export async function insertMessages(q: Queryable, chatId: string, msgs: Message[]): Promise<void> {
  if (!msgs.length) return;
  await q.query(
    `INSERT INTO chat_messages (id, chat_id, seq, role, parts, interrupted, model, usage)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[], $6::boolean[], $7::text[], $8::jsonb[])`,
    [
      msgs.map((m) => m.id),
      msgs.map(() => chatId),
      msgs.map((m) => m.seq),
      msgs.map((m) => m.role),
      msgs.map((m) => JSON.stringify(m.parts)),
      msgs.map((m) => Boolean(m.interrupted)),
      msgs.map((m) => m.model ?? null),
      msgs.map((m) => (m.usage ? JSON.stringify(m.usage) : null)),
    ],
  );
}

export async function loadMessages(q: Queryable, chatId: string): Promise<Message[]> {
  const rows = await q.query<Message & { created_at: Date }>(
    `SELECT id, seq, role, parts, interrupted, model, usage, created_at FROM chat_messages
     WHERE chat_id = $1 AND NOT deleted ORDER BY seq`,
    [chatId],
  );
  return rows.map(messageOut);
}

/**
 * The messages stored after `afterSeq`, and how many the chat has in all: a history cached up to
 * `afterSeq` is still right when its length plus the new ones is that total.
 */
export async function loadMessagesAfter(q: Queryable, chatId: string, afterSeq: number): Promise<{ total: number; messages: Message[] }> {
  const rows = await q.query(
    `SELECT (SELECT count(*)::int FROM chat_messages WHERE chat_id = $1 AND NOT deleted) AS total,
            d.id, d.seq, d.role, d.parts, d.interrupted, d.model, d.usage, d.created_at
     FROM (SELECT 1) one
     LEFT JOIN chat_messages d ON d.chat_id = $1 AND NOT d.deleted AND d.seq > $2
     ORDER BY d.seq`,
    [chatId, afterSeq],
  );
  return { total: Number(rows[0]?.total ?? 0), messages: rows.filter((r) => r.id !== null).map(messageOut) };
}

/** The seq of the chat's last message (0: none). */
export async function lastMessageSeq(q: Queryable, chatId: string): Promise<number> {
  const rows = await q.query<{ seq: number | null }>('SELECT max(seq) AS seq FROM chat_messages WHERE chat_id = $1 AND NOT deleted', [chatId]);
  return Number(rows[0]?.seq ?? 0);
}

export async function findMessage(q: Queryable, chatId: string, id: string): Promise<{ seq: number; role: string } | undefined> {
  const rows = await q.query<{ seq: number; role: string }>('SELECT seq, role FROM chat_messages WHERE id = $1 AND chat_id = $2 AND NOT deleted', [id, chatId]);
  return rows[0];
}

/** Marks the message at `seq` and every later one deleted (an edit replaces them). */
export async function deleteMessagesFrom(q: Queryable, chatId: string, seq: number): Promise<void> {
  await q.query('UPDATE chat_messages SET deleted = true WHERE chat_id = $1 AND seq >= $2', [chatId, seq]);
}

/** A stored message's columns, as a replay reads them beside its `message` event. */
export interface MessageColumns {
  id: string;
  seq: number;
  role: Message['role'];
  parts: Part[];
  interrupted: boolean;
  model: string | null;
  usage: Message['usage'];
}

/**
 * A message as its `message` event carries it, from its stored columns. Most `message` events are
 * stored as a reference to the message row (`message_id`) instead of a second copy of the reply:
 * on the embedded database the copy cost ~5 % of its thread's CPU.
 */
export function publishedMessage(c: MessageColumns): Message {
  const m: Message = { id: c.id, seq: Number(c.seq), role: c.role, parts: c.parts };
  if (c.role === 'assistant') {
    if (c.interrupted) m.interrupted = true;
    m.model = c.model;
    m.usage = c.usage;
  }
  return m;
}

export function messageOut(r: any): Message {
  return {
    id: r.id,
    seq: Number(r.seq),
    role: r.role,
    parts: r.parts,
    interrupted: r.interrupted,
    model: r.model ?? null,
    usage: r.usage ?? null,
    created_at: r.created_at instanceof Date ? r.created_at.toISOString() : r.created_at,
  };
}
