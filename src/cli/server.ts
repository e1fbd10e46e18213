// `airlock server` / `airlock dev`.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { num, str } from '../config.js';
import { CliError, configPath, readConfig, writeConfig } from './config.js';

const HELP = `Usage: airlock server [options]

Runs the Airlock control plane: HTTP API, chat stream WebSockets and chat workers.
With no database URL it uses the embedded database in --data-dir (one process per folder).

Options:
  --port N              listen port (AIRLOCK_PORT, default ${num('port')})
  --host ADDR           listen address (AIRLOCK_HOST, default ${str('host')})
  --data-dir DIR        embedded database folder (AIRLOCK_DATA_DIR, default ${str('dataDir')})
  --database-url URL    PostgreSQL instead of the embedded database (DATABASE_URL)
  --concurrency N       chat turns run at once (AIRLOCK_CHAT_CONCURRENCY, default ${num('chatConcurrency')})
  -h, --help            this help

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
  if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1)) throw new CliError('--concurrency must be a positive integer', 2);
  const host = values.host ?? str('host');
  const dataDir = path.resolve(values['data-dir'] ?? str('dataDir'));
  const url = values['database-url'] ?? process.env.DATABASE_URL;

  const [{ openDb }, { DataDirLockedError }, { startServer }, { providersFromEnv }, { createLogger }] = await Promise.all([
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
  let db;
  try {
    db = await openDb(url ? { url } : { dataDir });
  } catch (err) {
    if (err instanceof DataDirLockedError) throw new CliError(err.message);
    throw new CliError(`cannot open the database${url ? ` at ${redact(url)}` : ` in ${dataDir}`}: ${(err as Error).message}`);
  }
  let server;
  try {
    const { SecretBox } = await import('../access/secretbox.js');
    server = await startServer({ db, providers, port, host, log, runner: { concurrency }, secrets: SecretBox.load(dataDir) });
  } catch (err) {
    await db.close();
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new CliError(`port ${port} on ${host} is in use; pass --port`);
    throw err;
  }
  const where = url ? `PostgreSQL ${redact(url)}` : `embedded database in ${dataDir}`;
  process.stderr.write(`Airlock server listening on ${server.url} (${where})\n`);
  if (!providers.openai && !providers.anthropic) {
    process.stderr.write('No LLM provider configured: chats will answer with an error until you set AIRLOCK_OPENAI_API_KEY or AIRLOCK_ANTHROPIC_API_KEY (see `airlock server --help`).\n');
  }
  if (server.adminToken) {
    const lines = [`First start: created the user "admin". Its API token (shown once):`, `  ${server.adminToken}`];
    if (!url) {
      const file = path.join(dataDir, 'admin-token');
      fs.writeFileSync(file, server.adminToken + '\n', { mode: 0o600 });
      lines.push(`Saved in ${file}.`);
    }
    if (!readConfig().token) {
      writeConfig({ server: server.url, token: server.adminToken });
      lines.push(`The CLI is logged in as admin (${configPath()}).`);
    }
    process.stderr.write(lines.join('\n') + '\n');
  }
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) process.exit(130);
      stopping = true;
      process.stderr.write(`${sig}: stopping (running turns finish first; press Ctrl-C again to quit now)\n`);
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
  await server.close();
  await db.close();
  return 0;
}

const redact = (u: string) => u.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
