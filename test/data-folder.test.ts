// The embedded database's folder is the server's alone: under a umask that lets others read, no
// file or folder in it is open to group or others (the catalogs and the write-ahead log hold
// every chat and sealed credential), and a folder left open is repaired at the next start.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { runCli, killChildren, BIN } from './helpers/launch.js';
import { waitUntil } from './helpers/server.js';

after(() => killChildren());

/** Every entry under dir (dir included) that group or others can reach, with its mode. */
function openToOthers(dir: string): string[] {
  const out: string[] = [];
  const check = (p: string) => {
    const st = fs.lstatSync(p);
    if (!st.isSymbolicLink() && st.mode & 0o077) out.push(`${(st.mode & 0o777).toString(8)} ${path.relative(dir, p) || '.'}`);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) check(path.join(p, e));
  };
  check(dir);
  return out;
}

test('the data folder and everything the embedded database writes in it are private to the server, under umask 022; an open folder is repaired at start', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-perms-'));
  const dataDir = path.join(dir, 'data');
  const env = { AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json') };
  const old = process.umask(0o022);
  try {
    const start = async () => {
      const srv = runCli(['server', '--port', '0', '--data-dir', dataDir], env);
      const [, url] = await srv.waitErr(/listening on (http:\/\/\S+)/);
      return { srv, url: url! };
    };
    let { srv, url } = await start();
    const token = (await srv.waitErr(/^\s+(al_\S+)$/m))[1]!;
    // Something private to write: it lands in the write-ahead log at once.
    const res = await fetch(`${url}/api/chats`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ title: 'alice private' }) });
    assert.equal(res.status, 201);
    const files = fs.readdirSync(path.join(dataDir, 'pgdata'), { recursive: true }).length;
    assert.ok(files > 500, `the embedded database wrote ${files} entries`);
    assert.deepEqual(openToOthers(dataDir), []);
    srv.proc.kill('SIGTERM');
    assert.equal(await srv.exited(), 0);

    // Opened up by hand (a copy, a restore, a careless chmod): the next start closes it again.
    fs.chmodSync(dataDir, 0o755);
    fs.chmodSync(path.join(dataDir, 'pgdata'), 0o777);
    fs.chmodSync(path.join(dataDir, 'pgdata', 'global', 'pg_control'), 0o666);
    assert.ok(openToOthers(dataDir).length >= 3);
    ({ srv, url } = await start());
    assert.deepEqual(openToOthers(dataDir), []);
    assert.match(srv.stdout + srv.stderr, /the data folder was open to other users/);
    srv.proc.kill('SIGTERM');
    assert.equal(await srv.exited(), 0);
  } finally {
    process.umask(old);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a server killed with kill -9 whose parent has not reaped it (a zombie, as in a container without an init) does not keep its data folder: the next server starts', { skip: process.platform !== 'linux' && 'the abstract-socket lock is Linux only' }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-zombie-'));
  const dataDir = path.join(dir, 'data');
  const env = { AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json') };
  const log = path.join(dir, 'first.log');
  // A parent that never waits for its child: the killed server stays a zombie.
  const parent = spawn('python3', ['-c', `import subprocess,sys,time\np=subprocess.Popen(sys.argv[1:],stderr=open(${JSON.stringify(log)},'w'))\nprint(p.pid,flush=True)\ntime.sleep(600)`, process.execPath, BIN, 'server', '--port', '0', '--data-dir', dataDir], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  try {
    const pid = Number((await once(parent.stdout!, 'data'))[0].toString().trim());
    await waitUntil(() => fs.existsSync(log) && /listening on/.test(fs.readFileSync(log, 'utf8')), 'the first server listening');
    process.kill(pid, 'SIGKILL');
    await waitUntil(() => /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8')), 'the killed server is a zombie');
    assert.equal(fs.readFileSync(path.join(dataDir, 'airlock.lock'), 'utf8'), String(pid), 'its lock file is still there');
    const next = runCli(['server', '--port', '0', '--data-dir', dataDir], env);
    await next.waitErr(/listening on/);
    assert.doesNotMatch(next.stderr, /in use by another Airlock process/);
    next.proc.kill('SIGTERM');
    assert.equal(await next.exited(), 0);
  } finally {
    parent.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
