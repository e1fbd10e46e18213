// Every change of a chat's state, as the table in docs/ARCHITECTURE.md lists them. The API's
// commands run here, each in one transaction behind the chat's row lock (the send is one
// statement: sql/sendMessage.ts); the worker's claim, step commits and release are single
// statements of their own (sql/claimChats.ts, sql/commitSteps.ts), and its promotion of the queue
// head is promoteQueued below. A transition returns what to publish once it has committed.
import type { Queryable } from '../store/db.js';
import { badRequest, conflict, notFound, tooMany } from '../errors.js';
import { type ChatRow, type ChatChange, activeTurns, changeChat, chatOut, deleteChat, insertChat, openEpoch } from './sql/chats.js';
import { storeEvents } from './sql/events.js';
import { deleteMessagesFrom, findMessage, insertMessages } from './sql/messages.js';
import { type QueuedMessage, clearQueue, deleteQueued, loadQueue, popQueueHead } from './sql/queue.js';
import { type Fence, lockFenced } from './sql/commitSteps.js';
import { type ChatStatus, type ClientTool, type Message, type StreamEvent, ev, newId, userMessage } from './types.js';

/** What a committed transition publishes: stream events, a wake signal, a command to the chat's running worker. */
export interface Effects {
  events: StreamEvent[];
  wake?: boolean;
  control?: 'interrupt' | 'cancel';
  /** The epoch of the run that `control` is for (the chat's as the command found it). */
  epoch?: number;
}

/** A command on a locked chat. */
export type Transition<I, O> = (q: Queryable, chat: ChatRow, input: I, fx: Effects) => Promise<O>;

/** A new chat; with a first message it is pending at once. */
export async function createChat(
  q: Queryable,
  c: { owner_id: string; title: string; title_source: 'user' | 'fallback'; model: string; system_prompt: string | null; client_tools: ClientTool[]; message?: string },
  fx: Effects,
): Promise<ChatRow> {
  const chat = await insertChat(q, { ...c, status: c.message === undefined ? 'waiting' : 'pending' });
  if (c.message === undefined) return chat;
  const seq = await openEpoch(q, chat.id);
  const msg = userMessage(c.message, seq(1));
  await insertMessages(q, chat.id, [msg]);
  fx.events.push(ev(chat.id, seq(1), 'message', { message: msg }), ev(chat.id, seq(2), 'status', { status: 'pending' }));
  await storeEvents(q, fx.events);
  fx.wake = true;
  return { ...chat, epoch: chat.epoch + 1 };
}

export const updateSettings: Transition<{ title?: string; model?: string; system_prompt?: string | null }, ReturnType<typeof chatOut>> = async (q, chat, input, fx) => {
  const change: ChatChange = { model: input.model, system_prompt: input.system_prompt };
  if (input.title !== undefined) Object.assign(change, { title: input.title, title_source: 'user' });
  const out = chatOut(await changeChat(q, chat.id, change));
  fx.events.push(ev(chat.id, undefined, 'chat', { chat: out }));
  return out;
};

/** Replaces a user message: it and everything after it (and the queue) are discarded, and the chat runs again. */
export const edit: Transition<{ messageId: string; content: string; turnLimit: number }, { message: Message }> = async (q, chat, input, fx) => {
  const target = await findMessage(q, chat.id, input.messageId);
  if (!target) throw notFound('message');
  if (target.role !== 'user') throw badRequest('only user messages can be edited', 'not_user_message');
  if (chat.status !== 'pending' && chat.status !== 'running') await needTurnSlot(q, chat.owner_id, input.turnLimit);
  await deleteMessagesFrom(q, chat.id, target.seq);
  await clearQueue(q, chat.id);
  const seq = await openEpoch(q, chat.id);
  const msg = userMessage(input.content, seq(2));
  await insertMessages(q, chat.id, [msg]);
  await changeChat(q, chat.id, { ...RUN_CLEARED, status: 'pending', interrupt_requested: false });
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
};

/** Stops the running turn (its worker keeps the partial reply), or ends a pending or requires_action one here. */
export const interrupt: Transition<void, { interrupted: boolean; status: string }> = async (q, chat, _input, fx) => {
  if (chat.status === 'running') {
    await changeChat(q, chat.id, { interrupt_requested: true });
    fx.control = 'interrupt';
    return { interrupted: true, status: 'running' };
  }
  if (chat.status !== 'pending' && chat.status !== 'requires_action') return { interrupted: false, status: chat.status };
  const seq = await openEpoch(q, chat.id);
  let n = 0;
  const next = () => seq(++n);
  const msgs = chat.status === 'requires_action' ? cancelActions(chat, 'interrupted by the user', next) : [];
  await insertMessages(q, chat.id, msgs);
  for (const m of msgs) fx.events.push(ev(chat.id, m.seq, 'message', { message: m }));
  const head = await popQueueHead(q, chat.id);
  if (head !== null) {
    const msg = userMessage(head, next());
    await insertMessages(q, chat.id, [msg]);
    fx.events.push(ev(chat.id, msg.seq, 'message', { message: msg }));
  }
  const status: ChatStatus = head !== null ? 'pending' : 'waiting';
  await changeChat(q, chat.id, { status, pending_actions: null, action_deadline: null, interrupt_requested: false });
  fx.events.push(ev(chat.id, next(), 'status', { status }));
  await storeEvents(q, fx.events);
  if (head !== null) {
    fx.wake = true;
    fx.events.push(ev(chat.id, undefined, 'queue', { queue: await loadQueue(q, chat.id) }));
  }
  return { interrupted: true, status };
};

