// The shared half of the replica buses: local delivery stays synchronous; everything published in
// one tick goes to the other replicas as one batch (keeps per-token traffic to one message per
// tick), in publish order, through a transport that only has to move strings in order.
//
// The transport is not trusted: whoever can reach the NATS port, or NOTIFY on the database, could
// otherwise read every chat's deltas and forge signalling (a launch handed to a gateway), auth and
// control messages. Every message carries an HMAC-SHA256 under a key derived from
// AIRLOCK_SECRET_KEY (which every replica has), and a per-origin counter and a timestamp: a
// message that fails the MAC, repeats or goes back on its origin's counter, or is older than
// REPLAY_WINDOW_MS is dropped and counted (airlock_bus_rejected_total).
import crypto from 'node:crypto';
import { LocalBus, type Topic, type TopicMap } from './bus.js';
import { metrics } from '../metrics.js';
import type { Logger } from '../log.js';

export interface Batch {
  /** origin replica */
  o: string;
  /** the origin's message counter: strictly increasing, so a message sent again is refused */
  n: number;
  /** publish time, ms since the epoch (bus lag, and the age past which a message is refused) */
  ts: number;
  b: [Topic, unknown][];
}

/** A replica that was cut off and is back: what it sent meanwhile may be lost. */
interface GapNotice {
  gap: string;
  n: number;
  ts: number;
}

/** A message's MAC: base64url of HMAC-SHA256, after a newline (which JSON text never holds). */
const MAC_CHARS = 43;
/** Messages older (or newer, by clock skew) than this are refused; origins unheard this long are forgotten. */
const REPLAY_WINDOW_MS = 5 * 60_000;


export abstract class RemoteBus extends LocalBus {
  private pending: [Topic, unknown][] = [];
  private sent = 0;
  /** The last counter heard from each origin, and when. */
  private heard = new Map<string, { n: number; at: number }>();
  private lastRejectLog = 0;
  private scheduled = false;
  protected closed = false;
  /** How every batch this replica sends begins (a transport that hears its own can skip them unread). */
  protected readonly ownBatchPrefix = `{"o":${JSON.stringify(this.replicaId)},`;

  /** Largest batch the transport takes, in bytes of JSON. */
  protected abstract maxBatchBytes: number;
  /** Sends one serialized, signed message; must keep the order of calls. */
  protected abstract send(json: string, bytes: number): void;

  constructor(
    private readonly key: Buffer,
    protected readonly busLog: Logger,
    replicaId?: string,
  ) {
    super(replicaId);
  }

  private mac(json: string): string {
    return crypto.createHmac('sha256', this.key).update(json).digest('base64url');
  }

  /** Signs and sends a message whose JSON begins with the origin (see ownBatchPrefix) or is a gap notice. */
  protected sendSigned(body: string): void {
    const signed = `${body}\n${this.mac(body)}`;
    this.send(signed, Buffer.byteLength(signed));
  }

  /** The JSON of this replica's next batch, up to its list of messages. */
  protected batchHead(): string {
    return `${this.ownBatchPrefix}"n":${++this.sent},"ts":${Date.now()},"b":[`;
  }

  /** True while a send is in flight and publishes should gather into the next batch (a transport
   * whose sends each cost a round trip calls transportIdle() when it is done). */
  protected transportBusy(): boolean {
    return false;
  }

  /** The transport finished its sends: what was published meanwhile goes now, as one batch. */
  protected transportIdle(): void {
    if (this.pending.length && !this.scheduled) this.flush();
  }

  override publish<T extends Topic>(topic: T, msg: TopicMap[T]): void {
    this.deliver(topic, msg);
    if (this.closed) return;
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
    // Room for the head (its counter and time grow by a few digits at most) and the MAC.
    const fixed = this.ownBatchPrefix.length + 48 + MAC_CHARS + 1;
    let parts: string[] = [];
    let size = fixed;
    const out = () => {
      if (!parts.length) return;
      this.sendSigned(`${this.batchHead()}${parts.join(',')}]}`);
      parts = [];
      size = fixed;
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

  /**
   * A signed batch (or gap notice) from the transport: our own are skipped (already delivered
   * locally); one that is not authentic, or a replay, is dropped. Returns whether it was taken.
   */
  protected receive(signed: string): boolean {
    const cut = signed.lastIndexOf('\n');
    const json = signed.slice(0, cut);
    const mac = signed.slice(cut + 1);
    if (cut < 0 || mac.length !== MAC_CHARS || !crypto.timingSafeEqual(Buffer.from(mac), Buffer.from(this.mac(json)))) return this.reject('bad_mac');
    let batch: Batch | GapNotice;
    try {
      batch = JSON.parse(json) as Batch | GapNotice;
    } catch {
      return this.reject('bad_mac');
    }
    const origin = 'gap' in batch ? batch.gap : batch.o;
    if (origin === this.replicaId) return false;
    if (typeof origin !== 'string' || !Number.isSafeInteger(batch.n) || typeof batch.ts !== 'number') return this.reject('bad_mac');
    const now = Date.now();
    if (Math.abs(now - batch.ts) > REPLAY_WINDOW_MS) return this.reject('stale');
    const last = this.heard.get(origin);
    if (last && batch.n <= last.n) return this.reject('replay');
    this.heard.set(origin, { n: batch.n, at: now });
    if (this.heard.size > 1000) for (const [o, h] of this.heard) if (now - h.at > 2 * REPLAY_WINDOW_MS) this.heard.delete(o);
    if ('gap' in batch) {
      this.gap();
      return true;
    }
    if (!Array.isArray(batch.b)) return false;
    metrics.busLagMs.observe({ bus: this.kind }, Math.max(0, now - batch.ts));
    for (const [topic, msg] of batch.b) this.deliver(topic, msg);
    return true;
  }

  private reject(reason: 'bad_mac' | 'replay' | 'stale'): false {
    metrics.busRejected.inc({ reason });
    const now = Date.now();
    if (now - this.lastRejectLog > 60_000) {
      this.lastRejectLog = now;
      this.busLog.warn(
        { reason },
        reason === 'bad_mac'
          ? 'bus: dropped a message that failed authentication (every replica needs the same AIRLOCK_SECRET_KEY; anything else on the bus is not a replica)'
          : `bus: dropped a message sent again or too old (${reason})`,
      );
    }
    return false;
  }

  protected override gap(): void {
    metrics.busGaps.inc();
    super.gap();
  }

  /** The transport is connected again after a break: the others resync with us, we with them. */
  protected reconnected(): void {
    this.sendSigned(JSON.stringify({ gap: this.replicaId, n: ++this.sent, ts: Date.now() } satisfies GapNotice));
    this.gap();
  }

  /** Whether a message on the transport is one this replica sent (skipped unread). */
  protected isOwn(payload: string): boolean {
    return payload.startsWith(this.ownBatchPrefix) || payload.startsWith(this.ownGapPrefix);
  }

  private readonly ownGapPrefix = `{"gap":${JSON.stringify(this.replicaId)},`;

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
