// The tools a chat's agent gets for its owner's resources: list_resources and run_command. The
// agent acts as the chat's owner and never as more: a resource the owner may not launch, or whose
// grant says `deny`, answers exactly as an unknown one; `ask` waits for a person's decision.
import { Duplex } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { Db } from '../store/db.js';
import { agentResource, agentResources } from '../access/store.js';
import { ToolError, type Tool, type ToolContext } from '../chat/tools/index.js';
import { TargetFailure, type ClientSession } from '../launch/session.js';
import type { AgentSessions } from './sessions.js';
import type { Approvals } from './approvals.js';

/** A command's time limit when the call names none, and the largest it may name. */
const DEFAULT_TIMEOUT_S = 60;
const MAX_TIMEOUT_S = 3600;
/** Output streamed to the chat beyond this is not streamed (the model's share is smaller still). */
const STREAM_OUTPUT_BYTES = 1 << 20;

/** A person's answer to a call that needs approval. */
export interface Decision {
  approved: boolean;
  /** Who decided (a user name), or why no one did. */
  by: string;
  reason?: string;
}

export interface AgentToolDeps {
  db: Db;
  sessions: AgentSessions;
  /** How much of a command's output the model is given (AIRLOCK_AGENT_OUTPUT_BYTES). */
  outputBytes: number;
  /** Where calls whose resource's grant says `ask` wait for a person. */
  approvals: Approvals;
}

/** Asks a person about the call (unless a rule of the chat approves it already) and waits for the decision. */
async function approve(approvals: Approvals, ctx: ToolContext, call: { tool: string; resource: string; args: Record<string, unknown> }, signal: AbortSignal): Promise<Decision> {
  const ruledBy = await approvals.ruleFor(ctx.chatId, call.tool, call.resource);
  if (ruledBy) return { approved: true, by: `${ruledBy} (for this chat)` };
  const a = await approvals.request({ chatId: ctx.chatId, ownerId: ctx.ownerId, toolCallId: ctx.toolCallId, ...call });
  ctx.event('approval_required', { tool_call_id: ctx.toolCallId, tool: call.tool, resource: call.resource, args: call.args, deadline: a.deadline });
  ctx.event('status', { status: 'requires_approval' });
  const d = await approvals.wait(a, signal);
  ctx.event('approval_decided', { tool_call_id: ctx.toolCallId, approved: d.approved, by: d.by, ...(d.reason ? { reason: d.reason } : {}) });
  ctx.event('status', { status: 'running' });
  return d;
}

const unknown = (name: string) => new ToolError(`unknown resource "${name}": list_resources shows the ones you may use`);

export function agentTools(deps: AgentToolDeps): Tool[] {
  const listResources: Tool = {
    name: 'list_resources',
    description: 'Lists the infrastructure resources you may use for the user: name, kind (ssh, shell, tcp), target, and whether a person approves each call (approval: ask) or not (allow).',
    parameters: { type: 'object', properties: {}, additionalProperties: false },
    idempotent: true,
    async run(_args, _signal, ctx) {
      const rs = await agentResources(deps.db, ctx.ownerId);
      if (!rs.length) return 'No resources are available to you. An admin grants them (airlock resource grant NAME USER --agent ask|allow).';
      return JSON.stringify(rs.map((r) => ({ name: r.name, kind: r.kind, target: r.target || undefined, approval: r.agent })));
    },
  };

  const runCommand: Tool = {
    name: 'run_command',
    description:
      'Runs a shell command on an ssh or shell resource (see list_resources) and returns its exit status and output (stdout and stderr together). ' +
      'Output beyond a limit is cut, with a note saying how much. A person may have to approve the call first.',
    parameters: {
      type: 'object',
      properties: {
        resource: { type: 'string', description: 'the resource name' },
        command: { type: 'string', description: 'the command line, run by the remote shell' },
        timeout_s: { type: 'integer', minimum: 1, maximum: MAX_TIMEOUT_S, description: `seconds before the command is stopped (default ${DEFAULT_TIMEOUT_S})` },
      },
      required: ['resource', 'command'],
      additionalProperties: false,
    },
    // A command may change the world: never run twice unseen (a crash mid-run is reported, not repeated).
    idempotent: false,
    // Its own time limit (timeout_s) and an approval's wait come on top of the built-in tools' limit.
    maxRunMs: 2 ** 31 - 1,
    async run(args, signal, ctx) {
      const resource = requiredString(args, 'resource');
      const command = requiredString(args, 'command');
      const timeoutS = args.timeout_s ?? DEFAULT_TIMEOUT_S;
      if (!Number.isInteger(timeoutS) || timeoutS < 1 || timeoutS > MAX_TIMEOUT_S) throw new ToolError(`timeout_s must be an integer from 1 to ${MAX_TIMEOUT_S}`);
      const r = await agentResource(deps.db, ctx.ownerId, resource);
      if (!r) throw unknown(resource);
      if (r.kind === 'tcp') throw new ToolError(`"${resource}" is a tcp resource: run_command works on ssh and shell resources`);
      if (r.agent === 'ask') {
        const d = await approve(deps.approvals, ctx, { tool: 'run_command', resource, args: { resource, command, timeout_s: timeoutS } }, signal);
        if (!d.approved) throw new ToolError(`the call was not approved (${d.by}${d.reason ? `: ${d.reason}` : ''}); it did not run`);
      }
      if (signal.aborted) throw new ToolError('the turn was interrupted before the command ran');
      return deps.sessions.use(ctx.chatId, ctx.ownerId, resource, (session, sessionId) =>
        runOn(session, sessionId, command, timeoutS, signal, ctx, deps.outputBytes),
      );
    },
  };
  return [listResources, runCommand];
}

