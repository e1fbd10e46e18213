// Multi-replica harness: several real `airlock server` processes on one PostgreSQL schema (the CI
// server), talking over the real bus, with a fake provider in the test process.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { ApiClient } from '../../src/client/api.js';
import { runCli, type Run } from './launch.js';

export const PG_URL = process.env.AIRLOCK_TEST_DATABASE_URL;

export interface Cluster {
  url: string;
  schema: string;
  dir: string;
  secretKey: string;
  env: NodeJS.ProcessEnv;
  token: string;
  replicas: Replica[];
  start(extra?: NodeJS.ProcessEnv, args?: string[]): Promise<Replica>;
  sql<T = any>(text: string, params?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

export interface Replica {
  run: Run;
  url: string;
  replicaId: string;
  workerId: string | null;
  api: ApiClient;
  kill(signal?: NodeJS.Signals): Promise<number>;
}

/** A fresh schema; replicas get `DATABASE_URL` with its search_path, one shared secret key. */
/** args: flags every replica's `airlock server` gets (a start's own come after them). */
export async function cluster(env: NodeJS.ProcessEnv, args: string[] = []): Promise<Cluster> {
  const schema = `r_${crypto.randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.query(`SET search_path TO ${schema}`);
  const u = new URL(PG_URL!);
  u.searchParams.set('options', `-c search_path=${schema}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-replicas-'));
  const c: Cluster = {
    url: u.toString(),
    schema,
    dir,
    secretKey: crypto.randomBytes(32).toString('hex'),
    env,
    token: '',
    replicas: [],
    async start(extra = {}, own = []) {
      const i = c.replicas.length;
      const run = runCli(['server', '--port', '0', '--database-url', c.url, ...args, ...own], {
        AIRLOCK_DATA_DIR: path.join(dir, `r${i}`),
        AIRLOCK_SECRET_KEY: c.secretKey,
        AIRLOCK_TITLES: '0',
        AIRLOCK_LOG_LEVEL: process.env.REPLICA_LOG_LEVEL ?? 'warn',
        ...c.env,
        ...extra,
      });
      const [, url, replicaId, worker] = await run.waitErr(/listening on (\S+) \(.*?replica (\S+); (?:worker (\S+)\)|API only\))/);
      if (!c.token) c.token = (await run.waitErr(/^\s+(al_\S+)$/m))[1]!;
      const r: Replica = {
        run,
        url: url!,
        replicaId: replicaId!,
        workerId: worker ?? null,
        api: new ApiClient(url!, c.token),
        async kill(signal = 'SIGKILL') {
          if (run.proc.exitCode === null && run.proc.signalCode === null) run.proc.kill(signal);
          return run.exited();
        },
      };
      c.replicas.push(r);
      return r;
    },
    async sql(text, params) {
      return (await admin.query(text, params as any[])).rows;
    },
    async close() {
      await Promise.all(c.replicas.map((r) => r.kill().catch(() => 0)));
      // Debugging a failure: REPLICA_LOG_DIR keeps each replica's output (REPLICA_LOG_LEVEL=debug for more).
      const logDir = process.env.REPLICA_LOG_DIR;
      if (logDir) c.replicas.forEach((r, i) => fs.writeFileSync(path.join(logDir, `${schema}-r${i}.log`), `${r.run.stdout}\n--- stderr ---\n${r.run.stderr}`));
      await admin.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
      await admin.end();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return c;
}

/** Every seq once and in order: what a client that resumed with ?after= must end up with. */
export function assertNoHolesNoDuplicates(seqs: number[]): void {
  for (let i = 1; i < seqs.length; i++) {
    if (!(seqs[i]! > seqs[i - 1]!)) throw new Error(`seq ${seqs[i]} after ${seqs[i - 1]} (index ${i}): ${seqs.join(',')}`);
  }
}
