// Who am I, users (admin) and API tokens.
import type { Db } from '../../store/db.js';
import { createUser, issueToken, type User } from '../../auth/tokens.js';
import { conflict, forbidden } from '../../errors.js';
import { Reply, type Router } from '../http.js';
import * as v from '../validate.js';

export const requireAdmin = (user: User) => {
  if (!user.is_admin) throw forbidden();
};

export function authRoutes(router: Router, db: Db): void {
  router.add('GET', '/api/me', async ({ user }) => ({ user: { id: user.id, name: user.name, is_admin: user.is_admin } }));

  router.add('GET', '/api/users', async ({ user }) => {
    requireAdmin(user);
    return { users: await db.query('SELECT id, name, is_admin, created_at FROM users ORDER BY created_at') };
  });

  router.add('POST', '/api/users', async ({ user, body }) => {
    requireAdmin(user);
    const b = v.object(await body(), ['name', 'admin']);
    const name = v.reqStr(b, 'name', { max: 64 });
    if (!/^[a-zA-Z0-9_.@-]+$/.test(name)) throw conflict('a user name may hold letters, digits and _ . @ - only', 'invalid_name');
    const admin = v.bool(b, 'admin') ?? false;
    const exists = await db.query('SELECT 1 FROM users WHERE name = $1', [name]);
    if (exists.length) throw conflict(`a user named "${name}" exists`, 'user_exists');
    const created = await createUser(db, name, admin);
    const token = await issueToken(db, created.id, 'initial');
    return new Reply(201, { user: created, token: token.token });
  });

  router.add('POST', '/api/tokens', async ({ user, body }) => {
    const b = v.object(await body(), ['name', 'expires_in']);
    const name = v.str(b, 'name', { max: 100 }) ?? '';
    const expires = v.int(b, 'expires_in', 1, 10 * 365 * 86400);
    return new Reply(201, await issueToken(db, user.id, name, expires));
  });
}
