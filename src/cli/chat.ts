// `airlock chat`: new chats, send, live streaming output (Ctrl-C interrupts the turn), list, show.
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { ApiClient, ApiClientError } from '../client/api.js';
import { num } from '../config.js';
import type { Message, StreamEvent } from '../chat/types.js';
import { CliError, resolveClient } from './config.js';
import { TypeAhead } from './type-ahead.js';

const HELP = `Usage:
  airlock chat [MESSAGE]              new chat; with MESSAGE, ask once and print the reply,
                                      without it, an interactive session (Ctrl-D ends it)
  airlock chat --chat ID [MESSAGE]    continue a chat
  airlock chat list [--archived]      your chats, newest first
  airlock chat show ID                a chat's messages
  airlock chat archive ID | unarchive ID | delete ID

Options:
  --model M            model for a new chat (e.g. gpt-4o-mini, anthropic:claude-sonnet-4-5)
  --system TEXT        system prompt for a new chat
  --reasoning          also print the model's reasoning (to stderr)
  --json               machine-readable output (list, show)
  --server URL, --token T   override the saved login

While a reply streams, Ctrl-C interrupts the turn (the partial reply is kept); a second
Ctrl-C stops waiting (exits; in an interactive session, back to the prompt). In an interactive
session, lines typed while a reply streams are sent, in order, when it ends; at the prompt,
Ctrl-C clears the line and on an empty line quits, as Ctrl-D does.`;

export async function chatCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      chat: { type: 'string' },
      model: { type: 'string' },
      system: { type: 'string' },
      archived: { type: 'boolean' },
      reasoning: { type: 'boolean' },
      json: { type: 'boolean' },
      server: { type: 'string' },
      token: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const { server, token } = resolveClient(values);
  const api = new ApiClient(server, token, num('requestTimeoutMs'));
  const [sub, ...args] = positionals;
  const out = new Printer(Boolean(values.reasoning));

  if (sub === 'list' && !values.chat) {
    const { chats } = await api.get(`/api/chats?archived=${values.archived ? 'true' : 'false'}`);
    if (values.json) console.log(JSON.stringify(chats));
    else if (!chats.length) console.log(values.archived ? 'No archived chats.' : 'No chats yet. Start one with `airlock chat "hello"`.');
    else for (const c of chats) console.log(`${c.id}  ${c.status.padEnd(15)}  ${c.updated_at.slice(0, 16).replace('T', ' ')}  ${c.title || '(untitled)'}`);
    return 0;
  }
  if ((sub === 'show' || sub === 'archive' || sub === 'unarchive' || sub === 'delete') && !values.chat) {
    const id = args[0];
    if (!id) throw new CliError(`airlock chat ${sub} ID`, 2);
    if (sub === 'archive' || sub === 'unarchive') {
      await api.post(`/api/chats/${encodeURIComponent(id)}/${sub}`);
      console.log(`${sub === 'archive' ? 'Archived' : 'Unarchived'} ${id}`);
      return 0;
    }
    if (sub === 'delete') {
      await api.delete(`/api/chats/${encodeURIComponent(id)}`);
      console.log(`Deleted ${id}`);
      return 0;
    }
    const chat = await api.get(`/api/chats/${encodeURIComponent(id)}`);
    if (values.json) console.log(JSON.stringify(chat));
    else out.transcript(chat);
    return 0;
  }

  const message = positionals.join(' ');
  let chatId = values.chat;
  if (chatId) await api.get(`/api/chats/${encodeURIComponent(chatId)}`); // fail fast on an unknown id
  const session = new TurnRunner(api, out);
  if (message) {
    if (!chatId) {
      const chat = await api.post('/api/chats', { message, model: values.model, system_prompt: values.system });
      process.stderr.write(`chat ${chat.id}\n`);
      return session.follow(chat.id, 0);
    }
    return session.send(chatId, message);
  }
  if (!process.stdin.isTTY) {
    const piped = (await readAll(process.stdin)).trim();
    if (!piped) throw new CliError('nothing to send: give a MESSAGE or pipe one in', 2);
    if (!chatId) {
      const chat = await api.post('/api/chats', { message: piped, model: values.model, system_prompt: values.system });
      return session.follow(chat.id, 0);
    }
    return session.send(chatId, piped);
  }
  return interactive(session, out, (text) =>
    chatId
      ? session.send(chatId, text)
      : api.post('/api/chats', { message: text, model: values.model, system_prompt: values.system }).then((chat) => {
          chatId = chat.id as string;
          process.stderr.write(`chat ${chatId}\n`);
          return session.follow(chatId, 0);
        }),
    chatId ? `continuing chat ${chatId}` : 'new chat',
  );
}

