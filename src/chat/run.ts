// One chat owned by this worker: runs turns (LLM call → tools → repeat) until the chat has no
// more work, streaming every event as it happens and persisting each completed step in the
// background, in order, fenced by (worker_id, epoch).
import type { Bus } from '../bus/bus.js';
import type { Db } from '../store/db.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Providers } from './providers/index.js';
import { ProviderError, type LlmEvent, type ToolSpec } from './providers/types.js';
import { type ToolBox, type ToolContext, toolSpecs } from './tools/index.js';
import { type HistoryCache, isCurrent } from './history-cache.js';
import { metrics } from '../metrics.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { retryDelay } from '../backoff.js';
import { retryOnConnectionError } from '../store/retry.js';
import type { ClaimedChat } from './sql/claimChats.js';
import { fencedCommit } from './sql/commitSteps.js';
import { eventStored } from './sql/events.js';
import { lastMessageSeq, loadMessages, loadMessagesAfter } from './sql/messages.js';
import { promoteQueued } from './state.js';
import { type ChatStatus, type Message, type Part, type PendingAction, type StreamEvent, type Usage, EPOCH_SPAN, ev, newId, seqOf } from './types.js';

export class LostOwnership extends Error {
  constructor() {
    super('the chat is no longer owned by this worker');
  }
}

export interface RunDeps {
  db: Db;
  bus: Bus;
  providers: Providers;
  tools: ToolBox;
  history: HistoryCache;
  workerId: string;
  log: Logger;
  /** Called after the chat is released (title generation etc.). */
  onFinished?: (chatId: string, status: ChatStatus) => void;
  /** A turn's bounds: steps, a built-in tool's run time, a client's time to answer its tool calls. */
  limits: Pick<Config, 'maxSteps' | 'actionTimeoutMs'>;
  /** Retries of a transient provider error (429, 5xx, a reset): how many, and the backoff's first and largest delay. */
  llmRetry: LlmRetry;
}

export interface LlmRetry {
  max: number;
  baseMs: number;
  maxMs: number;
}

/** 4 retries from 0.5 s doubling to at most 15 s: a provider's overload usually passes within that. */
export const LLM_RETRY: LlmRetry = { max: 4, baseMs: 500, maxMs: 15_000 };

/** A tool's run time unless it sets its own (`maxRunMs`): the built-ins take milliseconds. */
const TOOL_TIMEOUT_MS = 30_000;

type StopReason = 'interrupt' | 'cancel' | null;

export class ChatRun {
  readonly chatId: string;
  /** The epoch this run owns the chat under. */
  readonly epoch: number;
  private n = 0;
  private persist: Promise<void> = Promise.resolve();
  private persistError: unknown = null;
  private stop: StopReason = null;
  private current = new AbortController();

  /** The current turn's history: what is stored, plus the steps of this turn. */
  private history: Message[] = [];

  constructor(
    private deps: RunDeps,
    private chat: ClaimedChat,
  ) {
    this.chatId = chat.id;
    this.epoch = chat.epoch;
  }

  /** The user asked to stop the current turn; the partial reply is kept. */
  interrupt(): void {
    if (this.stop) return;
    this.stop = 'interrupt';
    this.current.abort();
  }

  /** Someone else took the chat (edit, archive, delete, lease lost): stop without writing. */
  cancel(): void {
    this.stop = 'cancel';
    this.current.abort();
  }

  get cancelled(): boolean {
    return this.stop === 'cancel';
  }

  private nextSeq(): number {
    if (this.n + 1 >= EPOCH_SPAN) throw new Error('event numbering exhausted for this epoch');
    return seqOf(this.epoch, ++this.n);
  }

  private emit(type: StreamEvent['type'], data: Record<string, unknown>): StreamEvent {
    return this.publish(ev(this.chatId, this.nextSeq(), type, data));
  }

  /** A message's event carries the message's own seq (allocated when the message was made). */
  private emitMessage(message: Message): StreamEvent {
    return this.publish(ev(this.chatId, message.seq, 'message', { message }));
  }

  private publish(e: StreamEvent): StreamEvent {
    if (!this.cancelled) this.deps.bus.publish('events', e);
    return e;
  }

  /** Events a commit has stored: clients must get them whatever happens to this run now. */
  private publishCommitted(events: StreamEvent[]): void {
    for (const e of events) this.deps.bus.publish('events', e);
  }

