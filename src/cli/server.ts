// `airlock server` / `airlock dev`.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createSecureContext } from 'node:tls';
import { loadConfig, settings, type Config } from '../config.js';
import { checkBusSpec } from '../bus/open.js';
import { CliError, configPath, readConfig, writeConfig } from './config.js';

const d = (name: keyof typeof settings) => String(settings[name].default);

/** After the drain, the rest of a shutdown (sockets, bus, database) gets this long; then the process exits 1. */
const SHUTDOWN_GRACE_MS = 10_000;

const help = (sweepMs: number) => `Usage: airlock server [options]

Runs the Airlock control plane: HTTP API, chat stream WebSockets and chat workers.
With no database URL it uses the embedded database in --data-dir (one process per folder), which
keeps itself vacuumed and loses nothing when the process is killed, but cannot fsync: an OS crash
or power cut may lose its last commits. Use PostgreSQL where that matters.

Options:
  --port N              listen port (AIRLOCK_PORT, default ${d('port')})
  --host ADDR           listen address (AIRLOCK_HOST, default ${d('host')})
  --data-dir DIR        embedded database folder (AIRLOCK_DATA_DIR, default ${d('dataDir')})
  --database-url URL    PostgreSQL instead of the embedded database (DATABASE_URL)
  --concurrency N       chat turns run at once; 0 = API-only replica (AIRLOCK_CHAT_CONCURRENCY, default ${d('chatConcurrency')})
  --bus SPEC            replica bus: local, postgres or nats://host:4222 (AIRLOCK_BUS; default postgres
                        with --database-url, else local)
  --lease-ms N          chat lease: a replica that dies loses its chats to the others after this
                        (AIRLOCK_LEASE_MS, default ${d('leaseMs')}; renewed every third of it)
  --tls-cert FILE       serve HTTPS/WSS with this PEM certificate (AIRLOCK_TLS_CERT)
  --tls-key FILE        ... and this PEM private key (AIRLOCK_TLS_KEY)
  --public-url URL      this replica's own address as gateways reach it, for the relay path when
                        replicas sit behind a balancer (AIRLOCK_PUBLIC_URL, default the listen address)
  -h, --help            this help

For tests and comparisons:
  --sweep-ms N          the safety-net timer that finds chats a wake signal missed (default ${sweepMs})
  --no-wake             ignore wake signals: find work on that timer only (the polling baseline
                        that \`npm run bench:chat\` compares with)
  --shutdown-grace-ms N time the rest of a shutdown gets after the drain before the process
                        exits 1 (default ${SHUTDOWN_GRACE_MS})

Replicas: run several servers on one PostgreSQL (same --database-url and AIRLOCK_SECRET_KEY); they
share work and streams over the bus. SIGTERM drains: not ready, running turns finish (AIRLOCK_DRAIN_MS)
or move to another replica, clients and gateways are told to reconnect.
Endpoints for operators: /healthz, /readyz, /metrics (Prometheus; admin token or AIRLOCK_METRICS_TOKEN).

LLM providers come from the environment (AIRLOCK_OPENAI_API_KEY / AIRLOCK_OPENAI_BASE_URL,
AIRLOCK_ANTHROPIC_API_KEY / AIRLOCK_ANTHROPIC_BASE_URL, AIRLOCK_MODEL) or the JSON file named by
AIRLOCK_CONFIG. \`airlock env\` lists every other setting.`;

