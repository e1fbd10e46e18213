// SQL on the chats table outside the hot statements (sendMessage, claimChats, commitSteps): reads
// for the API, the row lock every command takes, and the columns commands change.
import type { Queryable } from '../../store/db.js';
import { type ChatStatus, type ClientTool, type PendingAction, seqOf } from '../types.js';

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

/** The chat's row, locked for the transaction (owned by `ownerId` when given). */
export async function lockChat(q: Queryable, chatId: string, ownerId?: string): Promise<ChatRow | undefined> {
  const rows = await q.query<ChatRow>(
    ownerId ? 'SELECT * FROM chats WHERE id = $1 AND owner_id = $2 FOR UPDATE' : 'SELECT * FROM chats WHERE id = $1 FOR UPDATE',
    ownerId ? [chatId, ownerId] : [chatId],
  );
  return rows[0];
}

export async function readChat(q: Queryable, chatId: string, ownerId: string): Promise<ChatRow | undefined> {
  return (await q.query<ChatRow>('SELECT * FROM chats WHERE id = $1 AND owner_id = $2', [chatId, ownerId]))[0];
}

export async function listChats(q: Queryable, ownerId: string, o: { archived: boolean; limit: number; before?: string }): Promise<ChatRow[]> {
  return q.query<ChatRow>(
    `SELECT * FROM chats WHERE owner_id = $1 AND archived = $2 AND ($4::timestamptz IS NULL OR updated_at < $4)
     ORDER BY updated_at DESC LIMIT $3`,
    [ownerId, o.archived, o.limit, o.before ?? null],
  );
}

export async function insertChat(
  q: Queryable,
  c: { owner_id: string; title: string; title_source: 'user' | 'fallback'; model: string; system_prompt: string | null; client_tools: ClientTool[]; status: ChatStatus },
): Promise<ChatRow> {
  const rows = await q.query<ChatRow>(
    `INSERT INTO chats (owner_id, title, title_source, model, system_prompt, client_tools, status)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
    [c.owner_id, c.title, c.title_source, c.model, c.system_prompt, JSON.stringify(c.client_tools), c.status],
  );
  return rows[0]!;
}

/**
 * Opens a new epoch for the chat (under its row lock) and returns the seq numbering for it. Every
 * transaction that emits events does this, so the numbers never collide with a worker's.
 */
export async function openEpoch(q: Queryable, chatId: string): Promise<(n: number) => number> {
  const rows = await q.query<{ epoch: number }>('UPDATE chats SET epoch = epoch + 1, updated_at = now() WHERE id = $1 RETURNING epoch', [chatId]);
  const epoch = rows[0]!.epoch;
  return (n: number) => seqOf(epoch, n);
}

/** The columns a command sets, by name; the others keep their values. */
export type ChatChange = Partial<{
  status: ChatStatus;
  title: string;
  title_source: string;
  model: string;
  system_prompt: string | null;
  archived: boolean;
  worker_id: null;
  lease_until: null;
  last_error: string | null;
  interrupt_requested: boolean;
  pending_actions: null;
  action_deadline: null;
}>;

const CHANGEABLE = new Set<string>(['status', 'title', 'title_source', 'model', 'system_prompt', 'archived', 'worker_id', 'lease_until', 'last_error', 'interrupt_requested', 'pending_actions', 'action_deadline']);

/**
 * Sets the named columns of a chat (names are checked against a fixed list; values are
 * parameters). `touch` also moves updated_at, which orders the chat list and acquisition.
 */
export async function changeChat(q: Queryable, chatId: string, change: ChatChange, touch = false): Promise<ChatRow> {
  const cols = Object.keys(change).filter((k) => (change as Record<string, unknown>)[k] !== undefined);
  for (const c of cols) if (!CHANGEABLE.has(c)) throw new Error(`chats.${c} is not changed by commands`);
  const sets = cols.map((c, i) => `${c} = $${i + 2}`);
  if (touch) sets.push('updated_at = now()');
  const rows = await q.query<ChatRow>(`UPDATE chats SET ${sets.join(', ') || 'id = id'} WHERE id = $1 RETURNING *`, [
    chatId,
    ...cols.map((c) => (change as Record<string, unknown>)[c]),
  ]);
  return rows[0]!;
}

export async function deleteChat(q: Queryable, chatId: string): Promise<void> {
  await q.query('DELETE FROM chats WHERE id = $1', [chatId]);
}

/** How many of the user's chats have a turn running or waiting. */
export async function activeTurns(q: Queryable, ownerId: string): Promise<number> {
  const rows = await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM chats WHERE owner_id = $1 AND status IN ('pending', 'running')`, [ownerId]);
  return Number(rows[0]!.n);
}

/** How many chats the user created in the last minute. */
export async function chatsLastMinute(q: Queryable, ownerId: string): Promise<number> {
  const rows = await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM chats WHERE owner_id = $1 AND created_at > now() - interval '1 minute'`, [ownerId]);
  return Number(rows[0]!.n);
}

/** Chats whose client did not answer their tool calls before the deadline. */
export async function overdueActions(q: Queryable): Promise<string[]> {
  return (await q.query<{ id: string }>(`SELECT id FROM chats WHERE status = 'requires_action' AND action_deadline < now() LIMIT 100`)).map((r) => r.id);
}

/** The worker running the chat now, or null. */
export async function runningWorker(q: Queryable, chatId: string): Promise<string | null> {
  const rows = await q.query<{ worker_id: string | null }>(`SELECT worker_id FROM chats WHERE id = $1 AND status = 'running'`, [chatId]);
  return rows[0]?.worker_id ?? null;
}

/** A chat whose title is still the fallback (its first words), or undefined. */
export async function untitledChat(q: Queryable, chatId: string): Promise<ChatRow | undefined> {
  return (await q.query<ChatRow>("SELECT * FROM chats WHERE id = $1 AND title_source = 'fallback'", [chatId]))[0];
}

/** Sets a generated title unless someone titled the chat meanwhile. */
export async function setGeneratedTitle(q: Queryable, chatId: string, title: string): Promise<ChatRow | undefined> {
  const rows = await q.query<ChatRow>("UPDATE chats SET title = $2, title_source = 'generated' WHERE id = $1 AND title_source = 'fallback' RETURNING *", [chatId, title]);
  return rows[0];
}
