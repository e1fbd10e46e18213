// The provider interface the chat loop talks to; one implementation per wire protocol.
import type { Message } from '../types.js';

export interface ToolSpec {
  name: string;
  description: string;
  parameters: Record<string, unknown>;
}

export interface LlmRequest {
  model: string;
  system?: string | null;
  messages: Message[];
  tools: ToolSpec[];
  signal: AbortSignal;
  maxTokens?: number;
}

export type LlmEvent =
  /** tokens: how many of the provider's deltas were merged into this one (1 when absent). */
  | { type: 'text'; text: string; tokens?: number }
  | { type: 'reasoning'; text: string; tokens?: number }
  | { type: 'tool_call'; id: string; name: string; args: unknown }
  | { type: 'usage'; input_tokens: number; output_tokens: number }
  | { type: 'finish'; reason: string };

export interface Provider {
  readonly name: string;
  stream(req: LlmRequest): AsyncIterable<LlmEvent>;
}

/** The wire formats a provider's stream is read in (decoders.ts makes the reader of each). */
export type StreamFormat = 'openai' | 'anthropic';

/**
 * Reads one call's server-sent events into the events the chat loop gets: a batch at a time (the
 * events of one read), then end() once the stream has ended. Holds the call's state (partial tool
 * calls, usage, the learned delta shape).
 */
export interface StreamDecoder {
  /** Adds the batch's events to `out`; throws (a ProviderError) when the stream reports an error, after adding what came before it. */
  read(batch: { event: string; data: string }[], out: LlmEvent[]): void;
  /** The events that follow the stream's end (tool calls gathered from their deltas, usage, finish). */
  end(): LlmEvent[];
}

/**
 * Adds a text or reasoning delta (of `tokens` provider deltas) to the events of one read: it joins
 * the last one when that is of the same kind, so a burst read at once streams as one event (no
 * delay is added to merge).
 */
export function appendDelta(out: LlmEvent[], type: 'text' | 'reasoning', text: string, tokens = 1): void {
  const last = out[out.length - 1];
  if (last?.type === type) {
    last.text += text;
    last.tokens = (last.tokens ?? 1) + tokens;
  } else out.push(tokens === 1 ? { type, text } : { type, text, tokens });
}

/** Adds `more` to `into` as if read together: a text or reasoning delta joins a last one of its kind. */
export function mergeEvents(into: LlmEvent[], more: LlmEvent[]): void {
  for (const e of more) {
    if (e.type === 'text' || e.type === 'reasoning') appendDelta(into, e.type, e.text, e.tokens ?? 1);
    else into.push(e);
  }
}

export class ProviderError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** Maps an HTTP status from a provider to "try again later" (true) or "this will not work" (false). */
export const retryableStatus = (status: number) => status === 408 || status === 409 || status === 429 || status >= 500;

export function retryAfterMs(headers: Headers | Record<string, string> | undefined): number | undefined {
  if (!headers) return undefined;
  const get = (k: string) => (headers instanceof Headers ? headers.get(k) : (headers as Record<string, string>)[k]);
  const ms = get('retry-after-ms');
  if (ms && Number.isFinite(Number(ms))) return Number(ms);
  const s = get('retry-after');
  if (s && Number.isFinite(Number(s))) return Number(s) * 1000;
  return undefined;
}

export function parseArgs(raw: string): unknown {
  if (!raw.trim()) return {};
  try {
    return JSON.parse(raw);
  } catch {
    return { _invalid_json: raw };
  }
}
