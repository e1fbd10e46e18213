// Replica bus over NATS (AIRLOCK_BUS=nats://host:4222) for deployments whose event volume would
// load PostgreSQL's NOTIFY queue. One subject per database schema; the client reconnects by itself
// and a reconnect is reported as a gap.
//
// The URL carries what NATS users expect to configure (natsConnect below): credentials in the
// user part, TLS by scheme or query, nkey seed and creds files by query. Messages are signed by
// RemoteBus whatever NATS itself checks.
import fs from 'node:fs';
import { connect, credsAuthenticator, nkeyAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import { RemoteBus } from './remote.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';

/** How long close() lets published messages drain to a NATS server that is there. */
const DRAIN_MS = 2_000;
const QUERY = new Set(['tls', 'ca', 'cert', 'key', 'creds', 'nkey']);

/**
 * Connection options from a bus URL:
 *   nats://host:4222                      plain
 *   nats://user:password@host:4222        user and password
 *   nats://TOKEN@host:4222                token
 *   tls://host:4222  or  ?tls=1           TLS, verified against the system CAs, or ?ca=FILE
 *   ?cert=FILE&key=FILE                   TLS client certificate
 *   ?creds=FILE                           a .creds file (user JWT and nkey seed)
 *   ?nkey=FILE                            a file holding an nkey seed (SU…)
 * Files are read here: a missing one stops the start with its name.
 */
export function natsOptions(url: string): NodeConnectionOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`AIRLOCK_BUS is not a URL: ${JSON.stringify(url)}`);
  }
  for (const k of u.searchParams.keys()) {
    if (!QUERY.has(k)) throw new ConfigError(`AIRLOCK_BUS: unknown NATS option "${k}" (known: ${[...QUERY].join(', ')})`);
  }
  const q = (k: string) => u.searchParams.get(k) || undefined;
  const read = (k: string) => {
    const file = q(k)!;
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new ConfigError(`AIRLOCK_BUS: cannot read the ${k} file ${file}: ${(err as Error).message}`);
    }
  };
  const opts: NodeConnectionOptions = { servers: `${u.hostname.includes(':') ? `[${u.hostname}]` : u.hostname}:${u.port || 4222}` };
  const user = decodeURIComponent(u.username);
  const pass = decodeURIComponent(u.password);
  if (user && pass) Object.assign(opts, { user, pass });
  else if (user) opts.token = user;
  if (q('creds')) opts.authenticator = credsAuthenticator(new Uint8Array(read('creds')));
  else if (q('nkey')) opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(read('nkey').toString().trim()));
  const tls = u.protocol === 'tls:' || q('tls') === '1' || q('tls') === 'true' || q('ca') || q('cert');
  if (tls) {
    if (!!q('cert') !== !!q('key')) throw new ConfigError('AIRLOCK_BUS: a TLS client certificate needs both cert= and key=');
    for (const k of ['ca', 'cert', 'key']) if (q(k)) read(k); // fail early and clearly on a missing file
    opts.tls = { ...(q('ca') ? { caFile: q('ca') } : {}), ...(q('cert') ? { certFile: q('cert'), keyFile: q('key') } : {}) };
  }
  return opts;
}

/** The URL for messages: credentials and file names left out. */
export function natsUrlForHumans(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return 'nats://?';
  }
}

export class NatsBus extends RemoteBus {
  override readonly kind = 'nats' as const;
  protected maxBatchBytes = 256 * 1024;
  private enc = new TextEncoder();
  private dec = new TextDecoder();

  private constructor(
    private nc: NatsConnection,
    private subject: string,
    log: Logger,
    key: Buffer,
    replicaId?: string,
  ) {
    super(key, log, replicaId);
  }

  static async open(url: string, namespace: string, log: Logger, key: Buffer, replicaId?: string): Promise<NatsBus> {
    // noEcho: our own batches are delivered locally already; the server need not send them back.
    const nc = await connect({ ...natsOptions(url), maxReconnectAttempts: -1, reconnectTimeWait: 250, name: 'airlock', noEcho: true });
    const bus = new NatsBus(nc, `airlock.bus.${namespace}`, log, key, replicaId);
    nc.subscribe(bus.subject, {
      callback: (err, m) => {
        if (!err) bus.receive(bus.dec.decode(m.data));
      },
    });
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

  /**
   * drain() lets what was published go out first, but with the NATS server gone it fails at once
   * and leaves the client reconnecting forever (its timers kept a stopped server's process alive
   * until the shutdown limit killed it): close() after it, whatever it did.
   */
  override async close(): Promise<void> {
    await super.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.nc.drain().catch(() => {}), new Promise((r) => (timer = setTimeout(r, DRAIN_MS)))]);
    clearTimeout(timer);
    await this.nc.close().catch(() => {});
  }
}
