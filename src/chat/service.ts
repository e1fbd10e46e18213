// The chat API's commands: validation, a transition (state.ts), and publishing its effects once
// it has committed (events, the wake signal, commands to the chat's worker).
import type { Bus } from '../bus/bus.js';
import type { Db } from '../store/db.js';
import type { Config } from '../config.js';
import { ApiError, conflict, notFound, badRequest, tooMany } from '../errors.js';
import type { Providers } from './providers/index.js';
import { ToolBox } from './tools/index.js';
import type { Runner } from './runner.js';
import { type ChatRow, chatOut, chatsLastMinute, listChats, lockChat, overdueActions, readChat } from './sql/chats.js';
import { lastEventSeq } from './sql/events.js';
import { loadMessages } from './sql/messages.js';
import { type QueuedMessage, loadQueue } from './sql/queue.js';
import { SendStatement } from './sql/sendMessage.js';
import * as state from './state.js';
import { waitingApprovals } from '../agent/approvals.js';
import { type Effects, type Transition, needTurnSlot, turnLimitError } from './state.js';
import { type ClientTool, type Message, ev, newId } from './types.js';

export interface CreateChatInput {
  title?: string;
  model?: string;
  system_prompt?: string;
  message?: string;
  tools?: ClientTool[];
}

const fallbackTitle = (text: string) => {
  const words = text.trim().split(/\s+/).slice(0, 6).join(' ');
  return words.length > 80 ? words.slice(0, 79) + '…' : words;
};

export class ChatService {
  /** This replica's worker: a send it can serve is claimed for it in the send's own statement. */
  private runner: Runner | null = null;
  private sends: SendStatement;

  constructor(
    private db: Db,
    private bus: Bus,
    private providers: Providers,
    private tools: ToolBox,
    private limits: Pick<Config, 'maxQueue' | 'leaseMs' | 'userRunningTurns' | 'userChatsPerMinute'>,
  ) {
    this.sends = new SendStatement(db, () => ({
      // No provider at all: every model is unservable, and providers.check says how to configure one.
      unservable: this.providers.unservablePrefixes() ?? ['%'],
      turnsPerUser: this.limits.userRunningTurns,
      maxQueue: this.limits.maxQueue,
    }));
  }

  attachRunner(runner: Runner | null): void {
    this.runner = runner;
  }

  private publish(chatId: string, fx: Effects): void {
    for (const e of fx.events) this.bus.publish('events', e);
    if (fx.control) this.bus.publish('control', { chat_id: chatId, action: fx.control, epoch: fx.epoch });
    if (fx.wake) this.bus.publish('wake', { chat_id: chatId });
  }

  /** Runs a transition on the locked chat (404 unless it belongs to the user), then publishes its effects. */
  private async mutate<I, O>(userId: string, chatId: string, t: Transition<I, O>, input: I, check?: (chat: ChatRow) => void): Promise<O> {
    const fx: Effects = { events: [] };
    const out = await this.db.tx(async (q) => {
      const chat = await lockChat(q, chatId, userId);
      if (!chat) throw notFound('chat');
      check?.(chat);
      fx.epoch = Number(chat.epoch);
      return t(q, chat, input, fx);
    });
    this.publish(chatId, fx);
    return out;
  }

  /** A chat that will run: not archived, and a configured provider serves its model. */
  private runnable = (chat: ChatRow) => {
    if (chat.archived) throw conflict('the chat is archived; unarchive it first', 'archived');
    this.providers.check(chat.model);
  };

  async create(userId: string, input: CreateChatInput) {
    const model = input.model ?? this.providers.defaultModel();
    if (input.message !== undefined) this.providers.check(model);
    validateClientTools(input.tools ?? [], this.tools);
    const fx: Effects = { events: [] };
    const chat = await this.db.tx(async (q) => {
      const limit = this.limits.userChatsPerMinute;
      if ((await chatsLastMinute(q, userId)) >= limit) throw tooMany(`you created ${limit} chats in the last minute (the limit per user); try again shortly`, 'too_many_chats');
      if (input.message !== undefined) await needTurnSlot(q, userId, this.limits.userRunningTurns);
      return state.createChat(
        q,
        {
          owner_id: userId,
          title: input.title ?? (input.message ? fallbackTitle(input.message) : ''),
          title_source: input.title ? 'user' : 'fallback',
          model,
          system_prompt: input.system_prompt ?? null,
          client_tools: input.tools ?? [],
          message: input.message,
        },
        fx,
      );
    });
    this.publish(chat.id, fx);
    return chatOut(chat);
  }

  async list(userId: string, opts: { archived: boolean; limit: number; before?: string }) {
    return (await listChats(this.db, userId, opts)).map((r) => chatOut(r));
  }

