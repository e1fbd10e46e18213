// What `airlock chat` prints of one turn: the reply to the user's own message, followed live on
// the chat's stream (resumed if the stream drops), and Ctrl-C handling for it.
import { type ApiClient, ApiClientError } from '../client/api.js';
import { type Message, type Part, type StreamEvent, TURN_ENDS } from '../chat/types.js';
import { CliError } from './config.js';

/** Streams one turn to the terminal and returns the exit code (0 ok, 1 error, 130 interrupted). */
export class TurnRunner {
  /** Ctrl-C for the turn being followed. */
  private current: (() => 'interrupting' | 'gave up') | null = null;

  constructor(
    private api: ApiClient,
    private out: Printer,
    /** How long a stream that dropped is reopened before the command gives up (AIRLOCK_STREAM_RECONNECT_MS). */
    private reconnectForMs: number,
  ) {}

  /** Ctrl-C from the keyboard: the first interrupts the turn, the second stops following it. */
  interrupt(): 'interrupting' | 'gave up' | 'idle' {
    return this.current?.() ?? 'idle';
  }

  async send(chatId: string, content: string): Promise<number> {
    const chat = await this.api.get(`/api/chats/${encodeURIComponent(chatId)}`);
    // Subscribe from the chat's current position first, so nothing of the new turn is missed.
    return this.follow(chatId, chat.last_seq, async () => {
      const sent = await this.api.post(`/api/chats/${chatId}/messages`, { content });
      if (sent.message) return { messageId: sent.message.id as string };
      process.stderr.write(
        chat.status === 'requires_action'
          ? `[queued: the chat waits for the results of client-side tools (POST /api/chats/${chatId}/tool-results); Ctrl-C takes your message back]\n`
          : '[queued: it runs when the turn before it ends; Ctrl-C takes it back]\n',
      );
      return { queueId: sent.queued.id as number };
    });
  }

  /**
   * Prints the reply to one user message of the chat: the first after `after` (a new chat's), or
   * the one `send` (run once the stream is open) sent or queued. Other turns before it (the chat
   * was busy) and after it (messages queued behind it) are not printed. A stream that closes
   * mid-turn (the server restarting or draining, a network fault, a resync because we fell
   * behind) is reopened from the last seq seen, so nothing is missed or printed twice.
   */
  follow(chatId: string, after: number, send?: () => Promise<OurMessage>): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      let ours: OurMessage | null = send ? null : { first: true };
      /** Events that came before `send` said which message is ours. */
      const held: StreamEvent[] = [];
      /** Our reply is being printed (our user message has been seen). */
      let mine = false;
      let queueHead: number | undefined;
      let queuedSeen = false;
      let interrupted = false;
      let finished = false;
      let lastSeq = after;
      /** When the stream was lost (0: it is up, or events have come since it was reopened). */
      let lostSince = 0;
      let ws: import('ws').WebSocket | undefined;
      const end = () => {
        finished = true;
        this.current = null;
        process.off('SIGINT', onSigint);
        ws?.close();
        this.out.endLine();
      };
      const finish = (code: number) => {
        if (finished) return;
        end();
        resolve(code);
      };
      const fail = (err: unknown) => {
        if (finished) return;
        end();
        reject(err);
      };
      const interruptTurn = () =>
        this.api.post(`/api/chats/${chatId}/interrupt`).catch((err) => process.stderr.write(`interrupt failed: ${err.message}\n`));
      const onSigint = (): 'interrupting' | 'gave up' => {
        if (interrupted) {
          finish(130);
          return 'gave up';
        }
        interrupted = true;
        this.out.endLine();
        process.stderr.write('^C stopping… (Ctrl-C again to stop waiting)\n');
        if (ours) stopOurs(ours); // else once the send says what it did
        return 'interrupting';
      };
      /** Ctrl-C: a message still queued behind another turn leaves the queue; one running is interrupted. */
      const stopOurs = (ours: OurMessage) => {
        if (mine || !('queueId' in ours)) return void interruptTurn();
        this.api.delete(`/api/chats/${chatId}/queue/${ours.queueId}`).then(
          () => {
            if (finished) return;
            process.stderr.write('[your message was taken off the queue]\n');
            finish(130);
          },
          () => void interruptTurn(), // promoted meanwhile: it runs now
        );
      };
      this.current = onSigint;
      process.on('SIGINT', onSigint);
      const onEvent = (e: StreamEvent, ours: OurMessage) => {
        if (e.type === 'deleted') {
          this.out.endLine();
          process.stderr.write('[the chat was deleted]\n');
          return finish(1);
        }
        if (e.type === 'queue') {
          const queue = e.queue as { id: number }[];
          if ('queueId' in ours && !mine) {
            const there = queue.some((q) => q.id === ours.queueId);
            if (queuedSeen && !there) {
              process.stderr.write('[your message was taken off the queue]\n');
              return finish(interrupted ? 130 : 1);
            }
            queuedSeen ||= there;
          }
          queueHead = queue[0]?.id;
          return;
        }
        if (e.type === 'message' && (e.message as Message).role === 'user') {
          // A user message after ours: the turn queued behind it begins, ours is over.
          if (mine) return finish(interrupted ? 130 : 0);
          const m = e.message as Message;
          // A queued message is promoted while it heads the queue (the queue event follows).
          mine = 'first' in ours || ('messageId' in ours ? m.id === ours.messageId : queueHead === ours.queueId);
          return;
        }
        if (!mine) return;
        this.out.event(e);
        if (e.type === 'status' && TURN_ENDS.has(e.status as string)) {
          finish(e.status === 'error' ? 1 : interrupted ? 130 : 0);
        }
      };
      const onEvents = (events: StreamEvent[]) => {
        lostSince = 0;
        for (const e of events) {
          if (finished) return;
          if (e.seq !== undefined && e.seq > lastSeq) lastSeq = e.seq;
          if (ours) onEvent(e, ours);
          else held.push(e);
        }
      };
      let sent = !send;
      const connect = () => {
        this.api
          .openStream(chatId, lastSeq, onEvents)
          .then(async (socket) => {
            ws = socket;
            if (finished) return socket.close(); // the whole turn arrived with the replay
            socket.on('close', (code, reason) => {
              if (finished) return;
              if (!lostSince) {
                this.out.endLine();
                process.stderr.write(`[the stream closed (${reason.length ? String(reason) : `code ${code}`}); reconnecting…]\n`);
                lostSince = Date.now();
                connect();
              } else retry(new Error(`closed again (${code})`));
            });
            if (!sent) {
              sent = true;
              let known: OurMessage;
              try {
                known = await send!();
              } catch (err) {
                return fail(err);
              }
              ours = known;
              for (const e of held.splice(0)) if (!finished) onEvent(e, known);
              if (interrupted && !finished) stopOurs(known);
            }
          })
          .catch((err) => {
            // Refusals (token revoked, chat deleted) are final, and so is a first connection made
            // before anything was sent (a server that cannot be reached). Once the message is in
            // (a new chat's), a server that went away is waited for as after a drop.
            const status = err instanceof ApiClientError ? err.status : 0;
            if ((status >= 400 && status < 500) || (!lostSince && send)) return fail(err);
            lostSince ||= Date.now();
            retry(err);
          });
      };
      const retry = (err: Error) => {
        const waited = Date.now() - lostSince;
        if (waited > this.reconnectForMs) return fail(new CliError(`lost the chat's stream and could not reconnect for ${Math.round(waited / 1000)} s: ${err.message}`));
        setTimeout(connect, Math.min(RECONNECT_MAX_DELAY_MS, 100 + waited / 4));
      };
      connect();
    });
  }
}

