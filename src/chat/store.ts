// SQL for chats, messages, the queue and the durable part of the event log.
import crypto from 'node:crypto';
import type { Queryable } from '../store/db.js';
import type { ChatStatus, ClientTool, Message, Part, PendingAction, StreamEvent } from './types.js';
import { isDurable, seqOf } from './types.js';

export interface ChatRow {
  id: string;
  owner_id: string;
  title: string;
  title_source: string;
  model: string;
  system_prompt: string | null;
  client_tools: ClientTool[];
  status: ChatStatus;
  archived: boolean;
  worker_id: string | null;
  epoch: number;
  last_error: string | null;
  interrupt_requested: boolean;
  pending_actions: PendingAction[] | null;
  created_at: Date;
  updated_at: Date;
}

export interface QueuedMessage {
  id: number;
  content: string;
  created_at: string;
}

export const ev = (chat_id: string, seq: number | undefined, type: StreamEvent['type'], data: Record<string, unknown> = {}): StreamEvent =>
  seq === undefined ? { chat_id, type, ...data } : { chat_id, seq, type, ...data };

export const newId = () => crypto.randomUUID();

export async function lockChat(q: Queryable, chatId: string, ownerId?: string): Promise<ChatRow | undefined> {
  const rows = await q.query<ChatRow>(
    ownerId
      ? 'SELECT * FROM chats WHERE id = $1 AND owner_id = $2 FOR UPDATE'
      : 'SELECT * FROM chats WHERE id = $1 FOR UPDATE',
    ownerId ? [chatId, ownerId] : [chatId],
  );
  return rows[0];
}

/**
 * Opens a new epoch for the chat (under its row lock) and returns the seq numbering for it. Every
 * transaction that emits events does this, so the numbers never collide with a worker's.
 */
export async function reserveSeqs(q: Queryable, chatId: string): Promise<(n: number) => number> {
  const rows = await q.query<{ epoch: number }>(
    'UPDATE chats SET epoch = epoch + 1, updated_at = now() WHERE id = $1 RETURNING epoch',
    [chatId],
  );
  const epoch = rows[0]!.epoch;
  return (n: number) => seqOf(epoch, n);
}

export async function storeEvents(q: Queryable, events: StreamEvent[]): Promise<void> {
  const durable = events.filter((e) => e.seq !== undefined && isDurable(e.type));
  if (!durable.length) return;
  await q.query(
    `INSERT INTO chat_events (chat_id, seq, type, data)
     SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[])`,
    [
      durable.map((e) => e.chat_id),
      durable.map((e) => e.seq),
      durable.map((e) => e.type),
      durable.map((e) => JSON.stringify(strip(e))),
    ],
  );
}

function strip(e: StreamEvent): Record<string, unknown> {
  const { chat_id: _c, seq: _s, type: _t, ...data } = e;
  return data;
}

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
 * `afterSeq` is still right when its length plus the new ones is that total (messages are never
 * changed, only marked deleted, and new ones always get a higher seq).
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

/** A chat a worker claimed: its row, the status it had, and, when its send claimed it, the message
 * that send stored and how many messages the chat had before (the history needs no read then). */
export type ClaimedChat = ChatRow & { prev_status?: string; sent?: { message: Message; epochBefore: number; storedBefore: number } };

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

export async function loadQueue(q: Queryable, chatId: string): Promise<QueuedMessage[]> {
  const rows = await q.query<QueuedMessage & { created_at: Date }>(
    'SELECT id, content, created_at FROM chat_queue WHERE chat_id = $1 ORDER BY id',
    [chatId],
  );
  return rows.map((r) => ({ id: Number(r.id), content: r.content, created_at: new Date(r.created_at).toISOString() }));
}

export function userMessage(content: string, seq: number): Message {
  return { id: newId(), seq, role: 'user', parts: [{ type: 'text', text: content }] as Part[] };
}

/** Moves the queue head into the history as a user message; returns it, or null if the queue is empty. */
export async function popQueueHead(q: Queryable, chatId: string): Promise<string | null> {
  const rows = await q.query<{ content: string }>(
    `DELETE FROM chat_queue WHERE id = (SELECT min(id) FROM chat_queue WHERE chat_id = $1) RETURNING content`,
    [chatId],
  );
  return rows[0]?.content ?? null;
}

export function chatOut(r: ChatRow, extra: Record<string, unknown> = {}) {
  return {
    id: r.id,
    title: r.title,
    model: r.model,
    system_prompt: r.system_prompt,
    tools: r.client_tools,
    status: r.status,
    archived: r.archived,
    last_error: r.last_error,
    pending_actions: r.status === 'requires_action' ? r.pending_actions : null,
    created_at: new Date(r.created_at).toISOString(),
    updated_at: new Date(r.updated_at).toISOString(),
    ...extra,
  };
}

