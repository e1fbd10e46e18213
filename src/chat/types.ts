// Chat data model and the stream's event vocabulary.
import crypto from 'node:crypto';

export type ChatStatus = 'waiting' | 'pending' | 'running' | 'requires_action' | 'error';

/** Statuses that end a turn (published once the turn is stored). */
export const TURN_ENDS: ReadonlySet<string> = new Set<ChatStatus>(['waiting', 'error', 'requires_action']);

export type Part =
  | { type: 'text'; text: string }
  | { type: 'reasoning'; text: string }
  | { type: 'tool_call'; id: string; name: string; args: unknown }
  | { type: 'tool_result'; tool_call_id: string; name: string; output: string; is_error?: boolean };

export type Role = 'user' | 'assistant' | 'tool';

export interface Message {
  id: string;
  seq: number;
  role: Role;
  parts: Part[];
  interrupted?: boolean;
  model?: string | null;
  usage?: Usage | null;
  created_at?: string;
}

export interface Usage {
  input_tokens: number;
  output_tokens: number;
}

/** A tool the client runs itself: the chat parks in requires_action until it posts results. */
export interface ClientTool {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

export interface PendingAction {
  tool_call_id: string;
  name: string;
  args: unknown;
}

/**
 * Stream events. Sequenced ones carry a per-chat `seq` that only grows; a client resumes with
 * `?after=<last seq it saw>`. Durable types are stored and replayed from the database; draft types
 * (text being generated) live in memory and are superseded by the `message` event of their step.
 * Unsequenced types (queue, chat, caught_up, resync, deleted) describe current state.
 */
export const DURABLE_TYPES = ['status', 'message', 'error', 'history_truncated', 'action_required', 'approval_required', 'approval_decided'] as const;
export const DRAFT_TYPES = ['delta', 'tool_call', 'tool_output', 'tool_result', 'retry'] as const;
export type DurableType = (typeof DURABLE_TYPES)[number];
export type DraftType = (typeof DRAFT_TYPES)[number];
export type EventType = DurableType | DraftType | 'queue' | 'chat' | 'caught_up' | 'resync' | 'deleted';

export interface StreamEvent {
  chat_id: string;
  type: EventType;
  seq?: number;
  [key: string]: unknown;
}

// seq = epoch * 2^21 + n. The epoch comes from the chat row (bumped under its lock by every
// transaction that emits events and by every acquisition), n counts within the epoch. So the
// database and the worker that owns the chat never hand out the same number, and events of a
// newer owner always sort after those of an older one.
export const EPOCH_SPAN = 2 ** 21;
export const seqOf = (epoch: number, n: number) => epoch * EPOCH_SPAN + n;
/** The same formula in SQL, for statements that number events themselves. */
export const seqSql = (epoch: string, n: number) => `(${epoch}) * ${EPOCH_SPAN} + ${n}`;
export const epochOf = (seq: number) => Math.floor(seq / EPOCH_SPAN);

export const isDurable = (t: string): t is DurableType => (DURABLE_TYPES as readonly string[]).includes(t);
export const isDraft = (t: string): t is DraftType => (DRAFT_TYPES as readonly string[]).includes(t);

export function textOf(parts: Part[]): string {
  return parts
    .filter((p): p is { type: 'text'; text: string } => p.type === 'text')
    .map((p) => p.text)
    .join('');
}

export const newId = () => crypto.randomUUID();

export function userMessage(content: string, seq: number, id: string = newId()): Message {
  return { id, seq, role: 'user', parts: [{ type: 'text', text: content }] };
}

export const ev = (chat_id: string, seq: number | undefined, type: StreamEvent['type'], data: Record<string, unknown> = {}): StreamEvent =>
  seq === undefined ? { chat_id, type, ...data } : { chat_id, seq, type, ...data };
