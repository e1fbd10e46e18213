// The settings a user or an operator may change: each with its AIRLOCK_* variable, default and
// meaning. They are read once, by loadConfig(), into a typed Config that is passed down; every
// other delay, bound and retry is a named constant in the module that uses it. README's
// "Configuration" table is generated from this list (`airlock env`).
import { ConfigError } from './errors.js';

export interface Setting {
  env: string;
  /** Its type is the setting's type: a number, a string, or a switch (0/1 in the environment). */
  default: number | string | boolean;
  help: string;
}

export const settings = {
  port: { env: 'AIRLOCK_PORT', default: 7070, help: 'HTTP/WebSocket port of `airlock server`' },
  host: { env: 'AIRLOCK_HOST', default: '127.0.0.1', help: 'address the server binds to' },
  dataDir: { env: 'AIRLOCK_DATA_DIR', default: '.airlock', help: 'folder of the embedded database, keys and admin token' },
  secretKey: { env: 'AIRLOCK_SECRET_KEY', default: '', help: 'server key sealing target credentials (32 bytes, hex or base64); default: generated into <data dir>/secret.key' },
  tlsCert: { env: 'AIRLOCK_TLS_CERT', default: '', help: 'PEM certificate file: serve HTTPS/WSS (with AIRLOCK_TLS_KEY)' },
  tlsKey: { env: 'AIRLOCK_TLS_KEY', default: '', help: 'PEM private key file for AIRLOCK_TLS_CERT' },
  publicUrl: { env: 'AIRLOCK_PUBLIC_URL', default: '', help: "this replica's own URL as gateways reach it (relay path across replicas); default the listen address" },
  bus: { env: 'AIRLOCK_BUS', default: '', help: 'replica bus: local, postgres (LISTEN/NOTIFY) or nats://host:4222; default postgres on a PostgreSQL database, else local' },
  dbPrepared: { env: 'AIRLOCK_DB_PREPARED', default: true, help: 'PostgreSQL: 1 prepares each statement once per connection (0 behind a pooler in transaction mode, e.g. PgBouncer)' },
  chatConcurrency: { env: 'AIRLOCK_CHAT_CONCURRENCY', default: 100, help: 'turns one server runs at once; 0 = API-only replica (runs no turns)' },
  leaseMs: { env: 'AIRLOCK_LEASE_MS', default: 3_000, help: 'chat lease (renewed every third of it); a worker that stops renewing loses its chats after this and another replica resumes them' },
  drainMs: { env: 'AIRLOCK_DRAIN_MS', default: 10_000, help: 'on SIGTERM, time running turns get to finish before they are handed to another replica' },
  titles: { env: 'AIRLOCK_TITLES', default: true, help: 'set 0 to disable generated chat titles' },
  llmTimeoutMs: { env: 'AIRLOCK_LLM_TIMEOUT_MS', default: 120_000, help: 'provider request timeout (no byte for this long)' },
  maxSteps: { env: 'AIRLOCK_MAX_STEPS', default: 50, help: 'LLM steps (tool rounds) in one turn' },
  approvalTimeoutMs: { env: 'AIRLOCK_APPROVAL_TIMEOUT_MS', default: 600_000, help: "time a person has to approve a call of a chat's agent (a grant with --agent ask); then the call is denied" },
  agentOutputBytes: { env: 'AIRLOCK_AGENT_OUTPUT_BYTES', default: 65_536, help: "how much of a command's output the chat's agent is given (run_command); the rest is cut with a note" },
  actionTimeoutMs: { env: 'AIRLOCK_ACTION_TIMEOUT_MS', default: 600_000, help: 'time a client has to answer client-side tool calls (requires_action)' },
  maxBodyBytes: { env: 'AIRLOCK_MAX_BODY_BYTES', default: 1_048_576, help: 'largest accepted HTTP request body' },
  maxMessageChars: { env: 'AIRLOCK_MAX_MESSAGE_CHARS', default: 100_000, help: 'largest chat message accepted' },
  maxQueue: { env: 'AIRLOCK_MAX_QUEUE', default: 20, help: 'queued messages per chat' },
  authCacheMs: { env: 'AIRLOCK_AUTH_CACHE_MS', default: 5_000, help: 'how long a verified API token is trusted without a database lookup (a revocation reaches every replica at once over the bus)' },
  userRunningTurns: { env: 'AIRLOCK_USER_RUNNING_TURNS', default: 20, help: 'turns one user may have running or waiting for a worker at once (across replicas); a send that would start another answers 429' },
  userChatsPerMinute: { env: 'AIRLOCK_USER_CHATS_PER_MINUTE', default: 60, help: 'chats one user may create per minute' },
  userSessions: { env: 'AIRLOCK_USER_SESSIONS', default: 20, help: 'launch sessions one user may have open at once (across replicas)' },
  userStreams: { env: 'AIRLOCK_USER_STREAMS', default: 100, help: 'chat stream WebSockets one user may have open on one server' },
  webrtc: { env: 'AIRLOCK_WEBRTC', default: true, help: 'set 0 (on the client or the gateway) to skip the direct WebRTC path and use the relay only' },
  iceServers: { env: 'AIRLOCK_ICE_SERVERS', default: '', help: 'client and gateway: comma-separated STUN/TURN servers, e.g. stun:stun.example.org:3478,turn:user:pass@turn.example.org:3478' },
  iceBindAddress: { env: 'AIRLOCK_ICE_BIND_ADDRESS', default: '', help: 'client and gateway: gather WebRTC host candidates on this address only (e.g. 127.0.0.1)' },
  streamReconnectMs: { env: 'AIRLOCK_STREAM_RECONNECT_MS', default: 60_000, help: 'how long `airlock chat` tries to reopen a chat stream that dropped mid-reply' },
} satisfies Record<string, Setting>;

export type SettingName = keyof typeof settings;
type ValueOf<D> = D extends boolean ? boolean : D extends number ? number : string;
export type Config = { readonly [K in SettingName]: ValueOf<(typeof settings)[K]['default']> };

const SWITCH: Record<string, boolean> = { '1': true, true: true, yes: true, on: true, '0': false, false: false, no: false, off: false };

function read(name: SettingName, env: NodeJS.ProcessEnv): number | string | boolean {
  const s: Setting = settings[name];
  const raw = env[s.env];
  if (raw === undefined || raw === '') return s.default;
  if (typeof s.default === 'number') {
    const v = Number(raw);
    if (!Number.isFinite(v) || v < 0) throw new ConfigError(`${s.env} must be a non-negative number, got ${JSON.stringify(raw)}`);
    return v;
  }
  if (typeof s.default === 'boolean') {
    const v = SWITCH[raw.toLowerCase()];
    if (v === undefined) throw new ConfigError(`${s.env} must be 1 or 0, got ${JSON.stringify(raw)}`);
    return v;
  }
  return raw;
}

/** Every setting, read and checked once: a bad one stops a start before its slow work (the database). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const out: Record<string, number | string | boolean> = {};
  for (const name of Object.keys(settings) as SettingName[]) out[name] = read(name, env);
  return out as Config;
}

const shown = (v: Setting['default']) => (typeof v === 'boolean' ? (v ? '1' : '0') : String(v));

export function settingsTable(): string {
  const rows = Object.values(settings as Record<string, Setting>).map((s) => `| \`${s.env}\` | ${shown(s.default)} | ${s.help} |`);
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}
