// `airlock approvals`: the chat agents' calls that wait for your decision, and deciding them.
import { parseArgs } from 'node:util';
import { ApiClient } from '../client/api.js';
import { CLIENT_OPTIONS, CliError, resolveClient } from './config.js';

const HELP = `Usage:
  airlock approvals [--json]                 the calls your chats' agents wait to make, oldest first
  airlock approvals approve CHAT CALL [--for-chat]
                                             run it; --for-chat: approve this tool on this resource
                                             for the rest of the chat
  airlock approvals deny CHAT CALL [--reason TEXT]
                                             refuse it; the reason goes back to the model

A call no one decides in AIRLOCK_APPROVAL_TIMEOUT_MS is refused. Admins may decide any chat's calls.`;

export async function approvalsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...CLIENT_OPTIONS,
      'for-chat': { type: 'boolean' },
      reason: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const { server, token } = resolveClient(values);
  const api = new ApiClient(server, token);
  const [sub, chat, call] = positionals;
  if (sub === undefined || sub === 'list') {
    const { approvals } = await api.get('/api/approvals');
    if (values.json) console.log(JSON.stringify(approvals));
    else if (!approvals.length) console.log('No calls wait for your decision.');
    else {
      for (const a of approvals) {
        const what = a.tool === 'run_command' ? `run on ${a.resource}: ${a.args.command}` : `${a.tool} on ${a.resource} ${JSON.stringify(a.args)}`;
        console.log(`${a.chat_id} ${a.tool_call_id}  ${what}  (until ${a.deadline})`);
      }
      console.log('Decide with `airlock approvals approve|deny CHAT CALL`.');
    }
    return 0;
  }
  if (sub !== 'approve' && sub !== 'deny') throw new CliError(`unknown subcommand "approvals ${sub}"; run \`airlock approvals --help\``, 2);
  if (!chat || !call) throw new CliError(`usage: airlock approvals ${sub} CHAT CALL (see airlock approvals)`, 2);
  const decision = sub === 'deny' ? 'deny' : values['for-chat'] ? 'approve_chat' : 'approve';
  await api.post(`/api/chats/${encodeURIComponent(chat)}/approvals`, { tool_call_id: call, decision, ...(values.reason ? { reason: values.reason } : {}) });
  console.log(sub === 'deny' ? `Denied ${call}.` : `Approved ${call}${values['for-chat'] ? ' and the same tool on the same resource for the rest of the chat' : ''}.`);
  return 0;
}
