// Chat REST endpoints. Ids of other users' chats answer 404, exactly like unknown ids.
import { notFound } from '../../errors.js';
import type { ChatService } from '../../chat/service.js';
import { Reply, type Router } from '../http.js';
import * as v from '../validate.js';

const chatId = (params: Record<string, string>) => {
  const id = params.id!;
  if (!v.isUuid(id)) throw notFound('chat');
  return id;
};

/** maxChars: the longest message or system prompt accepted (AIRLOCK_MAX_MESSAGE_CHARS). */
export function chatRoutes(router: Router, chats: ChatService, maxChars: number): void {

  router.add('POST', '/api/chats', async ({ user, body }) => {
    const b = v.object(await body(), ['title', 'model', 'system_prompt', 'message', 'tools']);
    const chat = await chats.create(user.id, {
      title: v.str(b, 'title', { max: 200 }),
      model: v.str(b, 'model', { min: 1, max: 200 }),
      system_prompt: v.str(b, 'system_prompt', { max: maxChars }),
      message: v.str(b, 'message', { min: 1, max: maxChars }),
      tools: v.arr(b, 'tools', 64) as any,
    });
    return new Reply(201, chat);
  });

  router.add('GET', '/api/chats', async ({ user, query }) => {
    const limitRaw = query.get('limit');
    const limit = limitRaw === null ? 50 : Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw v.badRequestFor('limit', 'an integer from 1 to 500');
    const archived = query.get('archived');
    if (archived !== null && archived !== 'true' && archived !== 'false') throw v.badRequestFor('archived', 'true or false');
    const before = query.get('before') ?? undefined;
    if (before !== undefined && Number.isNaN(Date.parse(before))) throw v.badRequestFor('before', 'an ISO timestamp');
    return { chats: await chats.list(user.id, { archived: archived === 'true', limit, before }) };
  });

  router.add('GET', '/api/chats/:id', async ({ user, params }) => chats.get(user.id, chatId(params)));

  router.add('PATCH', '/api/chats/:id', async ({ user, params, body }) => {
    const b = v.object(await body(), ['title', 'model', 'system_prompt', 'archived']);
    const id = chatId(params);
    const archived = v.bool(b, 'archived');
    let out = await chats.update(user.id, id, {
      title: v.str(b, 'title', { min: 1, max: 200 }),
      model: v.str(b, 'model', { min: 1, max: 200 }),
      system_prompt: b.system_prompt === null ? null : v.str(b, 'system_prompt', { max: maxChars }),
    });
    if (archived !== undefined) out = await chats.setArchived(user.id, id, archived);
    return out;
  });

  router.add('DELETE', '/api/chats/:id', async ({ user, params }) => chats.remove(user.id, chatId(params)));
  router.add('POST', '/api/chats/:id/archive', async ({ user, params }) => chats.setArchived(user.id, chatId(params), true));
  router.add('POST', '/api/chats/:id/unarchive', async ({ user, params }) => chats.setArchived(user.id, chatId(params), false));

  router.add('POST', '/api/chats/:id/messages', async ({ user, params, body }) => {
    const b = v.object(await body(), ['content', 'busy']);
    const content = v.reqStr(b, 'content', { max: maxChars });
    const busy = v.oneOf(b, 'busy', ['queue', 'interrupt'] as const);
    const out = await chats.send(user.id, chatId(params), content, busy);
    return new Reply(out.queued ? 202 : 201, out);
  });

  router.add('PATCH', '/api/chats/:id/messages/:mid', async ({ user, params, body }) => {
    const b = v.object(await body(), ['content']);
    const content = v.reqStr(b, 'content', { max: maxChars });
    if (!v.isUuid(params.mid!)) throw notFound('message');
    return chats.edit(user.id, chatId(params), params.mid!, content);
  });

  router.add('POST', '/api/chats/:id/interrupt', async ({ user, params }) => chats.interrupt(user.id, chatId(params)));

  router.add('DELETE', '/api/chats/:id/queue/:qid', async ({ user, params }) => {
    const qid = Number(params.qid);
    if (!Number.isSafeInteger(qid) || qid < 1) throw notFound('queued message');
    return chats.deleteQueued(user.id, chatId(params), qid);
  });

  router.add('POST', '/api/chats/:id/tool-results', async ({ user, params, body }) => {
    const b = v.object(await body(), ['results']);
    const raw = v.arr(b, 'results', 64);
    if (!raw?.length) throw v.badRequestFor('results', 'a non-empty array');
    const results = raw.map((r, i) => {
      const o = v.object(r, ['tool_call_id', 'output', 'is_error']);
      return {
        tool_call_id: v.reqStr(o, 'tool_call_id', { max: 200 }),
        output: v.str(o, 'output', { max: maxChars }) ?? (() => { throw v.badRequestFor(`results[${i}].output`, 'a string'); })(),
        is_error: v.bool(o, 'is_error'),
      };
    });
    return chats.submitToolResults(user.id, chatId(params), results);
  });
}
