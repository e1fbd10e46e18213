// Replica bus over PostgreSQL LISTEN/NOTIFY: one listening connection and one sending connection
// per replica (the sender keeps publish order). A batch over NOTIFY's 8000-byte limit is stored in
// bus_payloads in the same statement as its NOTIFY and fetched by the receivers, in order.
import pg from 'pg';
import { RemoteBus } from './remote.js';
import { retryDelay } from '../backoff.js';
import type { Logger } from '../log.js';

export interface PgConn {
  connectionString: string;
  options?: string;
}

const NOTIFY_LIMIT = 7900;
/** How long close() waits for NOTIFYs in flight (the last wake signals of a drain). */
const SETTLE_MS = 2000;
/** Reconnects from 100 ms doubling to 5 s: quick after a blip, gentle on a database that is down. */
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5_000;

export class PgBus extends RemoteBus {
  override readonly kind = 'postgres' as const;
  protected maxBatchBytes = NOTIFY_LIMIT;
  private listener: pg.Client | null = null;
  private notifier: pg.Client | null = null;
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
    return bus;
  }

  private client(): pg.Client {
    const c = new pg.Client({ connectionString: this.conn.connectionString, options: this.conn.options, application_name: `airlock-bus ${this.replicaId}` });
    c.on('error', () => this.lost());
    c.on('end', () => this.lost());
    return c;
  }

  private async connect(): Promise<void> {
    const notifier = this.client();
    const listener = this.client();
    try {
      await Promise.all([notifier.connect(), listener.connect()]);
      const schema = (await notifier.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]?.s ?? 'public';
      this.channel = schema === 'public' ? 'airlock_bus' : `airlock_bus_${schema}`;
      listener.on('notification', (n) => this.onNotification(n.payload ?? ''));
      await listener.query(`LISTEN "${this.channel}"`);
    } catch (err) {
      for (const c of [notifier, listener]) {
        c.removeAllListeners('end');
        c.removeAllListeners('error');
        c.on('error', () => {});
        void c.end().catch(() => {});
      }
      throw err;
    }
    this.notifier = notifier;
    this.listener = listener;
  }

  private outbox: [string, number][] = [];
  private sending = false;

  /** While reconnecting, sends are dropped: the gap notice after the reconnect covers them. */
  protected send(json: string, bytes: number): void {
    if (!this.notifier) return;
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
    const old = [this.listener, this.notifier];
    this.listener = this.notifier = null;
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
        await new Promise((r) => setTimeout(r, retryDelay(n, RECONNECT_MIN_MS, RECONNECT_MAX_MS)));
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
    const cs = [this.listener, this.notifier];
    this.listener = this.notifier = null;
    await Promise.all(
      cs.map(async (c) => {
        if (!c) return;
        c.removeAllListeners('end');
        await c.end().catch(() => {});
      }),
    );
  }
}
