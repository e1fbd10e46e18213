// Resources, grants, gateways (admin) and the session audit trail.
import type { Db } from '../../store/db.js';
import type { SecretBox } from '../../access/secretbox.js';
import * as store from '../../access/store.js';
import type { Credential } from '../../access/store.js';
import { badRequest, conflict, notFound } from '../../errors.js';
import { requireAdmin } from './auth.js';
import { Reply, type Router } from '../http.js';
import * as v from '../validate.js';

const NAME = /^[a-zA-Z0-9_.-]{1,64}$/;

function name(o: Record<string, unknown>, key: string): string {
  const n = v.reqStr(o, key, { max: 64 });
  if (!NAME.test(n)) throw badRequest(`"${key}" may hold letters, digits and _ . - only`, 'invalid_field');
  return n;
}

function target(kind: store.ResourceKind, raw: string | undefined): string {
  if (kind === 'shell') return raw ?? '';
  if (!raw) throw badRequest(`"target" is required for a ${kind} resource (host:port)`, 'missing_field');
  const m = /^(\[[0-9a-fA-F:]+\]|[a-zA-Z0-9_.-]+)(?::(\d{1,5}))?$/.exec(raw);
  const port = m?.[2] ? Number(m[2]) : kind === 'ssh' ? 22 : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw badRequest(`"target" must be host:port${kind === 'ssh' ? ' (port defaults to 22)' : ''}`, 'invalid_field');
  return `${m[1]}:${port}`;
}

function credential(raw: unknown): Credential | undefined {
  if (raw === undefined || raw === null) return undefined;
  const c = v.object(raw, ['username', 'password', 'private_key', 'passphrase']);
  const cred: Credential = { username: v.reqStr(c, 'username', { max: 256 }) };
  const password = v.str(c, 'password', { max: 4096 });
  const key = v.str(c, 'private_key', { max: 65536 });
  const passphrase = v.str(c, 'passphrase', { max: 4096 });
  if (!password && !key) throw badRequest('a credential needs "password" or "private_key"', 'invalid_field');
  if (password) cred.password = password;
  if (key) cred.private_key = key;
  if (passphrase) cred.passphrase = passphrase;
  return cred;
}

export interface AccessEffects {
  /** Cuts the deleted gateway's connection, on whichever replica holds it. */
  gatewayDeleted(id: string): void;
  /** Closes a launch session, on whichever replica holds it, telling its client why. */
  sessionEnded(id: string, reason: string): void;
}

