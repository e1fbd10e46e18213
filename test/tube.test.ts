// Transport conformance: one set of cases run against each path a tube can take, a real WebRTC
// data channel (node-datachannel) and a WebSocket (the relay's transport). The tubes run in a
// child process (test/helpers/tube-pair.ts), which exits the way the CLI does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { F } from '../src/tube/frame.js';

const PAIR = fileURLToPath(new URL('./helpers/tube-pair.ts', import.meta.url));

/** Runs one scenario of tube-pair.ts on one path; a child that hangs is killed after 90 s and fails the test. */
function scenario(name: string, path: 'direct' | 'relay'): Promise<any> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--import', 'tsx', PAIR, name, path], { timeout: 90_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`tube-pair ${name} ${path}: ${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}

for (const path of ['direct', 'relay'] as const) {
  test(`${path}: frames cross in order, and both sides count the same bytes`, async () => {
    const r = await scenario('order', path);
    assert.deepEqual(r.got, Array.from({ length: 100 }, (_, i) => `${F.DATA}:7:frame ${i}`));
    assert.equal(r.sent, r.received);
  });

  test(`${path}: 16 MiB under flow control arrive whole and in order, with no more than the high-water mark waiting`, async () => {
    const r = await scenario('bulk', path);
    assert.deepEqual(r, { received: 16 << 20, inOrder: true, underHighWater: true, sent: 16 << 20, counted: 16 << 20 });
  });

  test(`${path}: a 200 KiB frame crosses whole`, async () => {
    assert.deepEqual(await scenario('large', path), { same: true });
  });

  test(`${path}: frames sent before a close arrive before the other side learns of it`, async () => {
    const r = await scenario('close', path);
    assert.deepEqual(r.got, Array.from({ length: 10 }, (_, i) => `last ${i}`));
    assert.match(r.reason, path === 'direct' ? /^data channel closed/ : /^relay closed \(1000 done\)/);
  });
}

test('direct: a frame the data channel refuses closes the tube with the reason, on both sides; it is never dropped silently', async () => {
  const r = await scenario('oversize', 'direct');
  // Larger than the channel's message size limit (256 KiB): the native send throws.
  assert.match(r.sender, /^data channel send failed: .*Message size exceeds limit/);
  assert.equal(r.receiver, 'data channel closed');
});
