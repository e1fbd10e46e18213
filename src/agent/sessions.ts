// The launch sessions a chat's agent holds: one per (chat, resource), opened through the server's
// own launch endpoint exactly as `airlock launch` opens one (grant, quota, gateway and audit checks
// included), with a token minted for the chat's owner that names the chat. It stays open while the
// chat keeps using it, so a second command is a new connection in the tube (a channel on the
// gateway's SSH connection), not a new session; after AGENT_IDLE_MS without a command it closes
// and its token is revoked.
import type { Db } from '../store/db.js';
import type { Logger } from '../log.js';
import { issueToken, revokeToken } from '../auth/tokens.js';
import { openTube, type OpenTube } from '../launch/connect.js';
import { ClientSession } from '../launch/session.js';
import { Timing } from '../launch/timing.js';

/** A chat's session to a resource closes after this long without a command. */
export const AGENT_IDLE_MS = 120_000;
/** Its token expires after this long, used or not (a session lives at most this long). */
const AGENT_TOKEN_S = 3600;

interface Held {
  session: ClientSession;
  open: OpenTube;
  tokenId: string;
  busy: number;
  idle: NodeJS.Timeout | null;
}

export class AgentSessions {
  private held = new Map<string, Promise<Held>>();

  constructor(
    private db: Db,
    /** The server's own URL (its listener), known once it listens. */
    private serverUrl: () => string,
    private log: Logger,
  ) {}

  /**
   * Runs fn on the chat's session to the resource, opening it first when there is none. The
   * session is the chat owner's, so the launch endpoint applies that user's access as it stands.
   */
  async use<T>(chatId: string, ownerId: string, resource: string, fn: (s: ClientSession, sessionId: string) => Promise<T>): Promise<T> {
    const key = `${chatId}\n${resource}`;
    let p = this.held.get(key);
    if (!p) {
      p = this.open(chatId, ownerId, resource);
      this.held.set(key, p);
      p.catch(() => this.held.delete(key));
    }
    const h = await p;
    if (h.open.tube.closed) {
      // Ended under us (revoked, ended by someone, the gateway left): the next call opens anew.
      this.close(key, h);
      return this.use(chatId, ownerId, resource, fn);
    }
    h.busy++;
    if (h.idle) clearTimeout(h.idle);
    h.idle = null;
    try {
      return await fn(h.session, h.open.session);
    } finally {
      if (--h.busy === 0 && this.held.get(key) === p) {
        h.idle = setTimeout(() => this.close(key, h), AGENT_IDLE_MS);
        h.idle.unref();
      }
    }
  }

  private async open(chatId: string, ownerId: string, resource: string): Promise<Held> {
    const token = await issueToken(this.db, ownerId, `agent of chat ${chatId}`, AGENT_TOKEN_S, undefined, chatId);
    try {
      const open = await openTube({ server: this.serverUrl(), token: token.token, resource, direct: null, attempts: 2 }, new Timing(performance.now(), false));
      this.log.info({ chat_id: chatId, resource, session: open.session }, 'agent session opened');
      return { session: new ClientSession(open), open, tokenId: token.id, busy: 0, idle: null };
    } catch (err) {
      await revokeToken(this.db, token.id, { id: ownerId, is_admin: false }).catch(() => {});
      throw err;
    }
  }

  private close(key: string, h: Held): void {
    if (h.idle) clearTimeout(h.idle);
    this.held.delete(key);
    h.open.close();
    void revokeToken(this.db, h.tokenId, { id: '', is_admin: true }).catch((err) => this.log.warn({ err }, 'could not revoke an agent token'));
  }

  /** Closes every session (the server is stopping). */
  async closeAll(): Promise<void> {
    for (const [key, p] of [...this.held.entries()]) {
      const h = await p.catch(() => null);
      if (h) this.close(key, h);
    }
  }
}
