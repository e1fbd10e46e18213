// Users and API tokens. Tokens are random 32-byte secrets; only their SHA-256 is stored.
import crypto from 'node:crypto';
import type { Queryable } from '../store/db.js';
import type { Bus } from '../bus/bus.js';

export interface User {
  id: string;
  name: string;
  is_admin: boolean;
  /** Set by authenticate(): how long the token is still valid (absent: no expiry). */
  expires_in_ms?: number;
  /** Set by authenticate(): the token the request came with. */
  token_id?: string;
}

const TOKEN_PREFIX = 'al_';

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | string[] | undefined): string | null {
  const m = typeof header === 'string' ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  return m ? m[1]! : null;
}

export function newTokenSecret(): string {
  return TOKEN_PREFIX + crypto.randomBytes(32).toString('base64url');
}

export function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token).digest('hex');
}

export async function createUser(q: Queryable, name: string, isAdmin: boolean): Promise<User> {
  const rows = await q.query<User>(
    'INSERT INTO users (name, is_admin) VALUES ($1, $2) RETURNING id, name, is_admin',
    [name, isAdmin],
  );
  return rows[0]!;
}

/** Every user, for an admin's list. */
export async function listUsers(q: Queryable): Promise<unknown[]> {
  return q.query('SELECT id, name, is_admin, created_at, disabled_at FROM users ORDER BY created_at');
}

export async function userExists(q: Queryable, name: string): Promise<boolean> {
  return (await q.query('SELECT 1 FROM users WHERE name = $1', [name])).length > 0;
}

/**
 * Disables a user (its tokens stop working; chats, grants and audit trail stay) or enables it
 * again; returns the user, or null when there is none of that name.
 */
export async function setUserDisabled(q: Queryable, name: string, disabled: boolean): Promise<{ id: string } | null> {
  const rows = await q.query<{ id: string }>(
    `UPDATE users SET disabled_at = CASE WHEN $2::boolean THEN coalesce(disabled_at, now()) END WHERE name = $1
     RETURNING id, name, is_admin, created_at, disabled_at`,
    [name, disabled],
  );
  return rows[0] ?? null;
}

/** The user's live tokens (never their secrets); `current` marks the one asking. */
export async function listTokens(q: Queryable, userId: string, currentTokenId: string | null): Promise<unknown[]> {
  return q.query(
    `SELECT id, name, prefix, created_at, expires_at, id = $2 AS current FROM api_tokens
     WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > now()) ORDER BY created_at`,
    [userId, currentTokenId],
  );
}

/**
 * A new token of the user. With `parent` (the token it is minted with) it expires no later than
 * the parent (whatever was asked) and is revoked with it.
 */
export async function issueToken(
  q: Queryable,
  userId: string,
  name = '',
  expiresInSeconds?: number,
  parent?: string,
  chatId?: string,
): Promise<{ id: string; token: string; expires_at: string | null }> {
  const token = newTokenSecret();
  const rows = await q.query<{ id: string; expires_at: Date | null }>(
    `INSERT INTO api_tokens (user_id, name, token_hash, prefix, expires_at, parent_id, chat_id)
     SELECT $1, $2, $3, $4,
            CASE WHEN $5::int IS NULL THEN p.expires_at
                 ELSE LEAST(now() + make_interval(secs => $5::int), p.expires_at) END,
            $6::uuid, $7::uuid
     FROM (SELECT (SELECT expires_at FROM api_tokens WHERE id = $6::uuid) AS expires_at) p
     RETURNING id, expires_at`,
    [userId, name, hashToken(token), token.slice(0, 10), expiresInSeconds ?? null, parent ?? null, chatId ?? null],
  );
  return { id: rows[0]!.id, token, expires_at: rows[0]!.expires_at ? new Date(rows[0]!.expires_at).toISOString() : null };
}

/**
 * Revokes a token (one of `viewer`'s, any for an admin) and every token minted from it, at any
 * depth; returns their ids (empty: no such token of the viewer's).
 */
