// Resources, grants, gateways and the session audit trail in the database.
import crypto from 'node:crypto';
import type { Db, Queryable } from '../store/db.js';
import { hashToken } from '../auth/tokens.js';
import type { SecretBox } from './secretbox.js';
import type { Logger } from '../log.js';

export const RESOURCE_KINDS = ['tcp', 'ssh', 'shell'] as const;
export type ResourceKind = (typeof RESOURCE_KINDS)[number];

export interface Resource {
  id: string;
  name: string;
  kind: ResourceKind;
  target: string;
  gateway: string;
  has_credential: boolean;
}

export interface Credential {
  username: string;
  password?: string;
  private_key?: string;
  passphrase?: string;
}

export interface Gateway {
  id: string;
  name: string;
  group: string;
  online: boolean;
  last_seen_at: string | null;
}

const GATEWAY_TOKEN_PREFIX = 'algw_';

const RESOURCE_COLS = `id, name, kind, target, gateway, credential_enc IS NOT NULL AS has_credential`;
const AGENT_RESOURCE_COLS = `r.id, r.name, r.kind, r.target, r.gateway, r.credential_enc IS NOT NULL AS has_credential`;

export async function listResources(q: Queryable, user: { id: string; is_admin: boolean }): Promise<Resource[]> {
  if (user.is_admin) return q.query<Resource>(`SELECT ${RESOURCE_COLS} FROM resources ORDER BY name`);
  return q.query<Resource>(
    `SELECT ${RESOURCE_COLS} FROM resources r WHERE EXISTS (SELECT 1 FROM grants g WHERE g.resource_id = r.id AND g.user_id = $1) ORDER BY name`,
    [user.id],
  );
}

/** A resource the user may launch (admins may launch all), with its sealed credential. */
export async function launchableResource(
  q: Queryable,
  user: { id: string; is_admin: boolean },
  name: string,
): Promise<(Resource & { credential_enc: string | null }) | null> {
  const rows = await q.query<Resource & { credential_enc: string | null }>(
    `SELECT ${RESOURCE_COLS}, credential_enc FROM resources r
     WHERE name = $1 AND ($2 OR EXISTS (SELECT 1 FROM grants g WHERE g.resource_id = r.id AND g.user_id = $3))`,
    [name, user.is_admin, user.id],
  );
  return rows[0] ?? null;
}

/**
 * A resource a chat's agent may use for its owner, with the grant's agent setting (an admin's
 * resources without a grant: ask). Null for an unknown resource, one the owner may not launch, and
 * one whose grant says deny: the agent cannot tell these apart.
 */
export async function agentResource(
  q: Queryable,
  ownerId: string,
  name: string,
): Promise<(Resource & { agent: 'ask' | 'allow' }) | null> {
  const rows = await q.query<Resource & { agent: 'deny' | 'ask' | 'allow' | null; is_admin: boolean }>(
    `SELECT ${AGENT_RESOURCE_COLS}, g.agent, u.is_admin FROM resources r JOIN users u ON u.id = $1
     LEFT JOIN grants g ON g.resource_id = r.id AND g.user_id = u.id
     WHERE r.name = $2 AND (g.user_id IS NOT NULL OR u.is_admin) AND u.disabled_at IS NULL`,
    [ownerId, name],
  );
  const r = rows[0];
  if (!r || r.agent === 'deny') return null;
  const { is_admin: _admin, agent, ...resource } = r;
  return { ...resource, agent: agent ?? 'ask' };
}

/** The resources a chat's agent may use for its owner (not those whose grant says deny). */
export async function agentResources(q: Queryable, ownerId: string): Promise<(Resource & { agent: 'ask' | 'allow' })[]> {
  const rows = await q.query<Resource & { agent: 'ask' | 'allow' | null }>(
    `SELECT ${AGENT_RESOURCE_COLS}, g.agent FROM resources r JOIN users u ON u.id = $1
     LEFT JOIN grants g ON g.resource_id = r.id AND g.user_id = u.id
     WHERE (g.user_id IS NOT NULL OR u.is_admin) AND u.disabled_at IS NULL AND g.agent IS DISTINCT FROM 'deny'
     ORDER BY r.name`,
    [ownerId],
  );
  return rows.map((r) => ({ ...r, agent: r.agent ?? 'ask' }));
}

