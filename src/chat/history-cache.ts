// The histories of the chats a worker ran last. A turn starts by reading the chat's history; with
// this, it reads only the messages stored since its previous turn here (usually the one user
// message), checked against the stored count (see loadMessagesAfter), instead of every message:
// the read grew with the chat and was the largest statement of a turn.
import type { Message } from './types.js';

export interface CachedHistory {
  messages: Message[];
  /** The epoch of the run that stored it: a later epoch means someone else changed the chat since. */
  epoch: number;
}

/**
 * Whether `h` is still the chat's stored history, given the epoch and the seq of the last stored
 * message a send found it at: every change to a chat's messages takes a new epoch, so the same
 * epoch means nothing changed since the run that cached it; the last seq checks that the run
 * stored what it cached (a run stores its steps in order and stops at the first that fails, so
 * what it stored is a prefix of what it holds).
 */
export const isCurrent = (h: CachedHistory, epochBefore: number, lastSeqBefore: number | null): boolean =>
  h.epoch === epochBefore && (h.messages.at(-1)?.seq ?? null) === lastSeqBefore;

export class HistoryCache {
  private chats = new Map<string, CachedHistory>();

  constructor(
    private maxChats = 1_000,
    private maxMessages = 5_000,
  ) {}

  get(chatId: string): CachedHistory | undefined {
    const h = this.chats.get(chatId);
    if (!h) return undefined;
    this.chats.delete(chatId); // most recently used last
    this.chats.set(chatId, h);
    return h;
  }

  set(chatId: string, history: Message[], epoch: number): void {
    this.chats.delete(chatId);
    if (history.length > this.maxMessages) return;
    this.chats.set(chatId, { messages: [...history], epoch });
    if (this.chats.size > this.maxChats) this.chats.delete(this.chats.keys().next().value!);
  }

  delete(chatId: string): void {
    this.chats.delete(chatId);
  }
}
