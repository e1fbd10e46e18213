// Run by test/tube-fuzz.test.ts in a child process (node-datachannel's threads can keep a process
// alive): a hostile side of the tube protocol, on the relay path or the direct (WebRTC) path.
//   client MODE: opens one launch session per case and sends that case's frames to the gateway.
//   gateway MODE: connects with a gateway token and answers every session with a case's frames.
// Prints one JSON line: what happened to each case.
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import type { DataChannel } from 'node-datachannel';
import { LOOPBACK_ICE } from '../../src/tube/transport.js';
import { Peer } from '../../src/tube/peer.js';
import { F, encode, u32, i32 } from '../../src/tube/frame.js';
import { wsBase } from '../../src/client/wire.js';


type PathKind = 'relay' | 'direct';

/** One case: the raw messages a hostile side sends after its START. */
export function fuzzCases(seed: number): Record<string, Buffer[]> {
  const raw = (...bytes: number[]) => Buffer.from(bytes);
  const frame = (type: number, conn: number, payload: Buffer = Buffer.alloc(0)) => encode(type, conn, payload);
  const open = frame(F.OPEN, 1, Buffer.from('{}'));
  const cases: Record<string, Buffer[]> = {
    'empty message': [raw()],
    'one byte': [raw(F.DATA)],
    'header cut short': [raw(F.WINDOW, 0, 0, 1)],
    'WINDOW without its count': [open, frame(F.WINDOW, 1)],
    'WINDOW with 3 bytes': [open, frame(F.WINDOW, 1, raw(0, 0, 1))],
    'WINDOW with 5 bytes': [open, frame(F.WINDOW, 1, raw(0, 0, 0, 1, 0))],
    'EXIT without its status': [open, frame(F.EXIT, 1)],
    'EXIT with 2 bytes': [open, frame(F.EXIT, 1, raw(0, 1))],
    'RESIZE with 1 byte': [open, frame(F.RESIZE, 1, raw(80))],
    'RESIZE empty': [open, frame(F.RESIZE, 1)],
    'OPENED with a payload': [frame(F.OPENED, 1, raw(1))],
    'END with a payload': [open, frame(F.END, 1, raw(1, 2))],
    'START with a payload': [frame(F.START, 0, raw(1))],
    'SWITCH with a payload': [frame(F.SWITCH, 0, raw(1, 2, 3))],
    'OPEN of 64 KiB': [frame(F.OPEN, 1, Buffer.alloc(64 << 10, 0x7b))],
    'ERROR of 8 KiB': [open, frame(F.ERROR, 1, Buffer.alloc(8 << 10, 0x41))],
    'BYE of 32 KiB': [frame(F.BYE, 0, Buffer.alloc(32 << 10))],
    'DATA on connection 0': [frame(F.DATA, 0, raw(1, 2, 3))],
    'OPEN on connection 0': [frame(F.OPEN, 0, Buffer.from('{}'))],
    'WINDOW on connection 0': [frame(F.WINDOW, 0, u32(100))],
    'START on a connection': [frame(F.START, 7)],
    'unknown type 0': [frame(0, 1)],
    'unknown type 200': [frame(200, 1, raw(1, 2, 3, 4))],
    'OPEN that is not JSON then DATA': [frame(F.OPEN, 2, Buffer.from('{not json')), frame(F.DATA, 2, raw(1))],
    'EXIT for a connection never opened': [frame(F.EXIT, 99, i32(3))],
    'BATCH cut inside a length': [frame(F.BATCH, 0, Buffer.concat([u32(5), frame(F.END, 1), raw(0, 0)]))],
    'BATCH whose frame runs past it': [frame(F.BATCH, 0, Buffer.concat([u32(500), frame(F.END, 1)]))],
    'BATCH inside a BATCH': [frame(F.BATCH, 0, Buffer.concat([u32(14), frame(F.BATCH, 0, Buffer.concat([u32(5), frame(F.END, 1)]))]))],
    'BATCH holding a short WINDOW': [open, frame(F.BATCH, 0, Buffer.concat([u32(5), frame(F.WINDOW, 1)]))],
    'BATCH on a connection': [frame(F.BATCH, 3, Buffer.concat([u32(5), frame(F.END, 1)]))],
  };
  // Random frames: a random type (some unknown), connection and payload length, several per case.
  let state = seed >>> 0 || 1;
  const rnd = (n: number) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  for (let c = 0; c < 12; c++) {
    const frames: Buffer[] = [];
    for (let i = 0; i < 30; i++) {
      const len = rnd(3) === 0 ? rnd(5) : 5 + rnd(24);
      const b = crypto.randomBytes(len);
      if (len > 0) b[0] = rnd(14);
      if (len >= 5) b.writeUInt32BE(rnd(4), 1);
      frames.push(b);
    }
    cases[`random ${c}`] = frames;
  }
  return cases;
}

