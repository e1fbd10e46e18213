// Picks the bus: AIRLOCK_BUS=local|postgres|nats://…; default PostgreSQL NOTIFY when the database
// is PostgreSQL (so replicas just work), in-process otherwise.
import { type Bus, LocalBus } from './bus.js';
import type { Db } from '../store/db.js';
import type { Logger } from '../log.js';
import { str } from '../config.js';
import { ConfigError } from '../errors.js';

/** Throws what is wrong with a bus setting for a server on PostgreSQL or not (before the database opens). */
export function checkBusSpec(spec: string, onPostgres: boolean): void {
  if (spec === 'postgres' && !onPostgres) throw new ConfigError('AIRLOCK_BUS=postgres needs a PostgreSQL database (--database-url)');
  if (spec && spec !== 'local' && spec !== 'postgres' && !spec.startsWith('nats://')) {
    throw new ConfigError(`AIRLOCK_BUS must be local, postgres or nats://host:port, got ${JSON.stringify(spec)}`);
  }
}

export async function openBus(db: Db, log: Logger, spec = str('bus')): Promise<Bus> {
  checkBusSpec(spec, !!db.pg);
  const kind = spec || (db.kind === 'postgres' ? 'postgres' : 'local');
  if (kind === 'local') return new LocalBus();
  if (kind === 'postgres') {
    const { PgBus } = await import('./pg.js');
    return PgBus.open(db.pg!, log);
  }
  const { NatsBus } = await import('./nats.js'); // nats://…
  const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s'))[0]?.s ?? 'public';
  try {
    return await NatsBus.open(kind, schema, log);
  } catch (err) {
    throw new ConfigError(`cannot connect to NATS at ${kind}: ${(err as Error).message}`);
  }
}
