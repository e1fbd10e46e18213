// Generates a short chat title after the first turn, in the background; never delays a reply.
import type { Bus } from '../bus/bus.js';
import type { Db } from '../store/db.js';
import type { Logger } from '../log.js';
import type { Providers } from './providers/index.js';
import { chatOut, setGeneratedTitle, untitledChat } from './sql/chats.js';
import { loadMessages } from './sql/messages.js';
import { ev, textOf } from './types.js';

export const TITLE_PROMPT =
  'Write a title of at most 8 words for the conversation below. Reply with the title only: plain text, no quotes, no final period.';

export async function generateTitle(db: Db, bus: Bus, providers: Providers, log: Logger, chatId: string): Promise<void> {
  const chat = await untitledChat(db, chatId);
  if (!chat) return;
  const messages = (await loadMessages(db, chatId)).filter((m) => m.role !== 'tool');
  const firstUser = messages.find((m) => m.role === 'user');
  const firstReply = messages.find((m) => m.role === 'assistant');
  if (!firstUser || !firstReply) return;
  const transcript = `User: ${textOf(firstUser.parts).slice(0, 2000)}\nAssistant: ${textOf(firstReply.parts).slice(0, 2000)}`;
  const { provider, model } = await providers.get(chat.model);
  const signal = AbortSignal.timeout(15_000);
  let title = '';
  for await (const e of provider.stream({
    model,
    system: TITLE_PROMPT,
    messages: [{ id: 't', seq: 0, role: 'user', parts: [{ type: 'text', text: transcript }] }],
    tools: [],
    signal,
    maxTokens: 30,
  })) {
    if (e.type === 'text') title += e.text;
  }
  title = title.replace(/\s+/g, ' ').trim().replace(/^["'“]+|["'”.]+$/g, '').slice(0, 80);
  if (!title) return;
  const updated = await setGeneratedTitle(db, chatId, title);
  if (!updated) return;
  bus.publish('events', ev(chatId, undefined, 'chat', { chat: chatOut(updated) }));
  // This update held the row lock for a moment; a wake consumed meanwhile could have skipped it.
  if (updated.status === 'pending') bus.publish('wake', { chat_id: chatId });
  log.debug({ chat_id: chatId, title }, 'title generated');
}
