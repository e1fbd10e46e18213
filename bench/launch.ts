// npm run bench:launch [-- --quick]: session launch against OpenSSH on loopback, side by side.
// A real `airlock server` and `airlock gateway` (processes), a real sshd (throwaway user, needs
// root and openssh-server), a TCP greeting target and a bulk target. Prints a table, then one
// JSON line with the figures.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import readline from 'node:readline';
import type { DataChannel } from 'node-datachannel';
import { Peer } from '../src/tube/peer.js';
import { LOW_WATER, LOOPBACK_ICE } from '../src/tube/transport.js';
import { HIGH_WATER } from '../src/tube/tube.js';
import { ApiClient } from '../src/client/api.js';
import { BIN, GatewayProcess, bulkServer, childEnv, freePort, haveSshd, startSshd } from '../test/helpers/launch.js';
import { serverProcess } from './common.js';

const { values } = parseArgs({ options: { quick: { type: 'boolean' }, launches: { type: 'string' }, mib: { type: 'string' }, 'pg-seconds': { type: 'string' }, only: { type: 'string' } } });
const launches = Number(values.launches ?? 20);
const mib = Number(values.mib ?? (values.quick ? 64 : 256));
/** pgbench stage: seconds per path and client count; PostgreSQL at BENCH_PG (default the local test database). */
const pgSeconds = Number(values['pg-seconds'] ?? (values.quick ? 5 : 15));
const PG = new URL(process.env.BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432/test');
/** --only pg: just the pgbench stage. */
const only = values.only;
if (!fs.existsSync('dist/main.js')) throw new Error('run `npm run build` first (npm run bench:launch does)');
if (!haveSshd()) throw new Error('bench:launch compares with OpenSSH: it needs root and openssh-server (apt-get install -y openssh-server)');

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN;
};
const r1 = (n: number) => Math.round(n * 10) / 10;
const log = (s: string) => process.stderr.write(s + '\n');

/** Ends a partial run (--only) early, through the cleanup. */
class Done extends Error {}

// --- set-up -----------------------------------------------------------------------------------
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-bench-launch-'));
const { proc: server, url, token } = await serverProcess(dir, {});
const api = new ApiClient(url, token);
const { token: gwToken } = await api.post('/api/gateways', { name: 'bench' });
const gw = new GatewayProcess(url, gwToken);
gw.start();
for (let i = 0; !(await api.get('/api/gateways')).gateways[0].online; i++) {
  if (i > 500) throw new Error(`gateway did not come online: ${gw.log}`);
  await new Promise((r) => setTimeout(r, 20));
}

const greet = net.createServer((s) => {
  s.on('error', () => {});
  s.write('g');
});
await new Promise<void>((r) => greet.listen(0, '127.0.0.1', () => r()));
const greetPort = (greet.address() as net.AddressInfo).port;
const bulk = await bulkServer(mib << 20);
await api.post('/api/resources', { name: 'greet', kind: 'tcp', target: `127.0.0.1:${greetPort}`, gateway: 'bench' });
await api.post('/api/resources', { name: 'bulk', kind: 'tcp', target: `127.0.0.1:${bulk.port}`, gateway: 'bench' });
const pgPort = Number(PG.port || 5432);
await api.post('/api/resources', { name: 'pg', kind: 'tcp', target: `${PG.hostname}:${pgPort}`, gateway: 'bench' });

