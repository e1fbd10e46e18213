// Chat commands from the API. Each is one transaction that locks the chat row; events are
// published and the workers woken only after the commit.
import type { Bus } from '../bus/bus.js';
import type { Db, Queryable } from '../store/db.js';
import type { Config } from '../config.js';
import { metrics } from '../metrics.js';
import { ApiError, conflict, notFound, badRequest, tooMany } from '../errors.js';
import { GroupCommit } from '../store/group-commit.js';
import type { Providers } from './providers/index.js';
import { ToolBox } from './tools/index.js';
import type { Runner } from './runner.js';
import {
  type ChatRow,
  type ClaimedChat,
  type QueuedMessage,
  chatOut,
  enqueue,
  ev,
  insertMessages,
  loadMessages,
  loadQueue,
  lockChat,
  newId,
  popQueueHead,
  reserveSeqs,
  storeEvents,
  userMessage,
} from './store.js';
import { type ClientTool, type Message, type StreamEvent, EPOCH_SPAN, seqOf } from './types.js';

export interface CreateChatInput {
  title?: string;
  model?: string;
  system_prompt?: string;
  message?: string;
  tools?: ClientTool[];
}

/** A send to a chat that is idle (as far as the sender knows), for the batched statement. */
interface IdleSend {
  chatId: string;
  userId: string;
  msgId: string;
  /** The message's parts as JSON. */
  parts: string;
  /** The worker that takes the turn at once, or null: the chat turns pending. */
  claimer: string | null;
  leaseMs: number;
}

type IdleSendRow = ChatRow & { prev: string; msg_epoch: number; epoch_before: number; last_seq_before: number | null };

interface Effects {
  events: StreamEvent[];
  wake?: boolean;
  control?: 'interrupt' | 'cancel';
  /** The epoch of the run that `control` is for (the chat's as the command found it). */
  epoch?: number;
}

const fallbackTitle = (text: string) => {
  const words = text.trim().split(/\s+/).slice(0, 6).join(' ');
  return words.length > 80 ? words.slice(0, 79) + '…' : words;
};

export class ChatService {
  constructor(
    private db: Db,
    private bus: Bus,
    private providers: Providers,
    private tools: ToolBox,
    private limits: Pick<Config, 'maxQueue' | 'leaseMs' | 'userRunningTurns' | 'userChatsPerMinute'>,
  ) {
    this.idleSends = new GroupCommit((items) => this.sendToIdleBatch(items), {
      max: 64,
      key: (s) => s.chatId,
    });
  }

  /** This replica's worker: a send it can serve is claimed for it in the send's own statement. */
  private runner: Runner | null = null;

  /** Sends to idle chats that arrive together run as one statement (store/group-commit.ts). */
  private idleSends: GroupCommit<IdleSend, IdleSendRow | null>;

  attachRunner(runner: Runner | null): void {
    this.runner = runner;
  }

  private publish(chatId: string, fx: Effects): void {
    for (const e of fx.events) this.bus.publish('events', e);
    if (fx.control) this.bus.publish('control', { chat_id: chatId, action: fx.control, epoch: fx.epoch });
    if (fx.wake) this.bus.publish('wake', { chat_id: chatId });
  }

  /** Runs fn on the locked chat (404 unless it belongs to the user), then publishes its effects. */
  private async mutate<T>(userId: string, chatId: string, fn: (q: Queryable, chat: ChatRow, fx: Effects) => Promise<T>): Promise<T> {
    const fx: Effects = { events: [] };
    const out = await this.db.tx(async (q) => {
      const chat = await lockChat(q, chatId, userId);
      if (!chat) throw notFound('chat');
      fx.epoch = Number(chat.epoch);
      return fn(q, chat, fx);
    });
    this.publish(chatId, fx);
    return out;
  }

