// SQL migrations, applied in order at start-up. Append only; never edit one that has shipped.
import type { Db } from './db.js';

export const migrations: string[] = [
  `
  CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    is_admin boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
  );
  CREATE TABLE api_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name text NOT NULL DEFAULT '',
    token_hash text NOT NULL UNIQUE,
    prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    last_used_at timestamptz
  );
  CREATE TABLE chats (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title text NOT NULL DEFAULT '',
    title_source text NOT NULL DEFAULT 'fallback',
    model text NOT NULL,
    system_prompt text,
    client_tools jsonb NOT NULL DEFAULT '[]',
    status text NOT NULL DEFAULT 'waiting'
      CHECK (status IN ('waiting','pending','running','requires_action','error')),
    archived boolean NOT NULL DEFAULT false,
    worker_id text,
    lease_until timestamptz,
    epoch bigint NOT NULL DEFAULT 0,
    last_error text,
    interrupt_requested boolean NOT NULL DEFAULT false,
    pending_actions jsonb,
    action_deadline timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  );
  CREATE INDEX chats_runnable ON chats (updated_at) WHERE status IN ('pending', 'running');
  CREATE INDEX chats_owner ON chats (owner_id, updated_at DESC);
  CREATE TABLE chat_messages (
    id uuid PRIMARY KEY,
    chat_id uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    role text NOT NULL CHECK (role IN ('user','assistant','tool')),
    parts jsonb NOT NULL,
    interrupted boolean NOT NULL DEFAULT false,
    deleted boolean NOT NULL DEFAULT false,
    model text,
    usage jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
  );
  CREATE INDEX chat_messages_chat ON chat_messages (chat_id, seq);
  CREATE TABLE chat_queue (
    id bigserial PRIMARY KEY,
    chat_id uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    content text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  );
  CREATE INDEX chat_queue_chat ON chat_queue (chat_id, id);
  CREATE TABLE chat_events (
    chat_id uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, seq)
  );
  `,
  `
  CREATE TABLE gateways (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    grp text NOT NULL,
    token_hash text NOT NULL UNIQUE,
    online boolean NOT NULL DEFAULT false,
    last_seen_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
  );
  CREATE TABLE resources (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    kind text NOT NULL,
    target text NOT NULL DEFAULT '',
    gateway text NOT NULL,
    credential_enc text,
    created_at timestamptz NOT NULL DEFAULT now()
  );
  CREATE TABLE grants (
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resource_id uuid NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, resource_id)
  );
  CREATE TABLE launch_sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resource_id uuid REFERENCES resources(id) ON DELETE SET NULL,
    resource_name text NOT NULL,
    gateway_id uuid REFERENCES gateways(id) ON DELETE SET NULL,
    path text,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    bytes_up bigint NOT NULL DEFAULT 0,
    bytes_down bigint NOT NULL DEFAULT 0,
    exit_status int,
    error text
  );
  CREATE INDEX launch_sessions_started ON launch_sessions (started_at DESC);
  `,
  `
  CREATE TABLE bus_payloads (
    id bigserial PRIMARY KEY,
    payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  );
  CREATE INDEX bus_payloads_created ON bus_payloads (created_at);
  ALTER TABLE gateways ADD COLUMN replica text;
  `,
  `
  ALTER TABLE users ADD COLUMN disabled_at timestamptz;
  `,
  // A chat's messages and events without foreign keys: every statement that stores them locks
  // the chat's row in the same statement or transaction (and stores nothing when the row is gone),
  // so the per-row key check, a fifth of the embedded database's work on a turn, checked nothing;
  // a chat's deletion (its own, or its owner's) removes them by a statement-level trigger instead
  // of the cascade.
  `
  ALTER TABLE chat_events DROP CONSTRAINT chat_events_chat_id_fkey;
  ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_chat_id_fkey;
  CREATE FUNCTION chats_deleted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM chat_messages WHERE chat_id IN (SELECT id FROM gone); DELETE FROM chat_events WHERE chat_id IN (SELECT id FROM gone); RETURN NULL; END $$;
  CREATE TRIGGER chats_deleted AFTER DELETE ON chats REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION chats_deleted();
  `,
  // Server replicas as gateways reach them: a replica hands a gateway the relay URL of the
  // replica that holds the client from here, never from a message.
  `
  CREATE TABLE replicas (
    id text PRIMARY KEY,
    public_url text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
  );
  `,
  // A token minted with another is its child: it never outlives it, and revoking the parent
  // revokes it.
  `
  ALTER TABLE api_tokens ADD COLUMN parent_id uuid REFERENCES api_tokens(id) ON DELETE CASCADE;
  CREATE INDEX api_tokens_parent ON api_tokens (parent_id) WHERE parent_id IS NOT NULL;
  `,
  // Per-user limits count a user's busy chats, new chats and open launch sessions.
  `
  CREATE INDEX chats_owner_busy ON chats (owner_id) WHERE status IN ('pending', 'running');
  CREATE INDEX chats_owner_created ON chats (owner_id, created_at);
  CREATE INDEX launch_sessions_user_open ON launch_sessions (user_id) WHERE ended_at IS NULL;
  `,
  // What a chat's agent may do with a granted resource: nothing, ask a person first, or act.
  `
  ALTER TABLE grants ADD COLUMN agent text NOT NULL DEFAULT 'ask' CHECK (agent IN ('deny', 'ask', 'allow'));
  `,
  // A token a chat's agent acts with names its chat, and the sessions it opens say so. No foreign
  // key: the audit trail outlives the chat.
  `
  ALTER TABLE api_tokens ADD COLUMN chat_id uuid;
  ALTER TABLE launch_sessions ADD COLUMN chat_id uuid;
  `,
  // A chat agent's calls that wait for a person, and every decision (who, when, where); a rule
  // approves a tool on a resource for the rest of a chat.
  `
  CREATE TABLE chat_approvals (
    chat_id uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    tool_call_id text NOT NULL,
    owner_id uuid NOT NULL,
    tool text NOT NULL,
    resource text NOT NULL,
    args jsonb NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    deadline timestamptz NOT NULL,
    decision text CHECK (decision IN ('approve', 'approve_chat', 'deny', 'timeout', 'cancelled')),
    decided_by text,
    decided_at timestamptz,
    decided_on text,
    reason text,
    PRIMARY KEY (chat_id, tool_call_id)
  );
  CREATE INDEX chat_approvals_waiting ON chat_approvals (owner_id) WHERE decision IS NULL;
  CREATE TABLE chat_approval_rules (
    chat_id uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    tool text NOT NULL,
    resource text NOT NULL,
    approved_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, tool, resource)
  );
  `,
];

export async function migrate(db: Db): Promise<void> {
  await db.tx(async (q) => {
    if (db.kind === 'postgres') await q.query('SELECT pg_advisory_xact_lock(7070707)');
    await q.query('CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
    const rows = await q.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
    const done = Number(rows[0]?.v ?? 0);
    for (let i = done; i < migrations.length; i++) {
      for (const stmt of splitStatements(migrations[i]!)) await q.query(stmt);
      await q.query('INSERT INTO schema_migrations (version) VALUES ($1)', [i + 1]);
    }
  });
}

function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*\n/)
    .map((s) => s.trim())
    .filter(Boolean);
}
