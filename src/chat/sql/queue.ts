// SQL on chat_queue: messages sent while a turn runs, promoted in order after it.
import type { Queryable } from '../../store/db.js';

export interface QueuedMessage {
  id: number;
  content: string;
  created_at: string;
}

export async function loadQueue(q: Queryable, chatId: string): Promise<QueuedMessage[]> {
  const rows = await q.query<QueuedMessage & { created_at: Date }>('SELECT id, content, created_at FROM chat_queue WHERE chat_id = $1 ORDER BY id', [chatId]);
  return rows.map((r) => ({ id: Number(r.id), content: r.content, created_at: new Date(r.created_at).toISOString() }));
}

/** Removes the queue head and returns its content, or null if the queue is empty. */
export async function popQueueHead(q: Queryable, chatId: string): Promise<string | null> {
  const rows = await q.query<{ content: string }>(
    'DELETE FROM chat_queue WHERE id = (SELECT min(id) FROM chat_queue WHERE chat_id = $1) RETURNING content',
    [chatId],
  );
  return rows[0]?.content ?? null;
}

export async function clearQueue(q: Queryable, chatId: string): Promise<void> {
  await q.query('DELETE FROM chat_queue WHERE chat_id = $1', [chatId]);
}

/** Whether there was such a queued message. */
export async function deleteQueued(q: Queryable, chatId: string, id: number): Promise<boolean> {
  return (await q.query('DELETE FROM chat_queue WHERE id = $1 AND chat_id = $2 RETURNING id', [id, chatId])).length > 0;
}