export function accessRoutes(router: Router, db: Db, secrets: SecretBox, effects: AccessEffects): void {
  router.add('GET', '/api/resources', async ({ user }) => ({ resources: await store.listResources(db, user) }));

  router.add('GET', '/api/resources/:name', async ({ user, params }) => {
    const r = await store.launchableResource(db, user, params.name!);
    if (!r) throw notFound(`resource "${params.name}"`);
    const { credential_enc: _, ...resource } = r;
    return { resource };
  });

  router.add('POST', '/api/resources', async ({ user, body }) => {
    requireAdmin(user);
    const b = v.object(await body(), ['name', 'kind', 'target', 'gateway', 'credential']);
    const n = name(b, 'name');
    const kind = v.oneOf(b, 'kind', store.RESOURCE_KINDS);
    if (!kind) throw badRequest(`"kind" is required (${store.RESOURCE_KINDS.join(', ')})`, 'missing_field');
    const t = target(kind, v.str(b, 'target', { max: 300 }));
    const gateway = name(b, 'gateway');
    const cred = credential(b.credential);
    if (kind === 'ssh' && !cred) throw badRequest('an ssh resource needs a "credential" (username and password or private_key)', 'missing_field');
    if (kind !== 'ssh' && cred) throw badRequest(`a ${kind} resource takes no credential`, 'invalid_field');
    if (await store.findResource(db, n)) throw conflict(`a resource named "${n}" exists`, 'resource_exists');
    return new Reply(201, { resource: await store.createResource(db, secrets, { name: n, kind, target: t, gateway, credential: cred }) });
  });

  // Deleting a resource or revoking a grant ends the sessions it allowed, on whichever replica
  // holds them (access is checked when a session opens; these end what was opened before).
  router.add('DELETE', '/api/resources/:name', async ({ user, params }) => {
    requireAdmin(user);
    const reason = `the resource "${params.name}" was deleted`;
    const ended = await store.deleteResource(db, params.name!, reason);
    if (!ended) throw notFound(`resource "${params.name}"`);
    for (const id of ended) effects.sessionEnded(id, reason);
    return { deleted: true };
  });

  router.add('GET', '/api/resources/:name/grants', async ({ user, params }) => {
    requireAdmin(user);
    const r = await store.findResource(db, params.name!);
    if (!r) throw notFound(`resource "${params.name}"`);
    const users = await db.query(
      'SELECT u.id, u.name, g.created_at FROM grants g JOIN users u ON u.id = g.user_id WHERE g.resource_id = $1 ORDER BY u.name',
      [r.id],
    );
    return { grants: users };
  });

  router.add('POST', '/api/resources/:name/grants', async ({ user, params, body }) => {
    requireAdmin(user);
    const b = v.object(await body(), ['user']);
    const userName = v.reqStr(b, 'user', { max: 64 });
    const r = await store.findResource(db, params.name!);
    if (!r) throw notFound(`resource "${params.name}"`);
    const u = await db.query<{ id: string }>('SELECT id FROM users WHERE name = $1', [userName]);
    if (!u.length) throw notFound(`user "${userName}"`);
    await db.query('INSERT INTO grants (user_id, resource_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [u[0]!.id, r.id]);
    return new Reply(201, { grant: { user: userName, resource: r.name } });
  });

  router.add('DELETE', '/api/resources/:name/grants/:user', async ({ user, params }) => {
    requireAdmin(user);
    const reason = `the grant of "${params.name}" to ${params.user} was revoked`;
    const ended = await store.revokeGrant(db, params.name!, params.user!, reason);
    if (!ended) throw notFound(`grant of "${params.name}" to "${params.user}"`);
    for (const id of ended) effects.sessionEnded(id, reason);
    return { deleted: true };
  });

  router.add('GET', '/api/gateways', async ({ user }) => {
    requireAdmin(user);
    return { gateways: await store.listGateways(db) };
  });

  router.add('POST', '/api/gateways', async ({ user, body }) => {
    requireAdmin(user);
    const b = v.object(await body(), ['name', 'group']);
    const n = name(b, 'name');
    const group = b.group === undefined ? n : name(b, 'group');
    const exists = await db.query('SELECT 1 FROM gateways WHERE name = $1', [n]);
    if (exists.length) throw conflict(`a gateway named "${n}" exists`, 'gateway_exists');
    return new Reply(201, await store.createGateway(db, n, group));
  });

  router.add('DELETE', '/api/gateways/:name', async ({ user, params }) => {
    requireAdmin(user);
    // Its open sessions are closed first: the delete sets their gateway to NULL.
    const rows = await db.tx(async (q) => {
      const gw = await q.query<{ id: string }>('SELECT id FROM gateways WHERE name = $1 FOR UPDATE', [params.name]);
      if (!gw.length) return gw;
      await store.closeGatewaySessions(q, gw[0]!.id, 'the gateway was deleted');
      await q.query('DELETE FROM gateways WHERE id = $1', [gw[0]!.id]);
      return gw;
    });
    if (!rows.length) throw notFound(`gateway "${params.name}"`);
    effects.gatewayDeleted(rows[0]!.id);
    return { deleted: true };
  });

  router.add('GET', '/api/sessions', async ({ user, query }) => {
    const limitRaw = query.get('limit');
    const limit = limitRaw === null ? 100 : Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw v.badRequestFor('limit', 'an integer from 1 to 1000');
    // ?open=true: only the sessions still running (the ones `DELETE` can end); false: only ended ones.
    const open = query.get('open');
    if (open !== null && open !== 'true' && open !== 'false') throw v.badRequestFor('open', 'true or false');
    const rows = await db.query(
      `SELECT s.id, u.name AS user, s.resource_name AS resource, gw.name AS gateway, s.path, s.started_at, s.ended_at,
              s.bytes_up, s.bytes_down, s.exit_status, s.error
       FROM launch_sessions s JOIN users u ON u.id = s.user_id LEFT JOIN gateways gw ON gw.id = s.gateway_id
       WHERE ($1 OR s.user_id = $2) AND ($4::boolean IS NULL OR (s.ended_at IS NULL) = $4::boolean)
       ORDER BY s.started_at DESC LIMIT $3`,
      [user.is_admin, user.id, limit, open === null ? null : open === 'true'],
    );
    return { sessions: rows };
  });

  // Ends an open session at once: an admin any, a user its own (a session left open on another
  // machine). The row is closed here, so the audit trail says who ended it even if no replica
  // holds the session any more; the replica that does closes it (and the gateway its target).
  router.add('DELETE', '/api/sessions/:id', async ({ user, params }) => {
    if (!v.isUuid(params.id!)) throw notFound('session');
    const ended = await store.endSessionNow(db, params.id!, user, `ended by ${user.name}`);
    if (ended === null) throw notFound('session');
    // Told to every replica either way: a row that reads as ended must never leave a session
    // running wherever it is held.
    effects.sessionEnded(params.id!, `${user.name} ended it`);
    if (!ended) throw conflict('the session has already ended', 'session_ended');
    return { ended: true };
  });
}