/** Cases that break one connection, or nothing: the session goes on. */
export const KEEP_SESSION = new Set(['OPEN that is not JSON then DATA', 'EXIT for a connection never opened', 'flood']);

interface Opts {
  mode: 'client' | 'gateway';
  server: string;
  token: string;
  resource?: string;
  path: PathKind;
  only?: string[];
  /** client mode: instead of the cases, OPEN connection 1 and send it this many MiB with no WINDOW back. */
  floodMiB?: number;
  seed?: number;
}

const opts = (process.argv[2]?.startsWith('{') ? JSON.parse(process.argv[2]) : {}) as Opts;
const peers: Peer[] = [];

function withTimeout<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((r) => (timer = setTimeout(() => r(fallback), ms)))]).finally(() => clearTimeout(timer));
}

/** A raw path to send on: the launch/relay socket's binary frames, or a data channel. */
interface RawPath {
  send(b: Buffer): void;
  /** ERROR frames received (connection → reason). */
  errors: Map<number, string>;
}

function watchFrames(errors: Map<number, string>, b: Buffer): void {
  if (b.length >= 5 && b[0] === F.ERROR) errors.set(b.readUInt32BE(1), b.subarray(5).toString());
}

/** client mode: one launch session; resolves with how the server ended it (null: it did not). */
async function attackGateway(frames: Buffer[], endsSession: boolean): Promise<{ ended: string | null; errors: Record<number, string> }> {
  const ws = new WebSocket(`${wsBase(opts.server)}/api/launch?resource=${encodeURIComponent(opts.resource!)}`, {
    headers: { authorization: `Bearer ${opts.token}` },
    perMessageDeflate: false,
  });
  const errors = new Map<number, string>();
  let ended: (why: string) => void;
  const endedP = new Promise<string>((r) => (ended = r));
  let ready: (p: RawPath) => void;
  const readyP = new Promise<RawPath>((r) => (ready = r));
  let peer: Peer | null = null;
  ws.on('message', (data, isBinary) => {
    if (isBinary) return watchFrames(errors, data as Buffer);
    const msg = JSON.parse(data.toString());
    if (msg.type === 'ended') ended(`ended: ${msg.reason}`);
    if (msg.type === 'relay_ready' && opts.path === 'relay') ready({ send: (b) => ws.send(b, { binary: true }), errors });
    if ((msg.type === 'answer' || msg.type === 'candidate') && peer) peer.remote(msg);
  });
  ws.on('close', (code, reason) => ended(`closed ${code} ${reason}`));
  ws.on('error', () => {});
  await new Promise<void>((r, j) => {
    ws.once('open', () => r());
    ws.once('unexpected-response', () => j(new Error('launch refused')));
  });
  if (opts.path === 'direct') {
    peer = new Peer('fuzz', (s) => ws.send(JSON.stringify(s)), LOOPBACK_ICE);
    peers.push(peer);
    const dc: DataChannel = peer.pc.createDataChannel('tube');
    dc.onMessage((m) => typeof m !== 'string' && watchFrames(errors, Buffer.from(m as Buffer)));
    // Sends after the gateway closed the channel (on the first bad frame) fail: that is the point.
    const send = (b: Buffer) => {
      try {
        if (dc.isOpen()) dc.sendMessageBinary(b);
      } catch {
        /* closed meanwhile */
      }
    };
    dc.onOpen(() => ready({ send, errors }));
  }
  const path = await withTimeout(readyP, 15_000, null);
  if (!path) {
    ws.terminate();
    return { ended: 'path never came up', errors: {} };
  }
  path.send(encode(F.START, 0));
  for (const f of frames) path.send(f);
  if (opts.floodMiB) {
    const chunk = Buffer.alloc(32 << 10, 0x61);
    for (let i = 0; i < opts.floodMiB * 32; i++) path.send(encode(F.DATA, 1, chunk));
  }
  // A case that breaks the protocol ends the session at once; one that does not is given a moment.
  const why = await withTimeout(endedP, endsSession ? 10_000 : 1000, null);
  ws.terminate();
  peer?.close();
  return { ended: why, errors: Object.fromEntries(errors) };
}

