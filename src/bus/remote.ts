// The shared half of the replica buses: local delivery stays synchronous; everything published in
// one tick goes to the other replicas as one batch (keeps per-token traffic to one message per
// tick), in publish order, through a transport that only has to move strings in order.
import { LocalBus, type Topic } from './bus.js';
import { metrics } from '../metrics.js';

export interface Batch {
  /** origin replica */
  o: string;
  /** publish time, ms since the epoch (bus lag) */
  ts: number;
  b: [Topic, unknown][];
}

/** A replica that was cut off and is back: what it sent meanwhile may be lost. */
interface GapNotice {
  gap: string;
}

export abstract class RemoteBus extends LocalBus {
  private pending: [Topic, unknown][] = [];
  private scheduled = false;
  protected closed = false;
  /** No other replica is there to hear (a transport that can know it sets this): publishes stay in this process. */
  protected solo = false;
  /** How every batch this replica sends begins (a transport that hears its own can skip them unread). */
  protected readonly ownBatchPrefix = `{"o":${JSON.stringify(this.replicaId)},`;

  /** Largest batch the transport takes, in bytes of JSON. */
  protected abstract maxBatchBytes: number;
  /** Sends one serialized batch; must keep the order of calls. */
  protected abstract send(json: string, bytes: number): void;

  /** True while a send is in flight and publishes should gather into the next batch (a transport
   * whose sends each cost a round trip calls transportIdle() when it is done). */
  protected transportBusy(): boolean {
    return false;
  }

  /** The transport finished its sends: what was published meanwhile goes now, as one batch. */
  protected transportIdle(): void {
    if (this.pending.length && !this.scheduled) this.flush();
  }

  override publish(topic: Topic, msg: unknown): void {
    this.deliver(topic, msg);
    if (this.closed || this.solo) return;
    this.pending.push([topic, msg]);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    if (this.transportBusy()) return; // transportIdle() sends what gathers
    const items = this.pending;
    this.pending = [];
    if (this.closed || !items.length) return;
    const ts = Date.now();
    const head = `${this.ownBatchPrefix}"ts":${ts},"b":[`;
    let parts: string[] = [];
    let size = head.length + 2;
    const out = () => {
      if (!parts.length) return;
      const json = `${head}${parts.join(',')}]}`;
      this.send(json, Buffer.byteLength(json));
      parts = [];
      size = head.length + 2;
    };
    for (const item of items) {
      const s = JSON.stringify(item);
      const n = Buffer.byteLength(s) + 1;
      if (size + n > this.maxBatchBytes) out();
      parts.push(s);
      size += n;
    }
    out();
  }

  /** A batch (or a gap notice) from the transport: our own are skipped (already delivered locally). */
  protected receive(json: string): void {
    let batch: Batch | GapNotice;
    try {
      batch = JSON.parse(json) as Batch | GapNotice;
    } catch {
      return;
    }
    if ('gap' in batch) {
      if (batch.gap !== this.replicaId) this.gap();
      return;
    }
    if (batch.o === this.replicaId || !Array.isArray(batch.b)) return;
    metrics.busLagMs.observe({ bus: this.kind }, Math.max(0, Date.now() - batch.ts));
    for (const [topic, msg] of batch.b) this.deliver(topic, msg);
  }

  protected override gap(): void {
    metrics.busGaps.inc();
    super.gap();
  }

  /** The transport is connected again after a break: the others resync with us, we with them. */
  protected reconnected(): void {
    const notice = JSON.stringify({ gap: this.replicaId } satisfies GapNotice);
    this.send(notice, Buffer.byteLength(notice));
    this.gap();
  }

  /** Resolves once what was handed to send() has left (bounded); a transport that queues says so. */
  protected async settle(): Promise<void> {}

  /**
   * What was published before close still goes out: a draining replica's last wake signal (its
   * hand-back) must reach the others, or its turns wait for the lease to run out.
   */
  override async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    await this.settle();
    this.closed = true;
    await super.close();
  }
}
