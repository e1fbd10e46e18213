// SQL of a turn's writes: each step's messages and events, and the release that ends the turn,
// fenced by (worker_id, epoch, status running) so that a stale worker stores nothing.
import type { Queryable } from '../../store/db.js';
import { GroupCommit } from '../../store/group-commit.js';
import type { Message, StreamEvent } from '../types.js';
import { durableOnly, eventColumns, storedMessageEvent } from './events.js';

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

/** Locks the chat for a transaction of its running worker; false when the fence no longer holds. */
export async function lockFenced(q: Queryable, fence: Fence): Promise<boolean> {
  const rows = await q.query(`SELECT 1 FROM chats WHERE id = $1 AND worker_id = $2 AND epoch = $3 AND status = 'running' FOR UPDATE`, [
    fence.chatId,
    fence.workerId,
    fence.epoch,
  ]);
  return rows.length > 0;
}
