// Receiver half of bench:launch's bare data channel measurement, in its own process (as the
// gateway is): signalling as JSON lines on stdin/stdout, the rate as a final {"mb_s"} line.
import readline from 'node:readline';
import { LOOPBACK_ICE } from '../src/tube/transport.js';
import { Peer } from '../src/tube/peer.js';

const bytes = Number(process.argv[2]);
const peer = new Peer('bare-receiver', (s) => process.stdout.write(JSON.stringify(s) + '\n'), LOOPBACK_ICE);
peer.pc.onDataChannel((dc) => {
  let n = 0;
  let t0 = 0;
  dc.onMessage((m) => {
    if (!t0) t0 = performance.now();
    const before = n;
    n += (m as Buffer).length;
    // A one-byte note back every MiB, as the tube's window updates are: with traffic in one
    // direction only, node-datachannel stalls after ~32 MiB.
    if (n >> 20 !== before >> 20 && dc.isOpen()) dc.sendMessageBinary(Buffer.alloc(1));
    if (n >= bytes) {
      process.stdout.write(JSON.stringify({ mb_s: bytes / 1e6 / ((performance.now() - t0) / 1000) }) + '\n', () => process.exit(0));
    }
  });
});
readline.createInterface({ input: process.stdin }).on('line', (l) => peer.remote(JSON.parse(l)));
