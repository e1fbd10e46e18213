// Group commit: calls that arrive while a batch is in flight wait for it and then go together, as
// one statement for all of them. A call to an idle batcher runs at once (no timer, no added latency
// when there is no load); under a burst, the statement count falls from one per call to one per
// batch, which is what a single-connection database (the embedded one) needs most.

export interface GroupCommitOptions<I> {
  /** Largest batch. */
  max: number;
  /** Calls with the same key never share a batch (a later one waits for the next). */
  key: (item: I) => string;
  /** Batches in flight at once (1 for a single-connection database). */
  concurrency?: number;
}

/** How many batches a database takes at once: the embedded one has a single connection. */
export const batchesInFlight = (db: { kind?: 'pglite' | 'postgres' }): number => (db.kind === 'pglite' ? 1 : 4);

interface Waiter<I, O> {
  item: I;
  resolve: (out: O) => void;
  reject: (err: unknown) => void;
}

export class GroupCommit<I, O> {
  private waiting: Waiter<I, O>[] = [];
  private inFlight = 0;

  /** runBatch returns one result per item, in order. */
  constructor(
    private runBatch: (items: I[]) => Promise<O[]>,
    private opts: GroupCommitOptions<I>,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      if (this.inFlight < (this.opts.concurrency ?? 1)) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.inFlight++;
    try {
      while (this.waiting.length) await this.runOne(this.take());
    } finally {
      this.inFlight--;
    }
  }

  private take(): Waiter<I, O>[] {
    const batch: Waiter<I, O>[] = [];
    const rest: Waiter<I, O>[] = [];
    const keys = new Set<string>();
    for (const w of this.waiting) {
      const k = this.opts.key(w.item);
      if (batch.length < this.opts.max && !keys.has(k)) {
        keys.add(k);
        batch.push(w);
      } else rest.push(w);
    }
    this.waiting = rest;
    return batch;
  }

  private async runOne(batch: Waiter<I, O>[]): Promise<void> {
    try {
      const out = await this.runBatch(batch.map((w) => w.item));
      batch.forEach((w, i) => w.resolve(out[i]!));
    } catch (err) {
      if (batch.length === 1) return batch[0]!.reject(err);
      // One at a time, so that one call's failure is its own and not its batch's.
      for (const w of batch) {
        try {
          w.resolve((await this.runBatch([w.item]))[0]!);
        } catch (e) {
          w.reject(e);
        }
      }
    }
  }
}