export async function findResource(q: Queryable, name: string): Promise<Resource | null> {
  const rows = await q.query<Resource>(`SELECT ${RESOURCE_COLS} FROM resources WHERE name = $1`, [name]);
  return rows[0] ?? null;
}

/** Creates a resource; its credential is sealed for it (its id is the seal's associated data). */
export async function createResource(
  q: Queryable,
  secrets: SecretBox,
  r: { name: string; kind: ResourceKind; target: string; gateway: string; credential?: Credential },
): Promise<Resource> {
  const id = crypto.randomUUID();
  const rows = await q.query<Resource>(
    `INSERT INTO resources (id, name, kind, target, gateway, credential_enc) VALUES ($1, $2, $3, $4, $5, $6)
     RETURNING ${RESOURCE_COLS}`,
    [id, r.name, r.kind, r.target, r.gateway, r.credential ? secrets.seal(r.credential, id) : null],
  );
  return rows[0]!;
}

/**
 * Credentials sealed in the first format (no associated data, any tag length) are sealed again,
 * bound to their resource. Run at every start; a blob this server's key does not open is left
 * (and reported) for an admin to set again. Returns how many were sealed again.
 */
export async function resealLegacyCredentials(q: Queryable, secrets: SecretBox, log: Pick<Logger, 'warn'>): Promise<number> {
  const rows = await q.query<{ id: string; name: string; credential_enc: string }>(`SELECT id, name, credential_enc FROM resources WHERE credential_enc LIKE 'v1.%'`);
  let n = 0;
  for (const r of rows) {
    let value: unknown;
    try {
      value = secrets.openLegacy(r.credential_enc);
    } catch {
      log.warn({ resource: r.name }, "a resource's credential does not open with this server's key (AIRLOCK_SECRET_KEY); set it again");
      continue;
    }
    const done = await q.query('UPDATE resources SET credential_enc = $3 WHERE id = $1 AND credential_enc = $2 RETURNING id', [r.id, r.credential_enc, secrets.seal(value, r.id)]);
    n += done.length;
  }
  return n;
}

/**
 * Deletes a resource and ends its open sessions in the audit trail, saying why; returns their
 * ids (each must be closed wherever it runs), or null when there is no such resource.
 */
export async function deleteResource(db: Db, name: string, reason: string): Promise<string[] | null> {
  return db.tx(async (q) => {
    const r = await q.query<{ id: string }>('DELETE FROM resources WHERE name = $1 RETURNING id', [name]);
    if (!r.length) return null;
    // The delete set their resource_id to NULL: they are found by the id it had.
    return endOpenSessions(q, 'resource_id IS NULL AND resource_name = $1', [name], reason);
  });
}

export const AGENT_MODES = ['deny', 'ask', 'allow'] as const;
/** What a chat's agent may do with a granted resource: nothing, ask a person first, or act. */
export type AgentMode = (typeof AGENT_MODES)[number];

/** The users a resource is granted to, with what their agents may do. */
export async function listGrants(q: Queryable, resourceId: string): Promise<unknown[]> {
  return q.query(
    'SELECT u.id, u.name, g.agent, g.created_at FROM grants g JOIN users u ON u.id = g.user_id WHERE g.resource_id = $1 ORDER BY u.name',
    [resourceId],
  );
}

/**
 * Grants a resource to a user by name; granting again changes only the agent setting, when one is
 * given. Returns the grant's agent setting, or null when there is no such user.
 */
export async function grant(q: Queryable, resourceId: string, userName: string, agent?: AgentMode): Promise<AgentMode | null> {
  const rows = await q.query<{ agent: AgentMode }>(
    `INSERT INTO grants (user_id, resource_id, agent) SELECT id, $2, COALESCE($3, 'ask') FROM users WHERE name = $1
     ON CONFLICT (user_id, resource_id) DO UPDATE SET agent = COALESCE($3, grants.agent) RETURNING agent`,
    [userName, resourceId, agent ?? null],
  );
  return rows[0]?.agent ?? null;
}