/** Which user message's reply `follow` prints: a new chat's first, one sent, or one queued. */
type OurMessage = { first: true } | { messageId: string } | { queueId: number };

/** The longest wait between two tries to reopen a lost stream. */
const RECONNECT_MAX_DELAY_MS = 2_000;

export class Printer {
  private midLine = false;
  private lastKind = '';
  /** Text printed from the draft of the assistant message not yet committed. */
  private draftText = '';
  /** Tool calls and results printed from drafts (by call id). */
  private shownCalls = new Set<string>();
  private shownResults = new Set<string>();
  /** Asks about calls that wait for approval at the terminal (else they are described). */
  approvals: { ask(e: StreamEvent): void; settled(toolCallId: string): void } | null = null;

  /**
   * live: print the reply's text as it streams (a terminal). A reply can start over (a provider
   * error retried, a server that died mid-reply replaced by another): on a terminal the abandoned
   * part stays on screen and a notice on stderr marks it; a pipe or file gets only the text the
   * reply committed to, each message once it is stored (live false).
   */
  constructor(
    private reasoning: boolean,
    private stdout: Pick<NodeJS.WritableStream, 'write'> = process.stdout,
    private stderr: Pick<NodeJS.WritableStream, 'write'> = process.stderr,
    private live = true,
  ) {}

