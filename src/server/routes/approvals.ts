// Deciding a chat agent's calls that wait for a person, and listing them.
import { notFound } from '../../errors.js';
import { type Approvals, checkDecision } from '../../agent/approvals.js';
import type { Db } from '../../store/db.js';
import type { Router } from '../http.js';
import * as v from '../validate.js';

export function approvalRoutes(router: Router, db: Db, approvals: Approvals): void {
  router.add('POST', '/api/chats/:id/approvals', async ({ user, params, body }) => {
    if (!v.isUuid(params.id!)) throw notFound('chat');
    const b = v.object(await body(), ['tool_call_id', 'decision', 'reason']);
    const toolCallId = v.reqStr(b, 'tool_call_id', { max: 200 });
    const decision = checkDecision(b.decision);
    const reason = v.str(b, 'reason', { max: 2000 }) ?? null;
    return { approval: await approvals.decide(user, params.id!, toolCallId, decision, reason) };
  });

  router.add('GET', '/api/approvals', async ({ user }) => ({ approvals: await approvals.waitingFor(db, user.id) }));
}
