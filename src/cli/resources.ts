// `airlock resource ...` (resources and grants) and `airlock session list|end` (the audit trail).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { ApiClient } from '../client/api.js';
import { CLIENT_OPTIONS, CliError, resolveClient } from './config.js';

const RESOURCE_HELP = `Usage:
  airlock resource list                      resources you may launch (admins: all)
  airlock resource create NAME --kind tcp|ssh|shell --gateway GROUP [--target HOST:PORT]
        [--username U (--password-env VAR | --key-file FILE [--passphrase-env VAR])]
        (admin) ssh resources need a credential; it is encrypted at rest and only ever
        sent to the gateway serving a session
  airlock resource delete NAME               (admin) its open sessions end at once
  airlock resource grant NAME USER [--agent deny|ask|allow]
                                             (admin) let USER launch NAME; --agent: what USER's
                                             chat agent may do with it (default ask: a person
                                             approves each call; again with --agent to change it)
  airlock resource revoke NAME USER          (admin) USER's open sessions of NAME end at once
  airlock resource grants NAME               (admin)`;

const SESSION_HELP = `Usage:
  airlock session list [--open] [--limit N] [--json]
                                             launch sessions, newest first (admins: everyone's;
                                             others: their own); --open: only those still running
  airlock session end ID                     end an open session at once (admins: anyone's; others:
                                             their own); the audit trail records who ended it`;

export async function resourceCommand(cmd: 'resource' | 'session', argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...CLIENT_OPTIONS,
      kind: { type: 'string' },
      target: { type: 'string' },
      gateway: { type: 'string' },
      username: { type: 'string' },
      'password-env': { type: 'string' },
      'key-file': { type: 'string' },
      'passphrase-env': { type: 'string' },
      limit: { type: 'string' },
      open: { type: 'boolean' },
      json: { type: 'boolean' },
      agent: { type: 'string' },
    },
  });
  const help = cmd === 'resource' ? RESOURCE_HELP : SESSION_HELP;
  if (values.help || !positionals.length) {
    console.log(help);
    return values.help ? 0 : 2;
  }
  const { server, token } = resolveClient(values);
  const api = new ApiClient(server, token);
  const [sub, name, user] = positionals;
  const enc = encodeURIComponent;
  if (cmd === 'session') {
    if (sub === 'end') {
      if (!name) throw new CliError('usage: airlock session end ID (see airlock session list)', 2);
      await api.delete(`/api/sessions/${enc(name)}`);
      console.log(`Ended session ${name}.`);
      return 0;
    }
    if (sub !== 'list') throw new CliError(`unknown subcommand "session ${sub}"; run \`airlock session --help\``, 2);
    const { sessions } = await api.get(`/api/sessions?limit=${enc(values.limit ?? '50')}${values.open ? '&open=true' : ''}`);
    if (values.json) console.log(JSON.stringify(sessions));
    else if (!sessions.length) console.log(values.open ? 'No open sessions.' : 'No sessions yet. They are recorded by `airlock launch`.');
    else {
      for (const s of sessions) {
        const dur = s.ended_at ? `${((Date.parse(s.ended_at) - Date.parse(s.started_at)) / 1000).toFixed(1)}s` : 'open';
        console.log(
          `${s.id}  ${s.started_at}  ${(s.chat_id ? `${s.user} agent (chat ${s.chat_id})` : s.user).padEnd(12)} ${s.resource.padEnd(16)} via ${String(s.gateway ?? '-').padEnd(12)} ${String(s.path ?? '-').padEnd(6)} ${dur.padStart(7)}  ↑${s.bytes_up} ↓${s.bytes_down}${s.exit_status !== null ? `  exit ${s.exit_status}` : ''}${s.error ? `  error: ${s.error}` : ''}`,
        );
      }
    }
    return 0;
  }
  switch (sub) {
    case 'list': {
      const { resources } = await api.get('/api/resources');
      if (values.json) console.log(JSON.stringify(resources));
      else if (!resources.length) console.log('No resources you may launch. An admin creates them (`airlock resource create`) and grants them (`airlock resource grant`).');
      else for (const r of resources) console.log(`${r.name.padEnd(20)} ${r.kind.padEnd(6)} ${(r.target || '-').padEnd(24)} gateway=${r.gateway}${r.has_credential ? '  (credential)' : ''}`);
      return 0;
    }
    case 'create': {
      if (!name) throw new CliError('usage: airlock resource create NAME --kind K --gateway G [--target HOST:PORT]', 2);
      const body: Record<string, unknown> = { name, kind: values.kind, gateway: values.gateway };
      if (values.target !== undefined) body.target = values.target;
      if (values.username) {
        const cred: Record<string, string> = { username: values.username };
        if (values['password-env']) {
          const pw = process.env[values['password-env']];
          if (!pw) throw new CliError(`environment variable ${values['password-env']} is empty or unset`, 2);
          cred.password = pw;
        }
        if (values['key-file']) {
          try {
            cred.private_key = fs.readFileSync(values['key-file'], 'utf8');
          } catch (err) {
            throw new CliError(`cannot read --key-file: ${(err as Error).message}`, 2);
          }
        }
        if (values['passphrase-env']) cred.passphrase = process.env[values['passphrase-env']] ?? '';
        body.credential = cred;
      }
      const out = await api.post('/api/resources', body);
      if (values.json) console.log(JSON.stringify(out.resource));
      else console.log(`Created ${out.resource.kind} resource ${out.resource.name}${out.resource.target ? ` → ${out.resource.target}` : ''} (gateway ${out.resource.gateway}).`);
      return 0;
    }
    case 'delete':
      if (!name) throw new CliError('usage: airlock resource delete NAME', 2);
      await api.delete(`/api/resources/${enc(name)}`);
      console.log(`Deleted resource ${name}.`);
      return 0;
    case 'grant': {
      if (!name || !user) throw new CliError('usage: airlock resource grant NAME USER [--agent deny|ask|allow]', 2);
      if (values.agent !== undefined && !['deny', 'ask', 'allow'].includes(values.agent)) throw new CliError('--agent takes deny, ask or allow', 2);
      const { grant } = await api.post(`/api/resources/${enc(name)}/grants`, { user, ...(values.agent ? { agent: values.agent } : {}) });
      const what = { deny: 'may not use it', ask: 'asks before each call', allow: 'may use it without asking' }[grant.agent as 'deny' | 'ask' | 'allow'];
      console.log(`${user} may now launch ${name}; ${user}'s chat agent ${what}.`);
      return 0;
    }
    case 'revoke':
      if (!name || !user) throw new CliError('usage: airlock resource revoke NAME USER', 2);
      await api.delete(`/api/resources/${enc(name)}/grants/${enc(user)}`);
      console.log(`Revoked ${user}'s grant of ${name}.`);
      return 0;
    case 'grants': {
      if (!name) throw new CliError('usage: airlock resource grants NAME', 2);
      const { grants } = await api.get(`/api/resources/${enc(name)}/grants`);
      if (values.json) console.log(JSON.stringify(grants));
      else if (!grants.length) console.log(`No one has a grant of ${name} yet (admins may launch every resource).`);
      else for (const g of grants) console.log(`${g.name}\tagent: ${g.agent}`);
      return 0;
    }
  }
  throw new CliError(`unknown subcommand "resource ${sub}"; run \`airlock resource --help\``, 2);
}
