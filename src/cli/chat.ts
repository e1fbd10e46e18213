// `airlock chat`: new chats, send, live streaming output (Ctrl-C interrupts the turn), list, show.
import { parseArgs } from 'node:util';
import { ApiClient } from '../client/api.js';
import { ApprovalPrompt } from './approval-prompt.js';
import { CLIENT_OPTIONS, CliError, resolveClient } from './config.js';
import { interactive } from './chat-interactive.js';
import { Printer, TurnRunner } from './chat-turn.js';
import { loadConfig } from '../config.js';

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
  --live               print the reply as it streams even when stdout is not a terminal (by
                       default a pipe or file gets each reply once it is stored: a reply that
                       starts over, after a provider error or a server that died, is never
                       printed twice; on a terminal a notice on stderr marks it)
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
      ...CLIENT_OPTIONS,
      chat: { type: 'string' },
      model: { type: 'string' },
      system: { type: 'string' },
      archived: { type: 'boolean' },
      reasoning: { type: 'boolean' },
      live: { type: 'boolean' },
      json: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const { server, token } = resolveClient(values);
  const api = new ApiClient(server, token);
  const [sub, ...args] = positionals;
  // Streamed to a terminal; a pipe or a file gets only what each reply committed to.
  const out = new Printer(Boolean(values.reasoning), process.stdout, process.stderr, Boolean(values.live || process.stdout.isTTY));

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
  const existing = chatId ? await api.get(`/api/chats/${encodeURIComponent(chatId)}`) : null; // fail fast on an unknown id
  const session = new TurnRunner(api, out, loadConfig().streamReconnectMs);
  /** Sends `text` to the chat, or starts a new chat with it (and says which); prints the reply. */
  const ask = async (text: string): Promise<number> => {
    if (chatId) return session.send(chatId, text);
    const chat = await api.post('/api/chats', { message: text, model: values.model, system_prompt: values.system });
    chatId = chat.id as string;
    process.stderr.write(`chat ${chatId}\n`);
    return session.follow(chatId, 0);
  };
  if (message) {
    // On a terminal, a call that waits for approval is asked about here (stdin is free then).
    if (process.stdin.isTTY && process.stderr.isTTY) out.approvals = new ApprovalPrompt(api);
    return ask(message);
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
  // Continuing a chat: its last exchange, for context.
  if (existing) out.transcript(existing, 2);
  return interactive(session, out, ask, chatId ? `continuing chat ${chatId}` : 'new chat');
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let s = '';
  for await (const c of stream) s += c;
  return s;
}