  async create(userId: string, input: CreateChatInput) {
    const model = input.model ?? this.providers.defaultModel();
    if (input.message !== undefined) this.providers.check(model);
    validateClientTools(input.tools ?? [], this.tools);
    const fx: Effects = { events: [] };
    const chat = await this.db.tx(async (q) => {
      await checkNewChat(q, userId, this.limits.userChatsPerMinute);
      if (input.message !== undefined) await checkTurnSlot(q, userId, this.limits.userRunningTurns);
      const title = input.title ?? (input.message ? fallbackTitle(input.message) : '');
      const rows = await q.query<ChatRow>(
        `INSERT INTO chats (owner_id, title, title_source, model, system_prompt, client_tools)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
        [userId, title, input.title ? 'user' : 'fallback', model, input.system_prompt ?? null, JSON.stringify(input.tools ?? [])],
      );
      let chat = rows[0]!;
      if (input.message !== undefined) {
        const seq = await reserveSeqs(q, chat.id);
        const msg = userMessage(input.message, seq(1));
        await insertMessages(q, chat.id, [msg]);
        chat = (await q.query<ChatRow>(`UPDATE chats SET status = 'pending' WHERE id = $1 RETURNING *`, [chat.id]))[0]!;
        fx.events.push(ev(chat.id, seq(1), 'message', { message: msg }), ev(chat.id, seq(2), 'status', { status: 'pending' }));
        await storeEvents(q, fx.events);
        fx.wake = true;
      }
      return chat;
    });
    this.publish(chat.id, fx);
    return chatOut(chat);
  }

  async list(userId: string, opts: { archived: boolean; limit: number; before?: string }) {
    const rows = await this.db.query<ChatRow>(
      `SELECT * FROM chats WHERE owner_id = $1 AND archived = $2 AND ($4::timestamptz IS NULL OR updated_at < $4)
       ORDER BY updated_at DESC LIMIT $3`,
      [userId, opts.archived, opts.limit, opts.before ?? null],
    );
    return rows.map((r) => chatOut(r));
  }

  async get(userId: string, chatId: string) {
    const rows = await this.db.query<ChatRow>('SELECT * FROM chats WHERE id = $1 AND owner_id = $2', [chatId, userId]);
    const chat = rows[0];
    if (!chat) throw notFound('chat');
    const [messages, queue, last] = await Promise.all([
      loadMessages(this.db, chatId),
      loadQueue(this.db, chatId),
      this.db.query<{ seq: number | null }>('SELECT max(seq) AS seq FROM chat_events WHERE chat_id = $1', [chatId]),
    ]);
    return chatOut(chat, { messages, queue, last_seq: Number(last[0]?.seq ?? 0) });
  }

  /** Owner check without a lock (used by the stream endpoint). */
  async exists(userId: string, chatId: string): Promise<boolean> {
    const rows = await this.db.query('SELECT 1 FROM chats WHERE id = $1 AND owner_id = $2', [chatId, userId]);
    return rows.length > 0;
  }

  async queue(chatId: string) {
    return loadQueue(this.db, chatId);
  }

  async update(userId: string, chatId: string, input: { title?: string; model?: string; system_prompt?: string | null }) {
    return this.mutate(userId, chatId, async (q, chat, fx) => {
      const rows = await q.query<ChatRow>(
        `UPDATE chats SET title = COALESCE($2, title), title_source = CASE WHEN $2::text IS NULL THEN title_source ELSE 'user' END,
           model = COALESCE($3, model), system_prompt = CASE WHEN $4 THEN $5 ELSE system_prompt END
         WHERE id = $1 RETURNING *`,
        [chat.id, input.title ?? null, input.model ?? null, input.system_prompt !== undefined, input.system_prompt ?? null],
      );
      const out = chatOut(rows[0]!);
      fx.events.push(ev(chat.id, undefined, 'chat', { chat: out }));
      return out;
    });
  }

  /**
   * Sends a user message. While a turn is running (or others wait in the queue) it is queued and
   * promoted in order after the turn; `busy: 'interrupt'` also stops the running turn.
   */
  async send(userId: string, chatId: string, content: string, busy: 'queue' | 'interrupt' = 'queue') {
    const fast = await this.sendToIdle(userId, chatId, content);
    if (fast) return fast;
    return this.mutate(userId, chatId, async (q, chat, fx) => {
      if (chat.archived) throw conflict('the chat is archived; unarchive it first', 'archived');
      this.providers.check(chat.model);
      const queued = await loadQueue(q, chat.id);
      const busyNow = chat.status === 'running' || chat.status === 'requires_action';
      if (busyNow) {
        if (queued.length >= this.limits.maxQueue) throw conflict(`the queue is full (${this.limits.maxQueue} messages)`, 'queue_full');
        const item = await enqueue(q, chat.id, content);
        fx.events.push(ev(chat.id, undefined, 'queue', { queue: [...queued, item] }));
        if (busy === 'interrupt' && chat.status === 'running') {
          await q.query('UPDATE chats SET interrupt_requested = true WHERE id = $1', [chat.id]);
          fx.control = 'interrupt';
        }
        return { queued: item, message: null };
      }
      // Idle (or pending, or after an error): older queued messages go first, and this one
      // joins the end of the queue (the caller is told it is queued).
      if (chat.status !== 'pending') await checkTurnSlot(q, userId, this.limits.userRunningTurns);
      const seq = await reserveSeqs(q, chat.id);
      let n = 0;
      const msgs: Message[] = [];
      let ownItem: QueuedMessage | null = null;
      if (queued.length) {
        ownItem = await enqueue(q, chat.id, content);
        const head = (await popQueueHead(q, chat.id))!;
        msgs.push(userMessage(head, seq(++n)));
      } else {
        msgs.push(userMessage(content, seq(++n)));
      }
      await insertMessages(q, chat.id, msgs);
      await q.query(
        `UPDATE chats SET status = 'pending', last_error = NULL, worker_id = NULL, lease_until = NULL WHERE id = $1`,
        [chat.id],
      );
      for (const m of msgs) fx.events.push(ev(chat.id, m.seq, 'message', { message: m }));
      if (chat.status !== 'pending') fx.events.push(ev(chat.id, seq(++n), 'status', { status: 'pending' }));
      await storeEvents(q, fx.events);
      if (queued.length) fx.events.push(ev(chat.id, undefined, 'queue', { queue: await loadQueue(q, chat.id) }));
      fx.wake = true;
      return ownItem ? { queued: ownItem, message: null } : { queued: null, message: msgs[msgs.length - 1]! };
    });
  }

  /**
   * The common case in one statement: an idle chat with an empty queue whose model has a
   * configured provider gets the message and turns pending. Anything else (busy, queued
   * messages, archived, unknown, unservable model) returns null and takes the general path.
   */
  private async sendToIdle(userId: string, chatId: string, content: string) {
    if (this.providers.unservablePrefixes() === null) return null; // no provider at all: the general path explains
    const msg = userMessage(content, 0);
    // With a free slot here, the chat goes straight to this replica's worker: it skips `pending`
    // in the database (two epochs in one statement: the message's and the run's), the wake
    // signal and the acquiring statement; clients still see message, pending, running. Else it
    // is pending, and the wake signal brings a worker (here or on another replica).
    const runner = this.runner?.reserve() ? this.runner : null;
    const claimer = runner?.workerId ?? null;
    /** The send did not claim the chat: the reserved slot goes back. */
    const unclaimed = () => runner?.adopt(null);
    let row: IdleSendRow | null;
    try {
      row = await this.idleSends.submit({
        chatId,
        userId,
        msgId: msg.id,
        parts: JSON.stringify(msg.parts),
        claimer,
        leaseMs: runner?.leaseMs ?? this.limits.leaseMs,
      });
    } catch (err) {
      unclaimed();
      throw err;
    }
    if (!row) {
      unclaimed();
      return null;
    }
    msg.seq = seqOf(row.msg_epoch, 1);
    const fx: Effects = { events: [ev(chatId, msg.seq, 'message', { message: msg })], wake: !claimer };
    if (row.prev !== 'pending') fx.events.push(ev(chatId, seqOf(row.msg_epoch, 2), 'status', { status: 'pending' }));
    this.publish(chatId, fx);
    if (runner) runner.adopt({ ...row, prev_status: 'pending', sent: { message: msg, epochBefore: row.epoch_before, lastSeqBefore: row.last_seq_before } });
    return { queued: null, message: msg };
  }

  /**
   * The statement behind sendToIdle, for a batch of sends to distinct chats. last_seq_before: the
   * seq of the chat's last message, which a claimed turn checks its cached history against (read
   * only for a claim: nothing else uses it; an index probe, where a count grew with the chat:
   * 8 ms a send at 5,000 messages on the embedded database, against 0.5). Rows are locked in id
   * order, so concurrent batches cannot deadlock. A user at their turn limit
   * (AIRLOCK_USER_RUNNING_TURNS) is left to the general path, which says so.
   */
  private async sendToIdleBatch(items: IdleSend[]): Promise<(IdleSendRow | null)[]> {
    const rows = await this.db.query<IdleSendRow & { msg_id: string; parts: unknown }>(
      `WITH i AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[], $5::text[], $6::int[])
                    AS i(chat_id, owner_id, msg_id, parts, claimer, lease_ms)),
            p AS (SELECT chats.id, chats.status AS prev, chats.epoch AS epoch_before, i.msg_id, i.parts, i.claimer, i.lease_ms
                  FROM i JOIN chats ON chats.id = i.chat_id AND chats.owner_id = i.owner_id
                  WHERE NOT chats.archived AND chats.status IN ('waiting', 'error', 'pending')
                    AND NOT (chats.model LIKE ANY ($7::text[]))
                    AND (chats.status = 'pending' OR (SELECT count(*) FROM chats o WHERE o.owner_id = i.owner_id AND o.status IN ('pending', 'running')) < $8)
                    AND NOT EXISTS (SELECT 1 FROM chat_queue WHERE chat_queue.chat_id = chats.id)
                  ORDER BY chats.id
                  FOR UPDATE OF chats),
            c AS (UPDATE chats SET epoch = chats.epoch + (CASE WHEN p.claimer IS NULL THEN 1 ELSE 2 END),
                    status = (CASE WHEN p.claimer IS NULL THEN 'pending' ELSE 'running' END), last_error = NULL, worker_id = p.claimer,
                    lease_until = (CASE WHEN p.claimer IS NULL THEN NULL ELSE now() + p.lease_ms * interval '1 millisecond' END), updated_at = now()
                  FROM p WHERE chats.id = p.id
                  RETURNING chats.*, p.prev, p.epoch_before, p.msg_id, p.parts, chats.epoch - (CASE WHEN p.claimer IS NULL THEN 0 ELSE 1 END) AS msg_epoch,
                    (CASE WHEN p.claimer IS NULL THEN NULL ELSE (SELECT seq FROM chat_messages WHERE chat_messages.chat_id = chats.id AND NOT deleted ORDER BY seq DESC LIMIT 1) END) AS last_seq_before),
            m AS (INSERT INTO chat_messages (id, chat_id, seq, role, parts)
                  SELECT c.msg_id, c.id, c.msg_epoch * ${EPOCH_SPAN} + 1, 'user', c.parts FROM c),
            e AS (INSERT INTO chat_events (chat_id, seq, type, data)
                  SELECT c.id, c.msg_epoch * ${EPOCH_SPAN} + 1, 'message',
                         jsonb_build_object('message', jsonb_build_object('id', c.msg_id::text, 'seq', c.msg_epoch * ${EPOCH_SPAN} + 1, 'role', 'user', 'parts', c.parts))
                  FROM c
                  UNION ALL
                  SELECT c.id, c.msg_epoch * ${EPOCH_SPAN} + 2, 'status', '{"status":"pending"}'::jsonb FROM c WHERE c.prev <> 'pending'
                  UNION ALL
                  SELECT c.id, c.epoch * ${EPOCH_SPAN} + 1, 'status', '{"status":"running"}'::jsonb FROM c WHERE c.worker_id IS NOT NULL)
       SELECT c.* FROM c`,
      [
        items.map((s) => s.chatId),
        items.map((s) => s.userId),
        items.map((s) => s.msgId),
        items.map((s) => s.parts),
        items.map((s) => s.claimer),
        items.map((s) => s.leaseMs),
        this.providers.unservablePrefixes() ?? [],
        this.limits.userRunningTurns,
      ],
    );
    // msg_id and parts are the statement's own (the caller has the message): the claimed row
    // goes on to the run and across the bus without them.
    const byChat = new Map(rows.map(({ msg_id: _id, parts: _parts, ...row }) => [row.id, row]));
    return items.map((s) => byChat.get(s.chatId) ?? null);
  }

  /** Replaces a user message, discards everything after it (and the queue), and runs the chat again. */
  async edit(userId: string, chatId: string, messageId: string, content: string) {
    return this.mutate(userId, chatId, async (q, chat, fx) => {
      if (chat.archived) throw conflict('the chat is archived; unarchive it first', 'archived');
      this.providers.check(chat.model);
      const rows = await q.query<{ seq: number; role: string }>(
        'SELECT seq, role FROM chat_messages WHERE id = $1 AND chat_id = $2 AND NOT deleted',
        [messageId, chat.id],
      );
      const target = rows[0];
      if (!target) throw notFound('message');
      if (target.role !== 'user') throw badRequest('only user messages can be edited', 'not_user_message');
      if (chat.status !== 'pending' && chat.status !== 'running') await checkTurnSlot(q, userId, this.limits.userRunningTurns);
      await q.query('UPDATE chat_messages SET deleted = true WHERE chat_id = $1 AND seq >= $2', [chat.id, target.seq]);
      await q.query('DELETE FROM chat_queue WHERE chat_id = $1', [chat.id]);
      const seq = await reserveSeqs(q, chat.id);
      const msg = userMessage(content, seq(2));
      await insertMessages(q, chat.id, [msg]);
      await q.query(
        `UPDATE chats SET status = 'pending', worker_id = NULL, lease_until = NULL, last_error = NULL,
           interrupt_requested = false, pending_actions = NULL, action_deadline = NULL WHERE id = $1`,
        [chat.id],
      );
      fx.events.push(
        ev(chat.id, seq(1), 'history_truncated', { after_seq: Number(target.seq) - 1, reason: 'edit' }),
        ev(chat.id, seq(2), 'message', { message: msg }),
        ev(chat.id, seq(3), 'status', { status: 'pending' }),
      );
      await storeEvents(q, fx.events);
      fx.events.push(ev(chat.id, undefined, 'queue', { queue: [] }));
      fx.wake = true;
      if (chat.status === 'running') fx.control = 'cancel';
      return { message: msg };
    });
  }

  /** Stops the running turn; the partial reply is kept and marked interrupted, then the queue continues. */
  async interrupt(userId: string, chatId: string) {
    return this.mutate(userId, chatId, async (q, chat, fx) => {
      if (chat.status === 'running') {
        await q.query('UPDATE chats SET interrupt_requested = true WHERE id = $1', [chat.id]);
        fx.control = 'interrupt';
        return { interrupted: true, status: 'running' };
      }
      if (chat.status === 'pending' || chat.status === 'requires_action') {
        const seq = await reserveSeqs(q, chat.id);
        let n = 0;
        if (chat.status === 'requires_action') {
          const msgs = cancelActions(chat, 'interrupted by the user', () => seq(++n));
          await insertMessages(q, chat.id, msgs);
          for (const m of msgs) fx.events.push(ev(chat.id, m.seq, 'message', { message: m }));
        }
        const next = await this.promoteOrIdle(q, chat, () => seq(++n), fx);
        await storeEvents(q, fx.events);
        return { interrupted: true, status: next };
      }
      return { interrupted: false, status: chat.status };
    });
  }

  /** Answers the client-side tool calls of a chat in requires_action. */
  async submitToolResults(userId: string, chatId: string, results: { tool_call_id: string; output: string; is_error?: boolean }[]) {
    return this.mutate(userId, chatId, async (q, chat, fx) => {
      if (chat.status !== 'requires_action') throw conflict(`the chat is ${chat.status}, not waiting for tool results`, 'not_requires_action');
      const pending = chat.pending_actions ?? [];
      const want = new Set(pending.map((p) => p.tool_call_id));
      const got = new Set<string>();
      for (const r of results) {
        if (!want.has(r.tool_call_id)) throw badRequest(`unexpected tool_call_id "${r.tool_call_id}"`, 'invalid_tool_results');
        if (got.has(r.tool_call_id)) throw badRequest(`duplicate tool_call_id "${r.tool_call_id}"`, 'invalid_tool_results');
        got.add(r.tool_call_id);
      }
      const missing = [...want].filter((id) => !got.has(id));
      if (missing.length) throw badRequest(`missing results for ${missing.join(', ')}`, 'invalid_tool_results');
      const seq = await reserveSeqs(q, chat.id);
      let n = 0;
      const msgs: Message[] = results.map((r) => ({
        id: newId(),
        seq: seq(++n),
        role: 'tool',
        parts: [{ type: 'tool_result', tool_call_id: r.tool_call_id, name: pending.find((p) => p.tool_call_id === r.tool_call_id)!.name, output: r.output, ...(r.is_error ? { is_error: true } : {}) }],
      }));
      await insertMessages(q, chat.id, msgs);
      await q.query(
        `UPDATE chats SET status = 'pending', pending_actions = NULL, action_deadline = NULL, last_error = NULL WHERE id = $1`,
        [chat.id],
      );
      for (const m of msgs) fx.events.push(ev(chat.id, m.seq, 'message', { message: m }));
      fx.events.push(ev(chat.id, seq(++n), 'status', { status: 'pending' }));
      await storeEvents(q, fx.events);
      fx.wake = true;
      return { status: 'pending' };
    });
  }

  async deleteQueued(userId: string, chatId: string, queuedId: number) {
    return this.mutate(userId, chatId, async (q, chat, fx) => {
      const rows = await q.query('DELETE FROM chat_queue WHERE id = $1 AND chat_id = $2 RETURNING id', [queuedId, chat.id]);
      if (!rows.length) throw notFound('queued message');
      const queue = await loadQueue(q, chat.id);
      fx.events.push(ev(chat.id, undefined, 'queue', { queue }));
      return { queue };
    });
  }

  async setArchived(userId: string, chatId: string, archived: boolean) {
    return this.mutate(userId, chatId, async (q, chat, fx) => {
      if (chat.archived === archived) return chatOut(chat);
      const stop = archived && (chat.status === 'running' || chat.status === 'pending');
      const seq = stop ? await reserveSeqs(q, chat.id) : null;
      const rows = await q.query<ChatRow>(
        `UPDATE chats SET archived = $2, status = CASE WHEN $3 THEN 'waiting' ELSE status END,
           worker_id = CASE WHEN $3 THEN NULL ELSE worker_id END, lease_until = CASE WHEN $3 THEN NULL ELSE lease_until END,
           updated_at = now()
         WHERE id = $1 RETURNING *`,
        [chat.id, archived, stop],
      );
      if (seq) {
        fx.events.push(ev(chat.id, seq(1), 'status', { status: 'waiting' }));
        await storeEvents(q, fx.events);
        if (chat.status === 'running') fx.control = 'cancel';
      }
      const out = chatOut(rows[0]!);
      fx.events.push(ev(chat.id, undefined, 'chat', { chat: out }));
      return out;
    });
  }

  async remove(userId: string, chatId: string) {
    return this.mutate(userId, chatId, async (q, chat, fx) => {
      await q.query('DELETE FROM chats WHERE id = $1', [chat.id]);
      fx.events.push(ev(chat.id, undefined, 'deleted'));
      fx.control = 'cancel';
      return { deleted: true };
    });
  }

  /** Chats whose client did not answer tool calls in time end in error with synthetic results. */
  async expireActions(): Promise<void> {
    const ids = await this.db.query<{ id: string }>(
      `SELECT id FROM chats WHERE status = 'requires_action' AND action_deadline < now() LIMIT 100`,
    );
    for (const { id } of ids) {
      const fx: Effects = { events: [] };
      await this.db.tx(async (q) => {
        const chat = await lockChat(q, id);
        if (!chat || chat.status !== 'requires_action') return;
        const seq = await reserveSeqs(q, id);
        let n = 0;
        const msgs = cancelActions(chat, 'the client did not return a result in time', () => seq(++n));
        await insertMessages(q, id, msgs);
        const error = 'client-side tool results were not submitted in time (AIRLOCK_ACTION_TIMEOUT_MS)';
        await q.query(
          `UPDATE chats SET status = 'error', last_error = $2, pending_actions = NULL, action_deadline = NULL WHERE id = $1`,
          [id, error],
        );
        for (const m of msgs) fx.events.push(ev(id, m.seq, 'message', { message: m }));
        fx.events.push(ev(id, seq(++n), 'status', { status: 'error', error }));
        await storeEvents(q, fx.events);
      });
      this.publish(id, fx);
    }
  }

  /** After an interrupt outside a running turn: run the next queued message, else go idle. */
  private async promoteOrIdle(q: Queryable, chat: ChatRow, nextSeq: () => number, fx: Effects): Promise<string> {
    const head = await popQueueHead(q, chat.id);
    if (head !== null) {
      const msg = userMessage(head, nextSeq());
      await insertMessages(q, chat.id, [msg]);
      fx.events.push(ev(chat.id, msg.seq, 'message', { message: msg }));
    }
    const status = head !== null ? 'pending' : 'waiting';
    await q.query(
      `UPDATE chats SET status = $2, pending_actions = NULL, action_deadline = NULL, interrupt_requested = false WHERE id = $1`,
      [chat.id, status],
    );
    fx.events.push(ev(chat.id, nextSeq(), 'status', { status }));
    if (head !== null) {
      fx.wake = true;
      fx.events.push(ev(chat.id, undefined, 'queue', { queue: await loadQueue(q, chat.id) }));
    }
    return status;
  }
}

function cancelActions(chat: ChatRow, why: string, nextSeq: () => number): Message[] {
  return (chat.pending_actions ?? []).map((p) => ({
    id: newId(),
    seq: nextSeq(),
    role: 'tool' as const,
    parts: [{ type: 'tool_result' as const, tool_call_id: p.tool_call_id, name: p.name, output: `tool call cancelled: ${why}`, is_error: true }],
  }));
}

export function validateClientTools(tools: unknown[], toolbox: ToolBox): asserts tools is ClientTool[] {
  const names = new Set<string>();
  for (const [i, t] of tools.entries()) {
    const tool = t as ClientTool;
    if (!tool || typeof tool !== 'object' || Array.isArray(tool)) throw badRequest(`tools[${i}] must be an object`, 'invalid_field');
    if (typeof tool.name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(tool.name)) {
      throw badRequest(`tools[${i}].name must be 1-64 letters, digits, _ or -`, 'invalid_field');
    }
    if (toolbox.find(tool.name)) throw badRequest(`tools[${i}].name "${tool.name}" is a built-in tool`, 'invalid_field');
    if (names.has(tool.name)) throw badRequest(`tools[${i}].name "${tool.name}" is declared twice`, 'invalid_field');
    names.add(tool.name);
    if (tool.description !== undefined && typeof tool.description !== 'string') throw badRequest(`tools[${i}].description must be a string`, 'invalid_field');
    if (tool.parameters !== undefined && (typeof tool.parameters !== 'object' || tool.parameters === null || Array.isArray(tool.parameters))) {
      throw badRequest(`tools[${i}].parameters must be a JSON schema object`, 'invalid_field');
    }
  }
}

export { ApiError };

/** Refuses a new turn to a user who has `limit` (AIRLOCK_USER_RUNNING_TURNS) running or waiting (one user must not take every worker slot). */
async function checkTurnSlot(q: Queryable, userId: string, limit: number): Promise<void> {
  const rows = await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM chats WHERE owner_id = $1 AND status IN ('pending', 'running')`, [userId]);
  if (Number(rows[0]!.n) >= limit) {
    throw tooMany(`you have ${limit} turns running or waiting (the limit per user); send again when one has finished`, 'too_many_turns');
  }
}

/** Refuses a new chat to a user who created `limit` (AIRLOCK_USER_CHATS_PER_MINUTE) in the last minute. */
async function checkNewChat(q: Queryable, userId: string, limit: number): Promise<void> {
  const rows = await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM chats WHERE owner_id = $1 AND created_at > now() - interval '1 minute'`, [userId]);
  if (Number(rows[0]!.n) >= limit) throw tooMany(`you created ${limit} chats in the last minute (the limit per user); try again shortly`, 'too_many_chats');
}