  event(e: StreamEvent): void {
    switch (e.type) {
      case 'delta':
        if (e.kind === 'reasoning') {
          if (this.reasoning) this.stderr.write(String(e.text));
          return;
        }
        // Kept when not printed too: a reply that starts over is noticed on stderr either way.
        if (this.live) this.text(e.text as string);
        this.draftText += e.text as string;
        return;
      case 'tool_call':
        return this.call((e.call as Extract<Part, { type: 'tool_call' }>));
      case 'tool_output':
        // A running command's output, as it prints it (on stderr, like the call and its result).
        if (!this.shownResults.has(e.tool_call_id as string)) this.stderr.write(String(e.text));
        return;
      case 'tool_result':
        return this.result(e.result as Extract<Part, { type: 'tool_result' }>);
      case 'retry':
        this.endLine();
        // The draft is abandoned; the retry streams the reply again.
        this.stderr.write(`[provider error, retry ${e.attempt}/${e.max_retries} in ${e.delay_ms} ms: ${e.error}${this.draftText ? '; the reply starts over' : ''}]\n`);
        this.draftText = '';
        return;
      case 'history_truncated':
        // What was printed of a draft is dropped: the server that ran the turn died, another
        // runs it again from its start.
        if (e.reason === 'worker_lost' && this.draftText) {
          this.endLine();
          this.stderr.write('[the reply starts over: the server running it stopped]\n');
        }
        this.draftText = '';
        return;
      case 'status':
        // A turn ends: no draft carries over (a failed one has no message). Not at `running`:
        // a turn taken over from a dead server starts so, before it drops the old draft.
        if (TURN_ENDS.has(e.status as string)) {
          this.draftText = '';
          this.endLine();
        }
        return;
      case 'error':
        this.endLine();
        this.stderr.write(`error: ${e.message}\n`);
        return;
      case 'message':
        return this.committed(e.message as Message);
      case 'approval_required': {
        this.endLine();
        if (this.approvals) return this.approvals.ask(e);
        const args = e.args as { command?: string };
        const what = e.tool === 'run_command' ? `run \`${args.command}\` on ${e.resource}` : `${e.tool} on ${e.resource}`;
        this.stderr.write(
          `[the agent wants to ${what}; it waits for your decision: airlock approvals approve ${e.chat_id} ${e.tool_call_id} ` +
            `(--for-chat: for the rest of this chat), or airlock approvals deny ${e.chat_id} ${e.tool_call_id} --reason …]\n`,
        );
        return;
      }
      case 'approval_decided':
        this.approvals?.settled(e.tool_call_id as string);
        this.endLine();
        this.stderr.write(`[${e.approved ? `approved by ${e.by}` : `not approved: ${e.by}${e.reason ? `: ${e.reason}` : ''}`}]\n`);
        return;
      case 'action_required':
        this.endLine();
        this.stderr.write(`[the model called client-side tools: ${(e.calls as { name: string }[]).map((c) => c.name).join(', ')}; answer with POST /api/chats/${e.chat_id}/tool-results]\n`);
        return;
    }
  }

  /**
   * A stored message replaces its drafts: what the drafts did not show is printed from it. A
   * stream resumed from a replica that kept no drafts (restarted, or another one) has only this.
   */
  private committed(m: Message): void {
    if (m.role === 'assistant') {
      const text = m.parts.map((p) => (p.type === 'text' ? p.text : '')).join('');
      if (!this.live) this.text(text);
      else if (text.startsWith(this.draftText)) this.text(text.slice(this.draftText.length));
      else {
        this.endLine();
        this.text(text);
      }
      this.draftText = '';
      for (const p of m.parts) if (p.type === 'tool_call') this.call(p);
      if (m.interrupted) {
        this.endLine();
        this.stderr.write('[interrupted]\n');
      }
    } else if (m.role === 'tool') {
      for (const p of m.parts) if (p.type === 'tool_result') this.result(p);
    }
  }

  private text(t: string): void {
    if (!t) return;
    if (this.lastKind !== 'text' && this.midLine) this.endLine();
    this.stdout.write(t);
    this.midLine = !t.endsWith('\n');
    this.lastKind = 'text';
  }

  private call(c: Extract<Part, { type: 'tool_call' }>): void {
    if (this.shownCalls.has(c.id)) return;
    this.shownCalls.add(c.id);
    this.endLine();
    this.stderr.write(`⚙ ${c.name}(${JSON.stringify(c.args)})\n`);
    this.lastKind = 'tool';
  }

  private result(r: Extract<Part, { type: 'tool_result' }>): void {
    if (this.shownResults.has(r.tool_call_id)) return;
    this.shownResults.add(r.tool_call_id);
    this.endLine();
    this.lastKind = 'tool';
    this.stderr.write(`  → ${r.is_error ? 'error: ' : ''}${r.output.slice(0, 500)}\n`);
  }

  endLine(): void {
    if (this.midLine) this.stdout.write('\n');
    this.midLine = false;
    this.lastKind = '';
  }

  /** A chat's messages (with `last`, only that many, and a line that says how to see the rest). */
  transcript(chat: { id: string; title: string; status: string; model: string; messages: Message[]; queue: { content: string }[] }, last?: number): void {
    console.log(`# ${chat.title || '(untitled)'}  [${chat.status}, ${chat.model}]  ${chat.id}`);
    const shown = last === undefined ? chat.messages : chat.messages.slice(-last);
    if (shown.length < chat.messages.length) console.log(`(${chat.messages.length - shown.length} earlier messages: airlock chat show ${chat.id})`);
    for (const m of shown) {
      for (const p of m.parts) {
        if (p.type === 'text' && p.text) console.log(`\n${m.role === 'user' ? 'you' : 'assistant'}> ${p.text}${m.interrupted ? ' [interrupted]' : ''}`);
        else if (p.type === 'tool_call') console.log(`⚙ ${p.name}(${JSON.stringify(p.args)})`);
        else if (p.type === 'tool_result') console.log(`  → ${p.is_error ? 'error: ' : ''}${p.output.slice(0, 500)}`);
      }
    }
    for (const q of chat.queue) console.log(`\n(queued) you> ${q.content}`);
  }
}