function requiredString(args: unknown, key: string): string {
  const v = (args as Record<string, unknown> | null)?.[key];
  if (typeof v !== 'string' || !v.trim()) throw new ToolError(`"${key}" is required (a non-empty string)`);
  return v;
}

/** Runs one command as a new connection of the session; resolves with the tool's result text. */
async function runOn(session: ClientSession, sessionId: string, command: string, timeoutS: number, signal: AbortSignal, ctx: ToolContext, outputBytes: number): Promise<string> {
  const decoder = new StringDecoder('utf8');
  let kept = '';
  let keptBytes = 0;
  let cutBytes = 0;
  let streamed = 0;
  const take = (chunk: Buffer) => {
    const room = outputBytes - keptBytes;
    if (room > 0) {
      const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
      kept += decoder.write(part);
      keptBytes += part.length;
    }
    cutBytes += Math.max(0, chunk.length - Math.max(room, 0));
    if (streamed < STREAM_OUTPUT_BYTES) {
      const text = chunk.subarray(0, STREAM_OUTPUT_BYTES - streamed).toString('utf8');
      streamed += chunk.length;
      ctx.output(streamed >= STREAM_OUTPUT_BYTES ? `${text}\n[output past ${STREAM_OUTPUT_BYTES} bytes is not streamed]\n` : text);
    }
  };
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      take(chunk);
      cb();
    },
    final: (cb) => cb(),
  });
  stream.push(null); // no input: the command reads end-of-file
  const flushed = new Promise<void>((resolve) => stream.once('finish', resolve).once('close', resolve));
  const c = session.connect(stream, { exec: command }, { expectExit: true });
  let stopped: string | null = null;
  const stop = (why: string) => {
    stopped ??= why;
    c.conn.fail(why);
  };
  const timer = setTimeout(() => stop(`timed out after ${timeoutS} s`), timeoutS * 1000);
  const onAbort = () => stop('the turn was interrupted');
  signal.addEventListener('abort', onAbort, { once: true });
  let status: string;
  try {
    const code = await Promise.race([c.exit, c.cut.then((why) => Promise.reject(new Error(why)))]);
    await Promise.race([flushed, new Promise((r) => setTimeout(r, 1000))]);
    status = `exit status ${code}`;
  } catch (err) {
    if (err instanceof TargetFailure) throw new ToolError(`could not run on the resource: ${err.message}`);
    status = `stopped: ${stopped ?? (err as Error).message}`;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
  kept += decoder.end();
  const note = cutBytes ? `\n[output cut: ${cutBytes} more bytes not shown (the limit is ${outputBytes} bytes)]` : '';
  return `${status} (session ${sessionId})\n${kept}${note}`;
}
