// `airlock` command-line entry: dispatches to subcommands, loading each one lazily so that
// start-up stays small.
import { CliError } from './config.js';
import { ConfigError } from '../errors.js';

const HELP = `airlock — self-hosted access plane for people and AI agents

Usage: airlock <command> [options]

Commands:
  server           run the control plane (API, chat workers) — embedded database by default
  dev              same as server; the README's quick start
  login            save the server URL and API token for the CLI
  chat             talk to the AI agent: new chats, send, stream replies, list, show
  launch           open a session to a resource: a local port (tcp) or a terminal (ssh, shell)
  gateway          run a gateway next to your targets; or create/list/delete gateways (admin)
  resource         resources and grants: list, create, delete, grant, revoke (admin)
  session          the session audit trail: list, end
  approvals        the calls your chats' agents wait to make: list, approve, deny
  user             manage users (admin): create, list, disable, enable
  token            your API tokens: create, list, revoke
  env              list every AIRLOCK_* setting with its default

Run \`airlock <command> --help\` for a command's options.`;

// A reader that goes away (`airlock chat … | head`) ends a command quietly, as it does other
// command-line tools; the daemons (server, gateway) keep running without their output.
const daemon = ['server', 'dev', 'gateway'].includes(process.argv[2] ?? '') && !process.argv.slice(3).some((a) => ['create', 'list', 'delete'].includes(a));
for (const out of [process.stdout, process.stderr]) {
  out.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    if (!daemon) process.exit(process.exitCode ?? 0);
  });
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(HELP);
      return 0;
    case '--version':
    case 'version':
      console.log('airlock 0.1.0');
      return 0;
    case 'server':
    case 'dev':
      return (await import('./server.js')).serverCommand(rest);
    case 'login':
      return (await import('./login.js')).loginCommand(rest);
    case 'chat':
      return (await import('./chat.js')).chatCommand(rest);
    case 'launch':
      return (await import('./launch.js')).launchCommand(rest);
    case 'gateway':
      return (await import('./gateway.js')).gatewayCommand(rest);
    case 'resource':
    case 'session':
      return (await import('./resources.js')).resourceCommand(cmd, rest);
    case 'approvals':
      return (await import('./approvals.js')).approvalsCommand(rest);
    case 'user':
    case 'token':
      return (await import('./users.js')).usersCommand(cmd, rest);
    case 'env': {
      const { settingsTable } = await import('../config.js');
      console.log(settingsTable());
      return 0;
    }
    default:
      throw new CliError(`unknown command "${cmd}"; run \`airlock help\``, 2);
  }
}

const argv0 = process.argv[2];

/** Prints a failure as one line; returns the exit status it calls for. */
function report(err: any): number {
  if (err instanceof CliError || err instanceof ConfigError) {
    process.stderr.write(`airlock: ${err.message}\n`);
    return err instanceof CliError ? err.code : 1;
  }
  if (err?.name === 'ApiClientError' || err?.constructor?.name === 'ApiClientError') {
    process.stderr.write(`airlock: ${err.message}${err.code ? ` (${err.code})` : ''}\n`);
    return 1;
  }
  if (err?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || err?.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || err?.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    process.stderr.write(`airlock: ${err.message}\n`);
    return 2;
  }
  process.stderr.write(`airlock: unexpected error: ${err?.stack ?? err}\n`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => code,
  (err) => report(err),
).then((code) => {
  process.exitCode = code;
  // The WebRTC library keeps native threads alive after its peers close; once a session command
  // is done (or failed), exit as soon as the terminal has everything we wrote.
  if (argv0 === 'launch' || argv0 === 'gateway') process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
});