/**
 * Revokes a user's grant and ends the sessions of that user on that resource (unless the user is
 * an admin, who may use every resource anyway); returns their ids, or null when there was no grant.
 */
export async function revokeGrant(db: Db, resource: string, user: string, reason: string): Promise<string[] | null> {
  return db.tx(async (q) => {
    const g = await q.query<{ resource_id: string; user_id: string; is_admin: boolean }>(
      `DELETE FROM grants g USING resources r, users u
       WHERE g.resource_id = r.id AND g.user_id = u.id AND r.name = $1 AND u.name = $2
       RETURNING g.resource_id, g.user_id, u.is_admin`,
      [resource, user],
    );
    if (!g.length) return null;
    if (g[0]!.is_admin) return [];
    return endOpenSessions(q, 'resource_id = $1 AND user_id = $2', [g[0]!.resource_id, g[0]!.user_id], reason);
  });
}

async function endOpenSessions(q: Queryable, where: string, params: unknown[], reason: string): Promise<string[]> {
  const rows = await q.query<{ id: string }>(
    `UPDATE launch_sessions SET ended_at = now(), error = COALESCE(error, $${params.length + 1})
     WHERE ended_at IS NULL AND ${where} RETURNING id`,
    [...params, reason],
  );
  return rows.map((r) => r.id);
}

export async function createGateway(q: Queryable, name: string, group: string): Promise<{ gateway: Gateway; token: string }> {
  const token = GATEWAY_TOKEN_PREFIX + crypto.randomBytes(32).toString('base64url');
  const rows = await q.query<Gateway>(
    `INSERT INTO gateways (name, grp, token_hash) VALUES ($1, $2, $3)
     RETURNING id, name, grp AS "group", online, last_seen_at`,
    [name, group, hashToken(token)],
  );
  return { gateway: rows[0]!, token };
}

export async function gatewayExists(q: Queryable, name: string): Promise<boolean> {
  return (await q.query('SELECT 1 FROM gateways WHERE name = $1', [name])).length > 0;
}

/** Deletes a gateway, closing its open sessions first (the delete sets their gateway to NULL); returns its id, or null. */
export async function deleteGateway(db: Db, name: string): Promise<string | null> {
  return db.tx(async (q) => {
    const gw = await q.query<{ id: string }>('SELECT id FROM gateways WHERE name = $1 FOR UPDATE', [name]);
    if (!gw.length) return null;
    await closeGatewaySessions(q, gw[0]!.id, 'the gateway was deleted');
    await q.query('DELETE FROM gateways WHERE id = $1', [gw[0]!.id]);
    return gw[0]!.id;
  });
}

export async function gatewayForToken(q: Queryable, token: string): Promise<Gateway | null> {
  if (!token.startsWith(GATEWAY_TOKEN_PREFIX) || token.length > 200) return null;
  const rows = await q.query<Gateway>(
    `SELECT id, name, grp AS "group", online, last_seen_at FROM gateways WHERE token_hash = $1`,
    [hashToken(token)],
  );
  return rows[0] ?? null;
}

export async function listGateways(q: Queryable): Promise<Gateway[]> {
  return q.query<Gateway>(`SELECT id, name, grp AS "group", online, last_seen_at FROM gateways ORDER BY name`);
}

/** Online: the gateway's control socket is on `replica`. Offline only if it is still ours (it may
 * already have reconnected to another replica). */
export async function setGatewayOnline(q: Queryable, id: string, online: boolean, replica: string): Promise<void> {
  if (online) await q.query('UPDATE gateways SET online = true, replica = $2, last_seen_at = now() WHERE id = $1', [id, replica]);
  else await q.query('UPDATE gateways SET online = false, replica = NULL, last_seen_at = now() WHERE id = $1 AND replica = $2', [id, replica]);
}

