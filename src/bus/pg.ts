// Replica bus over PostgreSQL LISTEN/NOTIFY: one listening connection and one sending connection
// per replica (the sender keeps publish order). A batch over NOTIFY's 8000-byte limit is stored in
// bus_payloads in the same statement as its NOTIFY and fetched by the receivers, in order.
//
// A replica alone on the bus sends nothing (solo): one replica on PostgreSQL would otherwise
// NOTIFY every token batch to no one. A third connection holds an advisory lock on the channel:
// shared by every replica on the bus, exclusive as well by one that is solo. A replica goes solo
// only if it gets the exclusive lock (no other holds the shared one) and has heard no other for
// AIRLOCK_BUS_SOLO_QUIET_MS; it stops being solo the moment it hears another (before that message
// is handled). A replica that joins while one is solo finds the shared lock taken, says hello and
// waits for the lock: the solo one releases it once it publishes again, so when open() returns,
// every replica sends this one everything. What a solo replica did not send is in its database
// (durable events) or its stream logs (drafts, which a joiner asks the owner for).
import pg from 'pg';
import { RemoteBus } from './remote.js';
import { num } from '../config.js';
import { metrics } from '../metrics.js';
import { retryDelay } from '../backoff.js';
import type { Logger } from '../log.js';

export interface PgConn {
  connectionString: string;
  options?: string;
}

const NOTIFY_LIMIT = 7900;
/** How long close() waits for NOTIFYs in flight (the last wake signals of a drain). */
const SETTLE_MS = 2000;
/** First key of the presence advisory lock (the second is the channel's hash): "ARLK". */
const LOCK_NS = 0x41524c4b;
/** A joiner waits this long for a solo replica to let it in, then starts anyway (that one is hung; its leases expire). */
const JOIN_TIMEOUT_MS = 10_000;

export class PgBus extends RemoteBus {
  override readonly kind = 'postgres' as const;
  protected maxBatchBytes = NOTIFY_LIMIT;
  private listener: pg.Client | null = null;
  private notifier: pg.Client | null = null;
  /** Holds the presence lock. */
  private presence: pg.Client | null = null;
  /** AIRLOCK_BUS_SOLO=0: never goes solo (still holds the shared lock, so that no other replica does while it is here). */
  private readonly mayGoSolo = num('busSolo') !== 0;
  private holdsExclusive = false;
  private member = false;
  private tryingSolo = false;
  /** When a message from another replica last arrived (ms). */
  private lastHeard = 0;
  private lastSent = 0;
  private readonly quietMs = num('busSoloQuietMs');
  private presenceTimer: NodeJS.Timeout | null = null;
  private channel = 'airlock_bus';
  private inbox: Promise<void> | null = null;
  private reconnecting = false;
  private janitor: NodeJS.Timeout;

  private constructor(
    private conn: PgConn,
    private log: Logger,
    key: Buffer,
    replicaId?: string,
  ) {
    super(key, log, replicaId);
    this.janitor = setInterval(() => {
      this.notifier?.query(`DELETE FROM bus_payloads WHERE created_at < now() - interval '10 minutes'`).catch(() => {});
    }, 60_000).unref();
  }

  static async open(conn: PgConn, log: Logger, key: Buffer, replicaId?: string): Promise<PgBus> {
    const bus = new PgBus(conn, log, key, replicaId);
    await bus.connect();
    bus.presenceTimer = setInterval(() => bus.presenceTick(), Math.max(50, bus.quietMs / 3)).unref();
    return bus;
  }

  /** True while no other replica is on the bus and nothing is sent to it. */
  get isSolo(): boolean {
    return this.solo;
  }

  private client(name = 'airlock-bus'): pg.Client {
    const c = new pg.Client({ connectionString: this.conn.connectionString, options: this.conn.options, application_name: `${name} ${this.replicaId}` });
    c.on('error', () => this.lost());
    c.on('end', () => this.lost());
    return c;
  }

