// One connection inside a tube, bridged to a local Node stream (a socket, an SSH channel, a
// PTY, the terminal). Credit-based flow control: a side sends at most WINDOW bytes the other
// side has not yet written out, so a fast source cannot fill a slow side's memory. The receiver
// enforces it too: a peer that sends past its credit (a modified client, a rogue gateway) has the
// connection closed, so what one connection holds is bounded whatever the other side does.
import { Socket, type OnReadOpts } from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';
import { F, MAX_REASON_BYTES, u32 } from './frame.js';
import type { Tube } from './tube.js';

export const MAX_CHUNK = 32 * 1024;
/** What one read of a socket attached with socketReader() takes at most. */
const READ_BYTES = 64 * 1024;
/**
 * Bytes a side may send on one connection before the other has written them out: a protocol
 * constant, the same on both sides (the receiver checks the sender against it).
 */
export const WINDOW = 4 << 20;
/**
 * How far past WINDOW the receiver lets a sender go before it closes the connection: a sender
 * checks its credit after each read of its source, so it can overshoot by one read (at most
 * READ_BYTES from a socket, one chunk of a stream's 'data').
 */
const OVERSHOOT = 1 << 20;

export class TubeConn {
  private credit = WINDOW;
  private unacked = 0;
  /** Bytes received and not yet granted back in a WINDOW frame (queued, being written, unacked). */
  private held = 0;
  private stream: Duplex | null = null;
  private paused = false;
  private ended = { local: false, remote: false };
  private finished = false;
  /** Frames that arrive before the local stream exists (the target is still connecting). */
  private inbox: Buffer[] = [];
  private remoteEndedEarly = false;
  private extras: Readable[] = [];
  private onDrain = () => this.maybeResume();
  /** socketReader(): reads land at offset 5, behind room for a frame header. */
  private readBuf: Buffer | null = null;
  private readBeforeAttach: Buffer[] = [];
  onFinish: ((err?: string) => void) | null = null;

  constructor(
    readonly tube: Tube,
    readonly id: number,
  ) {
    tube.on('drain', this.onDrain);
  }

  /**
   * For a socket this connection will be attached to (net.connect's `onread`): each read lands in
   * one buffer behind room for a frame header and leaves as DATA frames built in place, neither
   * copied nor allocated per read (on the data channel, which copies what it is sent). The socket
   * emits no 'data' events then.
   */
  socketReader(): OnReadOpts {
    const buf = (this.readBuf = Buffer.allocUnsafe(5 + READ_BYTES));
    return { buffer: buf.subarray(5), callback: (n) => this.onSocketRead(n) };
  }

  private onSocketRead(n: number): boolean {
    const buf = this.readBuf!;
    if (!this.stream) {
      this.readBeforeAttach.push(Buffer.from(buf.subarray(5, 5 + n)));
      return true;
    }
    // Each piece's header goes in the 5 bytes before it: the end of the piece sent just before.
    for (let at = 0; at < n; at += MAX_CHUNK) {
      const len = Math.min(MAX_CHUNK, n - at);
      buf[at] = F.DATA;
      buf.writeUInt32BE(this.id, at + 1);
      this.credit -= len;
      this.tube.sendBorrowed(buf.subarray(at, at + 5 + len));
    }
    return !this.holdIfBlocked();
  }

  /** Marks the source paused (true) when the receiver's credit is used up or the path is backed up. */
  private holdIfBlocked(): boolean {
    if (this.credit > 0 && !this.tube.congested) return false;
    this.paused = true;
    return true;
  }

  /** Starts moving bytes between the stream and the tube. */
  attach(stream: Duplex): void {
    if (this.finished) return void stream.destroy();
    this.stream = stream;
    for (const b of this.inbox) stream.write(b, () => this.ack(b.length));
    this.inbox = [];
    if (this.remoteEndedEarly) stream.end();
    for (const b of this.readBeforeAttach) this.sendData(b);
    this.readBeforeAttach = [];
    if (this.readBuf) {
      if (this.holdIfBlocked()) stream.pause();
    } else {
      stream.on('data', (chunk: Buffer) => {
        this.sendData(chunk);
        if (this.holdIfBlocked()) stream.pause();
      });
    }
    // The local side ends when the stream and every extra output (a process's stderr, which can
    // still hold data when its stdout ends) have ended.
    const endLocal = () => {
      if (this.ended.local || this.finished) return;
      this.ended.local = true;
      this.tube.send(F.END, this.id);
    };
    stream.on('end', () =>
      this.afterExtras(() => {
        endLocal();
        this.maybeFinish();
      }),
    );
    stream.on('error', (err) => this.fail(err.message));
    // A stream that is gone cannot take more bytes either: the connection is over.
    stream.on('close', () =>
      this.afterExtras(() => {
        endLocal();
        this.finish();
      }),
    );
  }