const keyFile = path.join(dir, 'id_ed25519');
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
const sshd = await startSshd({ authorizedKey: fs.readFileSync(keyFile + '.pub', 'utf8') });
const sshArgs = ['-i', keyFile, '-p', String(sshd.port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', `${sshd.user}@127.0.0.1`];

/** Connects to a local port and resolves when the first byte arrives (with the socket). */
function firstByte(p: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(p, '127.0.0.1');
    s.once('data', () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * Reads a whole bulk transfer through a local port: MB/s. Into one reused buffer (as a native
 * client such as psql or curl reads), so that the reader's own allocations do not take CPU from
 * what is measured on this 2-core machine.
 */
function readAll(p: number, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let n = 0;
    const s = net.connect({
      port: p,
      host: '127.0.0.1',
      onread: {
        buffer: Buffer.allocUnsafe(64 * 1024),
        callback: (got) => {
          n += got;
          if (n >= bytes) {
            const secs = (performance.now() - t0) / 1000;
            s.destroy();
            resolve(bytes / 1e6 / secs);
          }
          return true;
        },
      },
    });
    s.on('error', reject);
  });
}

interface Forward {
  port: number;
  startedAt: number;
  ready: Promise<void>;
  stop(): Promise<void>;
  detail(): string;
}

// Local ports come from the OS (a random one collided with ephemeral ports in use), before the clock starts.
async function airlockForward(resource: string, env: NodeJS.ProcessEnv = {}): Promise<Forward> {
  const lport = await freePort();
  const startedAt = performance.now();
  const proc = spawn(process.execPath, [BIN, 'launch', resource, '--port', String(lport)], {
    env: childEnv({ AIRLOCK_SERVER: url, AIRLOCK_TOKEN: token, AIRLOCK_LOG_LEVEL: 'warn', ...env }),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  const ready = new Promise<void>((resolve, reject) => {
    proc.stderr!.on('data', (d) => {
      err += d;
      if (/Forwarding/.test(err)) resolve();
    });
    proc.once('exit', () => reject(new Error(`airlock launch exited: ${err}`)));
  });
  ready.catch(() => {});
  return {
    port: lport,
    startedAt,
    ready,
    detail: () => err,
    stop: () =>
      new Promise((r) => {
        if (proc.exitCode !== null) return r();
        proc.once('exit', () => r());
        proc.kill('SIGINT');
      }),
  };
}

async function sshForward(targetPort: number): Promise<Forward> {
  const lport = await freePort();
  const startedAt = performance.now();
  // -f: ssh backgrounds itself once connected, authenticated and forwarding: its exit is "ready".
  const proc = spawn('ssh', ['-f', '-N', '-o', 'ExitOnForwardFailure=yes', '-L', `${lport}:127.0.0.1:${targetPort}`, ...sshArgs], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const ready = new Promise<void>((resolve, reject) => proc.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`ssh -L failed: ${err}`)))));
  return {
    port: lport,
    startedAt,
    ready,
    detail: () => err,
    stop: async () => {
      try {
        execFileSync("pkill", ["-f", `${lport}:127.0.0.1:${targetPort}`]);
      } catch {
        /* gone */
      }
    },
  };
}

async function launchToFirstByte(make: () => Promise<Forward>, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const f = await make();
    const guard = setTimeout(() => log(`  (launch ${i + 1} is taking long: ${f.detail()})`), 10_000);
    await f.ready;
    const s = await firstByte(f.port);
    out.push(performance.now() - f.startedAt);
    s.destroy();
    await f.stop();
    clearTimeout(guard);
  }
  return out;
}

