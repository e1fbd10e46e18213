// `airlock gateway`: run a gateway (--server, --token), or manage gateways (admin).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { ApiClient } from '../client/api.js';
import { CLIENT_OPTIONS, CliError, resolveClient, serverUrl } from './config.js';
import { createLogger } from '../log.js';
import { loadConfig } from '../config.js';
import { shellUser } from '../gateway/shell-user.js';

const HELP = `Usage:
  airlock gateway --server URL [--token-file FILE] [options]
        run a gateway next to your targets; it dials out to the server (no inbound port),
        reconnects with backoff and serves launch sessions for its group's resources
  airlock gateway create NAME [--group G]   (admin) register a gateway; prints its token once
  airlock gateway list                      (admin) gateways with online status
  airlock gateway delete NAME               (admin)

Running a gateway:
  --server URL          the Airlock server (AIRLOCK_SERVER)
  --token-file FILE     the gateway token, in a file only its owner can read (chmod 600);
                        or AIRLOCK_GATEWAY_TOKEN, which the gateway drops from its environment
                        once read. --token TOKEN works too but every local user can read it
                        (ps, /proc), so the gateway warns.
  --allow-shell         serve shell resources: a shell on this host for whoever is granted one
  --shell-user USER     the unprivileged account those shells run as (required with
                        --allow-shell, never the gateway's own; the gateway must run as root
                        to start processes as it). Shells get a clean environment.
  --relay-origin URL    server replicas besides --server's origin that the gateway opens relay
                        sockets to (repeatable; https://*.example.com or http://host:* match
                        any subdomain or port). The relay carries the gateway token, so by
                        default only --server's own origin is dialled`;

export async function gatewayCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...CLIENT_OPTIONS,
      'token-file': { type: 'string' },
      'allow-shell': { type: 'boolean' },
      'shell-user': { type: 'string' },
      'relay-origin': { type: 'string', multiple: true },
      group: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const [sub, arg] = positionals;
  if (!sub) return runGateway(values);
  const { server, token } = resolveClient(values);
  const api = new ApiClient(server, token);
  if (sub === 'create') {
    if (!arg) throw new CliError('usage: airlock gateway create NAME [--group G]', 2);
    const out = await api.post('/api/gateways', { name: arg, ...(values.group ? { group: values.group } : {}) });
    if (values.json) console.log(JSON.stringify(out));
    else {
      console.log(
        [
          `Created gateway ${out.gateway.name} (group ${out.gateway.group}). Its token (shown once):`,
          `  ${out.token}`,
          'Run it next to your targets, the token in a file only it can read:',
          `  umask 077; echo '${out.token}' > ${out.gateway.name}.token`,
          `  airlock gateway --server ${server} --token-file ${out.gateway.name}.token`,
        ].join('\n'),
      );
    }
    return 0;
  }
  if (sub === 'list') {
    const { gateways } = await api.get('/api/gateways');
    if (values.json) console.log(JSON.stringify(gateways));
    else if (!gateways.length) console.log('No gateways yet. Create one with `airlock gateway create NAME`.');
    else for (const g of gateways) console.log(`${g.name.padEnd(20)} group=${g.group.padEnd(16)} ${g.online ? 'online ' : 'offline'}  last seen ${g.last_seen_at ?? 'never'}`);
    return 0;
  }
  if (sub === 'delete') {
    if (!arg) throw new CliError('usage: airlock gateway delete NAME', 2);
    await api.delete(`/api/gateways/${encodeURIComponent(arg)}`);
    console.log(`Deleted gateway ${arg}.`);
    return 0;
  }
  throw new CliError(`unknown subcommand "gateway ${sub}"; run \`airlock gateway --help\``, 2);
}

interface RunFlags {
  server?: string;
  token?: string;
  'token-file'?: string;
  'allow-shell'?: boolean;
  'shell-user'?: string;
  'relay-origin'?: string[];
}

/**
 * The gateway token: from a file that only its owner can read, from the environment (then
 * dropped from it, so nothing the gateway starts inherits it), or from argv (readable by every
 * local user: warned about).
 */
function gatewayToken(flags: RunFlags): string {
  const file = flags['token-file'];
  if (file) {
    let st: fs.Stats;
    let text: string;
    try {
      st = fs.statSync(file);
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new CliError(`cannot read the token file: ${(err as Error).message}`, 2);
    }
    if (st.mode & 0o077) throw new CliError(`the token file ${file} can be read by other users; run: chmod 600 ${file}`, 2);
    return text.trim();
  }
  const env = process.env.AIRLOCK_GATEWAY_TOKEN;
  delete process.env.AIRLOCK_GATEWAY_TOKEN;
  if (flags.token) {
    process.stderr.write('airlock: warning: --token puts the gateway token where every local user can read it (ps, /proc/PID/cmdline); use --token-file FILE or AIRLOCK_GATEWAY_TOKEN\n');
    return flags.token;
  }
  if (env) return env;
  throw new CliError('airlock gateway needs its token: --token-file FILE (or AIRLOCK_GATEWAY_TOKEN); `airlock gateway create NAME` makes one', 2);
}

async function runGateway(flags: RunFlags): Promise<number> {
  const server = flags.server ?? process.env.AIRLOCK_SERVER;
  if (!server) throw new CliError('airlock gateway needs --server URL (and its token: --token-file FILE or AIRLOCK_GATEWAY_TOKEN)', 2);
  const token = gatewayToken(flags);
  if (flags['shell-user'] && !flags['allow-shell']) throw new CliError('--shell-user goes with --allow-shell (this gateway serves no shells without it)', 2);
  let shellAs = null;
  if (flags['allow-shell']) {
    if (!flags['shell-user']) throw new CliError('--allow-shell needs --shell-user USER: an unprivileged account the shells run as, never the gateway\'s own', 2);
    try {
      shellAs = shellUser(flags['shell-user']);
    } catch (err) {
      throw new CliError((err as Error).message, 2);
    }
  }
  const relayOrigins = flags['relay-origin'] ?? [];
  for (const o of relayOrigins) {
    if (!/^https?:\/\/(\*\.)?([^/:*]+|\[[^\]]+\])(:(\d+|\*))?\/?$/.test(o)) {
      throw new CliError(`--relay-origin must look like https://host[:port], https://*.domain or http://host:*, got "${o}"`, 2);
    }
  }
  const { GatewayDaemon } = await import('../gateway/daemon.js');
  const log = createLogger('gateway');
  const { reportCallbackErrors, directPath } = await import('../tube/transport.js');
  reportCallbackErrors((err) => log.warn({ err }, 'error in a WebRTC callback'));
  const gw = new GatewayDaemon({ server: serverUrl(server), token, log, shellAs, relayOrigins, direct: directPath(loadConfig()) });
  gw.start();
  return new Promise((resolve) => {
    const stop = () => {
      gw.stop();
      resolve(0);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    void gw.refused.then((why) => {
      process.stderr.write(`airlock: ${why}\n`);
      resolve(1);
    });
  });
}