export async function revokeToken(q: Queryable, id: string, viewer: { id: string; is_admin: boolean }): Promise<string[]> {
  const rows = await q.query<{ id: string }>(
    `WITH RECURSIVE tree AS (
       SELECT id FROM api_tokens WHERE id = $1 AND ($2 OR user_id = $3)
       UNION SELECT t.id FROM api_tokens t JOIN tree ON t.parent_id = tree.id)
     DELETE FROM api_tokens WHERE id IN (SELECT id FROM tree) RETURNING id`,
    [id, viewer.is_admin, viewer.id],
  );
  return rows.map((r) => r.id);
}

/** Why a socket opened with a token that a later check found invalid is closed. */
export const TOKEN_INVALID = 'the API token is no longer valid (revoked, expired, or its user disabled)';

/** Of these token ids, the ones still valid (not revoked or expired, their user not disabled). */
export async function validTokens(q: Queryable, ids: string[]): Promise<Set<string>> {
  if (!ids.length) return new Set();
  const rows = await q.query<{ id: string }>(
    `SELECT t.id FROM api_tokens t JOIN users u ON u.id = t.user_id
     WHERE t.id = ANY($1::uuid[]) AND u.disabled_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())`,
    [ids],
  );
  return new Set(rows.map((r) => r.id));
}

/**
 * The user a bearer token belongs to; 'disabled' when the token is valid but an admin disabled
 * its user; null when it is unknown or expired.
 */
export async function authenticate(q: Queryable, token: string): Promise<User | 'disabled' | null> {
  if (!token.startsWith(TOKEN_PREFIX) || token.length > 200) return null;
  const rows = await q.query<User & { left_ms: number | null; token_id: string; disabled: boolean }>(
    `SELECT u.id, u.name, u.is_admin, u.disabled_at IS NOT NULL AS disabled, t.id AS token_id,
            (extract(epoch FROM t.expires_at - now()) * 1000)::float8 AS left_ms
     FROM api_tokens t JOIN users u ON u.id = t.user_id
     WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > now())`,
    [hashToken(token)],
  );
  const r = rows[0];
  if (!r) return null;
  if (r.disabled) return 'disabled';
  return { id: r.id, name: r.name, is_admin: r.is_admin, token_id: r.token_id, ...(r.left_ms !== null ? { expires_in_ms: Number(r.left_ms) } : {}) };
}

/** On first start: creates the admin user and returns its token (null when users exist). */
export async function bootstrapAdmin(q: Queryable): Promise<string | null> {
  const existing = await q.query('SELECT 1 FROM users LIMIT 1');
  if (existing.length) return null;
  const admin = await createUser(q, 'admin', true);
  return (await issueToken(q, admin.id, 'bootstrap')).token;
}

/** What a replica is told to stop trusting: tokens, or every token of a user. */
export type Revocation = { token_ids: string[] } | { user_id: string };

/** Tells every replica to stop trusting tokens (revoked) or a user's tokens (the user was disabled). */
export function announceRevoked(bus: Bus, what: Revocation): void {
  if ('user_id' in what) return bus.publish('auth', { disabled_user: what.user_id });
  for (const id of what.token_ids) bus.publish('auth', { revoked: id });
}

/**
 * Calls `fn` for each revocation on any replica with a test for the users authenticated before
 * it (true: that user's requests, streams and sessions must end) and the reason to give them.
 */
export function onRevoked(bus: Bus, fn: (revoked: (u: User) => boolean, reason: string) => void): () => void {
  return bus.subscribe('auth', (m: { revoked?: unknown; disabled_user?: unknown }) => {
    const token = m?.revoked;
    const user = m?.disabled_user;
    if (typeof token === 'string') fn((u) => u.token_id === token, 'the API token was revoked');
    else if (typeof user === 'string') fn((u) => u.id === user, 'the user was disabled');
  });
}