  /** True while the statement that ends a turn is in flight: a heartbeat that no longer finds the
   * lease must not cancel the run then (the release itself removed it; the fence decides). */
  finishing = false;

  private get fenceKey() {
    return { chatId: this.chatId, workerId: this.deps.workerId, epoch: this.epoch };
  }

  /** Queues a fenced write of a step after the previous ones; the stream never waits for it. */
  private background(messages: Message[], events: StreamEvent[] = []): void {
    this.persist = this.persist.then(async () => {
      if (this.persistError || this.cancelled) return;
      try {
        // Safe to run again: stored rows are skipped, and the fence still holds if it held.
        const { fenced } = await retryOnConnectionError(() => fencedCommit(this.deps.db, this.fenceKey, messages, events), this.onDbRetry);
        if (!fenced) throw new LostOwnership();
      } catch (err) {
        this.persistError = err;
        if (err instanceof LostOwnership) this.cancel();
        else this.current.abort();
      }
    });
  }

  /** The stored history: the cached one and what was stored since, or all of it. */
  private async loadHistory(): Promise<Message[]> {
    const entry = this.deps.history.get(this.chatId);
    const cached = entry?.messages;
    const sent = this.chat.sent;
    this.chat.sent = undefined; // describes the first turn only
    // Claimed by its send, and nothing else changed the chat since this worker's last run of it
    // (every change of its messages takes a new epoch): the history is that run's plus the one
    // message the send stored.
    if (entry && sent && isCurrent(entry, sent.epochBefore, sent.lastSeqBefore)) return [...entry.messages, sent.message];
    if (cached) {
      const { total, messages } = await loadMessagesAfter(this.deps.db, this.chatId, cached.at(-1)?.seq ?? 0);
      if (cached.length + messages.length === total) return [...cached, ...messages];
      this.deps.history.delete(this.chatId); // something was deleted (an edit): read it all
    }
    return loadMessages(this.deps.db, this.chatId);
  }

  private onDbRetry = (err: unknown, attempt: number) =>
    this.deps.log.warn({ err, chat_id: this.chatId, attempt }, 'a step commit lost its database connection; retrying');

  /** Stores messages before going on (after the steps queued before them). */
  private async commitNow(messages: Message[]): Promise<void> {
    this.background(messages);
    await this.persist;
    if (this.persistError) throw this.persistError;
  }

  /**
   * After a worker died mid-turn: tool calls of the last stored step that have no result were
   * running when it died. Built-in tools that are safe to re-run run again; for any other the
   * model gets an error result saying it may or may not have run, so nothing runs twice unseen.
   */
  private async settleInterruptedTools(): Promise<void> {
    const history = await loadMessages(this.deps.db, this.chatId);
    let last = history.length - 1;
    while (last >= 0 && history[last]!.role !== 'assistant') last--;
    if (last < 0) return;
    const answered = new Set(
      history
        .slice(last + 1)
        .flatMap((m) => m.parts)
        .flatMap((p) => (p.type === 'tool_result' ? [p.tool_call_id] : [])),
    );
    const open = history[last]!.parts.filter((p): p is Extract<Part, { type: 'tool_call' }> => p.type === 'tool_call' && !answered.has(p.id));
    if (!open.length) return;
    const rerun = open.filter((c) => this.deps.tools.find(c.name)?.idempotent === true);
    const rerunResults = await this.runTools(rerun);
    const results = open.map((c) => {
      const i = rerun.indexOf(c);
      if (i >= 0) return rerunResults[i]!;
      this.deps.log.warn({ chat_id: this.chatId, tool: c.name, tool_call_id: c.id }, 'tool interrupted by a lost worker: reported to the model, not run again');
      metrics.toolsInterrupted.inc({ tool: c.name });
      const result = {
        type: 'tool_result' as const,
        tool_call_id: c.id,
        name: c.name,
        output: `the tool "${c.name}" was running when the worker running this chat stopped; it may or may not have taken effect, and it was not run again`,
        is_error: true,
      };
      this.emit('tool_result', { result, interrupted: true });
      return result;
    });
    const msgs = results.map((r) => this.toolMessage(r));
    for (const m of msgs) this.emitMessage(m);
    await this.commitNow(msgs);
  }