/** Registers this replica's URL for relays (refreshed while it runs; forgotten when it stops, or a week after it was last seen). */
export async function registerReplica(q: Queryable, id: string, publicWsUrl: string): Promise<void> {
  await q.query(
    `INSERT INTO replicas (id, public_url) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET public_url = $2, seen_at = now()`,
    [id, publicWsUrl],
  );
  await q.query(`DELETE FROM replicas WHERE seen_at < now() - interval '7 days'`);
}

export async function forgetReplica(q: Queryable, id: string): Promise<void> {
  await q.query('DELETE FROM replicas WHERE id = $1', [id]);
}

/** The relay URL a replica registered, or null for one that is not a replica. */
export async function replicaUrl(q: Queryable, id: string): Promise<string | null> {
  const rows = await q.query<{ public_url: string }>('SELECT public_url FROM replicas WHERE id = $1', [id]);
  return rows[0]?.public_url ?? null;
}

export async function openSessionCount(q: Queryable, userId: string): Promise<number> {
  const rows = await q.query<{ n: number }>('SELECT count(*)::int AS n FROM launch_sessions WHERE user_id = $1 AND ended_at IS NULL', [userId]);
  return Number(rows[0]!.n);
}

/** Of these open sessions, the ones whose row is open and whose user may still use the resource. */
export async function sessionsStillAllowed(q: Queryable, ids: string[]): Promise<Set<string>> {
  if (!ids.length) return new Set();
  const rows = await q.query<{ id: string }>(
    `SELECT s.id FROM launch_sessions s JOIN users u ON u.id = s.user_id
     WHERE s.id = ANY($1::uuid[]) AND s.ended_at IS NULL AND s.resource_id IS NOT NULL
       AND (u.is_admin OR EXISTS (SELECT 1 FROM grants g WHERE g.user_id = s.user_id AND g.resource_id = s.resource_id))`,
    [ids],
  );
  return new Set(rows.map((r) => r.id));
}

/** Of these gateway ids, the ones not deleted. */
export async function existingGateways(q: Queryable, ids: string[]): Promise<Set<string>> {
  if (!ids.length) return new Set();
  const rows = await q.query<{ id: string }>('SELECT id FROM gateways WHERE id = ANY($1::uuid[])', [ids]);
  return new Set(rows.map((r) => r.id));
}

/** The replica holding the gateway's control socket, as the database last heard. */
export async function gatewayReplica(q: Queryable, id: string): Promise<string | null> {
  const rows = await q.query<{ replica: string | null }>('SELECT replica FROM gateways WHERE id = $1 AND online', [id]);
  return rows[0]?.replica ?? null;
}

/** An online gateway of the group whose control socket is on another replica. */
export async function remoteGateway(q: Queryable, group: string, notReplica: string): Promise<(Gateway & { replica: string }) | null> {
  const rows = await q.query<Gateway & { replica: string }>(
    `SELECT id, name, grp AS "group", online, last_seen_at, replica FROM gateways
     WHERE grp = $1 AND online AND replica IS NOT NULL AND replica <> $2 ORDER BY random() LIMIT 1`,
    [group, notReplica],
  );
  return rows[0] ?? null;
}

/** A session's audit row; one opened with a chat agent's token names the chat (provenance comes from the token, never the client). */
export async function startSession(q: Queryable, s: { user_id: string; resource: Resource; gateway_id: string; token_id?: string }): Promise<string> {
  const rows = await q.query<{ id: string }>(
    `INSERT INTO launch_sessions (user_id, resource_id, resource_name, gateway_id, chat_id)
     VALUES ($1, $2, $3, $4, (SELECT chat_id FROM api_tokens WHERE id = $5::uuid)) RETURNING id`,
    [s.user_id, s.resource.id, s.resource.name, s.gateway_id, s.token_id ?? null],
  );
  return rows[0]!.id;
}

export interface SessionReport {
  path?: string | null;
  bytes_up?: number;
  bytes_down?: number;
  exit_status?: number | null;
  error?: string | null;
}

/** The only server of a database starts (the embedded one): no gateway is connected yet. */
export async function forgetOnlineGateways(q: Queryable): Promise<void> {
  await q.query('UPDATE gateways SET online = false, replica = NULL WHERE online');
}

