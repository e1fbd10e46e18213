// `airlock login`: checks the token against the server, then saves both for later commands.
import { parseArgs } from 'node:util';
import { ApiClient } from '../client/api.js';
import { CLIENT_OPTIONS, CliError, configPath, readConfig, serverUrl, writeConfig } from './config.js';

export async function loginCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: CLIENT_OPTIONS,
  });
  if (values.help) {
    console.log('Usage: airlock login --server URL --token TOKEN\n\nChecks the token and saves both in ' + configPath() + '.\nAIRLOCK_TOKEN can stand in for --token.');
    return 0;
  }
  const server = serverUrl(values.server ?? readConfig().server ?? 'http://127.0.0.1:7070');
  const token = values.token ?? process.env.AIRLOCK_TOKEN;
  if (!token) throw new CliError('--token is required (or set AIRLOCK_TOKEN)', 2);
  const me = await new ApiClient(server, token).get('/api/me');
  writeConfig({ server, token });
  console.log(`Logged in to ${server} as ${me.user.name}${me.user.is_admin ? ' (admin)' : ''}; saved in ${configPath()}`);
  return 0;
}
