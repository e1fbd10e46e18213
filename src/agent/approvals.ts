// A person's approval of a chat agent's call. The call waits in chat_approvals, where the decision
// is stored (who, when, on which replica): the replica running the turn is told over the bus and
// reads the decision from the row, so a decision sent to any replica reaches the turn wherever it
// runs. The deadline decides a call no one decided (timeout: denied). A rule stored by
// `approve_chat` approves the same tool on the same resource for the rest of the chat.
import type { Bus } from '../bus/bus.js';
import type { Db, Queryable } from '../store/db.js';
import { badRequest, conflict, notFound } from '../errors.js';
import type { Decision } from './tools.js';

export const DECISIONS = ['approve', 'approve_chat', 'deny'] as const;
export type DecisionKind = (typeof DECISIONS)[number];

/** A lost bus message delays a decision by at most this long (the row is read again). */
const RECHECK_MS = 5_000;

export interface Approval {
  chat_id: string;
  tool_call_id: string;
  tool: string;
  resource: string;
  args: Record<string, unknown>;
  requested_at: string;
  deadline: string;
  decision: string | null;
  decided_by: string | null;
  decided_at: string | null;
  reason: string | null;
}

const COLS = `chat_id, tool_call_id, tool, resource, args, requested_at, deadline, decision, decided_by, decided_at, reason`;

export interface ApprovalRequest {
  chatId: string;
  ownerId: string;
  toolCallId: string;
  tool: string;
  resource: string;
  args: Record<string, unknown>;
}

export class Approvals {
  private waiters = new Map<string, () => void>();
  private unsub: () => void;

  constructor(
    private db: Db,
    private bus: Bus,
    private timeoutMs: number,
  ) {
    this.unsub = bus.subscribe('approval', (m) => this.waiters.get(`${m.chat_id}\n${m.tool_call_id}`)?.());
  }

  close(): void {
    this.unsub();
  }

  /** A rule of the chat that approves this call already (approve_chat), by whom; else null. */
  async ruleFor(chatId: string, tool: string, resource: string): Promise<string | null> {
    const rows = await this.db.query<{ approved_by: string }>('SELECT approved_by FROM chat_approval_rules WHERE chat_id = $1 AND tool = $2 AND resource = $3', [chatId, tool, resource]);
    return rows[0]?.approved_by ?? null;
  }

  /** Stores the waiting call; returns its deadline. A call asked again (a turn run again after a crash) keeps its row. */
  async request(r: ApprovalRequest): Promise<Approval> {
    const rows = await this.db.query<Approval>(
      `INSERT INTO chat_approvals (chat_id, tool_call_id, owner_id, tool, resource, args, deadline)
       VALUES ($1, $2, $3, $4, $5, $6, now() + $7 * interval '1 millisecond')
       ON CONFLICT (chat_id, tool_call_id) DO UPDATE SET tool = EXCLUDED.tool RETURNING ${COLS}`,
      [r.chatId, r.toolCallId, r.ownerId, r.tool, r.resource, JSON.stringify(r.args), this.timeoutMs],
    );
    return out(rows[0]!);
  }

