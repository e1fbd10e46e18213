// Token lifetimes and revocation: a token cannot mint one that outlives it, revoking a token
// revokes what was minted with it, and a verification that raced a revocation is never cached.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, openTestDb } from './helpers/server.js';
import { ApiClient } from '../src/client/api.js';
import type { Db } from '../src/store/db.js';

test('a token minted with a short-lived token expires with it, whatever it asks for', async () => {
  const t = await startTestServer({});
  try {
    const short = await t.admin.post('/api/tokens', { name: 'agent', expires_in: 60 });
    const agent = new ApiClient(t.url, short.token);
    const forever = await agent.post('/api/tokens', { name: 'forever' });
    assert.equal(forever.expires_at, short.expires_at);
    const longer = await agent.post('/api/tokens', { name: 'a year', expires_in: 365 * 86400 });
    assert.equal(longer.expires_at, short.expires_at);
    const shorter = await agent.post('/api/tokens', { name: 'ten seconds', expires_in: 10 });
    assert.ok(Date.parse(shorter.expires_at) < Date.parse(short.expires_at));
    // A token with no expiry still mints tokens with none.
    const free = await t.admin.post('/api/tokens', { name: 'laptop' });
    assert.equal(free.expires_at, null);
  } finally {
    await t.close();
  }
});

test('revoking a token revokes every token minted with it, at any depth; the others stay', async () => {
  const t = await startTestServer({});
  try {
    const parent = await t.admin.post('/api/tokens', { name: 'parent' });
    const child = await new ApiClient(t.url, parent.token).post('/api/tokens', { name: 'child' });
    const grandchild = await new ApiClient(t.url, child.token).post('/api/tokens', { name: 'grandchild' });
    const sibling = await t.admin.post('/api/tokens', { name: 'sibling' });
    // Used once, so each is in the auth cache.
    for (const tok of [parent, child, grandchild, sibling]) await new ApiClient(t.url, tok.token).get('/api/me');
    assert.deepEqual(await t.admin.delete(`/api/tokens/${parent.id}`), { revoked: true, also_revoked: 2 });
    for (const tok of [parent, child, grandchild]) {
      await assert.rejects(new ApiClient(t.url, tok.token).get('/api/me'), (e: any) => e.status === 401);
    }
    assert.equal((await new ApiClient(t.url, sibling.token).get('/api/me')).user.name, 'admin');
  } finally {
    await t.close();
  }
});

test('a token verified while its revocation committed is not cached: the next request is refused', async () => {
  const { db, drop } = await openTestDb();
  // The database answers the token lookup, then the answer waits: the revocation lands meanwhile.
  let hold: Promise<void> | null = null;
  const slow: Db = {
    ...db,
    kind: db.kind,
    pg: db.pg,
    tx: (fn) => db.tx(fn),
    close: () => db.close(),
    async query(sql, params) {
      const rows = await db.query(sql, params);
      if (hold && sql.includes('FROM api_tokens t JOIN users u')) await hold;
      return rows as any;
    },
  };
  const t = await startTestServer({}, { db: slow });
  try {
    const victim = await t.admin.post('/api/tokens', { name: 'victim' });
    let release!: () => void;
    hold = new Promise<void>((r) => (release = r));
    const inFlight = new ApiClient(t.url, victim.token).get('/api/me');
    await new Promise((r) => setTimeout(r, 200)); // its lookup has answered and waits
    hold = null;
    await t.admin.delete(`/api/tokens/${victim.id}`);
    release();
    // The request that began before the revocation may finish; none after it may.
    assert.equal((await inFlight).user.name, 'admin');
    await assert.rejects(new ApiClient(t.url, victim.token).get('/api/me'), (e: any) => e.status === 401);
  } finally {
    await t.close();
    await drop();
  }
});
