// Picks the bus: AIRLOCK_BUS=local|postgres|nats://…; default PostgreSQL NOTIFY when the database
// is PostgreSQL (so replicas just work), in-process otherwise.
import { type Bus, LocalBus } from './bus.js';
import type { Db } from '../store/db.js';
import type { Logger } from '../log.js';
import { str } from '../config.js';
import { ConfigError } from '../errors.js';

export async function openBus(db: Db, log: Logger, spec = str('bus')): Promise<Bus> {
  const kind = spec || (db.kind === 'postgres' ? 'postgres' : 'local');
  if (kind === 'local') return new LocalBus();
  if (kind === 'postgres') {
    if (!db.pg) throw new ConfigError('AIRLOCK_BUS=postgres needs a PostgreSQL database (--database-url)');
    const { PgBus } = await import('./pg.js');
    return PgBus.open(db.pg, log);
  }
  if (kind.startsWith('nats://')) {
    const { NatsBus } = await import('./nats.js');
    const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s'))[0]?.s ?? 'public';
    try {
      return await NatsBus.open(kind, schema, log);
    } catch (err) {
      throw new ConfigError(`cannot connect to NATS at ${kind}: ${(err as Error).message}`);
    }
  }
  throw new ConfigError(`AIRLOCK_BUS must be local, postgres or nats://host:port, got ${JSON.stringify(spec)}`);
}
