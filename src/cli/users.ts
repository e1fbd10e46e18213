// `airlock user create|list|disable|enable` (admin) and `airlock token create|list|revoke`.
import { parseArgs } from 'node:util';
import { ApiClient } from '../client/api.js';
import { CLIENT_OPTIONS, CliError, resolveClient } from './config.js';

export async function usersCommand(cmd: 'user' | 'token', argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...CLIENT_OPTIONS,
      admin: { type: 'boolean' },
      name: { type: 'string' },
      'expires-in': { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  if (values.help || !positionals.length) {
    console.log(
      cmd === 'user'
        ? [
            'Usage:',
            '  airlock user create NAME [--admin]   create a user; prints its API token',
            '  airlock user list                    every user, with its status',
            '  airlock user disable NAME            cut a user off at once: its tokens stop working, its chat',
            '                                       streams and launch sessions end (chats, grants and audit stay)',
            '  airlock user enable NAME             let a disabled user in again (its tokens work again)',
          ].join('\n')
        : 'Usage:\n  airlock token create [--name N] [--expires-in SECONDS]   a new API token for yourself\n  airlock token list                                       your tokens (never their secrets)\n  airlock token revoke ID                                  revoke one of your tokens (admins: anyone\'s) at once,\n                                                           and the tokens made with it',
    );
    return values.help ? 0 : 2;
  }
  const { server, token } = resolveClient(values);
  const api = new ApiClient(server, token);
  const [sub, arg] = positionals;
  if (cmd === 'user' && sub === 'create') {
    if (!arg) throw new CliError('airlock user create NAME', 2);
    const out = await api.post('/api/users', { name: arg, admin: Boolean(values.admin) });
    if (values.json) console.log(JSON.stringify(out));
    else console.log(`Created user ${out.user.name}${out.user.is_admin ? ' (admin)' : ''}. API token (shown once):\n${out.token}`);
    return 0;
  }
  if (cmd === 'user' && sub === 'list') {
    const { users } = await api.get('/api/users');
    if (values.json) console.log(JSON.stringify(users));
    else for (const u of users) console.log(`${u.id}  ${u.name}${u.is_admin ? '  admin' : ''}${u.disabled_at ? `  disabled since ${u.disabled_at}` : ''}`);
    return 0;
  }
  if (cmd === 'user' && (sub === 'disable' || sub === 'enable')) {
    if (!arg) throw new CliError(`usage: airlock user ${sub} NAME`, 2);
    const out = await api.post(`/api/users/${encodeURIComponent(arg)}/${sub}`, {});
    if (values.json) console.log(JSON.stringify(out.user));
    else console.log(sub === 'disable' ? `Disabled user ${arg}: its tokens no longer work and its streams and sessions were closed.` : `Enabled user ${arg}.`);
    return 0;
  }
  if (cmd === 'token' && sub === 'create') {
    const expires = values['expires-in'] !== undefined ? Number(values['expires-in']) : undefined;
    if (expires !== undefined && (!Number.isInteger(expires) || expires < 1)) throw new CliError('--expires-in must be a positive number of seconds', 2);
    const out = await api.post('/api/tokens', { name: values.name, expires_in: expires });
    console.log(values.json ? JSON.stringify(out) : out.token);
    return 0;
  }
  if (cmd === 'token' && sub === 'list') {
    const { tokens } = await api.get('/api/tokens');
    if (values.json) console.log(JSON.stringify(tokens));
    else {
      for (const t of tokens) {
        console.log(`${t.id}  ${t.prefix}…  ${String(t.name || '-').padEnd(16)} created ${t.created_at}  ${t.expires_at ? `expires ${t.expires_at}` : 'no expiry'}${t.current ? '  (this one)' : ''}`);
      }
    }
    return 0;
  }
  if (cmd === 'token' && sub === 'revoke') {
    if (!arg) throw new CliError('usage: airlock token revoke ID (see airlock token list)', 2);
    const out = await api.delete(`/api/tokens/${encodeURIComponent(arg)}`);
    console.log(`Revoked token ${arg}${out.also_revoked ? `, and the ${out.also_revoked} token(s) minted with it` : ''}.`);
    return 0;
  }
  throw new CliError(`unknown subcommand "${cmd} ${sub}"; run \`airlock ${cmd} --help\``, 2);
}