/** Closes every open session of a gateway (it is being deleted). */
export async function closeGatewaySessions(q: Queryable, gatewayId: string, error: string): Promise<void> {
  await q.query('UPDATE launch_sessions SET ended_at = now(), error = COALESCE(error, $2) WHERE gateway_id = $1 AND ended_at IS NULL', [gatewayId, error]);
}

/** The path an open session of this gateway uses now (the gateway reports each change). */
export async function sessionPath(q: Queryable, id: string, gatewayId: string, path: 'direct' | 'relay'): Promise<void> {
  await q.query('UPDATE launch_sessions SET path = $3 WHERE id = $1 AND gateway_id = $2 AND ended_at IS NULL', [id, gatewayId, path]);
}

/**
 * Closes the gateway's sessions that started before its current connection and that it no
 * longer has (`live`): they ended while it could not report it. Returns how many.
 */
export async function closeLostSessions(q: Queryable, gatewayId: string, live: string[], connectedAt: Date): Promise<number> {
  const rows = await q.query(
    `UPDATE launch_sessions SET ended_at = now(), error = COALESCE(error, 'the gateway no longer had the session when it reconnected')
     WHERE gateway_id = $1 AND ended_at IS NULL AND started_at < $3::timestamptz AND NOT (id = ANY($2::uuid[]))
     RETURNING id`,
    [gatewayId, live, connectedAt.toISOString()],
  );
  return rows.length;
}

/**
 * Ends an open session now, `error` saying who ended it: a session of `viewer` (any, for an
 * admin). True when it was open; false when it had ended; null when there is no such session.
 */
/** The audit trail, newest first: an admin sees everyone's sessions, a user its own; `open` filters on running (true) or ended (false). */
export async function listSessions(q: Queryable, viewer: { id: string; is_admin: boolean }, limit: number, open: boolean | null): Promise<unknown[]> {
  return q.query(
    `SELECT s.id, u.name AS user, s.resource_name AS resource, gw.name AS gateway, s.path, s.started_at, s.ended_at,
            s.bytes_up, s.bytes_down, s.exit_status, s.error, s.chat_id
     FROM launch_sessions s JOIN users u ON u.id = s.user_id LEFT JOIN gateways gw ON gw.id = s.gateway_id
     WHERE ($1 OR s.user_id = $2) AND ($4::boolean IS NULL OR (s.ended_at IS NULL) = $4::boolean)
     ORDER BY s.started_at DESC LIMIT $3`,
    [viewer.is_admin, viewer.id, limit, open],
  );
}

export async function endSessionNow(q: Queryable, id: string, viewer: { id: string; is_admin: boolean }, error: string): Promise<boolean | null> {
  const rows = await q.query<{ open: boolean }>(
    `WITH mine AS (SELECT id, ended_at IS NULL AS open FROM launch_sessions WHERE id = $1 AND ($2 OR user_id = $3)),
          closed AS (UPDATE launch_sessions s SET ended_at = now(), error = $4 FROM mine WHERE s.id = mine.id AND mine.open)
     SELECT open FROM mine`,
    [id, viewer.is_admin, viewer.id, error],
  );
  return rows.length ? rows[0]!.open : null;
}

/**
 * Records what a session did; the first end wins for ended_at, later reports fill gaps. With
 * `gatewayId`, only a session of that gateway.
 */
export async function endSession(q: Queryable, id: string, r: SessionReport, gatewayId?: string): Promise<void> {
  await q.query(
    `UPDATE launch_sessions SET
       ended_at = COALESCE(ended_at, now()),
       path = COALESCE($2, path),
       bytes_up = GREATEST(bytes_up, $3),
       bytes_down = GREATEST(bytes_down, $4),
       exit_status = COALESCE($5, exit_status),
       error = COALESCE(error, $6)
     WHERE id = $1 AND ($7::uuid IS NULL OR gateway_id = $7::uuid)`,
    [id, r.path ?? null, r.bytes_up ?? 0, r.bytes_down ?? 0, r.exit_status ?? null, r.error ?? null, gatewayId ?? null],
  );
}