  /** Handles a frame for this connection; returns false for types the owner must handle. */
  handle(type: number, payload: Buffer): boolean {
    switch (type) {
      case F.DATA:
      case F.STDERR: {
        const n = payload.length;
        if (this.finished) return true;
        this.held += n;
        if (this.held > WINDOW + OVERSHOOT) {
          this.fail(`flow control: the other side sent ${this.held} bytes past what was written out (window ${WINDOW})`);
          return true;
        }
        if (type === F.STDERR && this.stderrSink) {
          this.stderrSink.write(payload, () => this.ack(n));
          return true;
        }
        if (!this.stream) {
          this.inbox.push(Buffer.from(payload));
          return true;
        }
        if (this.stream.destroyed) return true;
        this.stream.write(payload, () => this.ack(n));
        return true;
      }
      case F.WINDOW: {
        // A grant for more than was sent is as wrong as a send past the credit.
        const n = payload.readUInt32BE(0);
        if (n === 0 || this.credit + n > WINDOW) {
          this.fail(`flow control: the other side granted ${n} bytes, more than were sent`);
          return true;
        }
        this.credit += n;
        this.maybeResume();
        return true;
      }
      case F.END:
        this.ended.remote = true;
        if (this.stream) this.stream.end();
        else this.remoteEndedEarly = true;
        this.maybeFinish();
        return true;
      case F.ERROR:
        this.destroy(payload.toString() || 'closed by the other side');
        return true;
      default:
        return false;
    }
  }

  private ack(n: number): void {
    this.unacked += n;
    // Credit returns in quarters of the window: the sender always has room to keep sending, and a
    // bulk transfer costs one WINDOW frame per quarter window, not one per DATA frame.
    if (this.unacked >= WINDOW / 4) {
      this.tube.send(F.WINDOW, this.id, u32(this.unacked));
      this.held -= this.unacked;
      this.unacked = 0;
    }
  }

  private maybeResume(): void {
    if (!this.paused || this.credit <= 0 || this.tube.congested) return;
    this.paused = false;
    this.stream?.resume();
    for (const x of this.extras) x.resume();
  }

  /** Extra outputs not ended yet, and what waits for them. */
  private extrasOpen = 0;
  private whenExtrasEnd: (() => void)[] = [];

  private afterExtras(fn: () => void): void {
    if (this.extrasOpen === 0) fn();
    else this.whenExtrasEnd.push(fn);
  }

  private maybeFinish(): void {
    if (this.ended.local && this.ended.remote) this.finish();
  }

  /** Where STDERR frames go (the client asked for stderr apart); without it they join the stream. */
  stderrSink: Writable | null = null;

  /** A second output that shares this connection (a process's stderr): under the same credit, as `type` frames. */
  attachExtra(source: Readable, type: typeof F.DATA | typeof F.STDERR = F.DATA): void {
    this.extras.push(source);
    this.extrasOpen++;
    let done = false;
    const ended = () => {
      if (done) return;
      done = true;
      if (--this.extrasOpen === 0) for (const fn of this.whenExtrasEnd.splice(0)) fn();
    };
    source.once('end', ended);
    source.once('close', ended);
    source.on('data', (chunk: Buffer) => {
      if (this.finished) return;
      this.sendData(chunk, type);
      if (this.holdIfBlocked()) source.pause();
    });
  }

  private sendData(chunk: Buffer, type: typeof F.DATA | typeof F.STDERR = F.DATA): void {
    for (let i = 0; i < chunk.length; i += MAX_CHUNK) {
      const piece = chunk.subarray(i, i + MAX_CHUNK);
      this.credit -= piece.length;
      this.tube.send(type, this.id, piece);
    }
  }

  /** Ends the connection with an error sent to the other side. */
  fail(reason: string): void {
    if (this.finished) return;
    this.tube.send(F.ERROR, this.id, Buffer.from(reason).subarray(0, MAX_REASON_BYTES));
    this.destroy(reason);
  }

  /** Ends the connection as cut (an error, or the tube closed): a TCP peer gets a reset, not a clean end. */
  destroy(reason?: string): void {
    if (this.finished) return;
    this.finish(reason ?? 'closed');
    const s = this.stream;
    // A FIN would tell the application on the socket that the stream ended whole, when it was cut
    // short: a download would look complete. RST says it was not. (A reset that arrives together
    // with data can still read as a clean end to a libuv reader: it takes EPOLLHUP after a partial
    // read for EOF without reading the error.)
    if (s instanceof Socket && !s.destroyed) {
      try {
        s.resetAndDestroy();
        return;
      } catch {
        /* not a TCP handle: a plain destroy below */
      }
    }
    s?.destroy();
  }

  private finish(err?: string): void {
    if (this.finished) return;
    this.finished = true;
    this.tube.off('drain', this.onDrain);
    this.onFinish?.(err);
  }
}
