// OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server), streamed.
import OpenAI from 'openai';
import type { Message } from '../types.js';
import { textOf } from '../types.js';
import { type LlmEvent, type LlmRequest, type Provider, ProviderError, parseArgs, retryAfterMs, retryableStatus } from './types.js';

export interface OpenAIConfig {
  baseUrl?: string;
  apiKey?: string;
  timeoutMs: number;
}

export class OpenAIProvider implements Provider {
  readonly name = 'openai';
  private client: OpenAI;

  constructor(cfg: OpenAIConfig) {
    this.client = new OpenAI({
      apiKey: cfg.apiKey || 'none',
      baseURL: cfg.baseUrl || undefined,
      maxRetries: 0, // the chat loop retries, with events the client can see
      timeout: cfg.timeoutMs,
    });
  }

  async *stream(req: LlmRequest): AsyncIterable<LlmEvent> {
    let stream;
    try {
      stream = await this.client.chat.completions.create(
        {
          model: req.model,
          messages: toOpenAI(req.system, req.messages),
          stream: true,
          stream_options: { include_usage: true },
          ...(req.tools.length
            ? { tools: req.tools.map((t) => ({ type: 'function' as const, function: t })) }
            : {}),
          ...(req.maxTokens ? { max_tokens: req.maxTokens } : {}),
        },
        { signal: req.signal },
      );
    } catch (err) {
      throw mapError(err);
    }
    const calls = new Map<number, { id: string; name: string; args: string }>();
    let finish = 'stop';
    try {
      for await (const chunk of stream) {
        const choice = chunk.choices?.[0];
        if (choice) {
          const delta = choice.delta as Record<string, any> | undefined;
          const reasoning = delta?.reasoning_content ?? delta?.reasoning;
          if (typeof reasoning === 'string' && reasoning) yield { type: 'reasoning', text: reasoning };
          if (delta?.content) yield { type: 'text', text: delta.content };
          for (const tc of delta?.tool_calls ?? []) {
            const cur = calls.get(tc.index) ?? { id: '', name: '', args: '' };
            if (tc.id) cur.id = tc.id;
            if (tc.function?.name) cur.name += tc.function.name;
            if (tc.function?.arguments) cur.args += tc.function.arguments;
            calls.set(tc.index, cur);
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        if (chunk.usage) {
          yield { type: 'usage', input_tokens: chunk.usage.prompt_tokens ?? 0, output_tokens: chunk.usage.completion_tokens ?? 0 };
        }
      }
    } catch (err) {
      throw mapError(err);
    }
    for (const [i, c] of [...calls.entries()].sort((a, b) => a[0] - b[0])) {
      yield { type: 'tool_call', id: c.id || `call_${i}`, name: c.name, args: parseArgs(c.args) };
    }
    yield { type: 'finish', reason: finish };
  }
}

function toOpenAI(system: string | null | undefined, messages: Message[]): any[] {
  const out: any[] = [];
  if (system) out.push({ role: 'system', content: system });
  for (const m of messages) {
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
  }
  return out;
}

function mapError(err: unknown): Error {
  if (err instanceof ProviderError) return err;
  if (err instanceof OpenAI.APIUserAbortError) return err;
  if (err instanceof OpenAI.APIError && typeof err.status === 'number') {
    const msg = (err.error as any)?.message ?? err.message;
    return new ProviderError(`provider returned ${err.status}: ${msg}`, retryableStatus(err.status), err.status, retryAfterMs(err.headers as any));
  }
  const e = err as Error;
  if (e?.name === 'AbortError') return e;
  return new ProviderError(`provider connection failed: ${e?.message ?? String(err)}`, true);
}
