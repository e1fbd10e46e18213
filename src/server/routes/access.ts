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
    return { grants: await store.listGrants(db, r.id) };
  });

  router.add('POST', '/api/resources/:name/grants', async ({ user, params, body }) => {
    requireAdmin(user);
    const b = v.object(await body(), ['user', 'agent']);
    const userName = v.reqStr(b, 'user', { max: 64 });
    const agentMode = v.oneOf(b, 'agent', store.AGENT_MODES);
    const r = await store.findResource(db, params.name!);
    if (!r) throw notFound(`resource "${params.name}"`);
    const agent = await store.grant(db, r.id, userName, agentMode);
    if (!agent) throw notFound(`user "${userName}"`);
    return new Reply(201, { grant: { user: userName, resource: r.name, agent } });
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
    if (await store.gatewayExists(db, n)) throw conflict(`a gateway named "${n}" exists`, 'gateway_exists');
    return new Reply(201, await store.createGateway(db, n, group));
  });

  router.add('DELETE', '/api/gateways/:name', async ({ user, params }) => {
    requireAdmin(user);
    const id = await store.deleteGateway(db, params.name!);
    if (!id) throw notFound(`gateway "${params.name}"`);
    effects.gatewayDeleted(id);
    return { deleted: true };
  });

  router.add('GET', '/api/sessions', async ({ user, query }) => {
    const limitRaw = query.get('limit');
    const limit = limitRaw === null ? 100 : Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw v.badRequestFor('limit', 'an integer from 1 to 1000');
    // ?open=true: only the sessions still running (the ones `DELETE` can end); false: only ended ones.
    const open = query.get('open');
    if (open !== null && open !== 'true' && open !== 'false') throw v.badRequestFor('open', 'true or false');
    return { sessions: await store.listSessions(db, user, limit, open === null ? null : open === 'true') };
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