/**
 * The interactive session: a prompt, then the reply streamed. While it streams, Ctrl-C
 * interrupts the turn (twice: back to the prompt) and lines typed meanwhile are sent, in order,
 * when it ends. At the prompt, Ctrl-C clears the line, or on an empty one quits, as Ctrl-D does.
 */
async function interactive(session: TurnRunner, out: Printer, turn: (text: string) => Promise<number>, what: string): Promise<number> {
  process.stderr.write(`${what}; Ctrl-D to quit\n`);
  let code = 0;
  let unfinished = '';
  const typedAhead: string[] = [];
  for (;;) {
    const keys = new TypeAhead(
      process.stdin,
      () => {
        if (session.interrupt() === 'gave up') typedAhead.length = 0;
      },
      (line) => {
        typedAhead.push(line);
        out.endLine();
        process.stderr.write(`[sent when this reply ends] ${line}\n`);
      },
    );
    let text = typedAhead.shift();
    if (text !== undefined) {
      process.stdout.write(`you> ${text}\n`);
      keys.start();
    } else {
      const line = await prompt(unfinished, keys);
      if (line === null) return code;
      text = line.trim();
      if (!text) {
        unfinished = keys.stop();
        continue;
      }
    }
    try {
      code = await turn(text);
    } catch (err) {
      // The session goes on: a refused message (no provider configured, too long) or a lost
      // server is reported and the user can try again or quit.
      if (!(err instanceof ApiClientError || err instanceof CliError)) throw err;
      out.endLine();
      process.stderr.write(`airlock: ${err.message}\n`);
      code = 1;
      typedAhead.length = 0;
    } finally {
      unfinished = keys.stop();
    }
  }
}

/**
 * One line from the user (null: Ctrl-D, or Ctrl-C on an empty line), `typed` already in it. The
 * moment the line is entered, `next` takes the keyboard: it starts inside that key's own event,
 * so the keys after it in the same read (a pasted block) reach it rather than nobody.
 */
function prompt(typed: string, next: TypeAhead): Promise<string | null> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, prompt: 'you> ' });
  return new Promise((resolve) => {
    let answered = false;
    rl.once('line', (line) => {
      answered = true;
      rl.close();
      next.start();
      resolve(line);
    });
    rl.once('close', () => {
      if (!answered) {
        process.stdout.write('\n');
        resolve(null);
      }
    });
    rl.on('SIGINT', () => {
      if (!rl.line) return rl.close();
      rl.write(null, { ctrl: true, name: 'u' }); // clear what is typed
    });
    rl.prompt();
    if (typed) rl.write(typed);
  });
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let s = '';
  for await (const c of stream) s += c;
  return s;
}

/** Streams one turn to the terminal and returns the exit code (0 ok, 1 error, 130 interrupted). */
class TurnRunner {
  /** Ctrl-C for the turn being followed. */
  private current: (() => 'interrupting' | 'gave up') | null = null;

