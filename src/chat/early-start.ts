// A turn's first provider call, started while the send's statement is still on its way to the
// database: the commit (and, under load, its wait for the database) then overlaps the provider's
// time to first token instead of preceding it. Only for a chat this worker ran last, whose history
// and settings it has cached (history-cache.ts); the statement's result confirms them (same epoch,
// same last message, same model, system prompt and tools), and the run takes the call over only
// if it would have made the very same request. Otherwise the call is aborted before anything is
// read from it (the rare race: another replica or an edit changed the chat meanwhile).
import { metrics } from '../metrics.js';
import type { Providers } from './providers/index.js';
import type { LlmEvent, ToolSpec } from './providers/types.js';
import type { ToolBox } from './tools/index.js';
import { type CachedHistory, isCurrent } from './history-cache.js';
import type { ClientTool, Message } from './types.js';

/** The settings of a chat that shape its provider requests. */
export interface ChatSettings {
  model: string;
  system_prompt: string | null;
  client_tools: ClientTool[];
}

export const settingsOf = (c: ChatSettings): ChatSettings => ({ model: c.model, system_prompt: c.system_prompt, client_tools: c.client_tools ?? [] });

const sameSettings = (a: ChatSettings, b: ChatSettings) =>
  a.model === b.model && (a.system_prompt ?? null) === (b.system_prompt ?? null) && JSON.stringify(a.client_tools ?? []) === JSON.stringify(b.client_tools ?? []);

/** The tools a provider is offered: the built-in ones, then the chat's own (client) tools. */
export function toolSpecs(tools: ToolBox, clientTools: ClientTool[]): ToolSpec[] {
  return [
    ...tools.tools.map(({ name, description, parameters }) => ({ name, description, parameters })),
    ...clientTools
      .filter((t) => !tools.find(t.name))
      .map((t) => ({ name: t.name, description: t.description ?? '', parameters: t.parameters ?? { type: 'object' } })),
  ];
}

export class EarlyStart {
  private controller = new AbortController();
  private iterator: Promise<AsyncIterator<LlmEvent>>;
  /** The iterator once open: every read after the first goes straight to it. */
  private opened: AsyncIterator<LlmEvent> | null = null;
  private first: Promise<IteratorResult<LlmEvent>> | null;
  private settled = false;

  private constructor(
    private cached: CachedHistory & { settings: ChatSettings },
    private messages: Message[],
    open: (signal: AbortSignal) => Promise<AsyncIterable<LlmEvent>>,
  ) {
    this.iterator = open(this.controller.signal).then((s) => (this.opened = s[Symbol.asyncIterator]()));
    this.first = this.iterator.then((it) => it.next());
    this.first.catch(() => {}); // read (or dropped) by whoever takes the call over
  }

  /** Starts the call for `message` sent to a chat whose last run here left `cached`; null when nothing is cached. */
  static start(cached: CachedHistory | undefined, message: Message, providers: Providers, tools: ToolBox): EarlyStart | null {
    if (!cached?.settings) return null;
    const settings = cached.settings;
    const messages = [...cached.messages, message];
    return new EarlyStart({ ...cached, settings }, messages, async (signal) => {
      const { provider, model } = await providers.get(settings.model);
      return provider.stream({ model, system: settings.system_prompt, messages, tools: toolSpecs(tools, settings.client_tools), signal });
    });
  }

  /** Whether the send's statement found the chat as cached (the chat's epoch and last message before it, its settings): nothing changed it since the run that cached it. */
  confirmedBy(chat: ChatSettings, epochBefore: number, lastSeqBefore: number | null): boolean {
    return isCurrent(this.cached, epochBefore, lastSeqBefore) && sameSettings(chat, this.cached.settings);
  }

  /** Whether the run's first call would send exactly this request. */
  matches(settings: ChatSettings, history: Message[]): boolean {
    return sameSettings(settings, this.cached.settings) && history.length === this.messages.length && history.every((m, i) => m.id === this.messages[i]!.id);
  }

  /** The call's events, from the first; aborted with `signal`. Once. */
  events(signal: AbortSignal): AsyncIterable<LlmEvent> {
    this.settle('used');
    if (signal.aborted) this.controller.abort();
    else signal.addEventListener('abort', () => this.controller.abort(), { once: true });
    return {
      [Symbol.asyncIterator]: () => ({
        next: () => {
          const first = this.first;
          this.first = null;
          // Not an async wrapper: it would add a promise to every read of the turn.
          return first ?? this.opened?.next() ?? this.iterator.then((it) => it.next());
        },
        return: async () => {
          this.controller.abort();
          return (await this.iterator).return?.() ?? { done: true, value: undefined };
        },
      }),
    };
  }

  abort(): void {
    if (this.settle('aborted')) this.controller.abort();
  }

  private settle(how: 'used' | 'aborted'): boolean {
    if (this.settled) return false;
    this.settled = true;
    metrics.earlyStarts.inc({ result: how });
    return true;
  }
}

/** Early calls waiting for their claim to arrive from another replica; one not claimed in time is aborted. */
export class PendingEarly {
  private pending = new Map<string, { early: EarlyStart; timer: NodeJS.Timeout }>();

  constructor(private timeoutMs: () => number) {}

  put(chatId: string, early: EarlyStart): void {
    this.take(chatId)?.abort();
    const timer = setTimeout(() => this.take(chatId)?.abort(), this.timeoutMs());
    timer.unref();
    this.pending.set(chatId, { early, timer });
  }

  abortAll(): void {
    for (const id of [...this.pending.keys()]) this.take(id)?.abort();
  }

  take(chatId: string): EarlyStart | undefined {
    const p = this.pending.get(chatId);
    if (!p) return undefined;
    this.pending.delete(chatId);
    clearTimeout(p.timer);
    return p.early;
  }
}
