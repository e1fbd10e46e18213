// OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server), streamed.
import type { Message } from '../types.js';
import { textOf } from '../types.js';
import { type LlmEvent, type LlmRequest, type Provider, type StreamDecoder, ProviderError, appendDelta, parseArgs } from './types.js';
import { type SseEvent, decodedCall, eventJson, jsonBodyWithMessages, perMessageJson } from './sse-post.js';

export interface OpenAIConfig {
  baseUrl?: string;
  apiKey?: string;
  timeoutMs: number;
}

export class OpenAIProvider implements Provider {
  readonly name = 'openai';
  private url: string;
  private headers: Record<string, string>;

  constructor(private cfg: OpenAIConfig) {
    this.url = `${(cfg.baseUrl || 'https://api.openai.com/v1').replace(/\/+$/, '')}/chat/completions`;
    this.headers = { authorization: `Bearer ${cfg.apiKey || 'none'}` };
  }

  // Not retried here: the chat loop retries, with events the client can see.
  async *stream(req: LlmRequest): AsyncIterable<LlmEvent> {
    const body = jsonBodyWithMessages(
      {
        model: req.model,
        stream: true,
        stream_options: { include_usage: true },
        ...(req.tools.length ? { tools: req.tools.map((t) => ({ type: 'function' as const, function: t })) } : {}),
        ...(req.maxTokens ? { max_tokens: req.maxTokens } : {}),
      },
      [req.system ? JSON.stringify({ role: 'system', content: req.system }) : '', ...req.messages.map(messageJson)],
    );
    yield* decodedCall(new OpenAIDecoder(), this.url, body, { headers: this.headers, signal: req.signal, timeoutMs: this.cfg.timeoutMs });
  }
}

/** OpenAI's chat completion chunks as stream events. */
export class OpenAIDecoder implements StreamDecoder {
  private calls = new Map<number, { id: string; name: string; args: string }>();
  private finish = 'stop';

  read(batch: SseEvent[], out: LlmEvent[]): void {
    const { calls } = this;
    for (const ev of batch) {
      if (ev.data === '[DONE]') continue; // the stream ends after it; reading on keeps the connection reusable
      const chunk = eventJson(ev.data);
      if (chunk?.error) throw new ProviderError(`provider stream failed: ${chunk.error.message ?? JSON.stringify(chunk.error)}`, true);
      const choice = chunk.choices?.[0];
      if (choice) {
        const delta = choice.delta as Record<string, any> | undefined;
        const reasoning = delta?.reasoning_content ?? delta?.reasoning;
        if (typeof reasoning === 'string' && reasoning) appendDelta(out, 'reasoning', reasoning);
        if (delta?.content) appendDelta(out, 'text', delta.content);
        for (const tc of delta?.tool_calls ?? []) {
          const cur = calls.get(tc.index) ?? { id: '', name: '', args: '' };
          if (tc.id) cur.id = tc.id;
          if (tc.function?.name) cur.name += tc.function.name;
          if (tc.function?.arguments) cur.args += tc.function.arguments;
          calls.set(tc.index, cur);
        }
        if (choice.finish_reason) this.finish = choice.finish_reason;
      }
      if (chunk.usage) out.push({ type: 'usage', input_tokens: chunk.usage.prompt_tokens ?? 0, output_tokens: chunk.usage.completion_tokens ?? 0 });
    }
  }

  end(): LlmEvent[] {
    const out: LlmEvent[] = [...this.calls.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([i, c]) => ({ type: 'tool_call', id: c.id || `call_${i}`, name: c.name, args: parseArgs(c.args) }));
    out.push({ type: 'finish', reason: this.finish });
    return out;
  }
}

/** A message's entries in OpenAI's `messages` (a tool message holds one per result), as JSON array items. */
const messageJson = perMessageJson((m: Message): string => {
  const out: unknown[] = [];
  if (m.role === 'user') out.push({ role: 'user', content: textOf(m.parts) });
  else if (m.role === 'assistant') {
    const calls = m.parts.filter((p) => p.type === 'tool_call');
    out.push({
      role: 'assistant',
      content: textOf(m.parts) || (calls.length ? null : ''),
      ...(calls.length
        ? {
            tool_calls: calls.map((c) => ({
              id: c.id,
              type: 'function',
              function: { name: c.name, arguments: JSON.stringify(c.args ?? {}) },
            })),
          }
        : {}),
    });
  } else {
    for (const p of m.parts) {
      if (p.type === 'tool_result') out.push({ role: 'tool', tool_call_id: p.tool_call_id, content: p.output });
    }
  }
  return out.map((e) => JSON.stringify(e)).join(',');
});
