// Run by test/tube.test.ts in a child process: two tubes joined by one path, a data channel
// between two peers of this process (direct) or a WebSocket through a local server (relay), then
// one scenario; prints its result as JSON and exits. In a child of its own because
// node-datachannel's threads can keep a process alive (the CLI exits the same way).
import type { AddressInfo } from 'node:net';
import type { DataChannel } from 'node-datachannel';
import WebSocket, { WebSocketServer } from 'ws';
import { Peer } from '../../src/tube/peer.js';
import { HIGH_WATER, Tube } from '../../src/tube/tube.js';
import { DataChannelTransport, WsTransport, whenOpen, LOOPBACK_ICE, type PathKind } from '../../src/tube/transport.js';
import { F } from '../../src/tube/frame.js';
import { within } from './within.js';


const peers: Peer[] = [];

/**
 * Opening the channel is not what the scenarios are about: in-process peers sometimes never
 * connect (libdatachannel: "a remote candidate without ICE transport", ~1 run in 30; in a launch
 * the relay carries the session then), so a pair that does not open in 10 s is made again.
 */
async function directPair(attempt = 1): Promise<[Tube, Tube]> {
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
    return directPair(attempt + 1);
  }
  return [ta, tb];
}

const servers: WebSocketServer[] = [];

/** The relay's shape without the server in between: a WebSocket, a WsTransport at each end. */
async function relayPair(): Promise<[Tube, Tube]> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  servers.push(wss);
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const serverSide = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
  const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, { perMessageDeflate: false });
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const ta = new Tube();
  const tb = new Tube();
  ta.add(new WsTransport(ws));
  tb.add(new WsTransport(await serverSide));
  return [ta, tb];
}

const path = process.argv[3] as PathKind;
const tubePair = (): Promise<[Tube, Tube]> => (path === 'relay' ? relayPair() : directPair());

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
  /**
   * 16 MiB in 16 KiB frames, the sender holding off while the tube is congested (as a connection
   * does): every byte arrives, in order, and no more than the high-water mark waits to go out.
   */
  async bulk() {
    const [a, b] = await tubePair();
    const total = 16 << 20;
    const frame = 16 << 10;
    let received = 0;
    let inOrder = true;
    const all = new Promise<void>((resolve) =>
      b.on('frame', (f) => {
        for (let i = 0; i < f.payload.length; i += 4096) if (f.payload.readUInt32BE(i) !== (received + i) >>> 12) inOrder = false;
        received += f.payload.length;
        if (received >= total) resolve();
      }),
    );
    let sent = 0;
    let maxWaiting = 0;
    while (sent < total) {
      while (a.congested) await new Promise<void>((resolve) => a.once('drain', () => resolve()));
      const buf = Buffer.alloc(frame);
      for (let i = 0; i < frame; i += 4096) buf.writeUInt32BE((sent + i) >>> 12, i);
      a.send(F.DATA, 3, buf);
      sent += frame;
      maxWaiting = Math.max(maxWaiting, (a as any).sendPath.buffered());
    }
    await within(all, () => `${received} of ${total} bytes arrived`, 60_000);
    return { received, inOrder, underHighWater: maxWaiting <= HIGH_WATER + frame, sent: a.bytesSent, counted: b.bytesReceived };
  },
  /** A 200 KiB frame (under every path's message limit) crosses whole. */
  async large() {
    const [a, b] = await tubePair();
    const got = new Promise<Buffer>((resolve) => b.once('frame', (f) => resolve(f.payload)));
    const payload = Buffer.alloc(200 << 10, 7);
    a.send(F.DATA, 9, payload);
    return { same: (await within(got, 'the large frame did not arrive', 20_000)).equals(payload) };
  },
  /** Frames sent just before one side closes arrive before the other side learns of the close. */
  async close() {
    const [a, b] = await tubePair();
    const got: string[] = [];
    b.on('frame', (f) => got.push(f.payload.toString()));
    const closed = new Promise<string>((resolve) => b.once('closed', resolve));
    for (let i = 0; i < 10; i++) a.send(F.DATA, 1, `last ${i}`);
    await new Promise((r) => setImmediate(r)); // the turn's batch leaves before the close
    a.close('done here');
    const reason = await within(closed, 'the other side never learnt of the close', 20_000);
    return { got, reason };
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
for (const w of servers) w.close();
await Peer.allClosed(2000);
process.exit(code);
