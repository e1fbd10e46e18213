// Run by test/tube.test.ts in a child process: two tubes joined by a data channel between two
// peers of this process, then one scenario; prints its result as JSON and exits. In a child of its
// own because node-datachannel's threads can keep a process alive (the CLI exits the same way).
import type { DataChannel } from 'node-datachannel';
import { Peer } from '../../src/tube/peer.js';
import { Tube } from '../../src/tube/tube.js';
import { DataChannelTransport, whenOpen, LOOPBACK_ICE } from '../../src/tube/transport.js';
import { F } from '../../src/tube/frame.js';
import { within } from './within.js';


const peers: Peer[] = [];

/**
 * Opening the channel is not what the scenarios are about: in-process peers sometimes never
 * connect (libdatachannel: "a remote candidate without ICE transport", ~1 run in 30; in a launch
 * the relay carries the session then), so a pair that does not open in 10 s is made again.
 */
async function tubePair(attempt = 1): Promise<[Tube, Tube]> {
  let a: Peer, b: Peer;
  // Signals go across on a later turn of the event loop, as they would through the server.
  a = new Peer('a', (s) => setImmediate(() => b.remote(s)), LOOPBACK_ICE);
  b = new Peer('b', (s) => setImmediate(() => a.remote(s)), LOOPBACK_ICE);
  peers.push(a, b);
  const ta = new Tube();
  const tb = new Tube();
  const bOpen = new Promise<void>((resolve) =>
    b.pc.onDataChannel((dc: DataChannel) => {
      const t = new DataChannelTransport(dc);
      whenOpen(dc, () => {
        tb.add(t);
        resolve();
      });
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
  try {
    await within(Promise.all([aOpen, bOpen]), `the data channel did not open in ${attempt} attempts`, 10_000);
  } catch (err) {
    a.close();
    b.close();
    if (attempt === 3) throw err;
    return tubePair(attempt + 1);
  }
  return [ta, tb];
}

const scenarios: Record<string, () => Promise<unknown>> = {
  /** 100 frames one way: what arrived, in order, and the byte counts of both sides. */
  async order() {
    const [a, b] = await tubePair();
    const got: string[] = [];
    const all = new Promise<void>((resolve) =>
      b.on('frame', (f) => {
        got.push(`${f.type}:${f.conn}:${f.payload.toString()}`);
        if (got.length === 100) resolve();
      }),
    );
    for (let i = 0; i < 100; i++) a.send(F.DATA, 7, Buffer.from(`frame ${i}`));
    await within(all, () => `${got.length} of 100 frames arrived`, 20_000);
    return { got, sent: a.bytesSent, received: b.bytesReceived };
  },
  /** A frame over the channel's message size limit: how each side's tube ends. */
  async oversize() {
    const [a, b] = await tubePair();
    const aClosed = new Promise<string>((resolve) => a.once('closed', resolve));
    const bClosed = new Promise<string>((resolve) => b.once('closed', resolve));
    a.send(F.DATA, 1, Buffer.alloc(300_000));
    return {
      sender: await within(aClosed, 'the sending tube did not close', 20_000),
      receiver: await within(bClosed, 'the receiving tube did not close', 20_000),
    };
  },
};

const name = process.argv[2] ?? '';
let code = 0;
try {
  const run = scenarios[name];
  if (!run) throw new Error(`unknown scenario "${name}"`);
  process.stdout.write(`${JSON.stringify(await run())}\n`);
} catch (err) {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  code = 1;
}
for (const p of peers) p.close();
await Peer.allClosed(2000);
process.exit(code);