export interface Fence {
  chatId: string;
  workerId: string;
  epoch: number;
}

export interface Release {
  status: string;
  error: string | null;
  actions: unknown[] | null;
  actionTimeoutMs: number;
  /** Only released (and these events stored) when the queue is empty or the status is not `waiting`. */
  events: StreamEvent[];
}

/**
 * One statement that checks the worker still owns the chat (worker_id, epoch, status running),
 * stores a step's messages with their `message` events, and optionally releases the chat — the
 * hot path of a turn costs one round trip per step. Returns whether the fence held and whether
 * the chat was released (it is not when a `waiting` release finds queued messages).
 */
export async function fencedCommit(
  q: Queryable,
  fence: Fence,
  messages: Message[],
  extraEvents: StreamEvent[] = [],
  release?: Release,
): Promise<{ fenced: boolean; released: boolean }> {
  const events = [
    ...messages.map((m) => ev(fence.chatId, m.seq, 'message', { message: m })),
    ...extraEvents.filter((e) => e.seq !== undefined && isDurable(e.type)),
  ];
  const params: unknown[] = [fence.chatId, fence.workerId, fence.epoch];
  const p = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  const parts = [`f AS (SELECT id FROM chats WHERE id = $1 AND worker_id = $2 AND epoch = $3 AND status = 'running' FOR UPDATE)`];
  if (messages.length) {
    parts.push(`m AS (INSERT INTO chat_messages (id, chat_id, seq, role, parts, interrupted, model, usage)
      SELECT x.id, $1, x.seq, x.role, x.parts, x.interrupted, x.model, x.usage
      FROM unnest(${p(messages.map((m) => m.id))}::uuid[], ${p(messages.map((m) => m.seq))}::bigint[], ${p(messages.map((m) => m.role))}::text[],
        ${p(messages.map((m) => JSON.stringify(m.parts)))}::jsonb[], ${p(messages.map((m) => Boolean(m.interrupted)))}::boolean[],
        ${p(messages.map((m) => m.model ?? null))}::text[], ${p(messages.map((m) => (m.usage ? JSON.stringify(m.usage) : null)))}::jsonb[])
        AS x(id, seq, role, parts, interrupted, model, usage)
      WHERE EXISTS (SELECT 1 FROM f)
      ON CONFLICT (id) DO NOTHING)`);
  }
  if (events.length) parts.push(`e AS (${eventInsert(events, p, 'EXISTS (SELECT 1 FROM f)')})`);
  let select = `SELECT (SELECT count(*) FROM f)::int AS fenced, 0 AS released`;
  if (release) {
    const st = p(release.status);
    const actions = p(release.actions ? JSON.stringify(release.actions) : null);
    parts.push(`u AS (UPDATE chats SET status = ${st}, worker_id = NULL, lease_until = NULL, last_error = ${p(release.error)},
        interrupt_requested = false, pending_actions = ${actions}::jsonb,
        action_deadline = CASE WHEN ${actions}::jsonb IS NULL THEN NULL ELSE now() + ${p(release.actionTimeoutMs)} * interval '1 millisecond' END,
        updated_at = now()
      WHERE id = $1 AND EXISTS (SELECT 1 FROM f)
        AND (${st} <> 'waiting' OR NOT EXISTS (SELECT 1 FROM chat_queue WHERE chat_id = $1))
      RETURNING id)`);
    if (release.events.length) parts.push(`r AS (${eventInsert(release.events, p, 'EXISTS (SELECT 1 FROM u)')})`);
    select = `SELECT (SELECT count(*) FROM f)::int AS fenced, (SELECT count(*) FROM u)::int AS released`;
  }
  const rows = await q.query<{ fenced: number; released: number }>(`WITH ${parts.join(',\n')}\n${select}`, params);
  return { fenced: rows[0]!.fenced > 0, released: rows[0]!.released > 0 };
}

/** Whether an event is stored: a release whose reply was lost with its connection had committed
 * if its last event is there. */
export async function eventStored(q: Queryable, chatId: string, seq: number): Promise<boolean> {
  return (await q.query('SELECT 1 FROM chat_events WHERE chat_id = $1 AND seq = $2', [chatId, seq])).length > 0;
}

function eventInsert(events: StreamEvent[], p: (v: unknown) => string, cond: string): string {
  return `INSERT INTO chat_events (chat_id, seq, type, data)
    SELECT $1, x.seq, x.type, x.data FROM unnest(${p(events.map((e) => e.seq))}::bigint[], ${p(events.map((e) => e.type))}::text[],
      ${p(events.map((e) => JSON.stringify(strip(e))))}::jsonb[]) AS x(seq, type, data)
    WHERE ${cond}
    ON CONFLICT (chat_id, seq) DO NOTHING`;
}