  async run(): Promise<void> {
    // The acquiring statement stored this chat's `running` status as event 1 of the new epoch.
    this.n = 1;
    this.publish(ev(this.chatId, seqOf(this.epoch, 1), 'status', { status: 'running' }));
    if (this.chat.prev_status === 'running') {
      // The previous owner died mid-turn: drop whatever it streamed after the last stored message.
      const after = await lastMessageSeq(this.deps.db, this.chatId);
      this.background([], [this.emit('history_truncated', { after_seq: after, reason: 'worker_lost' })]);
    }
    try {
      if (this.chat.prev_status === 'running') await this.settleInterruptedTools();
      if (this.chat.interrupt_requested) this.stop = 'interrupt';
      for (;;) {
        const outcome = await this.turn();
        const more = await this.finishTurn(outcome);
        if (!more) break;
      }
    } catch (err) {
      this.history = []; // not known to match what is stored: the next turn reads it all
      this.deps.history.delete(this.chatId);
      if (err instanceof LostOwnership || this.cancelled) return;
      this.deps.log.error({ err, chat_id: this.chatId }, 'chat run failed');
      await this.finishTurn({ status: 'error', error: `internal error: ${(err as Error).message}`, messages: [], events: [] }).catch(() => {});
    }
  }

  private turnStartedAt = 0;
  private firstTokenSeen = false;

  private countToken(n: number): void {
    metrics.tokens.inc(n);
    if (this.firstTokenSeen) return;
    this.firstTokenSeen = true;
    metrics.firstTokenMs.observe(performance.now() - this.turnStartedAt);
  }

  private async turn(): Promise<TurnOutcome> {
    this.turnStartedAt = performance.now();
    this.firstTokenSeen = false;
    const history = (this.history = await this.loadHistory());
    let resolved;
    try {
      resolved = await this.deps.providers.get(this.chat.model);
    } catch (err) {
      return this.fail((err as Error).message, 'no_provider');
    }
    const clientTools = this.chat.client_tools ?? [];
    const clientNames = new Set(clientTools.map((t) => t.name));
    const tools = toolSpecs(this.deps.tools, clientTools);
    const done = (status: ChatStatus, messages: Message[] = [], actions?: PendingAction[]): TurnOutcome => ({ status, messages, events: [], actions });
    for (let step = 0; step < this.deps.limits.maxSteps; step++) {
      if (this.stop) return done('waiting');
      const result = await this.step(resolved.provider, resolved.model, history, tools);
      if (this.cancelled) throw new LostOwnership();
      if (result.kind === 'failed') return this.fail(result.error, result.code);
      const { message } = result;
      if (!message.parts.length) return done('waiting'); // interrupted before the model said anything
      history.push(message);
      const calls = message.parts.filter((p): p is Extract<Part, { type: 'tool_call' }> => p.type === 'tool_call');
      // The last step's message is stored by the statement that ends the turn, and its event goes
      // out with the turn's end once stored: one frame to each client instead of two.
      if (this.stop || !calls.length) return { ...done('waiting', [message]), unpublished: [message] };
      this.emitMessage(message);
      const pendingClient = calls.filter((c) => clientNames.has(c.name) && !this.deps.tools.find(c.name));
      const local = calls.filter((c) => !pendingClient.includes(c));
      // A tool that must not run twice: store the call before running it, so that a worker that
      // dies meanwhile leaves a call without a result, which recovery reports instead of re-running.
      const storedFirst = local.some((c) => this.deps.tools.find(c.name)?.idempotent === false);
      if (storedFirst) await this.commitNow([message]);
      const results = await this.runTools(local);
      const resultMsgs = results.map((r) => this.toolMessage(r));
      for (const m of resultMsgs) this.emitMessage(m);
      history.push(...resultMsgs);
      const stepMsgs = storedFirst ? resultMsgs : [message, ...resultMsgs];
      if (pendingClient.length) {
        return done('requires_action', stepMsgs, pendingClient.map((c) => ({ tool_call_id: c.id, name: c.name, args: c.args })));
      }
      if (this.stop) return done('waiting', stepMsgs);
      this.background(stepMsgs);
    }
    return this.fail(`the turn stopped after ${this.deps.limits.maxSteps} steps (AIRLOCK_MAX_STEPS)`, 'max_steps');
  }