async function throughput(f: Forward, waitDirect = false): Promise<number> {
  await f.ready;
  if (waitDirect) {
    for (let i = 0; !/moved to the direct path|\(direct path\)/.test(f.detail()); i++) {
      if (i > 1000) throw new Error('the direct path never came up');
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const mbs = await readAll(f.port, mib << 20);
  await f.stop();
  return mbs;
}

/** Waits until a forward's launch says the direct path carries it. */
async function onDirectPath(f: Forward): Promise<Forward> {
  await f.ready;
  for (let i = 0; !/moved to the direct path|\(direct path\)/.test(f.detail()); i++) {
    if (i > 1000) throw new Error('the direct path never came up');
    await new Promise((r) => setTimeout(r, 10));
  }
  return f;
}

/**
 * PostgreSQL's own pgbench through a local port: select-only (-S) with `clients` connections for
 * pgSeconds; tps (without the initial connections) and the average latency in ms.
 */
function pgbench(p: number, clients: number): { tps: number; latencyMs: number } {
  const out = execFileSync(
    'pgbench',
    ['-n', '-S', '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(pgSeconds), '-h', '127.0.0.1', '-p', String(p), '-U', PG.username || 'postgres', PG.pathname.slice(1) || 'test'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(out)?.[1]);
  const latencyMs = Number(/latency average = ([\d.]+) ms/.exec(out)?.[1]);
  if (!Number.isFinite(tps) || !Number.isFinite(latencyMs)) throw new Error(`pgbench printed no figures:\n${out}`);
  return { tps, latencyMs };
}

/** CPU seconds so far of the processes that matter here, by a short name (BENCH_CPU=1). */
function cpuByName(): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd: string;
    let stat: string[];
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    } catch {
      continue;
    }
    const name = / launch /.test(cmd) ? 'launch' : / gateway /.test(cmd) ? 'gateway' : / server /.test(cmd) && cmd.includes('airlock') ? 'server' : /^postgres/.test(cmd) ? 'postgres' : /^pgbench/.test(cmd) ? 'pgbench' : /^(ssh|sshd)/.test(cmd) ? 'ssh' : null;
    if (!name) continue;
    out.set(name, (out.get(name) ?? 0) + (Number(stat[11]) + Number(stat[12])) / 100);
  }
  return out;
}

/** 16 clients' tps and 1 client's latency through a forward (or straight to PostgreSQL). */
async function pgStage(name: string, f: Forward | null): Promise<{ tps: number; latencyMs: number }> {
  if (f) await f.ready;
  const port = f?.port ?? pgPort;
  const cpu0 = process.env.BENCH_CPU ? cpuByName() : null;
  const { tps } = pgbench(port, 16);
  if (cpu0) {
    const cpu1 = cpuByName();
    const secs = [...cpu1.keys()].map((k) => `${k} ${Math.round(((cpu1.get(k)! - (cpu0.get(k) ?? 0)) / pgSeconds) * 100)}%`);
    log(`    cpu (16 clients): ${secs.join(', ')}`);
  }
  const { latencyMs } = pgbench(port, 1);
  await f?.stop();
  log(`  ${name.padEnd(20)} ${Math.round(tps)} tps (16 clients)  ${latencyMs.toFixed(3)} ms (1 client)`);
  return { tps, latencyMs };
}

/** A node-datachannel channel to a peer in another process, same flow-control levels as the tube, no framing: the ceiling. */
async function bareDataChannel(bytes: number): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/bare-peer.ts', String(bytes)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const a = new Peer('bare-sender', (s) => child.stdin!.write(JSON.stringify(s) + '\n'), LOOPBACK_ICE);
  const result = new Promise<number>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      const m = JSON.parse(l);
      if (typeof m.mb_s === 'number') resolve(m.mb_s);
      else a.remote(m);
    });
    child.once('exit', (code) => code !== 0 && reject(new Error(`bare receiver exited ${code}`)));
  });
  const dc: DataChannel = a.pc.createDataChannel('bench');
  await new Promise<void>((r) => dc.onOpen(() => r()));
  const chunk = crypto.randomBytes(32 * 1024);
  dc.setBufferedAmountLowThreshold(LOW_WATER); // the tube's own flow-control levels
  let sent = 0;
  const pump = () => {
    while (sent < bytes) {
      if (dc.bufferedAmount() > HIGH_WATER) return;
      // The receiver leaves once it has every byte: a late low-buffer callback must not send then
      // (node-datachannel aborts the process on a send to a closed channel).
      if (!dc.isOpen()) return;
      try {
        dc.sendMessageBinary(chunk);
      } catch {
        return;
      }
      sent += chunk.length;
    }
  };
  dc.onBufferedAmountLow(pump);
  pump();
  // node-datachannel 0.33 stalls here at times (the receiver stops after ~32 MiB with bytes still
  // buffered at the sender); report that instead of hanging the benchmark.
  let timer: NodeJS.Timeout;
  const stalled = new Promise<number>((resolve) => (timer = setTimeout(() => resolve(NaN), 30_000)));
  const mbs = await Promise.race([result, stalled]);
  clearTimeout(timer!);
  if (Number.isNaN(mbs)) log(`  (bare data channel stalled after ${sent} bytes sent)`);
  child.kill('SIGKILL');
  a.close();
  return mbs;
}

