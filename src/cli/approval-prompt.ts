// `airlock chat MESSAGE` on a terminal: a call of the agent that waits for approval is asked about
// right there, one key: [y]es, [a]lways in this chat, [n]o. Calls are asked about one at a time;
// one decided elsewhere meanwhile (another terminal, `airlock approvals`) is not asked about.
import type { ApiClient } from '../client/api.js';
import type { StreamEvent } from '../chat/types.js';

const KEYS: Record<string, 'approve' | 'approve_chat' | 'deny'> = { y: 'approve', a: 'approve_chat', n: 'deny' };

export class ApprovalPrompt {
  private queue: StreamEvent[] = [];
  private asking: StreamEvent | null = null;
  private decided = new Set<string>();
  private stopAsking: (() => void) | null = null;

  constructor(
    private api: ApiClient,
    private stdin: NodeJS.ReadStream = process.stdin,
    private stderr: NodeJS.WriteStream = process.stderr,
  ) {}

  ask(e: StreamEvent): void {
    this.queue.push(e);
    if (!this.asking) void this.next();
  }

  /** The call was decided (here or elsewhere): it is not asked about, or no longer. */
  settled(toolCallId: string): void {
    this.decided.add(toolCallId);
    if (this.asking?.tool_call_id === toolCallId) this.stopAsking?.();
  }

  private async next(): Promise<void> {
    for (let e = this.queue.shift(); e; e = this.queue.shift()) {
      if (this.decided.has(e.tool_call_id as string)) continue;
      this.asking = e;
      const decision = await this.key();
      this.asking = null;
      if (!decision) continue;
      await this.api
        .post(`/api/chats/${e.chat_id}/approvals`, { tool_call_id: e.tool_call_id, decision })
        .catch((err: Error) => this.stderr.write(`[the decision was not taken: ${err.message}]\n`));
    }
  }

  /** One key from the terminal; null when the call was decided elsewhere first. Ctrl-C interrupts as usual. */
  private key(): Promise<'approve' | 'approve_chat' | 'deny' | null> {
    this.stderr.write('approve? [y]es / [a]lways in this chat / [n]o ');
    const wasRaw = this.stdin.isRaw;
    this.stdin.setRawMode(true);
    this.stdin.resume();
    return new Promise((resolve) => {
      const done = (d: 'approve' | 'approve_chat' | 'deny' | null, echo: string) => {
        this.stdin.off('data', onData);
        this.stdin.setRawMode(wasRaw);
        this.stdin.pause();
        this.stopAsking = null;
        this.stderr.write(`${echo}\n`);
        resolve(d);
      };
      const onData = (b: Buffer) => {
        const k = b.toString().toLowerCase();
        if (k === '\u0003') {
          done(null, '^C');
          process.kill(process.pid, 'SIGINT'); // raw mode took Ctrl-C from the terminal: pass it on
          return;
        }
        if (KEYS[k]) done(KEYS[k]!, k);
      };
      this.stopAsking = () => done(null, '(decided elsewhere)');
      this.stdin.on('data', onData);
    });
  }
}