  private async connect(): Promise<void> {
    const notifier = this.client();
    const listener = this.client();
    const presence = this.client('airlock-bus-presence');
    const all = [notifier, listener, presence];
    try {
      await Promise.all(all.map((c) => c.connect()));
      const schema = (await notifier.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]?.s ?? 'public';
      this.channel = schema === 'public' ? 'airlock_bus' : `airlock_bus_${schema}`;
      listener.on('notification', (n) => this.onNotification(n.payload ?? ''));
      await listener.query(`LISTEN "${this.channel}"`);
    } catch (err) {
      for (const c of all) {
        c.removeAllListeners('end');
        c.removeAllListeners('error');
        c.on('error', () => {});
        void c.end().catch(() => {});
      }
      throw err;
    }
    this.notifier = notifier;
    this.listener = listener;
    this.presence = presence;
    await this.join(presence);
  }

  private lockArgs(): [number, string] {
    return [LOCK_NS, this.channel];
  }

  /** Takes the shared presence lock; a solo replica holding it exclusively is told we are here. */
  private async join(presence: pg.Client): Promise<void> {
    const r = await presence.query<{ ok: boolean }>('SELECT pg_try_advisory_lock_shared($1, hashtext($2)) AS ok', this.lockArgs());
    if (!r.rows[0]?.ok) {
      const granted = presence.query('SELECT pg_advisory_lock_shared($1, hashtext($2))', this.lockArgs()).then(
        () => {
          if (this.presence === presence) this.member = true;
          return true;
        },
        () => false, // the connection broke: lost() reconnects and joins again
      );
      this.sendHello();
      let timer: NodeJS.Timeout | undefined;
      const inTime = await Promise.race([granted, new Promise<false>((r) => (timer = setTimeout(() => r(false), JOIN_TIMEOUT_MS)))]);
      clearTimeout(timer);
      if (!inTime) this.log.warn(`bus: a replica alone on the bus did not let this one in within ${JOIN_TIMEOUT_MS} ms; starting anyway`);
      return;
    }
    this.member = true;
    await this.trySolo();
  }

  /** An empty batch: tells a solo replica that another is here, and keeps the others from going solo. */
  private sendHello(): void {
    this.sendSigned(`${this.batchHead()}]}`);
  }

  private presenceTick(): void {
    if (this.closed || this.solo || this.reconnecting) return;
    if (Date.now() - this.lastSent >= this.quietMs / 3) this.sendHello();
    void this.trySolo();
  }

  /** Goes solo if no other replica holds the presence lock and none was heard lately. */
  private async trySolo(): Promise<void> {
    const p = this.presence;
    if (!p || !this.mayGoSolo || !this.member || this.solo || this.tryingSolo || this.closed || this.reconnecting) return;
    const heard = this.lastHeard;
    if (heard && Date.now() - heard < this.quietMs) return;
    this.tryingSolo = true;
    try {
      const r = await p.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok', this.lockArgs());
      if (!r.rows[0]?.ok || p !== this.presence) return;
      this.holdsExclusive = true;
      // Someone spoke while we asked: not alone after all.
      if (this.lastHeard !== heard || this.closed) return this.releaseExclusive();
      this.solo = true;
      metrics.busSolo.set(1);
      this.log.info('bus: no other replica on the bus; messages stay in this process until one joins');
    } catch {
      // the connection's error handler reconnects
    } finally {
      this.tryingSolo = false;
    }
  }

  private releaseExclusive(): void {
    if (!this.holdsExclusive) return;
    this.holdsExclusive = false;
    this.presence?.query('SELECT pg_advisory_unlock($1, hashtext($2))', this.lockArgs()).catch(() => {});
  }

  /** A message from another replica: it must hear us from now on (called before the message is handled). */
  protected override heardReplica(): void {
    this.lastHeard = Date.now();
    if (!this.solo) return;
    this.solo = false;
    metrics.busSolo.set(0);
    this.log.info('bus: another replica joined; sending to the bus again');
    this.releaseExclusive();
  }

  private outbox: [string, number][] = [];
  private sending = false;

  /** While reconnecting, sends are dropped: the gap notice after the reconnect covers them. */
  protected send(json: string, bytes: number): void {
    if (!this.notifier) return;
    this.lastSent = Date.now();
    this.outbox.push([json, bytes]);
    if (!this.sending) void this.drainOutbox();
  }

