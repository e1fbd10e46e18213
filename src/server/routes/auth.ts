// Who am I, users (admin) and API tokens.
import type { Db } from '../../store/db.js';
import { createUser, issueToken, listTokens, listUsers, revokeToken, setUserDisabled, userExists, type Revocation, type User } from '../../auth/tokens.js';
import { conflict, forbidden, notFound } from '../../errors.js';
import { Reply, type Router } from '../http.js';
import * as v from '../validate.js';

export const requireAdmin = (user: User) => {
  if (!user.is_admin) throw forbidden();
};

/** onRevoked: every replica stops trusting the token or user at once (their caches of verified tokens, their open streams and sessions). */
export function authRoutes(router: Router, db: Db, onRevoked: (what: Revocation) => void): void {
  router.add('GET', '/api/me', async ({ user }) => ({ user: { id: user.id, name: user.name, is_admin: user.is_admin } }));

  router.add('GET', '/api/users', async ({ user }) => {
    requireAdmin(user);
    return { users: await listUsers(db) };
  });

  // Disabling a user ends its access at once, on every replica: its tokens stop working and its
  // chat streams and launch sessions close. Its chats, grants and audit trail stay; enabling it
  // again makes its tokens work again.
  for (const [action, disable] of [['disable', true], ['enable', false]] as const) {
    router.add('POST', `/api/users/:name/${action}`, async ({ user, params }) => {
      requireAdmin(user);
      if (disable && params.name === user.name) throw conflict('you cannot disable yourself', 'self_disable');
      const changed = await setUserDisabled(db, params.name!, disable);
      if (!changed) throw notFound(`user "${params.name}"`);
      if (disable) onRevoked({ user_id: changed.id });
      return { user: changed };
    });
  }

  router.add('POST', '/api/users', async ({ user, body }) => {
    requireAdmin(user);
    const b = v.object(await body(), ['name', 'admin']);
    const name = v.reqStr(b, 'name', { max: 64 });
    if (!/^[a-zA-Z0-9_.@-]+$/.test(name)) throw conflict('a user name may hold letters, digits and _ . @ - only', 'invalid_name');
    const admin = v.bool(b, 'admin') ?? false;
    if (await userExists(db, name)) throw conflict(`a user named "${name}" exists`, 'user_exists');
    const created = await createUser(db, name, admin);
    const token = await issueToken(db, created.id, 'initial');
    return new Reply(201, { user: created, token: token.token });
  });

  router.add('POST', '/api/tokens', async ({ user, body }) => {
    const b = v.object(await body(), ['name', 'expires_in']);
    const name = v.str(b, 'name', { max: 100 }) ?? '';
    const expires = v.int(b, 'expires_in', 1, 10 * 365 * 86400);
    // Minted with this token: it can neither outlive it nor survive its revocation.
    return new Reply(201, await issueToken(db, user.id, name, expires, user.token_id));
  });

  router.add('GET', '/api/tokens', async ({ user }) => ({
    tokens: await listTokens(db, user.id, user.token_id ?? null),
  }));

  // Your own tokens; an admin may revoke anyone's. Another user's token answers 404 like an unknown id.
  router.add('DELETE', '/api/tokens/:id', async ({ user, params }) => {
    if (!v.isUuid(params.id!)) throw notFound('token');
    const ids = await revokeToken(db, params.id!, user);
    if (!ids.length) throw notFound('token');
    onRevoked({ token_ids: ids });
    return { revoked: true, ...(ids.length > 1 ? { also_revoked: ids.length - 1 } : {}) };
  });
}