  private fail(error: string, code: string): TurnOutcome {
    return { status: 'error', error, messages: [], events: [this.emit('error', { code, message: error })] };
  }

  private toolMessage(r: Extract<Part, { type: 'tool_result' }>): Message {
    return { id: newId(), seq: this.nextSeq(), role: 'tool', parts: [r] };
  }

  /** One LLM call, retried on transient errors. Returns the assistant message (partial if stopped). */
  private async step(
    provider: { stream(r: any): AsyncIterable<LlmEvent> },
    model: string,
    history: Message[],
    tools: ToolSpec[],
  ): Promise<{ kind: 'ok'; message: Message } | { kind: 'failed'; error: string; code: string }> {
    const maxRetries = this.deps.llmRetry.max;
    for (let attempt = 0; ; attempt++) {
      const draft = newId();
      const parts: Part[] = [];
      let usage: Usage | null = null;
      let text = '';
      let reasoning = '';
      this.current = new AbortController();
      if (this.stop) this.current.abort();
      try {
        const events = provider.stream({ model, system: this.chat.system_prompt, messages: history, tools, signal: this.current.signal });
        for await (const e of events) {
          if (this.stop) break;
          if (e.type === 'text') {
            this.countToken(e.tokens ?? 1);
            text += e.text;
            this.emit('delta', { draft, kind: 'text', text: e.text });
          } else if (e.type === 'reasoning') {
            this.countToken(e.tokens ?? 1);
            reasoning += e.text;
            this.emit('delta', { draft, kind: 'reasoning', text: e.text });
          } else if (e.type === 'tool_call') {
            const call: Part = { type: 'tool_call', id: e.id, name: e.name, args: e.args };
            parts.push(call);
            this.emit('tool_call', { draft, call });
          } else if (e.type === 'usage') usage = { input_tokens: e.input_tokens, output_tokens: e.output_tokens };
        }
      } catch (err) {
        if (this.stop) {
          /* interrupted or cancelled: keep what we have */
        } else if (this.persistError) {
          throw this.persistError;
        } else if (err instanceof ProviderError && err.retryable && attempt < maxRetries) {
          const { baseMs, maxMs } = this.deps.llmRetry;
          const delay = Math.round(Math.min(maxMs, Math.max(retryDelay(attempt, baseMs, maxMs), err.retryAfterMs ?? 0)));
          this.emit('retry', { draft, attempt: attempt + 1, max_retries: maxRetries, delay_ms: delay, error: err.message, status_code: err.status ?? null });
          await sleep(delay, undefined, { signal: this.current.signal }).catch(() => {}); // an interrupt ends the wait
          if (this.stop) return { kind: 'ok', message: this.assistant([], '', '', null, true) };
          continue;
        } else {
          const msg = err instanceof ProviderError ? err.message : `provider call failed: ${(err as Error).message}`;
          return { kind: 'failed', error: msg, code: err instanceof ProviderError && err.status ? `provider_${err.status}` : 'provider_error' };
        }
      }
      const stopped = this.stop === 'interrupt';
      // A call the model was still writing when interrupted cannot be run; keep only the text.
      return { kind: 'ok', message: this.assistant(stopped ? [] : parts, text, reasoning, usage, stopped) };
    }
  }

  private assistant(calls: Part[], text: string, reasoning: string, usage: Usage | null, interrupted: boolean): Message {
    const parts: Part[] = [];
    if (reasoning) parts.push({ type: 'reasoning', text: reasoning });
    if (text || (!calls.length && !interrupted)) parts.push({ type: 'text', text });
    parts.push(...calls);
    return { id: newId(), seq: this.nextSeq(), role: 'assistant', parts, interrupted: interrupted || undefined, model: this.chat.model, usage };
  }

