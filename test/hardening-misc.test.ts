// The smaller hardening points: sealed credentials bound to their resource (and the first format
// sealed again at start), the metrics token, the CLI config's mode, the calculator's names, and
// the warning for a server on the network without TLS.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTestServer, openTestDb, testSecrets } from './helpers/server.js';
import { GatewayProcess, waitGatewayOnline, runCli, killChildren, tempDir } from './helpers/launch.js';
import { SecretBox } from '../src/access/secretbox.js';
import { evaluate } from '../src/chat/tools/calculator.js';
import { writeConfig } from '../src/cli/config.js';

after(() => killChildren());

test('a sealed credential opens only for its own resource; one copied onto another resource\'s row is refused with a clear error', async () => {
  const secrets = testSecrets();
  const t = await startTestServer({}, { secrets });
  const { token } = await t.admin.post('/api/gateways', { name: 'seal-gw' });
  const gw = new GatewayProcess(t.url, token);
  gw.start();
  try {
    await waitGatewayOnline(t, 'seal-gw');
    const cred = { username: 'deploy', password: 'S3cr3t-ssh-pw' };
    const a = (await t.admin.post('/api/resources', { name: 'seal-a', kind: 'ssh', target: '127.0.0.1:9', gateway: 'seal-gw', credential: cred })).resource;
    const b = (await t.admin.post('/api/resources', { name: 'seal-b', kind: 'ssh', target: '127.0.0.1:9', gateway: 'seal-gw', credential: { username: 'other', password: 'x' } })).resource;
    const [row] = await t.db.query<{ credential_enc: string }>('SELECT credential_enc FROM resources WHERE id = $1', [a.id]);
    assert.match(row!.credential_enc, /^v2\./);
    assert.deepEqual(secrets.open(row!.credential_enc, a.id), cred);
    assert.throws(() => secrets.open(row!.credential_enc, b.id));
    // Someone who can write the database (not read the key) moves a's credential onto b.
    await t.db.query('UPDATE resources SET credential_enc = $2 WHERE id = $1', [b.id, row!.credential_enc]);
    const run = runCli(['launch', 'seal-b', '--exec', 'id'], { AIRLOCK_SERVER: t.url, AIRLOCK_TOKEN: t.admin.token }, '');
    assert.equal(await run.exited(), 1);
    assert.match(run.stderr, /the resource's credential cannot be opened \(it was sealed with another key or for another resource\); an admin must set it again/);
    assert.doesNotMatch(gw.log, /S3cr3t/);
  } finally {
    await gw.kill();
    await t.close();
  }
});

test('a GCM tag shorter than 16 bytes is refused', () => {
  const box = testSecrets();
  const sealed = box.seal({ username: 'u', password: 'p' }, 'r1');
  const [v, iv, tag, ct] = sealed.split('.');
  const short = [v, iv, Buffer.from(tag!, 'base64').subarray(0, 4).toString('base64'), ct].join('.');
  assert.throws(() => box.open(short, 'r1'), /unknown credential format/);
});

test('credentials sealed in the first format are sealed again at start, bound to their resource', async () => {
  const { db, drop } = await openTestDb();
  const key = crypto.randomBytes(32);
  const secrets = SecretBox.fromKey(key.toString('hex'));
  try {
    const id = crypto.randomUUID();
    // The first format: AES-256-GCM with no associated data.
    const iv = crypto.randomBytes(12);
    const c = crypto.createCipheriv('aes-256-gcm', key, iv);
    const ct = Buffer.concat([c.update(JSON.stringify({ username: 'legacy', password: 'pw' })), c.final()]);
    const v1 = `v1.${iv.toString('base64')}.${c.getAuthTag().toString('base64')}.${ct.toString('base64')}`;
    await db.query(`INSERT INTO resources (id, name, kind, target, gateway, credential_enc) VALUES ($1, 'legacy', 'ssh', '127.0.0.1:22', 'g', $2)`, [id, v1]);
    const t = await startTestServer({}, { db, secrets });
    await t.close();
    const [row] = await db.query<{ credential_enc: string }>('SELECT credential_enc FROM resources WHERE id = $1', [id]);
    assert.match(row!.credential_enc, /^v2\./);
    assert.deepEqual(secrets.open(row!.credential_enc, id), { username: 'legacy', password: 'pw' });
  } finally {
    await drop();
  }
});

test('AIRLOCK_METRICS_TOKEN opens /metrics; a wrong token of any length does not', async () => {
  const old = process.env.AIRLOCK_METRICS_TOKEN;
  process.env.AIRLOCK_METRICS_TOKEN = 'scrape-me-0123456789';
  const t = await startTestServer({});
  try {
    const get = (tok: string) => fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${tok}` } }).then((r) => r.status);
    assert.equal(await get('scrape-me-0123456789'), 200);
    for (const wrong of ['scrape-me-0123456788', 'scrape-me', 'scrape-me-0123456789x']) assert.equal(await get(wrong), 401, wrong);
  } finally {
    if (old === undefined) delete process.env.AIRLOCK_METRICS_TOKEN;
    else process.env.AIRLOCK_METRICS_TOKEN = old;
    await t.close();
  }
});

test('the CLI config, which holds a token, is made readable by its owner only even when it existed with another mode', () => {
  const dir = tempDir('airlock-cfg-');
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, '{}', { mode: 0o644 });
  fs.chmodSync(file, 0o644);
  writeConfig({ server: 'http://127.0.0.1:7070', token: 'al_x' }, file);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
});

test("the calculator knows its own names only (no prototype keys)", () => {
  for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) assert.throws(() => evaluate(`${name}(1)`), name);
  assert.equal(evaluate('max(pi, e)'), Math.PI);
});

test('a server listening beyond loopback without TLS warns that tokens cross the network in clear text', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-bind-'));
  try {
    const srv = runCli(['server', '--host', '0.0.0.0', '--port', '0', '--data-dir', path.join(dir, 'data')], { AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json') });
    await srv.waitErr(/listening on/);
    assert.match(srv.stderr, /warning: listening on 0\.0\.0\.0 without TLS: API and gateway tokens cross the network in clear text/);
    srv.proc.kill('SIGTERM');
    assert.equal(await srv.exited(), 0);
    const local = runCli(['server', '--port', '0', '--data-dir', path.join(dir, 'data')], { AIRLOCK_CLI_CONFIG: path.join(dir, 'cli.json') });
    await local.waitErr(/listening on/);
    assert.doesNotMatch(local.stderr, /without TLS/);
    local.proc.kill('SIGTERM');
    await local.exited();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