  constructor(
    private api: ApiClient,
    private out: Printer,
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
      return sent.message ? { messageId: sent.message.id as string } : { queueId: sent.queued.id as number };
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
      let textShown = false;
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
        if (e.type === 'history_truncated' && e.reason === 'worker_lost' && textShown) {
          // The server that ran the turn died; another runs it again from its start.
          this.out.endLine();
          process.stderr.write('[the reply starts over: the server running it stopped]\n');
          textShown = false;
        }
        if (e.type === 'delta') textShown = true;
        this.out.event(e);
        if (e.type === 'status' && ['waiting', 'error', 'requires_action'].includes(e.status as string)) {
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
            // The first connection and refusals (token revoked, chat deleted) are final.
            const status = err instanceof ApiClientError ? err.status : 0;
            if (!lostSince || (status >= 400 && status < 500)) return fail(err);
            retry(err);
          });
      };
      const retry = (err: Error) => {
        const waited = Date.now() - lostSince;
        if (waited > RECONNECT_FOR_MS) return fail(new CliError(`lost the chat's stream and could not reconnect for ${Math.round(waited / 1000)} s: ${err.message}`));
        setTimeout(connect, Math.min(RECONNECT_MAX_DELAY_MS, 100 + waited / 4));
      };
      connect();
    });
  }
}

/** Which user message's reply `follow` prints: a new chat's first, one sent, or one queued. */
type OurMessage = { first: true } | { messageId: string } | { queueId: number };

/** How long `follow` tries to reopen a lost stream, and the longest wait between two tries. */
const RECONNECT_FOR_MS = 60_000;
const RECONNECT_MAX_DELAY_MS = 2_000;

class Printer {
  private midLine = false;
  private lastKind = '';

  constructor(private reasoning: boolean) {}

  event(e: StreamEvent): void {
    switch (e.type) {
      case 'delta':
        if (e.kind === 'reasoning') {
          if (this.reasoning) process.stderr.write(`\x1b[2m${e.text}\x1b[0m`);
          return;
        }
        if (this.lastKind !== 'text' && this.midLine) this.endLine();
        process.stdout.write(e.text as string);
        this.midLine = !(e.text as string).endsWith('\n');
        this.lastKind = 'text';
        return;
      case 'tool_call': {
        const c = e.call as { name: string; args: unknown };
        this.endLine();
        process.stderr.write(`⚙ ${c.name}(${JSON.stringify(c.args)})\n`);
        this.lastKind = 'tool';
        return;
      }
      case 'tool_result': {
        const r = e.result as { output: string; is_error?: boolean };
        process.stderr.write(`  → ${r.is_error ? 'error: ' : ''}${r.output.slice(0, 500)}\n`);
        return;
      }
      case 'retry':
        this.endLine();
        process.stderr.write(`[provider error, retry ${e.attempt}/${e.max_retries} in ${e.delay_ms} ms: ${e.error}]\n`);
        return;
      case 'error':
        this.endLine();
        process.stderr.write(`error: ${e.message}\n`);
        return;
      case 'message': {
        const m = e.message as Message;
        if (m.role === 'assistant' && m.interrupted) {
          this.endLine();
          process.stderr.write('[interrupted]\n');
        }
        return;
      }
      case 'action_required':
        this.endLine();
        process.stderr.write(`[the model called client-side tools: ${(e.calls as { name: string }[]).map((c) => c.name).join(', ')}; answer with POST /api/chats/${e.chat_id}/tool-results]\n`);
        return;
    }
  }

  endLine(): void {
    if (this.midLine) process.stdout.write('\n');
    this.midLine = false;
    this.lastKind = '';
  }

  transcript(chat: { id: string; title: string; status: string; model: string; messages: Message[]; queue: { content: string }[] }): void {
    console.log(`# ${chat.title || '(untitled)'}  [${chat.status}, ${chat.model}]  ${chat.id}`);
    for (const m of chat.messages) {
      for (const p of m.parts) {
        if (p.type === 'text' && p.text) console.log(`\n${m.role === 'user' ? 'you' : 'assistant'}> ${p.text}${m.interrupted ? ' [interrupted]' : ''}`);
        else if (p.type === 'tool_call') console.log(`⚙ ${p.name}(${JSON.stringify(p.args)})`);
        else if (p.type === 'tool_result') console.log(`  → ${p.is_error ? 'error: ' : ''}${p.output.slice(0, 500)}`);
      }
    }
    for (const q of chat.queue) console.log(`\n(queued) you> ${q.content}`);
  }
}