/** gateway mode: serves sessions as a gateway would, answering each with the next case's frames. */
async function attackClients(cases: [string, Buffer[]][]): Promise<void> {
  const base = wsBase(opts.server);
  const ctl = new WebSocket(`${base}/api/gateway/connect`, { headers: { authorization: `Bearer ${opts.token}` }, perMessageDeflate: false });
  let next = 0;
  const peersBySession = new Map<string, Peer>();
  ctl.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.type === 'welcome') process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
    if (msg.type === 'session') {
      const [name, frames] = cases[next++ % cases.length]!;
      process.stdout.write(`${JSON.stringify({ session: msg.session, case: name })}\n`);
      const fire = (send: (b: Buffer) => void) => {
        send(encode(F.START, 0));
        for (const f of frames) send(f);
      };
      if (opts.path === 'relay') {
        const relay = new WebSocket(`${base}/api/gateway/relay/${msg.session}`, { headers: { authorization: `Bearer ${opts.token}` }, perMessageDeflate: false });
        relay.on('error', () => {});
        relay.once('open', () => fire((b) => relay.send(b, { binary: true })));
      }
    }
    if (msg.type === 'offer' && opts.path === 'direct') {
      const peer = new Peer('fuzz-gw', (s) => ctl.send(JSON.stringify({ ...s, session: msg.session })), LOOPBACK_ICE);
      peers.push(peer);
      peersBySession.set(msg.session, peer);
      peer.pc.onDataChannel((dc: DataChannel) => {
        const [, frames] = cases[(next - 1) % cases.length]!;
        const go = () => {
          dc.sendMessageBinary(encode(F.START, 0));
          for (const f of frames) dc.sendMessageBinary(f);
        };
        if (dc.isOpen()) go();
        else dc.onOpen(go);
      });
      peer.remote(msg);
    }
    if (msg.type === 'candidate') peersBySession.get(msg.session)?.remote(msg);
  });
  await new Promise<void>((r) => process.stdin.once('end', () => r()).resume());
  ctl.close();
}

// Imported by the test for the case names: runs only as the child.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();

async function main(): Promise<void> {
  let code = 0;
  try {
    const all: [string, Buffer[]][] = opts.floodMiB
      ? [['flood', [encode(F.OPEN, 1, Buffer.from('{}'))]]]
      : Object.entries(fuzzCases(opts.seed ?? 1)).filter(([name]) => !opts.only || opts.only.includes(name));
    if (opts.mode === 'client') {
      const out: Record<string, unknown> = {};
      // A few sessions at a time: the gateway serves them side by side.
      for (let i = 0; i < all.length; i += 6) {
        const batch = all.slice(i, i + 6);
        // A data channel sometimes never connects (libdatachannel, ~1 in 30 on one host; a launch
        // falls back to the relay then): that case runs again on a new session.
        const attack = async (name: string, frames: Buffer[]) => {
          for (let i = 1; ; i++) {
            const r = await attackGateway(frames, !KEEP_SESSION.has(name));
            if (r.ended !== 'path never came up' || i === 3) return r;
          }
        };
        const results = await Promise.all(batch.map(([name, frames]) => attack(name, frames)));
        batch.forEach(([name], j) => (out[name] = results[j]));
      }
      process.stdout.write(`${JSON.stringify(out)}\n`);
    } else await attackClients(all);
  } catch (err) {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    code = 1;
  }
  for (const p of peers) p.close();
  await Peer.allClosed(2000);
  process.exit(code);
}