// --- runs -------------------------------------------------------------------------------------
try {
  log(`pgbench -S (select-only), ${pgSeconds} s per run, scale 1`);
  execFileSync('pgbench', ['-i', '-q', '-s', '1', '-h', PG.hostname, '-p', String(pgPort), '-U', PG.username || 'postgres', PG.pathname.slice(1) || 'test'], { stdio: 'ignore' });
  const pgNone = await pgStage('no tunnel', null);
  const pgSsh = await pgStage('ssh -N -L', await sshForward(pgPort));
  const pgRelay = await pgStage('airlock relay path', await airlockForward('pg', { AIRLOCK_WEBRTC: '0' }));
  const pgDirect = await pgStage('airlock direct path', await onDirectPath(await airlockForward('pg')));
  const pgFigures = {
    pg_tps_no_tunnel: Math.round(pgNone.tps),
    pg_tps_ssh_L: Math.round(pgSsh.tps),
    pg_tps_relay_path: Math.round(pgRelay.tps),
    pg_tps_direct_path: Math.round(pgDirect.tps),
    pg_lat_no_tunnel_ms: pgNone.latencyMs,
    pg_lat_ssh_L_ms: pgSsh.latencyMs,
    pg_lat_relay_path_ms: pgRelay.latencyMs,
    pg_lat_direct_path_ms: pgDirect.latencyMs,
    pg_tps_relay_vs_ssh_L_x: Math.round((pgRelay.tps / pgSsh.tps) * 100) / 100,
    pg_tps_direct_vs_ssh_L_x: Math.round((pgDirect.tps / pgSsh.tps) * 100) / 100,
  };
  if (only === 'pg') {
    console.log(JSON.stringify(pgFigures));
    throw new Done();
  }

  log(`launch → first byte, ${launches} launches each`);
  const airlock = await launchToFirstByte(() => airlockForward('greet'), launches);
  log(`  airlock (WebRTC on)  p50 ${r1(pct(airlock, 50))} ms  p99 ${r1(pct(airlock, 99))} ms`);
  const relay = await launchToFirstByte(() => airlockForward('greet', { AIRLOCK_WEBRTC: '0' }), launches);
  log(`  airlock relay only   p50 ${r1(pct(relay, 50))} ms  p99 ${r1(pct(relay, 99))} ms`);
  const ssh = await launchToFirstByte(() => sshForward(greetPort), launches);
  log(`  ssh -N -L            p50 ${r1(pct(ssh, 50))} ms  p99 ${r1(pct(ssh, 99))} ms`);

  log(`throughput, ${mib} MiB`);
  const tube = await throughput(await airlockForward('bulk'), true);
  log(`  tube (direct)        ${r1(tube)} MB/s`);
  const relayMbs = await throughput(await airlockForward('bulk', { AIRLOCK_WEBRTC: '0' }));
  log(`  tube (relay)         ${r1(relayMbs)} MB/s`);
  const bare = await bareDataChannel(mib << 20);
  log(`  bare datachannel     ${r1(bare)} MB/s`);
  const sshMbs = await throughput(await sshForward(bulk.port));
  log(`  ssh -L               ${r1(sshMbs)} MB/s`);
  const direct = await readAll(bulk.port, mib << 20);
  log(`  direct TCP           ${r1(direct)} MB/s`);

  console.log(
    JSON.stringify({
      launch_p50_ms: r1(pct(airlock, 50)),
      launch_p99_ms: r1(pct(airlock, 99)),
      relay_launch_p50_ms: r1(pct(relay, 50)),
      relay_launch_p99_ms: r1(pct(relay, 99)),
      ssh_L_p50_ms: r1(pct(ssh, 50)),
      ssh_L_p99_ms: r1(pct(ssh, 99)),
      launch_vs_ssh_x: r1(pct(ssh, 50) / pct(airlock, 50)),
      tube_mb_s: r1(tube),
      relay_mb_s: r1(relayMbs),
      bare_datachannel_mb_s: Number.isNaN(bare) ? null : r1(bare),
      tube_vs_bare: Number.isNaN(bare) ? null : Math.round((tube / bare) * 100) / 100,
      ssh_L_mb_s: r1(sshMbs),
      direct_mb_s: r1(direct),
      ...pgFigures,
      launches,
      transfer_mib: mib,
    }),
  );
} catch (err) {
  if (!(err instanceof Done)) throw err;
} finally {
  await gw.kill();
  await sshd.stop();
  server.kill('SIGKILL');
  greet.close();
  bulk.close();
  fs.rmSync(dir, { recursive: true, force: true });
  setTimeout(() => process.exit(0), 100);
}
