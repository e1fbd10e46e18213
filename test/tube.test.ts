// A tube over a real WebRTC data channel pair (node-datachannel): the peers run in a child process
// (test/helpers/tube-pair.ts), which exits the way the CLI does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { F } from '../src/tube/frame.js';

const PAIR = fileURLToPath(new URL('./helpers/tube-pair.ts', import.meta.url));

/** Runs one scenario of tube-pair.ts; a child that hangs is killed after 90 s and fails the test. */
function scenario(name: string): Promise<any> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--import', 'tsx', PAIR, name], { timeout: 90_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`tube-pair ${name}: ${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}

test('frames cross a data channel in order', async () => {
  const r = await scenario('order');
  assert.deepEqual(r.got, Array.from({ length: 100 }, (_, i) => `${F.DATA}:7:frame ${i}`));
  assert.equal(r.sent, r.received);
});

test('a frame the data channel refuses closes the tube with the reason, on both sides; it is never dropped silently', async () => {
  const r = await scenario('oversize');
  // Larger than the channel's message size limit (rtcConfig: 256 KiB): the native send throws.
  assert.match(r.sender, /^data channel send failed: .*Message size exceeds limit/);
  assert.equal(r.receiver, 'data channel closed');
});