  /** Runs built-in tools in parallel; each result is streamed as soon as it is ready. */
  private async runTools(calls: Extract<Part, { type: 'tool_call' }>[]): Promise<Extract<Part, { type: 'tool_result' }>[]> {
    const signal = this.current.signal;
    return Promise.all(
      calls.map(async (c) => {
        const tool = this.deps.tools.find(c.name);
        let output: string;
        let isError = false;
        if (!tool) {
          output = `unknown tool "${c.name}"`;
          isError = true;
        } else {
          try {
            const ctx: ToolContext = {
              chatId: this.chatId,
              ownerId: this.chat.owner_id,
              toolCallId: c.id,
              output: (text, stream = 'stdout') => void this.emit('tool_output', { tool_call_id: c.id, stream, text }),
              event: (type, data) => this.background([], [this.emit(type, data)]),
            };
            output = await withTimeout(tool.run(c.args, signal, ctx), tool.maxRunMs ?? TOOL_TIMEOUT_MS, signal, c.name);
          } catch (err) {
            output = (err as Error).message;
            isError = true;
          }
        }
        const result = { type: 'tool_result' as const, tool_call_id: c.id, name: c.name, output, ...(isError ? { is_error: true } : {}) };
        this.emit('tool_result', { result });
        return result;
      }),
    );
  }

  /**
   * Ends a turn in one statement: stores the last step and releases the chat. When messages wait
   * in the queue, the head is promoted instead and the next turn runs at once (returns true).
   */
  private async finishTurn(outcome: TurnOutcome): Promise<boolean> {
    await this.persist;
    if (this.persistError) throw this.persistError;
    if (this.cancelled) throw new LostOwnership();
    const releaseEvents: StreamEvent[] = [];
    if (outcome.actions) releaseEvents.push(ev(this.chatId, this.nextSeq(), 'action_required', { calls: outcome.actions }));
    releaseEvents.push(ev(this.chatId, this.nextSeq(), 'status', { status: outcome.status, ...(outcome.error ? { error: outcome.error } : {}) }));
    this.finishing = true;
    let fenced: boolean;
    let released: boolean;
    try {
      ({ fenced, released } = await retryOnConnectionError(async (attempt) => {
        const r = await fencedCommit(this.deps.db, this.fenceKey, outcome.messages, outcome.events, {
          status: outcome.status,
          error: outcome.error ?? null,
          actions: outcome.actions ?? null,
          actionTimeoutMs: this.deps.limits.actionTimeoutMs,
          events: releaseEvents,
        });
        // The connection broke after an earlier attempt committed: the chat is no longer ours
        // because we released it.
        if (!r.fenced && attempt > 0 && (await eventStored(this.deps.db, this.chatId, releaseEvents.at(-1)!.seq!))) return { fenced: true, released: true };
        return r;
      }, this.onDbRetry));
    } finally {
      this.finishing = false;
    }
    if (!fenced) throw new LostOwnership();
    const messageEvents = (outcome.unpublished ?? []).map((m) => ev(this.chatId, m.seq, 'message', { message: m }));
    this.deps.history.set(this.chatId, this.history, this.epoch);
    metrics.turns.inc({ status: outcome.status });
    this.deps.log.info(
      { chat_id: this.chatId, worker_id: this.deps.workerId, epoch: this.epoch, status: outcome.status, ms: Math.round(performance.now() - this.turnStartedAt), error: outcome.error },
      'turn',
    );
    if (released) {
      this.publishCommitted([...messageEvents, ...releaseEvents]);
      this.deps.onFinished?.(this.chatId, outcome.status);
      return false;
    }
    // Not released: the queue has messages. Promote the head and keep the lease.
    this.publishCommitted(messageEvents);
    const next = await this.deps.db.tx((q) => promoteQueued(q, this.fenceKey, () => this.nextSeq()));
    if (next === 'lost') throw new LostOwnership();
    if (!next) return this.finishTurn({ ...outcome, messages: [], events: [], unpublished: [] }); // the queue emptied meanwhile
    this.stop = null;
    this.publishCommitted(next.events);
    this.publish(ev(this.chatId, undefined, 'queue', { queue: next.queue }));
    return true;
  }
}

interface TurnOutcome {
  status: ChatStatus;
  error?: string;
  actions?: PendingAction[];
  /** Messages of the last step, not stored yet. */
  messages: Message[];
  /** Durable events not stored yet (an error). */
  events: StreamEvent[];
  /** Messages of `messages` whose events are published once the statement ending the turn stored them. */
  unpublished?: Message[];
}

function withTimeout<T>(p: Promise<T>, ms: number, signal: AbortSignal, name: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tool "${name}" did not finish within ${ms} ms`)), ms);
    const onAbort = () => reject(new Error(`tool "${name}" was interrupted`));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => {
      clearTimeout(t);
      signal.removeEventListener('abort', onAbort);
    });
  });
}
