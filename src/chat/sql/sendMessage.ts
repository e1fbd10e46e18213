// The send statement: every send of a user message to a chat, for a batch of chats at once (one
// round trip however many sends arrive together; store/group-commit.ts). The outcomes, decided
// on the locked row in this order:
//   archived, unservable (no configured provider serves the chat's model) -> nothing written
//   running/requires_action: queue_full, or queued (and interrupt_requested when asked)
//   too_many_turns (an idle chat, its owner at the limit of running/waiting turns) -> nothing
//   promoted: the queue is not empty, so its head becomes the message and this one is queued
//   sent: the message is stored
// A promoted or sent chat turns pending, or running when `claimer` (this replica's worker, with a
// slot reserved) takes it in the same statement: two epochs then, the message's and the run's,
// and no wake signal or acquiring statement. Rows are locked in id order, so concurrent batches
// cannot deadlock. The queue is read from the statement's snapshot, as every statement reads
// it; queue rows are only added while a chat is busy, and a busy chat is decided on its locked row.
import type { Queryable } from '../../store/db.js';
import { GroupCommit } from '../../store/group-commit.js';
import { type Message, seqOf, seqSql, userMessage } from '../types.js';
import type { ClaimedChat } from './claimChats.js';

export interface Send {
  chatId: string;
  userId: string;
  /** The id the stored message gets. */
  msgId: string;
  content: string;
  /** The worker that takes the turn at once, or null: the chat turns pending. */
  claimer: string | null;
  leaseMs: number;
  /** A busy chat's running turn is asked to stop. */
  interrupt: boolean;
}

export interface SendLimits {
  /** SQL LIKE patterns of the models no configured provider serves. */
  unservable: string[];
  turnsPerUser: number;
  maxQueue: number;
}

export type SendOutcome = 'sent' | 'promoted' | 'queued' | 'archived' | 'unservable' | 'queue_full' | 'too_many_turns';

export interface SendResult {
  outcome: SendOutcome;
  model: string;
  /** The chat's epoch as the send found it. */
  epoch: number;
  /** queued, promoted: the queue row this send's content went to. */
  queued: { id: number; created_at: string } | null;
  /** queued: the running turn was asked to stop. */
  interrupted: boolean;
  /** sent, promoted: the stored message (the content, or the promoted queue head) and the chat's status before. */
  message: { message: Message; prevStatus: string } | null;
  /** sent, promoted with a claimer: the claimed chat, for the worker. */
  claimed: ClaimedChat | null;
}

type Row = ClaimedChat & {
  send_chat_id: string;
  outcome: SendOutcome;
  cur_model: string;
  cur_epoch: number;
  queued_id: number | null;
  queued_at: Date | null;
  interrupted: boolean;
  prev: string | null;
  epoch_before: number | null;
  msg_id: string | null;
  text: string | null;
  msg_epoch: number | null;
  last_seq_before: number | null;
};

