// `airlock server` / `airlock dev`.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createSecureContext } from 'node:tls';
import { checkNumbers, num, str } from '../config.js';
import { checkBusSpec } from '../bus/open.js';
import { CliError, configPath, readConfig, writeConfig } from './config.js';

const HELP = `Usage: airlock server [options]

Runs the Airlock control plane: HTTP API, chat stream WebSockets and chat workers.
With no database URL it uses the embedded database in --data-dir (one process per folder), which
keeps itself vacuumed and loses nothing when the process is killed, but cannot fsync: an OS crash
or power cut may lose its last commits. Use PostgreSQL where that matters.

Options:
  --port N              listen port (AIRLOCK_PORT, default ${num('port')})
  --host ADDR           listen address (AIRLOCK_HOST, default ${str('host')})
  --data-dir DIR        embedded database folder (AIRLOCK_DATA_DIR, default ${str('dataDir')})
  --database-url URL    PostgreSQL instead of the embedded database (DATABASE_URL)
  --concurrency N       chat turns run at once; 0 = API-only replica (AIRLOCK_CHAT_CONCURRENCY, default ${num('chatConcurrency')})
  --bus SPEC            replica bus: local, postgres or nats://host:4222 (AIRLOCK_BUS; default postgres
                        with --database-url, else local)
  --lease-ms N          chat lease: a replica that dies loses its chats to the others after this
                        (AIRLOCK_LEASE_MS, default ${num('leaseMs')}; heartbeat AIRLOCK_HEARTBEAT_MS, default ${num('heartbeatMs')})
  --tls-cert FILE       serve HTTPS/WSS with this PEM certificate (AIRLOCK_TLS_CERT)
  --tls-key FILE        ... and this PEM private key (AIRLOCK_TLS_KEY)
  --public-url URL      this replica's own address as gateways reach it, for the relay path when
                        replicas sit behind a balancer (AIRLOCK_PUBLIC_URL, default the listen address)
  -h, --help            this help

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
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const port = values.port !== undefined ? Number(values.port) : num('port');
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliError(`--port must be 0-65535, got ${values.port}`, 2);
  const concurrency = values.concurrency !== undefined ? Number(values.concurrency) : undefined;
  if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 0)) throw new CliError('--concurrency must be a non-negative integer', 2);
  if (values.bus !== undefined) process.env.AIRLOCK_BUS = values.bus;
  if (values['public-url'] !== undefined) {
    if (!/^https?:\/\/[^/]+/.test(values['public-url'])) throw new CliError('--public-url must be an http:// or https:// URL', 2);
    process.env.AIRLOCK_PUBLIC_URL = values['public-url'];
  }
  if (values['lease-ms'] !== undefined) {
    const lease = Number(values['lease-ms']);
    if (!Number.isInteger(lease) || lease < 500) throw new CliError('--lease-ms must be an integer of at least 500', 2);
    process.env.AIRLOCK_LEASE_MS = String(lease);
    if (!process.env.AIRLOCK_HEARTBEAT_MS) process.env.AIRLOCK_HEARTBEAT_MS = String(Math.max(100, Math.floor(lease / 3)));
  }
  const certFile = values['tls-cert'] ?? (str('tlsCert') || undefined);
  const keyFile = values['tls-key'] ?? (str('tlsKey') || undefined);
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
  const host = values.host ?? str('host');
  const dataDir = path.resolve(values['data-dir'] ?? str('dataDir'));
  const url = values['database-url'] ?? process.env.DATABASE_URL;
  // Setting mistakes stop the start here, not after the database opened (seconds, and a data folder made).
  checkNumbers();
  await checkBusSpec(str('bus'), !!url);

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
    db = await openDb(url ? { url } : { dataDir, log });
  } catch (err) {
    if (err instanceof DataDirLockedError) throw new CliError(err.message);
    throw new CliError(`cannot open the database${url ? ` at ${redact(url)}` : ` in ${dataDir}`}: ${(err as Error).message}`);
  }
  let server;
  try {
    const { SecretBox } = await import('../access/secretbox.js');
    server = await startServer({ db, providers, port, host, log, runner: { concurrency }, tls, secrets: SecretBox.load(dataDir) });
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
  const limitMs = num('drainMs') + num('shutdownGraceMs');
  setTimeout(() => {
    process.stderr.write(`shutdown did not finish in ${limitMs} ms (stuck ${stage}); exiting\n`);
    process.exit(1);
  }, limitMs).unref();
  await server.close();
  stage = 'closing the database';
  await db.close();
  return 0;
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127\./.test(host);

const redact = (u: string) => u.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
