// Every tunable delay, timeout and limit lives here, with its AIRLOCK_* variable and default.
// README's "Configuration" table is generated from this list (`airlock help env`).
import { ConfigError } from './errors.js';

export interface Knob {
  env: string;
  default: number | string;
  help: string;
}

export const knobs = {
  port: { env: 'AIRLOCK_PORT', default: 7070, help: 'HTTP/WebSocket port of `airlock server`' },
  host: { env: 'AIRLOCK_HOST', default: '127.0.0.1', help: 'address the server binds to' },
  dataDir: { env: 'AIRLOCK_DATA_DIR', default: '.airlock', help: 'folder of the embedded database, keys and admin token' },
  authCacheMs: { env: 'AIRLOCK_AUTH_CACHE_MS', default: 5_000, help: 'how long a verified API token is trusted without a database lookup' },
  maxBodyBytes: { env: 'AIRLOCK_MAX_BODY_BYTES', default: 1_048_576, help: 'largest accepted HTTP request body' },
  maxMessageChars: { env: 'AIRLOCK_MAX_MESSAGE_CHARS', default: 100_000, help: 'largest chat message accepted' },
  maxQueue: { env: 'AIRLOCK_MAX_QUEUE', default: 20, help: 'queued messages per chat' },
  userRunningTurns: { env: 'AIRLOCK_USER_RUNNING_TURNS', default: 20, help: "turns one user may have running or waiting for a worker at once (across replicas); a send that would start another answers 429" },
  userChatsPerMinute: { env: 'AIRLOCK_USER_CHATS_PER_MINUTE', default: 60, help: 'chats one user may create per minute' },
  userSessions: { env: 'AIRLOCK_USER_SESSIONS', default: 20, help: 'launch sessions one user may have open at once (across replicas)' },
  userStreams: { env: 'AIRLOCK_USER_STREAMS', default: 100, help: 'chat stream WebSockets one user may have open on one server' },
  chatConcurrency: { env: 'AIRLOCK_CHAT_CONCURRENCY', default: 100, help: 'turns one server runs at once; 0 = API-only replica (runs no turns)' },
  leaseMs: { env: 'AIRLOCK_LEASE_MS', default: 3_000, help: 'chat lease; a worker that stops heartbeating loses its chats after this and another replica resumes them' },
  heartbeatMs: { env: 'AIRLOCK_HEARTBEAT_MS', default: 1_000, help: 'lease renewal interval' },
  sweepMs: { env: 'AIRLOCK_SWEEP_MS', default: 5_000, help: 'safety-net acquisition timer (work is normally picked up on a wake signal)' },
  wake: { env: 'AIRLOCK_CHAT_WAKE', default: 1, help: 'set 0 to disable wake signals (acquire only on the sweep timer; for comparison)' },
  dbPrepared: { env: 'AIRLOCK_DB_PREPARED', default: 1, help: 'PostgreSQL: 1 prepares each statement once per connection (0 behind a pooler in transaction mode, e.g. PgBouncer)' },
  dbUpkeepStatements: { env: 'AIRLOCK_DB_UPKEEP_STATEMENTS', default: 2_000, help: 'embedded database: statements between upkeep rounds (ANALYZE of tables that grew, VACUUM, CHECKPOINT), each run when no statement waits; 0 turns upkeep off' },
  dbCheckpointWalMb: { env: 'AIRLOCK_DB_CHECKPOINT_WAL_MB', default: 256, help: 'embedded database: an upkeep round starts with a checkpoint once this many MB of write-ahead log were written since the last (bounds the log on disk and the replay after a crash)' },
  dbInitCache: { env: 'AIRLOCK_DB_INIT_CACHE', default: '', help: "folder where a freshly initialized embedded database is kept, so that the next new one is copied from it instead of running PGlite's initdb (seconds of CPU); default $XDG_CACHE_HOME/airlock or ~/.cache/airlock; off: none" },
  dbRetries: { env: 'AIRLOCK_DB_RETRIES', default: 5, help: 'retries of a chat step\'s commit whose database connection broke' },
  dbRetryBaseMs: { env: 'AIRLOCK_DB_RETRY_BASE_MS', default: 50, help: 'first such retry delay; doubles each attempt (at most 2 s)' },
  llmMaxRetries: { env: 'AIRLOCK_LLM_MAX_RETRIES', default: 4, help: 'retries of a transient provider error (429, 5xx, reset)' },
  llmRetryBaseMs: { env: 'AIRLOCK_LLM_RETRY_BASE_MS', default: 500, help: 'first retry delay; doubles each attempt' },
  llmRetryMaxMs: { env: 'AIRLOCK_LLM_RETRY_MAX_MS', default: 15_000, help: 'largest retry delay' },
  llmTimeoutMs: { env: 'AIRLOCK_LLM_TIMEOUT_MS', default: 120_000, help: 'provider request timeout (no byte for this long)' },
  maxSteps: { env: 'AIRLOCK_MAX_STEPS', default: 50, help: 'LLM steps (tool rounds) in one turn' },
  toolTimeoutMs: { env: 'AIRLOCK_TOOL_TIMEOUT_MS', default: 30_000, help: 'built-in tool run time limit' },
  actionTimeoutMs: { env: 'AIRLOCK_ACTION_TIMEOUT_MS', default: 600_000, help: 'time a client has to answer client-side tool calls (requires_action)' },
  titles: { env: 'AIRLOCK_TITLES', default: 1, help: 'set 0 to disable generated chat titles' },
  wsQueueBytes: { env: 'AIRLOCK_WS_QUEUE_BYTES', default: 4_194_304, help: 'bytes queued for one WebSocket before the client is told to resync' },
  wsWriteTimeoutMs: { env: 'AIRLOCK_WS_WRITE_TIMEOUT_MS', default: 10_000, help: 'a WebSocket that accepts no data for this long is told to resync' },
  wsMaxFrameBytes: { env: 'AIRLOCK_WS_MAX_FRAME_BYTES', default: 65_536, help: 'largest frame a client may send' },
  streamLogEvents: { env: 'AIRLOCK_STREAM_LOG_EVENTS', default: 50_000, help: 'events kept in memory per chat for catch-up' },
  streamIdleMs: { env: 'AIRLOCK_STREAM_IDLE_MS', default: 120_000, help: 'an idle chat log without subscribers is dropped after this' },
  secretKey: { env: 'AIRLOCK_SECRET_KEY', default: '', help: 'server key sealing target credentials (32 bytes, hex or base64); default: generated into <data dir>/secret.key' },
  webrtc: { env: 'AIRLOCK_WEBRTC', default: 1, help: 'set 0 (on the client or the gateway) to skip the direct WebRTC path and use the relay only' },
  iceServers: { env: 'AIRLOCK_ICE_SERVERS', default: '', help: 'comma-separated STUN/TURN servers, e.g. stun:stun.example.org:3478,turn:user:pass@turn.example.org:3478' },
  iceBindAddress: { env: 'AIRLOCK_ICE_BIND_ADDRESS', default: '', help: 'gather WebRTC host candidates on this address only (e.g. 127.0.0.1)' },
  launchTimeoutMs: { env: 'AIRLOCK_LAUNCH_TIMEOUT_MS', default: 10_000, help: 'time one launch attempt may take to bring a path (direct or relay) up' },
  launchAttempts: { env: 'AIRLOCK_LAUNCH_ATTEMPTS', default: 4, help: 'launch attempts on transient failures (gateway offline, timeout, 502/503/504)' },
  launchRetryBaseMs: { env: 'AIRLOCK_LAUNCH_RETRY_BASE_MS', default: 250, help: 'first launch retry delay; doubles each attempt' },
  launchRetryMaxMs: { env: 'AIRLOCK_LAUNCH_RETRY_MAX_MS', default: 3_000, help: 'largest launch retry delay' },
  targetConnectTimeoutMs: { env: 'AIRLOCK_TARGET_CONNECT_TIMEOUT_MS', default: 10_000, help: 'gateway: time to connect (and, for ssh, authenticate) to a target' },
  gatewayReconnectMinMs: { env: 'AIRLOCK_GATEWAY_RECONNECT_MIN_MS', default: 100, help: 'gateway: first reconnect delay after losing the server' },
  gatewayReconnectMaxMs: { env: 'AIRLOCK_GATEWAY_RECONNECT_MAX_MS', default: 5_000, help: 'gateway: largest reconnect delay' },
  bus: { env: 'AIRLOCK_BUS', default: '', help: 'replica bus: local, postgres (LISTEN/NOTIFY) or nats://host:4222; default postgres on a PostgreSQL database, else local' },
  busReconnectMinMs: { env: 'AIRLOCK_BUS_RECONNECT_MIN_MS', default: 100, help: 'first reconnect delay after the bus connection broke' },
  busReconnectMaxMs: { env: 'AIRLOCK_BUS_RECONNECT_MAX_MS', default: 5_000, help: 'largest bus reconnect delay' },
  replayTimeoutMs: { env: 'AIRLOCK_REPLAY_TIMEOUT_MS', default: 2_000, help: 'a stream opened on another replica than the turn\'s waits this long for the owner\'s unsaved events' },
  drainMs: { env: 'AIRLOCK_DRAIN_MS', default: 10_000, help: 'on SIGTERM, time running turns get to finish before they are handed to another replica' },
  shutdownGraceMs: { env: 'AIRLOCK_SHUTDOWN_GRACE_MS', default: 10_000, help: 'on SIGTERM, time the rest of the shutdown (closing sockets, bus, database) gets after the drain; then the process exits 1' },
  publicUrl: { env: 'AIRLOCK_PUBLIC_URL', default: '', help: 'this replica\'s own URL as gateways reach it (relay path across replicas); default the listen address' },
  tlsCert: { env: 'AIRLOCK_TLS_CERT', default: '', help: 'PEM certificate file: serve HTTPS/WSS (with AIRLOCK_TLS_KEY)' },
  tlsKey: { env: 'AIRLOCK_TLS_KEY', default: '', help: 'PEM private key file for AIRLOCK_TLS_CERT' },
  requestTimeoutMs: { env: 'AIRLOCK_REQUEST_TIMEOUT_MS', default: 30_000, help: 'CLI HTTP request timeout' },
  streamReconnectMs: { env: 'AIRLOCK_STREAM_RECONNECT_MS', default: 60_000, help: 'how long `airlock chat` tries to reopen a chat stream that dropped mid-reply' },
} satisfies Record<string, Knob>;

export type KnobName = keyof typeof knobs;

export function num(name: KnobName, env: NodeJS.ProcessEnv = process.env): number {
  const k = knobs[name];
  const raw = env[k.env];
  if (raw === undefined || raw === '') return Number(k.default);
  const v = Number(raw);
  if (!Number.isFinite(v) || v < 0) throw new ConfigError(`${k.env} must be a non-negative number, got ${JSON.stringify(raw)}`);
  return v;
}

/** Reads every numeric setting once: a bad one stops a start before its slow work (the database). */
export function checkNumbers(env: NodeJS.ProcessEnv = process.env): void {
  for (const name of Object.keys(knobs) as KnobName[]) if (typeof knobs[name].default === 'number') num(name, env);
}

export function str(name: KnobName, env: NodeJS.ProcessEnv = process.env): string {
  const k = knobs[name];
  const raw = env[k.env];
  return raw === undefined || raw === '' ? String(k.default) : raw;
}

export function knobTable(): string {
  const rows = Object.values(knobs as Record<string, Knob>).map((k) => `| \`${k.env}\` | ${k.default} | ${k.help} |`);
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}
