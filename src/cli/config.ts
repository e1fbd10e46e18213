// Where the CLI finds its server and token: flags, then AIRLOCK_SERVER / AIRLOCK_TOKEN, then
// the config file written by `airlock login` (or by the server on its first start).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface CliConfig {
  server?: string;
  token?: string;
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.AIRLOCK_CLI_CONFIG) return env.AIRLOCK_CLI_CONFIG;
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'airlock', 'config.json');
}

export function readConfig(file = configPath()): CliConfig {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as CliConfig;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

/** Writes the config (it holds a token) readable by its owner only, whatever mode an existing file had. */
export function writeConfig(cfg: CliConfig, file = configPath()): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2) + '\n', { mode: 0o600 });
  fs.chmodSync(file, 0o600);
}

/** The server's URL without trailing slashes; anything but an http(s) URL is a usage error. */
export function serverUrl(s: string): string {
  let u: URL | null = null;
  try {
    u = new URL(s);
  } catch {
    /* reported below */
  }
  if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) throw new CliError(`the server must be an http:// or https:// URL (got "${s}")`, 2);
  return s.replace(/\/+$/, '');
}

/** The options every command that talks to a server takes (resolveClient reads the first two). */
export const CLIENT_OPTIONS = {
  server: { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function resolveClient(flags: { server?: string; token?: string }): { server: string; token: string } {
  const file = readConfig();
  const server = serverUrl(flags.server || process.env.AIRLOCK_SERVER || file.server || 'http://127.0.0.1:7070');
  const token = flags.token || process.env.AIRLOCK_TOKEN || file.token;
  if (!token) {
    throw new CliError(`no API token: run \`airlock login --server ${server} --token <token>\` or set AIRLOCK_TOKEN (the admin token is printed on the server's first start and saved in its data folder as admin-token)`);
  }
  return { server, token };
}

/** An error the CLI prints as one line and exits with `code`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code = 1,
  ) {
    super(message);
  }
}
