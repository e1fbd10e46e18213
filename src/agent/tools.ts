// The tools a chat's agent gets for its owner's resources: list_resources and run_command. The
// agent acts as the chat's owner and never as more: a resource the owner may not launch, or whose
// grant says `deny`, answers exactly as an unknown one; `ask` waits for a person's decision.
import { Duplex, Writable } from 'node:stream';
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
/** The largest file read_file returns or write_file writes in one call. */
const MAX_FILE_BYTES = 16 << 20;
/** A command's input goes out in pieces of this size (a socket read's). */
const INPUT_PIECE = 64 << 10;

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

  /**
   * The checks every call on a resource makes, in order: the owner may use it (else: unknown),
   * its kind serves the tool, a person approves it where the grant says ask. Then `fn` runs in
   * the chat's session to it.
   */
  async function onResource<T>(tool: string, args: Record<string, unknown>, signal: AbortSignal, ctx: ToolContext, fn: (s: ClientSession, sessionId: string) => Promise<T>): Promise<T> {
    const resource = args.resource as string;
    const r = await agentResource(deps.db, ctx.ownerId, resource);
    if (!r) throw unknown(resource);
    if (r.kind === 'tcp') throw new ToolError(`"${resource}" is a tcp resource: ${tool} works on ssh and shell resources`);
    if (r.agent === 'ask') {
      const d = await approve(deps.approvals, ctx, { tool, resource, args }, signal);
      if (!d.approved) throw new ToolError(`the call was not approved (${d.by}${d.reason ? `: ${d.reason}` : ''}); it did not run`);
    }
    if (signal.aborted) throw new ToolError('the turn was interrupted before the call ran');
    return deps.sessions.use(ctx.chatId, ctx.ownerId, resource, fn);
  }

  // Tools that act on a resource may change the world: never run twice unseen (a crash mid-run is
  // reported, not repeated). Their own time limits and an approval's wait replace the built-in
  // tools' limit.
  const acting = { idempotent: false, maxRunMs: 2 ** 31 - 1 } as const;

  const runCommand: Tool = {
    name: 'run_command',
    description:
      'Runs a shell command on an ssh or shell resource (see list_resources) and returns its exit status and output (stdout and stderr together, as they came). ' +
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
    ...acting,
    async run(args, signal, ctx) {
      const resource = requiredString(args, 'resource');
      const command = requiredString(args, 'command');
      const timeoutS = optionalInt(args, 'timeout_s', DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S);
      return onResource('run_command', { resource, command, timeout_s: timeoutS }, signal, ctx, async (session, sessionId) => {
        const r = await execOn(session, command, null, timeoutS, signal, deps.outputBytes, (text, from) => ctx.output(text, from));
        const text = new StringDecoder('utf8').end(r.kept);
        const note = r.cutBytes ? `\n[output cut: ${r.cutBytes} more bytes not shown (the limit is ${deps.outputBytes} bytes)]` : '';
        return `${r.status} (session ${sessionId})\n${text}${note}`;
      });
    },
  };

  const readFile: Tool = {
    name: 'read_file',
    description:
      'Reads a file on an ssh or shell resource: its size, then its content as text, or as base64 when it is not UTF-8 text. At most max_bytes are returned (the rest is cut, with a note).',
    parameters: {
      type: 'object',
      properties: {
        resource: { type: 'string' },
        path: { type: 'string', description: 'the file; relative paths start in the account\'s home' },
        max_bytes: { type: 'integer', minimum: 1, maximum: MAX_FILE_BYTES, description: `bytes to return at most (default ${deps.outputBytes})` },
      },
      required: ['resource', 'path'],
      additionalProperties: false,
    },
    ...acting,
    async run(args, signal, ctx) {
      const resource = requiredString(args, 'resource');
      const path = requiredString(args, 'path');
      const max = optionalInt(args, 'max_bytes', deps.outputBytes, MAX_FILE_BYTES);
      return onResource('read_file', { resource, path, max_bytes: max }, signal, ctx, async (session, sessionId) => {
        // The size on the first line, then the content: one round trip, and a missing file says why.
        const r = await execOn(session, `f=${shellQuote(path)}; [ -f "$f" ] || { echo "no such file: $f" >&2; exit 2; }; wc -c < "$f" && cat -- "$f"`, null, DEFAULT_TIMEOUT_S, signal, max + 32, null);
        const nl = r.kept.indexOf(10);
        if (r.code !== 0 || nl < 0) throw new ToolError(`could not read ${path} (${r.status}): ${r.kept.toString('utf8').trim().slice(0, 500)}`);
        const size = Number(r.kept.subarray(0, nl).toString().trim());
        const body = r.kept.subarray(nl + 1, nl + 1 + max);
        const cut = size > body.length ? `\n[file cut: ${size - body.length} more bytes not shown (max_bytes ${max})]` : '';
        const text = body.toString('utf8');
        const isText = Buffer.from(text, 'utf8').equals(body);
        return `${path}: ${size} bytes (session ${sessionId})${isText ? '' : ', not UTF-8 text: base64'}\n${isText ? text : body.toString('base64')}${cut}`;
      });
    },
  };

  const writeFile: Tool = {
    name: 'write_file',
    description: 'Writes a file on an ssh or shell resource (creates or replaces it). content is text, or base64 with encoding "base64"; mode is an octal string such as "644".',
    parameters: {
      type: 'object',
      properties: {
        resource: { type: 'string' },
        path: { type: 'string' },
        content: { type: 'string' },
        encoding: { type: 'string', enum: ['utf8', 'base64'] },
        mode: { type: 'string', pattern: '^[0-7]{3,4}$' },
      },
      required: ['resource', 'path', 'content'],
      additionalProperties: false,
    },
    ...acting,
    async run(args, signal, ctx) {
      const resource = requiredString(args, 'resource');
      const path = requiredString(args, 'path');
      if (typeof args.content !== 'string') throw new ToolError('"content" is required (a string)');
      const encoding = args.encoding ?? 'utf8';
      if (encoding !== 'utf8' && encoding !== 'base64') throw new ToolError('"encoding" must be utf8 or base64');
      const mode = args.mode;
      if (mode !== undefined && (typeof mode !== 'string' || !/^[0-7]{3,4}$/.test(mode))) throw new ToolError('"mode" must be an octal string such as "644"');
      const bytes = Buffer.from(args.content, encoding);
      if (bytes.length > MAX_FILE_BYTES) throw new ToolError(`the content is ${bytes.length} bytes; at most ${MAX_FILE_BYTES} can be written at once`);
      // What a person approving the call sees: the target, the size, and the start of the content.
      const preview = args.content.length > 2000 ? `${args.content.slice(0, 2000)}…` : args.content;
      const shown = { resource, path, bytes: bytes.length, encoding, content: preview, ...(mode ? { mode } : {}) };
      return onResource('write_file', shown, signal, ctx, async (session, sessionId) => {
        const q = shellQuote(path);
        const r = await execOn(session, `cat > ${q}${mode ? ` && chmod ${mode} ${q}` : ''}`, bytes, DEFAULT_TIMEOUT_S, signal, 4096, null);
        if (r.code !== 0) throw new ToolError(`could not write ${path} (${r.status}): ${r.kept.toString('utf8').trim().slice(0, 500)}`);
        return `wrote ${bytes.length} bytes to ${path} (session ${sessionId})`;
      });
    },
  };

  return [listResources, runCommand, readFile, writeFile];
}

