// SQL for chats, messages, the queue and the durable part of the event log.
import crypto from 'node:crypto';
import type { Queryable } from '../store/db.js';
import { GroupCommit } from '../store/group-commit.js';
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
  const durable = durableOnly(events);
  if (!durable.length) return;
  await q.query(
    `INSERT INTO chat_events (chat_id, seq, type, data)
     SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[])`,
    eventColumns(durable),
  );
}

/** The events that are stored (numbered, of a durable type); drafts live only in the stream. */
function durableOnly(events: StreamEvent[]): StreamEvent[] {
  return events.filter((e) => e.seq !== undefined && isDurable(e.type));
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
 * that send stored and the seq of the chat's last message before it (the history needs no read then). */
export type ClaimedChat = ChatRow & {
  prev_status?: string;
  sent?: { message: Message; epochBefore: number; lastSeqBefore: number | null };
};

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
 * A message as a run publishes it in its `message` event, from its stored columns. A step's
 * commit stores the event as a reference to the message row (`message_id`) instead of a second
 * copy of the reply: on the embedded database the copy cost ~5 % of its thread's CPU.
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

/**
 * The stored form of a message's event: a reference when a replay rebuilds exactly what was
 * published (the message is stored in the same statement), the message itself otherwise.
 */
function storedMessageEvent(chatId: string, m: Message): StreamEvent {
  const rebuilt = publishedMessage({ ...m, interrupted: Boolean(m.interrupted), model: m.model ?? null, usage: m.usage ?? null });
  const same = JSON.stringify({ ...rebuilt, parts: 0 }) === JSON.stringify({ ...m, parts: 0 });
  return ev(chatId, m.seq, 'message', same ? { message_id: m.id } : { message: m });
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

/** Appends a message to the chat's queue. */
export async function enqueue(q: Queryable, chatId: string, content: string): Promise<QueuedMessage> {
  const rows = await q.query<{ id: number; created_at: Date }>('INSERT INTO chat_queue (chat_id, content) VALUES ($1, $2) RETURNING id, created_at', [chatId, content]);
  return { id: Number(rows[0]!.id), content, created_at: new Date(rows[0]!.created_at).toISOString() };
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

interface CommitItem {
  fence: Fence;
  messages: Message[];
  /** Durable events to store with the messages. */
  events: StreamEvent[];
  /** Ends the turn too; its events, like `events`, are the durable ones only. */
  release?: Release;
}

type CommitResult = { fenced: boolean; released: boolean };

/** One group-commit batcher per database: step commits of many chats that arrive together are one statement. */
const commitBatchers = new WeakMap<Queryable, GroupCommit<CommitItem, CommitResult>>();

/**
 * One statement that checks the worker still owns the chat (worker_id, epoch, status running),
 * stores a step's messages with their `message` events, and optionally releases the chat — the
 * hot path of a turn costs one round trip per step, shared with the other chats' steps that are
 * committed at the same moment (group commit). Returns whether the fence held and whether the
 * chat was released (it is not when a `waiting` release finds queued messages).
 */
export async function fencedCommit(
  db: Queryable,
  fence: Fence,
  messages: Message[],
  extraEvents: StreamEvent[] = [],
  release?: Release,
): Promise<CommitResult> {
  const events = [...messages.map((m) => storedMessageEvent(fence.chatId, m)), ...durableOnly(extraEvents)];
  let batcher = commitBatchers.get(db);
  if (!batcher) {
    batcher = new GroupCommit((items) => commitBatch(db, items), {
      max: 64,
      key: (c) => c.fence.chatId,
    });
    commitBatchers.set(db, batcher);
  }
  return batcher.submit({ fence, messages, events, release: release && { ...release, events: durableOnly(release.events) } });
}

async function commitBatch(q: Queryable, items: CommitItem[]): Promise<CommitResult[]> {
  const msgs = items.flatMap((c) => c.messages.map((m) => [c.fence.chatId, m] as const));
  const events = items.flatMap((c) => c.events);
  const releaseEvents = items.flatMap((c) => c.release?.events ?? []);
  const rows = await q.query<{ id: string; fenced: boolean; released: boolean }>(
    `WITH k AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::int[])
                  AS k(chat_id, worker_id, epoch, st, err, actions, action_ms)),
          f AS (SELECT chats.id, k.st, k.err, k.actions, k.action_ms
                FROM k JOIN chats ON chats.id = k.chat_id AND chats.worker_id = k.worker_id AND chats.epoch = k.epoch AND chats.status = 'running'
                ORDER BY chats.id
                FOR UPDATE OF chats),
          m AS (INSERT INTO chat_messages (id, chat_id, seq, role, parts, interrupted, model, usage)
                SELECT x.id, x.chat_id, x.seq, x.role, x.parts, x.interrupted, x.model, x.usage
                FROM unnest($8::uuid[], $9::uuid[], $10::bigint[], $11::text[], $12::jsonb[], $13::boolean[], $14::text[], $15::jsonb[])
                  AS x(chat_id, id, seq, role, parts, interrupted, model, usage)
                WHERE x.chat_id IN (SELECT id FROM f)
                ON CONFLICT (id) DO NOTHING),
          e AS (INSERT INTO chat_events (chat_id, seq, type, data)
                SELECT x.chat_id, x.seq, x.type, x.data FROM unnest($16::uuid[], $17::bigint[], $18::text[], $19::jsonb[]) AS x(chat_id, seq, type, data)
                WHERE x.chat_id IN (SELECT id FROM f)
                ON CONFLICT (chat_id, seq) DO NOTHING),
          u AS (UPDATE chats SET status = f.st, worker_id = NULL, lease_until = NULL, last_error = f.err,
                  interrupt_requested = false, pending_actions = f.actions,
                  action_deadline = CASE WHEN f.actions IS NULL THEN NULL ELSE now() + f.action_ms * interval '1 millisecond' END,
                  updated_at = now()
                FROM f WHERE chats.id = f.id AND f.st IS NOT NULL
                  AND (f.st <> 'waiting' OR NOT EXISTS (SELECT 1 FROM chat_queue WHERE chat_queue.chat_id = f.id))
                RETURNING chats.id),
          r AS (INSERT INTO chat_events (chat_id, seq, type, data)
                SELECT x.chat_id, x.seq, x.type, x.data FROM unnest($20::uuid[], $21::bigint[], $22::text[], $23::jsonb[]) AS x(chat_id, seq, type, data)
                WHERE x.chat_id IN (SELECT id FROM u)
                ON CONFLICT (chat_id, seq) DO NOTHING)
     SELECT k.chat_id AS id, EXISTS (SELECT 1 FROM f WHERE f.id = k.chat_id) AS fenced, EXISTS (SELECT 1 FROM u WHERE u.id = k.chat_id) AS released FROM k`,
    [
      items.map((c) => c.fence.chatId),
      items.map((c) => c.fence.workerId),
      items.map((c) => c.fence.epoch),
      items.map((c) => c.release?.status ?? null),
      items.map((c) => c.release?.error ?? null),
      items.map((c) => (c.release?.actions ? JSON.stringify(c.release.actions) : null)),
      items.map((c) => c.release?.actionTimeoutMs ?? 0),
      msgs.map(([chatId]) => chatId),
      msgs.map(([, m]) => m.id),
      msgs.map(([, m]) => m.seq),
      msgs.map(([, m]) => m.role),
      msgs.map(([, m]) => JSON.stringify(m.parts)),
      msgs.map(([, m]) => Boolean(m.interrupted)),
      msgs.map(([, m]) => m.model ?? null),
      msgs.map(([, m]) => (m.usage ? JSON.stringify(m.usage) : null)),
      ...eventColumns(events),
      ...eventColumns(releaseEvents),
    ],
  );
  const byChat = new Map(rows.map((r) => [r.id, r]));
  return items.map((c) => {
    const r = byChat.get(c.fence.chatId);
    return { fenced: Boolean(r?.fenced), released: Boolean(r?.released) };
  });
}

function eventColumns(events: StreamEvent[]): unknown[][] {
  return [events.map((e) => e.chat_id), events.map((e) => e.seq), events.map((e) => e.type), events.map((e) => JSON.stringify(strip(e)))];
}

/** Whether an event is stored: a release whose reply was lost with its connection had committed
 * if its last event is there. */
export async function eventStored(q: Queryable, chatId: string, seq: number): Promise<boolean> {
  return (await q.query('SELECT 1 FROM chat_events WHERE chat_id = $1 AND seq = $2', [chatId, seq])).length > 0;
}