  async get(userId: string, chatId: string) {
    const chat = await readChat(this.db, chatId, userId);
    if (!chat) throw notFound('chat');
    const [messages, queue, last_seq, approvals] = await Promise.all([
      loadMessages(this.db, chatId),
      loadQueue(this.db, chatId),
      lastEventSeq(this.db, chatId),
      waitingApprovals(this.db, chatId),
    ]);
    // A running turn whose agent waits for a person says so.
    const status = chat.status === 'running' && approvals.length ? 'requires_approval' : chat.status;
    return chatOut(chat, { messages, queue, last_seq, approvals, status });
  }

  /** Owner check without a lock (used by the stream endpoint). */
  async exists(userId: string, chatId: string): Promise<boolean> {
    return (await readChat(this.db, chatId, userId)) !== undefined;
  }

  async queue(chatId: string) {
    return loadQueue(this.db, chatId);
  }

  async update(userId: string, chatId: string, input: { title?: string; model?: string; system_prompt?: string | null }) {
    return this.mutate(userId, chatId, state.updateSettings, input);
  }

  /**
   * Sends a user message, in one statement (sql/sendMessage.ts). While a turn is running (or others
   * wait in the queue) it is queued and promoted in order after the turn; `busy: 'interrupt'` also
   * stops the running turn.
   */
  async send(userId: string, chatId: string, content: string, busy: 'queue' | 'interrupt' = 'queue'): Promise<{ queued: QueuedMessage | null; message: Message | null }> {
    // With a free slot here, the chat goes straight to this replica's worker: no wake signal, no
    // acquiring statement; clients still see message, pending, running. Else it turns pending and
    // the wake signal brings a worker (here or on another replica).
    const runner = this.runner?.reserve() ? this.runner : null;
    let r;
    try {
      r = await this.sends.send({ chatId, userId, msgId: newId(), content, claimer: runner?.workerId ?? null, leaseMs: runner?.leaseMs ?? this.limits.leaseMs, interrupt: busy === 'interrupt' });
    } finally {
      // The reserved slot goes back unless the send claimed the chat (adopted below).
      if (runner && !r?.claimed) runner.adopt(null);
    }
    if (!r) throw notFound('chat');
    switch (r.outcome) {
      case 'archived':
        throw conflict('the chat is archived; unarchive it first', 'archived');
      case 'unservable':
        this.providers.check(r.model);
        throw new ApiError(422, 'no_provider', `model "${r.model}" has no configured provider`);
      case 'queue_full':
        throw conflict(`the queue is full (${this.limits.maxQueue} messages)`, 'queue_full');
      case 'too_many_turns':
        throw turnLimitError(this.limits.userRunningTurns);
    }
    const fx: Effects = { events: [], epoch: r.epoch };
    const own = r.queued && { ...r.queued, content };
    if (r.message) {
      const { message, prevStatus } = r.message;
      fx.events.push(ev(chatId, message.seq, 'message', { message }));
      if (prevStatus !== 'pending') fx.events.push(ev(chatId, message.seq + 1, 'status', { status: 'pending' })); // event 2 of the message's epoch
      fx.wake = !r.claimed;
    }
    if (r.interrupted) fx.control = 'interrupt';
    if (own) fx.events.push(ev(chatId, undefined, 'queue', { queue: await loadQueue(this.db, chatId) }));
    this.publish(chatId, fx);
    if (runner && r.claimed) runner.adopt(r.claimed);
    return own ? { queued: own, message: null } : { queued: null, message: r.message!.message };
  }

  async edit(userId: string, chatId: string, messageId: string, content: string) {
    return this.mutate(userId, chatId, state.edit, { messageId, content, turnLimit: this.limits.userRunningTurns }, this.runnable);
  }

  async interrupt(userId: string, chatId: string) {
    return this.mutate(userId, chatId, state.interrupt, undefined);
  }

  async submitToolResults(userId: string, chatId: string, results: { tool_call_id: string; output: string; is_error?: boolean }[]) {
    return this.mutate(userId, chatId, state.submitToolResults, results);
  }

  async deleteQueued(userId: string, chatId: string, queuedId: number) {
    return this.mutate(userId, chatId, state.removeQueued, queuedId);
  }

  async setArchived(userId: string, chatId: string, archived: boolean) {
    return this.mutate(userId, chatId, state.setArchived, archived);
  }

  async remove(userId: string, chatId: string) {
    return this.mutate(userId, chatId, state.remove, undefined);
  }

  /** Chats whose client did not answer tool calls in time end in error with failed results. */
  async expireActions(): Promise<void> {
    const error = 'client-side tool results were not submitted in time (AIRLOCK_ACTION_TIMEOUT_MS)';
    for (const id of await overdueActions(this.db)) {
      const fx: Effects = { events: [] };
      await this.db.tx(async (q) => {
        const chat = await lockChat(q, id);
        if (chat) await state.expireActions(q, chat, error, fx);
      });
      this.publish(id, fx);
    }
  }
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
