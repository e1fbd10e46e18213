// `airlock gateway`: run a gateway (--server, --token), or manage gateways (admin).
import { parseArgs } from 'node:util';
import { ApiClient } from '../client/api.js';
import { CliError, resolveClient, serverUrl } from './config.js';
import { num } from '../config.js';
import { createLogger } from '../log.js';

const HELP = `Usage:
  airlock gateway --server URL --token GATEWAY_TOKEN
        run a gateway next to your targets; it dials out to the server (no inbound port),
        reconnects with backoff and serves launch sessions for its group's resources
        (the token can also come from AIRLOCK_GATEWAY_TOKEN)
  airlock gateway create NAME [--group G]   (admin) register a gateway; prints its token once
  airlock gateway list                      (admin) gateways with online status
  airlock gateway delete NAME               (admin)`;

export async function gatewayCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      server: { type: 'string' },
      token: { type: 'string' },
      group: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const [sub, arg] = positionals;
  if (!sub) return runGateway(values.server ?? process.env.AIRLOCK_SERVER, values.token ?? process.env.AIRLOCK_GATEWAY_TOKEN);
  const { server, token } = resolveClient(values);
  const api = new ApiClient(server, token, num('requestTimeoutMs'));
  if (sub === 'create') {
    if (!arg) throw new CliError('usage: airlock gateway create NAME [--group G]', 2);
    const out = await api.post('/api/gateways', { name: arg, ...(values.group ? { group: values.group } : {}) });
    if (values.json) console.log(JSON.stringify(out));
    else console.log(`Created gateway ${out.gateway.name} (group ${out.gateway.group}). Its token (shown once):\n${out.token}\nRun it with: airlock gateway --server ${server} --token ${out.token}`);
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

async function runGateway(server: string | undefined, token: string | undefined): Promise<number> {
  if (!server || !token) throw new CliError('airlock gateway needs --server URL and --token GATEWAY_TOKEN (create one with `airlock gateway create NAME`)', 2);
  const { GatewayDaemon } = await import('../gateway/daemon.js');
  const log = createLogger('gateway');
  const gw = new GatewayDaemon({ server: serverUrl(server), token, log });
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
