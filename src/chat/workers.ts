// Which workers on other replicas have free slots, as they say on the bus. A send on a replica
// whose own worker is full (or that runs none) claims the chat for one of them in the send's own
// statement and hands it the claimed row over the bus: no wake signal, no acquiring statement.
// A claim whose worker never takes it is an ordinary lease: it runs out and another worker
// resumes the chat, as after a crash.
import type { Bus } from '../bus/bus.js';
import type { ClaimedChat } from './store.js';
import type { Message } from './types.js';

export interface CapacityNotice {
  worker_id: string;
  free: number;
}

/**
 * To a worker on the `run` topic: a chat claimed for it (`chat`); before that, the message of the
 * send that is about to claim it (`early`: it may start the provider call at once, see
 * early-start.ts); or that the claim did not happen after all (`withdrawn`).
 */
export type RunNotice = { worker_id: string } & (
  | { chat: ClaimedChat }
  | { early: { chat_id: string; message: Message } }
  | { withdrawn: string }
);

export class WorkerDirectory {
  private workers = new Map<string, { free: number; at: number }>();
  private unsub: () => void;

  /** staleMs: a worker not heard from for this long is not picked (it may be gone). */
  constructor(
    private bus: Bus,
    private staleMs: number,
    private localWorkerId: () => string | undefined,
  ) {
    this.unsub = bus.subscribe('capacity', (m: CapacityNotice) => {
      if (!m?.worker_id || m.worker_id === this.localWorkerId()) return;
      if (m.free > 0) this.workers.set(m.worker_id, { free: m.free, at: Date.now() });
      else this.workers.delete(m.worker_id);
    });
  }

  /** A worker that said lately it has a free slot (the one with most); counted as one slot less. */
  pick(): string | null {
    const now = Date.now();
    let best: string | null = null;
    let most = 0;
    for (const [id, w] of this.workers) {
      if (now - w.at > this.staleMs) this.workers.delete(id);
      else if (w.free > most) {
        best = id;
        most = w.free;
      }
    }
    if (best) this.workers.get(best)!.free--;
    return best;
  }

  /** Tells `workerId` a send is about to claim a chat for it, with the message. */
  announce(workerId: string, chatId: string, message: Message): void {
    this.bus.publish('run', { worker_id: workerId, early: { chat_id: chatId, message } } satisfies RunNotice);
  }

  /** The announced claim did not happen (the chat was busy, or the statement failed). */
  withdraw(workerId: string, chatId: string): void {
    this.bus.publish('run', { worker_id: workerId, withdrawn: chatId } satisfies RunNotice);
  }

  /** Hands a chat claimed for `workerId` to it. */
  hand(workerId: string, chat: ClaimedChat): void {
    this.bus.publish('run', { worker_id: workerId, chat } satisfies RunNotice);
  }

  close(): void {
    this.unsub();
  }
}
