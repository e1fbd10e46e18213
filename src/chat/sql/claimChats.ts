// SQL of a worker's leases: claiming runnable chats, renewing and handing back leases.
import type { Queryable } from '../../store/db.js';
import { type Message, seqSql } from '../types.js';
import type { ChatRow } from './chats.js';

/** A chat a worker claimed: its row, the status it had, and, when its send claimed it, the message
 * that send stored and the seq of the chat's last message before it (the history needs no read then). */
export type ClaimedChat = ChatRow & {
  prev_status?: string;
  sent?: { message: Message; epochBefore: number; lastSeqBefore: number | null };
};

/**
 * Claims up to `max` pending chats and chats whose lease expired, oldest first, for the worker:
 * each gets a new epoch whose event 1 is `status running`. SKIP LOCKED: concurrent workers
 * claim different chats and never wait for each other.
 */
export async function claimChats(q: Queryable, workerId: string, max: number, leaseMs: number): Promise<(ClaimedChat & { waited_ms: number })[]> {
  return q.query(
    `WITH p AS (SELECT id, status AS prev_status, updated_at AS prev_updated_at FROM chats
                WHERE NOT archived AND (status = 'pending' OR (status = 'running' AND lease_until < now()))
                ORDER BY updated_at FOR UPDATE SKIP LOCKED LIMIT $2),
          c AS (UPDATE chats SET status = 'running', worker_id = $1, lease_until = now() + $3 * interval '1 millisecond',
                  epoch = chats.epoch + 1, updated_at = now()
                FROM p WHERE chats.id = p.id
                RETURNING chats.*, p.prev_status, (extract(epoch FROM now() - p.prev_updated_at) * 1000)::float8 AS waited_ms),
          e AS (INSERT INTO chat_events (chat_id, seq, type, data)
                SELECT id, ${seqSql('epoch', 1)}, 'status', '{"status":"running"}'::jsonb FROM c)
     SELECT * FROM c`,
    [workerId, max, leaseMs],
  );
}

/** Renews the worker's leases on these chats; returns the ones it still holds, and whether an interrupt was asked for each. */
export async function renewLeases(q: Queryable, workerId: string, ids: string[], leaseMs: number): Promise<Map<string, boolean>> {
  const rows = await q.query<{ id: string; interrupt_requested: boolean }>(
    `UPDATE chats SET lease_until = now() + $3 * interval '1 millisecond'
     WHERE id = ANY($1::uuid[]) AND worker_id = $2 AND status = 'running' RETURNING id, interrupt_requested`,
    [ids, workerId, leaseMs],
  );
  return new Map(rows.map((r) => [r.id, r.interrupt_requested]));
}

/** Milliseconds until the earliest lease held by another worker runs out (null: none). */
export async function nextForeignExpiry(q: Queryable, workerId: string): Promise<number | null> {
  const rows = await q.query<{ ms: number | null }>(
    `SELECT (extract(epoch FROM min(lease_until) - now()) * 1000)::float8 AS ms FROM chats
     WHERE status = 'running' AND NOT archived AND worker_id IS DISTINCT FROM $1`,
    [workerId],
  );
  return rows[0]?.ms ?? null;
}

/** Expires the worker's leases on these chats at once, so another worker claims them now; returns the ones it held. */
export async function expireLeases(q: Queryable, workerId: string, ids: string[]): Promise<string[]> {
  const rows = await q.query<{ id: string }>(
    `UPDATE chats SET lease_until = now() - interval '1 millisecond'
     WHERE id = ANY($1::uuid[]) AND worker_id = $2 AND status = 'running' RETURNING id`,
    [ids, workerId],
  );
  return rows.map((r) => r.id);
}