/** Answers every client-side tool call of a chat in requires_action; it turns pending. */
export const submitToolResults: Transition<{ tool_call_id: string; output: string; is_error?: boolean }[], { status: string }> = async (q, chat, results, fx) => {
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
  const seq = await openEpoch(q, chat.id);
  let n = 0;
  const msgs: Message[] = results.map((r) => ({
    id: newId(),
    seq: seq(++n),
    role: 'tool',
    parts: [{ type: 'tool_result', tool_call_id: r.tool_call_id, name: pending.find((p) => p.tool_call_id === r.tool_call_id)!.name, output: r.output, ...(r.is_error ? { is_error: true } : {}) }],
  }));
  await insertMessages(q, chat.id, msgs);
  await changeChat(q, chat.id, { status: 'pending', pending_actions: null, action_deadline: null, last_error: null });
  for (const m of msgs) fx.events.push(ev(chat.id, m.seq, 'message', { message: m }));
  fx.events.push(ev(chat.id, seq(++n), 'status', { status: 'pending' }));
  await storeEvents(q, fx.events);
  fx.wake = true;
  return { status: 'pending' };
};

/** Ends a requires_action chat whose client did not answer in time: error, with a failed result for each call. */
export const expireActions: Transition<string, void> = async (q, chat, error, fx) => {
  if (chat.status !== 'requires_action') return;
  const seq = await openEpoch(q, chat.id);
  let n = 0;
  const msgs = cancelActions(chat, 'the client did not return a result in time', () => seq(++n));
  await insertMessages(q, chat.id, msgs);
  await changeChat(q, chat.id, { status: 'error', last_error: error, pending_actions: null, action_deadline: null });
  for (const m of msgs) fx.events.push(ev(chat.id, m.seq, 'message', { message: m }));
  fx.events.push(ev(chat.id, seq(++n), 'status', { status: 'error', error }));
  await storeEvents(q, fx.events);
};

export const removeQueued: Transition<number, { queue: QueuedMessage[] }> = async (q, chat, id, fx) => {
  if (!(await deleteQueued(q, chat.id, id))) throw notFound('queued message');
  const queue = await loadQueue(q, chat.id);
  fx.events.push(ev(chat.id, undefined, 'queue', { queue }));
  return { queue };
};

/** Archiving stops a pending or running turn (the chat waits); unarchiving changes only the flag. */
export const setArchived: Transition<boolean, ReturnType<typeof chatOut>> = async (q, chat, archived, fx) => {
  if (chat.archived === archived) return chatOut(chat);
  const stop = archived && (chat.status === 'running' || chat.status === 'pending');
  const seq = stop ? await openEpoch(q, chat.id) : null;
  const row = await changeChat(q, chat.id, stop ? { archived, status: 'waiting', worker_id: null, lease_until: null } : { archived }, true);
  if (seq) {
    fx.events.push(ev(chat.id, seq(1), 'status', { status: 'waiting' }));
    await storeEvents(q, fx.events);
    if (chat.status === 'running') fx.control = 'cancel';
  }
  const out = chatOut(row);
  fx.events.push(ev(chat.id, undefined, 'chat', { chat: out }));
  return out;
};

export const remove: Transition<void, { deleted: true }> = async (q, chat, _input, fx) => {
  await deleteChat(q, chat.id);
  fx.events.push(ev(chat.id, undefined, 'deleted'));
  fx.control = 'cancel';
  return { deleted: true };
};

/**
 * The worker's turn ended with messages in the queue: the head becomes the next turn's message,
 * under the worker's fence. 'lost': the fence no longer holds; null: the queue emptied meanwhile.
 */
export async function promoteQueued(q: Queryable, fence: Fence, seq: () => number): Promise<{ events: StreamEvent[]; queue: QueuedMessage[] } | null | 'lost'> {
  if (!(await lockFenced(q, fence))) return 'lost';
  const content = await popQueueHead(q, fence.chatId);
  if (content === null) return null;
  const msg = userMessage(content, seq());
  await insertMessages(q, fence.chatId, [msg]);
  await changeChat(q, fence.chatId, { interrupt_requested: false }, true);
  const events = [ev(fence.chatId, msg.seq, 'message', { message: msg })];
  await storeEvents(q, events);
  return { events, queue: await loadQueue(q, fence.chatId) };
}

/** Refuses a new turn to a user who has `limit` (AIRLOCK_USER_RUNNING_TURNS) running or waiting: one user must not take every worker slot. */
export async function needTurnSlot(q: Queryable, ownerId: string, limit: number): Promise<void> {
  if ((await activeTurns(q, ownerId)) >= limit) throw turnLimitError(limit);
}

export const turnLimitError = (limit: number) =>
  tooMany(`you have ${limit} turns running or waiting (the limit per user); send again when one has finished`, 'too_many_turns');

/** The columns of a run that a command which restarts the chat clears. */
const RUN_CLEARED = { worker_id: null, lease_until: null, last_error: null, pending_actions: null, action_deadline: null } as const;

function cancelActions(chat: ChatRow, why: string, nextSeq: () => number): Message[] {
  return (chat.pending_actions ?? []).map((p) => ({
    id: newId(),
    seq: nextSeq(),
    role: 'tool' as const,
    parts: [{ type: 'tool_result' as const, tool_call_id: p.tool_call_id, name: p.name, output: `tool call cancelled: ${why}`, is_error: true }],
  }));
}