const STATEMENT = `
WITH i AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[], $7::boolean[])
             AS i(chat_id, owner_id, msg_id, content, claimer, lease_ms, interrupt)),
     p AS (SELECT chats.id, chats.status AS prev, chats.epoch AS epoch_before, chats.model AS cur_model,
             i.msg_id, i.content, i.claimer, i.lease_ms, i.interrupt,
             CASE WHEN chats.archived THEN 'archived'
                  WHEN chats.model LIKE ANY ($8::text[]) THEN 'unservable'
                  WHEN chats.status IN ('running', 'requires_action') THEN
                    CASE WHEN (SELECT count(*) FROM chat_queue WHERE chat_queue.chat_id = chats.id) >= $10 THEN 'queue_full' ELSE 'queued' END
                  WHEN chats.status <> 'pending'
                    AND (SELECT count(*) FROM chats o WHERE o.owner_id = i.owner_id AND o.status IN ('pending', 'running')) >= $9 THEN 'too_many_turns'
                  WHEN EXISTS (SELECT 1 FROM chat_queue WHERE chat_queue.chat_id = chats.id) THEN 'promoted'
                  ELSE 'sent' END AS outcome
           FROM i JOIN chats ON chats.id = i.chat_id AND chats.owner_id = i.owner_id
           ORDER BY chats.id
           FOR UPDATE OF chats),
     qi AS (INSERT INTO chat_queue (chat_id, content)
            SELECT id, content FROM p WHERE outcome IN ('queued', 'promoted')
            RETURNING chat_id, id AS queued_id, created_at AS queued_at),
     qh AS (DELETE FROM chat_queue
            WHERE id IN (SELECT min(chat_queue.id) FROM chat_queue JOIN p ON chat_queue.chat_id = p.id AND p.outcome = 'promoted' GROUP BY chat_queue.chat_id)
            RETURNING chat_id, content AS head),
     ir AS (UPDATE chats SET interrupt_requested = true FROM p
            WHERE chats.id = p.id AND p.outcome = 'queued' AND p.interrupt AND p.prev = 'running'
            RETURNING chats.id),
     c AS (UPDATE chats SET epoch = chats.epoch + (CASE WHEN p.claimer IS NULL THEN 1 ELSE 2 END),
             status = (CASE WHEN p.claimer IS NULL THEN 'pending' ELSE 'running' END), last_error = NULL, worker_id = p.claimer,
             lease_until = (CASE WHEN p.claimer IS NULL THEN NULL ELSE now() + p.lease_ms * interval '1 millisecond' END), updated_at = now()
           FROM p LEFT JOIN qh ON qh.chat_id = p.id
           WHERE chats.id = p.id AND p.outcome IN ('sent', 'promoted')
           RETURNING chats.*, p.prev, p.epoch_before, p.msg_id, coalesce(qh.head, p.content) AS text,
             chats.epoch - (CASE WHEN p.claimer IS NULL THEN 0 ELSE 1 END) AS msg_epoch,
             (CASE WHEN p.claimer IS NULL THEN NULL
                   ELSE (SELECT seq FROM chat_messages WHERE chat_messages.chat_id = chats.id AND NOT deleted ORDER BY seq DESC LIMIT 1) END) AS last_seq_before),
     m AS (INSERT INTO chat_messages (id, chat_id, seq, role, parts)
           SELECT msg_id, id, ${seqSql('msg_epoch', 1)}, 'user', jsonb_build_array(jsonb_build_object('type', 'text', 'text', text)) FROM c),
     e AS (INSERT INTO chat_events (chat_id, seq, type, data)
           SELECT id, ${seqSql('msg_epoch', 1)}, 'message', jsonb_build_object('message_id', msg_id) FROM c
           UNION ALL SELECT id, ${seqSql('msg_epoch', 2)}, 'status', '{"status":"pending"}'::jsonb FROM c WHERE prev <> 'pending'
           UNION ALL SELECT id, ${seqSql('epoch', 1)}, 'status', '{"status":"running"}'::jsonb FROM c WHERE worker_id IS NOT NULL)
SELECT p.id AS send_chat_id, p.outcome, p.cur_model, p.epoch_before AS cur_epoch, qi.queued_id, qi.queued_at, ir.id IS NOT NULL AS interrupted, c.*
FROM p LEFT JOIN qi ON qi.chat_id = p.id LEFT JOIN ir ON ir.id = p.id LEFT JOIN c ON c.id = p.id`;

/** Sends to distinct chats that arrive together go as one statement (group commit). */
export class SendStatement {
  private batches: GroupCommit<Send, SendResult | null>;

  constructor(
    private q: Queryable,
    private limits: () => SendLimits,
  ) {
    this.batches = new GroupCommit((items) => this.run(items), { max: 64, key: (s) => s.chatId });
  }

  /** Runs a send; null: the user has no such chat. */
  send(s: Send): Promise<SendResult | null> {
    return this.batches.submit(s);
  }

  private async run(items: Send[]): Promise<(SendResult | null)[]> {
    const limits = this.limits();
    const rows = await this.q.query<Row>(STATEMENT, [
      items.map((s) => s.chatId),
      items.map((s) => s.userId),
      items.map((s) => s.msgId),
      items.map((s) => s.content),
      items.map((s) => s.claimer),
      items.map((s) => s.leaseMs),
      items.map((s) => s.interrupt),
      limits.unservable,
      limits.turnsPerUser,
      limits.maxQueue,
    ]);
    const byChat = new Map(rows.map((r) => [r.send_chat_id, r]));
    return items.map((s) => {
      const r = byChat.get(s.chatId);
      return r ? result(r) : null;
    });
  }
}

function result(r: Row): SendResult {
  const { send_chat_id: _id, outcome, cur_model, cur_epoch, queued_id, queued_at, interrupted, prev, epoch_before, msg_id, text, msg_epoch, last_seq_before, ...chat } = r;
  const message = msg_id !== null && text !== null && msg_epoch !== null ? userMessage(text, seqOf(Number(msg_epoch), 1), msg_id) : null;
  return {
    outcome,
    model: cur_model,
    epoch: Number(cur_epoch),
    queued: queued_id === null ? null : { id: Number(queued_id), created_at: new Date(queued_at!).toISOString() },
    interrupted,
    message: message && { message, prevStatus: prev! },
    claimed:
      message && chat.worker_id !== null
        ? { ...chat, prev_status: 'pending', sent: { message, epochBefore: Number(epoch_before), lastSeqBefore: last_seq_before === null ? null : Number(last_seq_before) } }
        : null,
  };
}
