// Test harness: a real Airlock server on a real database (embedded PGlite by default, PostgreSQL
// when AIRLOCK_TEST_DATABASE_URL is set, one schema per test file), real HTTP and WebSockets.
import crypto from 'node:crypto';
import type WebSocket from 'ws';
import { openDb, type Db } from '../../src/store/db.js';
import { startServer, type AirlockServer, type ServerOptions } from '../../src/server/app.js';
import { ApiClient } from '../../src/client/api.js';
import { SecretBox } from '../../src/access/secretbox.js';
import type { StreamEvent } from '../../src/chat/types.js';
import type { ProvidersConfig } from '../../src/chat/providers/index.js';
import { loadConfig, type Config } from '../../src/config.js';

/** A random credential key: a server started in a test never writes one into the working folder. */
export const testSecrets = () => SecretBox.fromKey(crypto.randomBytes(32).toString('hex'));

/** Polls a condition every 20 ms: a hang guard (`ms`), not a speed check, so a lost event fails with `what` instead of timing the file out. */
export async function waitUntil(cond: () => boolean | Promise<boolean>, what = cond.toString(), ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${ms / 1000} s: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const PG_URL = process.env.AIRLOCK_TEST_DATABASE_URL;
export const backend = PG_URL ? 'postgres' : 'pglite';

/** A fresh database: embedded in memory, or a schema of its own on PostgreSQL (default: the suite's backend). */
export async function openTestDb(kind: 'pglite' | 'postgres' = backend): Promise<{ db: Db; drop: () => Promise<void> }> {
  if (kind === 'pglite' || !PG_URL) {
    const db = await openDb({ memory: true });
    return { db, drop: () => db.close() };
  }
  const schema = `t_${crypto.randomBytes(6).toString('hex')}`;
  const db = await openDb({ url: PG_URL, schema });
  return {
    db,
    drop: async () => {
      await db.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
      await db.close();
    },
  };
}

export interface TestServer {
  server: AirlockServer;
  db: Db;
  admin: ApiClient;
  url: string;
  /** A new user with its own token. */
  user(name?: string): Promise<ApiClient>;
  close(): Promise<void>;
}

/** settings: changes to the environment's settings for this server only. */
export async function startTestServer(providers: ProvidersConfig, opts: Partial<ServerOptions> & { db?: Db; settings?: Partial<Config> } = {}): Promise<TestServer> {
  const own = opts.db ? null : await openTestDb();
  const db = opts.db ?? own!.db;
  const secrets = opts.secrets ?? testSecrets();
  const { settings, ...rest } = opts;
  const config = { ...loadConfig(), ...settings };
  const server = await startServer({ db, providers, titles: false, secrets, config, ...rest });
  let token = server.adminToken;
  if (!token) {
    // The database was shared with an earlier server: mint a token for the existing admin.
    const { issueToken } = await import('../../src/auth/tokens.js');
    const admins = await db.query<{ id: string }>('SELECT id FROM users WHERE is_admin ORDER BY created_at LIMIT 1');
    token = (await issueToken(db, admins[0]!.id)).token;
  }
  const admin = new ApiClient(server.url, token);
  let users = 0;
  return {
    server,
    db,
    admin,
    url: server.url,
    async user(name = `user${++users}-${crypto.randomBytes(3).toString('hex')}`) {
      const { token: t } = await admin.post('/api/users', { name });
      return new ApiClient(server.url, t);
    },
    async close() {
      await server.close();
      await own?.drop();
    },
  };
}

/** Collects a chat stream's events and lets a test wait for the one it expects. */
/** How long a test waits for a stream event before it fails (a hang guard, far above any real wait). */
const WAIT_GUARD_MS = 60_000;

export class StreamRecorder {
  events: StreamEvent[] = [];
  ws!: WebSocket;
  closed: { code: number; reason: string } | null = null;
  chatId = '';
  private waiters: { pred: (e: StreamEvent) => boolean; resolve: (e: StreamEvent) => void; reject: (e: Error) => void; from: number }[] = [];

  static async open(client: ApiClient, chatId: string, after = 0): Promise<StreamRecorder> {
    const r = new StreamRecorder();
    r.chatId = chatId;
    r.ws = await client.openStream(chatId, after, (evs) => r.add(evs));
    r.ws.on('close', (code, reason) => {
      r.closed = { code, reason: reason.toString() };
      for (const w of r.waiters) w.reject(new Error(`stream closed (${code} ${reason}) while waiting; got ${JSON.stringify(r.events.map((e) => e.type))}`));
      r.waiters = [];
    });
    return r;
  }

  private add(evs: StreamEvent[]): void {
    if (this.left) return;
    for (const e of evs) {
      this.events.push(e);
      for (const w of [...this.waiters]) {
        if (this.events.length - 1 >= w.from && w.pred(e)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(e);
        }
      }
    }
  }

  /** Waits for an event matching pred (already received ones count unless `fresh`). */
  waitFor(pred: (e: StreamEvent) => boolean, opts: { fresh?: boolean } = {}): Promise<StreamEvent> {
    if (!opts.fresh) {
      const found = this.events.find(pred);
      if (found) return Promise.resolve(found);
    }
    return new Promise<StreamEvent>((resolve, reject) => {
      const w: (typeof this.waiters)[number] = { pred, resolve, reject, from: opts.fresh ? this.events.length : 0 };
      this.waiters.push(w);
      // A hang guard, not a speed check: a lost event fails the test with what did arrive.
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        const seen = this.events.map((e) => (e.type === 'status' ? `status:${e.status}` : e.type));
        reject(new Error(`stream of chat ${this.chatId}: no matching event in ${WAIT_GUARD_MS} ms; got ${JSON.stringify(seen.slice(-40))}`));
      }, WAIT_GUARD_MS);
      timer.unref();
      w.resolve = (e: StreamEvent) => {
        clearTimeout(timer);
        resolve(e);
      };
    });
  }

  /** Waits for the n-th status event with the given status. */
  async waitStatus(status: string, nth = 1): Promise<StreamEvent> {
    let seen = 0;
    return this.waitFor((e) => e.type === 'status' && e.status === status && ++seen === nth);
  }

  get seqs(): number[] {
    return this.events.filter((e) => e.seq !== undefined).map((e) => e.seq!);
  }

  /** The text of a draft as streamed by its deltas. */
  draftText(kind = 'text'): string {
    return this.events.filter((e) => e.type === 'delta' && e.kind === kind).map((e) => e.text).join('');
  }

  /** Set by close(): a client that left takes nothing more (frames the server sent before it saw the close still arrive). */
  private left = false;

  close(): void {
    this.left = true;
    this.ws.close();
  }
}

export function providerConfig(fake: { kind: 'openai' | 'anthropic'; baseUrl: string }, model?: string): ProvidersConfig {
  return fake.kind === 'openai'
    ? { openai: { baseUrl: fake.baseUrl, apiKey: 'test-key' }, model: model ?? 'gpt-test' }
    : { anthropic: { baseUrl: fake.baseUrl, apiKey: 'test-key' }, model: model ?? 'anthropic:claude-test' };
}
