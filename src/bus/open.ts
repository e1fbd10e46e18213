// Picks the bus: AIRLOCK_BUS=local|postgres|nats://…|tls://…; default PostgreSQL NOTIFY when the
// database is PostgreSQL (so replicas just work), in-process otherwise.
import { type Bus, LocalBus } from './bus.js';
import type { Db } from '../store/db.js';
import type { Logger } from '../log.js';
import { ConfigError } from '../errors.js';

const isNats = (spec: string) => spec.startsWith('nats://') || spec.startsWith('tls://');

/** Throws what is wrong with a bus setting for a server on PostgreSQL or not (before the database opens). */
export async function checkBusSpec(spec: string, onPostgres: boolean): Promise<void> {
  if (spec === 'postgres' && !onPostgres) throw new ConfigError('AIRLOCK_BUS=postgres needs a PostgreSQL database (--database-url)');
  if (spec && spec !== 'local' && spec !== 'postgres' && !isNats(spec)) {
    throw new ConfigError(`AIRLOCK_BUS must be local, postgres or a NATS URL (nats://[user:pass@]host:port, tls://host:port), got ${JSON.stringify(spec.replace(/\/\/[^@/]*@/, '//…@'))}`);
  }
  if (isNats(spec)) (await import('./nats.js')).natsOptions(spec);
}

/** key: what every message is signed with (busKey of the server's secret key; replicas share it). */
/** spec: AIRLOCK_BUS ('' picks by the database). */
export async function openBus(db: Db, log: Logger, key: Buffer, spec: string): Promise<Bus> {
  await checkBusSpec(spec, !!db.pg);
  const kind = spec || (db.kind === 'postgres' ? 'postgres' : 'local');
  if (kind === 'local') return new LocalBus();
  if (kind === 'postgres') {
    const { PgBus } = await import('./pg.js');
    return PgBus.open(db.pg!, log, key);
  }
  const { NatsBus, natsUrlForHumans } = await import('./nats.js');
  const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s'))[0]?.s ?? 'public';
  try {
    return await NatsBus.open(kind, schema, log, key);
  } catch (err) {
    throw new ConfigError(`cannot connect to NATS at ${natsUrlForHumans(kind)}: ${(err as Error).message}`);
  }
}
