// Replica bus over NATS (AIRLOCK_BUS=nats://host:4222) for deployments whose event volume would
// load PostgreSQL's NOTIFY queue. One subject per database schema; the client reconnects by itself
// and a reconnect is reported as a gap.
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { RemoteBus } from './remote.js';
import type { Logger } from '../log.js';

export class NatsBus extends RemoteBus {
  override readonly kind = 'nats' as const;
  protected maxBatchBytes = 256 * 1024;
  private enc = new TextEncoder();
  private dec = new TextDecoder();

  private constructor(
    private nc: NatsConnection,
    private subject: string,
    replicaId?: string,
  ) {
    super(replicaId);
  }

  static async open(url: string, namespace: string, log: Logger, replicaId?: string): Promise<NatsBus> {
    const u = new URL(url);
    // noEcho: our own batches are delivered locally already; the server need not send them back.
    const nc = await connect({ servers: `${u.hostname}:${u.port || 4222}`, maxReconnectAttempts: -1, reconnectTimeWait: 250, name: 'airlock', noEcho: true });
    const bus = new NatsBus(nc, `airlock.bus.${namespace}`, replicaId);
    nc.subscribe(bus.subject, { callback: (err, m) => {
        if (!err) bus.receive(bus.dec.decode(m.data));
      } });
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') log.warn('bus: lost the NATS connection; reconnecting');
        if (s.type === 'reconnect') {
          log.info('bus: reconnected to NATS');
          bus.reconnected();
        }
      }
    })().catch(() => {});
    await nc.flush();
    return bus;
  }

  protected send(json: string): void {
    try {
      this.nc.publish(this.subject, this.enc.encode(json));
    } catch {
      /* closed or draining: the reconnect reports a gap */
    }
  }

  override async close(): Promise<void> {
    await super.close();
    await this.nc.drain().catch(() => {});
  }
}