  /**
   * Waits for the decision (told over the bus, read from the row; bounded by the deadline, when
   * the call is decided as a timeout). An abort (the turn interrupted) cancels the call.
   */
  async wait(a: Approval, signal: AbortSignal): Promise<Decision> {
    const key = `${a.chat_id}\n${a.tool_call_id}`;
    let wake: () => void = () => {};
    this.waiters.set(key, () => wake());
    const onAbort = () => wake();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      for (;;) {
        const row = await this.read(a.chat_id, a.tool_call_id);
        if (row?.decision) return decisionOf(row);
        if (signal.aborted) {
          const cancelled = await this.settle(a, 'cancelled', 'the turn was interrupted');
          if (cancelled) return { approved: false, by: 'no one: the turn was interrupted while the call waited' };
          continue; // decided meanwhile
        }
        const left = Date.parse(a.deadline) - Date.now();
        if (left <= 0) {
          if (await this.settle(a, 'timeout', null)) return { approved: false, by: 'no one decided in time (AIRLOCK_APPROVAL_TIMEOUT_MS)' };
          continue;
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, RECHECK_MS));
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
    } finally {
      this.waiters.delete(key);
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** Decides an undecided call as the deadline or an interrupt does; false when someone decided first. */
  private async settle(a: Approval, decision: 'timeout' | 'cancelled', reason: string | null): Promise<boolean> {
    const rows = await this.db.query(
      `UPDATE chat_approvals SET decision = $3, decided_at = now(), decided_on = $4, reason = $5
       WHERE chat_id = $1 AND tool_call_id = $2 AND decision IS NULL RETURNING 1`,
      [a.chat_id, a.tool_call_id, decision, this.bus.replicaId, reason],
    );
    return rows.length > 0;
  }

  private async read(chatId: string, toolCallId: string): Promise<Approval | null> {
    const rows = await this.db.query<Approval>(`SELECT ${COLS} FROM chat_approvals WHERE chat_id = $1 AND tool_call_id = $2`, [chatId, toolCallId]);
    return rows[0] ? out(rows[0]) : null;
  }

  /**
   * A person's decision (the chat's owner, or an admin): stored once, then told to the replica
   * running the turn. Another user's chat reads as not found; a decided call is a 409.
   */
  async decide(user: { id: string; name: string; is_admin: boolean }, chatId: string, toolCallId: string, decision: DecisionKind, reason: string | null): Promise<Approval> {
    const out_ = await this.db.tx(async (q) => {
      const chat = await q.query('SELECT 1 FROM chats WHERE id = $1 AND ($2 OR owner_id = $3)', [chatId, user.is_admin, user.id]);
      if (!chat.length) throw notFound('chat');
      const rows = await q.query<Approval>(
        `UPDATE chat_approvals SET decision = $3, decided_by = $4, decided_at = now(), decided_on = $5, reason = $6
         WHERE chat_id = $1 AND tool_call_id = $2 AND decision IS NULL RETURNING ${COLS}`,
        [chatId, toolCallId, decision, user.name, this.bus.replicaId, reason],
      );
      if (!rows.length) {
        const known = await q.query<{ decision: string }>('SELECT decision FROM chat_approvals WHERE chat_id = $1 AND tool_call_id = $2', [chatId, toolCallId]);
        if (!known.length) throw notFound(`tool call "${toolCallId}" waiting for approval`);
        throw conflict(`the call was already decided (${known[0]!.decision})`, 'already_decided');
      }
      const a = rows[0]!;
      if (decision === 'approve_chat') {
        await q.query(
          'INSERT INTO chat_approval_rules (chat_id, tool, resource, approved_by) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING',
          [chatId, a.tool, a.resource, user.name],
        );
      }
      return out(a);
    });
    this.bus.publish('approval', { chat_id: chatId, tool_call_id: toolCallId });
    return out_;
  }

  /** The calls waiting for this user's decision: in their own chats (an admin's too, only their own). */
  async waitingFor(q: Queryable, userId: string, chatId?: string): Promise<Approval[]> {
    const rows = await q.query<Approval>(
      `SELECT ${COLS} FROM chat_approvals WHERE owner_id = $1 AND decision IS NULL AND ($2::uuid IS NULL OR chat_id = $2::uuid) ORDER BY requested_at`,
      [userId, chatId ?? null],
    );
    return rows.map(out);
  }
}

/** The chat's calls waiting for a decision. */
export async function waitingApprovals(q: Queryable, chatId: string): Promise<Approval[]> {
  return (await q.query<Approval>(`SELECT ${COLS} FROM chat_approvals WHERE chat_id = $1 AND decision IS NULL ORDER BY requested_at`, [chatId])).map(out);
}

export function checkDecision(raw: unknown): DecisionKind {
  if (typeof raw !== 'string' || !(DECISIONS as readonly string[]).includes(raw)) throw badRequest(`"decision" must be one of ${DECISIONS.join(', ')}`, 'invalid_field');
  return raw as DecisionKind;
}

function decisionOf(a: Approval): Decision {
  const by = a.decided_by ?? (a.decision === 'timeout' ? 'no one decided in time (AIRLOCK_APPROVAL_TIMEOUT_MS)' : 'no one');
  if (a.decision === 'approve' || a.decision === 'approve_chat') return { approved: true, by };
  return { approved: false, by: a.decision === 'deny' ? `denied by ${by}` : by, ...(a.reason ? { reason: a.reason } : {}) };
}

function out(a: Approval): Approval {
  const iso = (d: unknown) => (d ? new Date(d as string).toISOString() : null);
  return { ...a, requested_at: iso(a.requested_at)!, deadline: iso(a.deadline)!, decided_at: iso(a.decided_at) };
}