  /** One NOTIFY at a time on one connection: the order of publishing is the order of delivery. */
  private async drainOutbox(): Promise<void> {
    this.sending = true;
    try {
      for (let item = this.outbox.shift(); item; item = this.outbox.shift()) {
        const c = this.notifier;
        if (!c) {
          this.outbox = [];
          return;
        }
        const [json, bytes] = item;
        try {
          if (bytes <= NOTIFY_LIMIT) await c.query('SELECT pg_notify($1, $2)', [this.channel, json]);
          else
            await c.query(
              `WITH p AS (INSERT INTO bus_payloads (payload) VALUES ($2) RETURNING id)
               SELECT pg_notify($1, '{"ref":' || (SELECT id FROM p) || ',"o":' || $3 || '}')`,
              [this.channel, json, JSON.stringify(this.replicaId)],
            );
        } catch {
          this.lost();
        }
      }
    } finally {
      this.sending = false;
    }
    this.transportIdle();
    if (!this.sending) for (const w of this.idleWaiters.splice(0)) w();
  }

  private idleWaiters: (() => void)[] = [];

  protected override async settle(): Promise<void> {
    if (!this.sending) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((r) => this.idleWaiters.push(r)),
      new Promise<void>((r) => (timer = setTimeout(r, SETTLE_MS))),
    ]);
    clearTimeout(timer);
  }

  /** One NOTIFY is a round trip: while one is in flight, publishes gather into the next. */
  protected override transportBusy(): boolean {
    return this.sending;
  }

  private onNotification(payload: string): void {
    // Our own batches come back too: skip them unread (a large one is not fetched, and does not
    // hold up the others' batches behind its fetch).
    if (this.isOwn(payload)) return;
    let ref: number | null = null;
    if (payload.startsWith('{"ref":')) {
      // Only a pointer: the payload it names is signed, and checked once fetched.
      let r: { ref: number; o?: string };
      try {
        r = JSON.parse(payload) as { ref: number; o?: string };
      } catch {
        return;
      }
      if (r.o === this.replicaId) return;
      ref = Number(r.ref);
      if (!Number.isSafeInteger(ref)) return;
    }
    if (ref === null && !this.inbox) return void this.receive(payload);
    // Keep order: a fetched batch delays the ones behind it.
    const prev = this.inbox ?? Promise.resolve();
    const next = prev.then(async () => {
      if (ref === null) return void this.receive(payload);
      try {
        const r = await this.listener?.query<{ payload: string }>('SELECT payload FROM bus_payloads WHERE id = $1', [ref]);
        const body = r?.rows[0]?.payload;
        if (body) this.receive(body);
      } catch (err) {
        this.log.warn({ err }, 'bus: could not fetch a large message');
      }
    });
    this.inbox = next;
    void next.then(() => {
      if (this.inbox === next) this.inbox = null;
    });
  }

  /** A connection broke: reconnect with backoff, then resync (ours and theirs). */
  private lost(): void {
    if (this.closed || this.reconnecting) return;
    this.reconnecting = true;
    // The presence lock goes with its connection: a replica may join meanwhile.
    if (this.solo) metrics.busSolo.set(0);
    this.solo = false;
    this.holdsExclusive = false;
    this.member = false;
    const old = [this.listener, this.notifier, this.presence];
    this.listener = this.notifier = this.presence = null;
    for (const c of old) {
      if (!c) continue;
      c.removeAllListeners('end');
      c.removeAllListeners('notification');
      void c.end().catch(() => {});
    }
    this.log.warn('bus: lost the PostgreSQL connection; reconnecting');
    const attempt = async (n: number): Promise<void> => {
      if (this.closed) return;
      try {
        await this.connect();
      } catch {
        await new Promise((r) => setTimeout(r, retryDelay(n, num('busReconnectMinMs'), num('busReconnectMaxMs'))));
        return attempt(n + 1);
      }
      this.reconnecting = false;
      this.log.info('bus: reconnected');
      this.reconnected();
    };
    void attempt(0);
  }

  override async close(): Promise<void> {
    await super.close();
    clearInterval(this.janitor);
    if (this.presenceTimer) clearInterval(this.presenceTimer);
    if (this.solo) metrics.busSolo.set(0);
    const cs = [this.listener, this.notifier, this.presence];
    this.listener = this.notifier = this.presence = null;
    await Promise.all(
      cs.map(async (c) => {
        if (!c) return;
        c.removeAllListeners('end');
        await c.end().catch(() => {});
      }),
    );
  }
}
