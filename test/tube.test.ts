// A tube over a real WebRTC data channel pair (node-datachannel, both peers in this process).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import type { DataChannel } from 'node-datachannel';
import { Peer } from '../src/tube/peer.js';
import { Tube } from '../src/tube/tube.js';
import { DataChannelTransport } from '../src/tube/transport.js';
import { F, type Frame } from '../src/tube/frame.js';

process.env.AIRLOCK_ICE_BIND_ADDRESS = '127.0.0.1';

const peers: Peer[] = [];
after(async () => {
  for (const p of peers) p.close();
  await Peer.allClosed(2000);
});

/** Two tubes joined by a data channel between two peers of this process. */
async function tubePair(): Promise<[Tube, Tube]> {
  let a: Peer, b: Peer;
  a = new Peer('a', (s) => b.remote(s));
  b = new Peer('b', (s) => a.remote(s));
  peers.push(a, b);
  const ta = new Tube();
  const tb = new Tube();
  const bOpen = new Promise<void>((resolve) =>
    b.pc.onDataChannel((dc: DataChannel) => {
      const t = new DataChannelTransport(dc);
      const add = () => {
        tb.add(t);
        resolve();
      };
      if (dc.isOpen()) add();
      else dc.onOpen(add);
    }),
  );
  const dc = a.pc.createDataChannel('tube');
  const t = new DataChannelTransport(dc);
  const aOpen = new Promise<void>((resolve) =>
    dc.onOpen(() => {
      ta.add(t);
      resolve();
    }),
  );
  await Promise.all([aOpen, bOpen]);
  return [ta, tb];
}

test('frames cross a data channel in order', async () => {
  const [a, b] = await tubePair();
  const got: Frame[] = [];
  const all = new Promise<void>((resolve) =>
    b.on('frame', (f) => {
      got.push(f);
      if (got.length === 100) resolve();
    }),
  );
  for (let i = 0; i < 100; i++) a.send(F.DATA, 7, Buffer.from(`frame ${i}`));
  await all;
  assert.deepEqual(
    got.map((f) => [f.type, f.conn, f.payload.toString()]),
    Array.from({ length: 100 }, (_, i) => [F.DATA, 7, `frame ${i}`]),
  );
  assert.equal(a.bytesSent, b.bytesReceived);
  a.close();
  b.close();
});

test('a frame the data channel refuses closes the tube with the reason; it is never dropped silently', async () => {
  const [a, b] = await tubePair();
  const closed = new Promise<string>((resolve) => a.once('closed', resolve));
  // Larger than the channel's message size limit (rtcConfig: 256 KiB): the native send throws.
  a.send(F.DATA, 1, Buffer.alloc(300_000));
  assert.match(await closed, /^data channel send failed: .+/);
  assert.equal(a.closed, true);
  // The other side learns it too: the channel closes under it.
  await new Promise<void>((resolve) => (b.closed ? resolve() : b.once('closed', () => resolve())));
});