export async function serverCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'data-dir': { type: 'string' },
      'database-url': { type: 'string' },
      concurrency: { type: 'string' },
      bus: { type: 'string' },
      'lease-ms': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'public-url': { type: 'string' },
      'sweep-ms': { type: 'string' },
      'no-wake': { type: 'boolean' },
      'shutdown-grace-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(help((await import('../chat/runner.js')).SWEEP_MS));
    return 0;
  }
  // Setting mistakes stop the start here, not after the database opened (seconds, and a data folder made).
  const config: Config = { ...loadConfig(), ...flagSettings(values) };
  const runner = {
    concurrency: config.chatConcurrency,
    ...(values['sweep-ms'] !== undefined && { sweepMs: wholeNumber('--sweep-ms', values['sweep-ms'], 100) }),
    ...(values['no-wake'] && { wake: false }),
  };
  const certFile = config.tlsCert || undefined;
  const keyFile = config.tlsKey || undefined;
  if (!!certFile !== !!keyFile) throw new CliError('TLS needs both --tls-cert and --tls-key', 2);
  let tls: { cert: Buffer; key: Buffer } | undefined;
  if (certFile && keyFile) {
    try {
      tls = { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
    } catch (err) {
      throw new CliError(`cannot read the TLS certificate or key: ${(err as Error).message}`);
    }
    try {
      createSecureContext(tls); // a bad PEM or a key that does not match fails here, before any database work
    } catch (err) {
      throw new CliError(`invalid TLS certificate or key: ${(err as Error).message}`);
    }
  }
  const { port, host } = config;
  if (!Number.isInteger(port) || port > 65535) throw new CliError(`the port must be 0-65535, got ${port}`, 2);
  const dataDir = path.resolve(config.dataDir);
  const url = values['database-url'] ?? process.env.DATABASE_URL;
  await checkBusSpec(config.bus, !!url);

  const [{ openDb, embeddedDbDir }, { DataDirLockedError }, { startServer }, { providersFromEnv }, { createLogger }] = await Promise.all([
    import('../store/db.js'),
    import('../store/lockfile.js'),
    import('../server/app.js'),
    import('../chat/providers/index.js'),
    import('../log.js'),
  ]);
  const log = createLogger('airlock-server');
  let providers;
  try {
    providers = providersFromEnv();
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  if (!url && !fs.existsSync(embeddedDbDir(dataDir))) {
    process.stderr.write(`First start: creating the embedded database in ${dataDir} (a few seconds)…\n`);
  }
  let db;
  try {
    db = await openDb(url ? { url, prepared: config.dbPrepared } : { dataDir, log });
  } catch (err) {
    if (err instanceof DataDirLockedError) throw new CliError(err.message);
    throw new CliError(`cannot open the database${url ? ` at ${redact(url)}` : ` in ${dataDir}`}: ${(err as Error).message}`);
  }
  let server;
  try {
    const { SecretBox } = await import('../access/secretbox.js');
    server = await startServer({ db, config, providers, port, host, log, runner, tls, secrets: SecretBox.load(dataDir, config.secretKey) });
  } catch (err) {
    await db.close();
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new CliError(`port ${port} on ${host} is in use; pass --port`);
    throw err;
  }
  // Listening from here on: a signal from now drains (one before the handlers would kill the
  // process outright).
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) process.exit(130);
      stopping = true;
      process.stderr.write(`${sig}: draining (running turns finish or move to another replica; press Ctrl-C again to quit now)\n`);
      resolve();
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  // Bearer tokens (and gateway tokens) travel in every request: on a network, plain HTTP shows them.
  if (!tls && !isLoopback(host)) {
    process.stderr.write(`warning: listening on ${host} without TLS: API and gateway tokens cross the network in clear text; pass --tls-cert and --tls-key (or put a TLS proxy in front and bind to 127.0.0.1)\n`);
  }
  const where = url ? `PostgreSQL ${redact(url)}` : `embedded database in ${dataDir}`;
  process.stderr.write(
    `Airlock server listening on ${server.url} (${where}; bus ${server.bus.kind}; replica ${server.bus.replicaId}; ${server.runner ? `worker ${server.runner.workerId}` : 'API only'})\n`,
  );
  if (!providers.openai && !providers.anthropic) {
    process.stderr.write('No LLM provider configured: chats will answer with an error until you set AIRLOCK_OPENAI_API_KEY or AIRLOCK_ANTHROPIC_API_KEY (see `airlock server --help`).\n');
  }
  if (server.adminToken) {
    const lines = [`First start: created the user "admin". Its API token (shown once):`, `  ${server.adminToken}`];
    if (!url) {
      const file = path.join(dataDir, 'admin-token');
      // Whole or absent, for whoever reads it the moment it appears.
      fs.writeFileSync(`${file}.tmp`, server.adminToken + '\n', { mode: 0o600 });
      fs.renameSync(`${file}.tmp`, file);
      lines.push(`Saved in ${file}.`);
    }
    if (!readConfig().token) {
      writeConfig({ server: server.url, token: server.adminToken });
      lines.push(`The CLI is logged in as admin (${configPath()}).`);
    }
    process.stderr.write(lines.join('\n') + '\n');
  }
  await stopped;
  // Turns are finished or handed back by the drain; a shutdown step that never ends must not keep
  // the process (and its port, its lock) alive forever.
  let stage = 'draining and closing the server';
  const graceMs = values['shutdown-grace-ms'] !== undefined ? wholeNumber('--shutdown-grace-ms', values['shutdown-grace-ms'], 0) : SHUTDOWN_GRACE_MS;
  const limitMs = config.drainMs + graceMs;
  setTimeout(() => {
    process.stderr.write(`shutdown did not finish in ${limitMs} ms (stuck ${stage}); exiting\n`);
    process.exit(1);
  }, limitMs).unref();
  await server.close();
  stage = 'closing the database';
  await db.close();
  return 0;
}

type Flags = Partial<Record<'port' | 'host' | 'data-dir' | 'concurrency' | 'bus' | 'lease-ms' | 'tls-cert' | 'tls-key' | 'public-url', string>>;

/** What the flags change of the settings (a flag wins over its AIRLOCK_* variable). */
function flagSettings(f: Flags): Partial<Config> {
  const out: { -readonly [K in keyof Config]?: Config[K] } = {};
  if (f.port !== undefined) {
    out.port = wholeNumber('--port', f.port, 0);
    if (out.port > 65535) throw new CliError(`--port must be 0-65535, got ${f.port}`, 2);
  }
  if (f.host !== undefined) out.host = f.host;
  if (f['data-dir'] !== undefined) out.dataDir = f['data-dir'];
  if (f.concurrency !== undefined) out.chatConcurrency = wholeNumber('--concurrency', f.concurrency, 0);
  if (f.bus !== undefined) out.bus = f.bus;
  if (f['lease-ms'] !== undefined) out.leaseMs = wholeNumber('--lease-ms', f['lease-ms'], 500);
  if (f['tls-cert'] !== undefined) out.tlsCert = f['tls-cert'];
  if (f['tls-key'] !== undefined) out.tlsKey = f['tls-key'];
  if (f['public-url'] !== undefined) {
    if (!/^https?:\/\/[^/]+/.test(f['public-url'])) throw new CliError('--public-url must be an http:// or https:// URL', 2);
    out.publicUrl = f['public-url'];
  }
  return out;
}

function wholeNumber(flag: string, raw: string, min: number): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min) throw new CliError(`${flag} must be a whole number of at least ${min}, got ${JSON.stringify(raw)}`, 2);
  return n;
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127\./.test(host);

const redact = (u: string) => u.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
