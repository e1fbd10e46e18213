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

export async function issueToken(
  q: Queryable,
  userId: string,
  name = '',
  expiresInSeconds?: number,
): Promise<{ id: string; token: string; expires_at: string | null }> {
  const token = newTokenSecret();
  const rows = await q.query<{ id: string; expires_at: Date | null }>(
    `INSERT INTO api_tokens (user_id, name, token_hash, prefix, expires_at)
     VALUES ($1, $2, $3, $4, CASE WHEN $5::int IS NULL THEN NULL ELSE now() + make_interval(secs => $5::int) END)
     RETURNING id, expires_at`,
    [userId, name, hashToken(token), token.slice(0, 10), expiresInSeconds ?? null],
  );
  return { id: rows[0]!.id, token, expires_at: rows[0]!.expires_at ? new Date(rows[0]!.expires_at).toISOString() : null };
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

/** What a replica is told to stop trusting: one token, or every token of a user. */
export type Revocation = { token_id: string } | { user_id: string };

/** Tells every replica to stop trusting a token (revoked) or a user's tokens (the user was disabled). */
export function announceRevoked(bus: Bus, what: Revocation): void {
  bus.publish('auth', 'token_id' in what ? { revoked: what.token_id } : { disabled_user: what.user_id });
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
