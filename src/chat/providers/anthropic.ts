// Anthropic messages API, streamed.
import Anthropic from '@anthropic-ai/sdk';
import type { Message } from '../types.js';
import { type LlmEvent, type LlmRequest, type Provider, ProviderError, parseArgs, retryAfterMs, retryableStatus } from './types.js';

export interface AnthropicConfig {
  baseUrl?: string;
  apiKey?: string;
  timeoutMs: number;
}

export class AnthropicProvider implements Provider {
  readonly name = 'anthropic';
  private client: Anthropic;

  constructor(cfg: AnthropicConfig) {
    this.client = new Anthropic({
      apiKey: cfg.apiKey || 'none',
      baseURL: cfg.baseUrl || undefined,
      maxRetries: 0,
      timeout: cfg.timeoutMs,
    });
  }

  async *stream(req: LlmRequest): AsyncIterable<LlmEvent> {
    let stream;
    try {
      stream = await this.client.messages.create(
        {
          model: req.model,
          max_tokens: req.maxTokens ?? 8192,
          messages: toAnthropic(req.messages),
          stream: true,
          ...(req.system ? { system: req.system } : {}),
          ...(req.tools.length
            ? { tools: req.tools.map((t) => ({ name: t.name, description: t.description, input_schema: t.parameters as any })) }
            : {}),
        },
        { signal: req.signal },
      );
    } catch (err) {
      throw mapError(err);
    }
    const blocks = new Map<number, { type: string; id?: string; name?: string; json: string }>();
    let input = 0;
    let output = 0;
    let finish = 'end_turn';
    try {
      for await (const ev of stream as AsyncIterable<any>) {
        switch (ev.type) {
          case 'message_start':
            input = ev.message?.usage?.input_tokens ?? 0;
            output = ev.message?.usage?.output_tokens ?? 0;
            break;
          case 'content_block_start':
            blocks.set(ev.index, { type: ev.content_block.type, id: ev.content_block.id, name: ev.content_block.name, json: '' });
            if (ev.content_block.type === 'text' && ev.content_block.text) yield { type: 'text', text: ev.content_block.text };
            break;
          case 'content_block_delta': {
            const d = ev.delta;
            if (d.type === 'text_delta') yield { type: 'text', text: d.text };
            else if (d.type === 'thinking_delta') yield { type: 'reasoning', text: d.thinking };
            else if (d.type === 'input_json_delta') {
              const b = blocks.get(ev.index);
              if (b) b.json += d.partial_json;
            }
            break;
          }
          case 'content_block_stop': {
            const b = blocks.get(ev.index);
            if (b?.type === 'tool_use') yield { type: 'tool_call', id: b.id ?? `toolu_${ev.index}`, name: b.name ?? '', args: parseArgs(b.json) };
            break;
          }
          case 'message_delta':
            if (ev.usage?.output_tokens !== undefined) output = ev.usage.output_tokens;
            if (ev.delta?.stop_reason) finish = ev.delta.stop_reason;
            break;
        }
      }
    } catch (err) {
      throw mapError(err);
    }
    yield { type: 'usage', input_tokens: input, output_tokens: output };
    yield { type: 'finish', reason: finish };
  }
}

function toAnthropic(messages: Message[]): any[] {
  const out: { role: 'user' | 'assistant'; content: any[] }[] = [];
  const push = (role: 'user' | 'assistant', blocks: any[]) => {
    if (!blocks.length) blocks = [{ type: 'text', text: '(empty)' }];
    const last = out[out.length - 1];
    if (last && last.role === role) last.content.push(...blocks);
    else out.push({ role, content: blocks });
  };
  for (const m of messages) {
    const blocks: any[] = [];
    for (const p of m.parts) {
      if (p.type === 'text' && p.text) blocks.push({ type: 'text', text: p.text });
      else if (p.type === 'tool_call') blocks.push({ type: 'tool_use', id: p.id, name: p.name, input: p.args ?? {} });
      else if (p.type === 'tool_result') {
        blocks.push({ type: 'tool_result', tool_use_id: p.tool_call_id, content: p.output, ...(p.is_error ? { is_error: true } : {}) });
      }
    }
    push(m.role === 'assistant' ? 'assistant' : 'user', blocks);
  }
  return out;
}

function mapError(err: unknown): Error {
  if (err instanceof ProviderError) return err;
  if (err instanceof Anthropic.APIUserAbortError) return err;
  if (err instanceof Anthropic.APIError && typeof err.status === 'number') {
    const msg = (err.error as any)?.error?.message ?? err.message;
    return new ProviderError(`provider returned ${err.status}: ${msg}`, retryableStatus(err.status), err.status, retryAfterMs(err.headers as any));
  }
  const e = err as Error;
  if (e?.name === 'AbortError') return e;
  // An `error` event inside the SSE stream (e.g. overloaded_error) arrives as an APIError without status.
  const text = e?.message ?? String(err);
  const overloaded = /overloaded|rate_limit|api_error/i.test(text);
  return new ProviderError(`provider stream failed: ${text}`, overloaded || !(err instanceof Anthropic.APIError));
}
