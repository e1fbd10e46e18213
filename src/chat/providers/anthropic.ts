// Anthropic messages API, streamed.
import type { Message } from '../types.js';
import { type LlmEvent, type LlmRequest, type Provider, type StreamDecoder, ProviderError, appendDelta, parseArgs } from './types.js';
import { type SseEvent, decodedCall, eventJson, jsonBodyWithMessages, perMessageJson } from './sse-post.js';

const API_VERSION = '2023-06-01';

export interface AnthropicConfig {
  baseUrl?: string;
  apiKey?: string;
  timeoutMs: number;
}

export class AnthropicProvider implements Provider {
  readonly name = 'anthropic';
  private url: string;
  private headers: Record<string, string>;

  constructor(private cfg: AnthropicConfig) {
    this.url = `${(cfg.baseUrl || 'https://api.anthropic.com').replace(/\/+$/, '')}/v1/messages`;
    this.headers = { 'x-api-key': cfg.apiKey || 'none', 'anthropic-version': API_VERSION };
  }

  // Not retried here: the chat loop retries, with events the client can see.
  async *stream(req: LlmRequest): AsyncIterable<LlmEvent> {
    const body = jsonBodyWithMessages(
      {
        model: req.model,
        max_tokens: req.maxTokens ?? 8192,
        stream: true,
        ...(req.system ? { system: req.system } : {}),
        ...(req.tools.length ? { tools: req.tools.map((t) => ({ name: t.name, description: t.description, input_schema: t.parameters })) } : {}),
      },
      toAnthropic(req.messages),
    );
    yield* decodedCall(new AnthropicDecoder(), this.url, body, { headers: this.headers, signal: req.signal, timeoutMs: this.cfg.timeoutMs });
  }
}

/** Anthropic's message stream events as stream events. */
export class AnthropicDecoder implements StreamDecoder {
  private blocks = new Map<number, { type: string; id?: string; name?: string; json: string }>();
  private input = 0;
  private output = 0;
  private finish = 'end_turn';

  read(batch: SseEvent[], out: LlmEvent[]): void {
    const { blocks } = this;
    for (const sse of batch) {
      const ev = eventJson(sse.data);
      switch (ev?.type) {
        case 'message_start':
          this.input = ev.message?.usage?.input_tokens ?? 0;
          this.output = ev.message?.usage?.output_tokens ?? 0;
          break;
        case 'content_block_start':
          blocks.set(ev.index, { type: ev.content_block.type, id: ev.content_block.id, name: ev.content_block.name, json: '' });
          if (ev.content_block.type === 'text' && ev.content_block.text) appendDelta(out, 'text', ev.content_block.text);
          break;
        case 'content_block_delta': {
          const d = ev.delta;
          if (d.type === 'text_delta') appendDelta(out, 'text', d.text);
          else if (d.type === 'thinking_delta') appendDelta(out, 'reasoning', d.thinking);
          else if (d.type === 'input_json_delta') {
            const b = blocks.get(ev.index);
            if (b) b.json += d.partial_json;
          }
          break;
        }
        case 'content_block_stop': {
          const b = blocks.get(ev.index);
          if (b?.type === 'tool_use') out.push({ type: 'tool_call', id: b.id ?? `toolu_${ev.index}`, name: b.name ?? '', args: parseArgs(b.json) });
          break;
        }
        case 'message_delta':
          if (ev.usage?.output_tokens !== undefined) this.output = ev.usage.output_tokens;
          if (ev.delta?.stop_reason) this.finish = ev.delta.stop_reason;
          break;
        case 'error': {
          // An error inside the stream (e.g. overloaded_error after the 200); what was read before it still streams.
          const type = String(ev.error?.type ?? '');
          throw new ProviderError(`provider stream failed: ${ev.error?.message ?? type ?? 'error'}`, /overloaded|rate_limit|api_error/.test(type));
        }
      }
    }
  }

  end(): LlmEvent[] {
    return [
      { type: 'usage', input_tokens: this.input, output_tokens: this.output },
      { type: 'finish', reason: this.finish },
    ];
  }
}

/** A message's content blocks as JSON array items (a message without any gets an "(empty)" text block). */
const blocksJson = perMessageJson((m: Message): string => {
  const blocks: unknown[] = [];
  for (const p of m.parts) {
    if (p.type === 'text' && p.text) blocks.push({ type: 'text', text: p.text });
    else if (p.type === 'tool_call') blocks.push({ type: 'tool_use', id: p.id, name: p.name, input: p.args ?? {} });
    else if (p.type === 'tool_result') {
      blocks.push({ type: 'tool_result', tool_use_id: p.tool_call_id, content: p.output, ...(p.is_error ? { is_error: true } : {}) });
    }
  }
  if (!blocks.length) blocks.push({ type: 'text', text: '(empty)' });
  return blocks.map((b) => JSON.stringify(b)).join(',');
});

/** Anthropic's `messages` as JSON array items: roles alternate, so consecutive messages of one role share an entry. */
function toAnthropic(messages: Message[]): Buffer[] {
  const out: Buffer[] = [];
  let role: 'user' | 'assistant' | null = null;
  let parts: Buffer[] = [];
  const flush = () => {
    if (role) out.push(Buffer.concat([Buffer.from(`{"role":"${role}","content":[`), ...parts, END_ENTRY]));
  };
  for (const m of messages) {
    const r = m.role === 'assistant' ? 'assistant' : 'user';
    if (r !== role) {
      flush();
      role = r;
      parts = [];
    } else parts.push(COMMA);
    parts.push(blocksJson(m));
  }
  flush();
  return out;
}
const COMMA = Buffer.from(',');
const END_ENTRY = Buffer.from(']}');