/** An optional integer argument from 1 to max; absent: the default. */
function optionalInt(args: Record<string, unknown>, key: string, def: number, max: number): number {
  const v = args[key] ?? def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) throw new ToolError(`${key} must be an integer from 1 to ${max}`);
  return v;
}

/** A string as one word for a POSIX shell. */
const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function requiredString(args: unknown, key: string): string {
  const v = (args as Record<string, unknown> | null)?.[key];
  if (typeof v !== 'string' || !v.trim()) throw new ToolError(`"${key}" is required (a non-empty string)`);
  return v;
}

interface ExecResult {
  /** "exit status N", or "stopped: why". */
  status: string;
  code: number | null;
  /** The output's first bytes, up to the limit. */
  kept: Buffer;
  cutBytes: number;
}

/**
 * Runs one command as a new connection of the session, with `input` as its stdin (none: end of
 * file at once). Keeps the first `keepBytes` of its output; `stream` gets it all as it arrives (up
 * to STREAM_OUTPUT_BYTES). A timeout or an abort cuts the connection, which stops the process on
 * the gateway.
 */
async function execOn(session: ClientSession, command: string, input: Buffer | null, timeoutS: number, signal: AbortSignal, keepBytes: number, stream: ((text: string, from: 'stdout' | 'stderr') => void) | null): Promise<ExecResult> {
  const kept: Buffer[] = [];
  let keptBytes = 0;
  let cutBytes = 0;
  let streamed = 0;
  // Both outputs are kept in the order they came (the model reads them together, as a terminal
  // shows them) and streamed each marked with its name.
  const take = (chunk: Buffer, from: 'stdout' | 'stderr') => {
    const room = Math.max(0, keepBytes - keptBytes);
    if (room) kept.push(chunk.subarray(0, room));
    keptBytes += Math.min(room, chunk.length);
    cutBytes += Math.max(0, chunk.length - room);
    if (stream && streamed < STREAM_OUTPUT_BYTES) {
      const text = chunk.subarray(0, STREAM_OUTPUT_BYTES - streamed).toString('utf8');
      streamed += chunk.length;
      stream(streamed >= STREAM_OUTPUT_BYTES ? `${text}\n[output past ${STREAM_OUTPUT_BYTES} bytes is not streamed]\n` : text, from);
    }
  };
  const stderr = new Writable({
    write(chunk: Buffer, _enc, cb) {
      take(chunk, 'stderr');
      cb();
    },
  });
  // The input goes out a piece per read: the connection pauses the stream when the receiver's
  // window is used up, and a piece never overshoots it by more than one read.
  let at = 0;
  const duplex = new Duplex({
    read() {
      if (!input || at >= input.length) return void this.push(null);
      this.push(input.subarray(at, (at += INPUT_PIECE)));
    },
    write(chunk: Buffer, _enc, cb) {
      take(chunk, 'stdout');
      cb();
    },
    final: (cb) => cb(),
  });
  const flushed = new Promise<void>((resolve) => duplex.once('finish', resolve).once('close', resolve));
  const c = session.connect(duplex, { exec: command }, { expectExit: true, stderr });
  let stopped: string | null = null;
  const stop = (why: string) => {
    stopped ??= why;
    c.conn.fail(why);
  };
  const timer = setTimeout(() => stop(`timed out after ${timeoutS} s`), timeoutS * 1000);
  const onAbort = () => stop('the turn was interrupted');
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const code = await Promise.race([c.exit, c.cut.then((why) => Promise.reject(new Error(why)))]);
    await Promise.race([flushed, new Promise((r) => setTimeout(r, 1000))]);
    return { status: `exit status ${code}`, code, kept: Buffer.concat(kept), cutBytes };
  } catch (err) {
    if (err instanceof TargetFailure) throw new ToolError(`could not run on the resource: ${err.message}`);
    return { status: `stopped: ${stopped ?? (err as Error).message}`, code: null, kept: Buffer.concat(kept), cutBytes };
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
}
