// A tube: many connections multiplexed over whichever path is up. Each side sends on the first
// path that becomes ready (announced by START) and moves to the direct path when it opens (the
// last frame on the old path is SWITCH), so the receiver can keep every connection's bytes in
// order while both paths briefly carry frames.
import { EventEmitter } from 'node:events';
import { F, FrameError, batch, decode, encode, unbatch, type Frame } from './frame.js';
import type { PathKind, Transport } from './transport.js';

/** Above this many bytes waiting on the path, sources pause until it drains. */
export const HIGH_WATER = 4 << 20;
/**
 * Most bytes kept from a path that is not the active one (frames sent on the direct path before
 * the relay's SWITCH arrives): a peer that sends there without ever switching ends the tube.
 */
const HELD_MAX = 32 << 20;
/** A frame this large goes out at once (a bulk read); smaller ones wait for the turn's batch. */
const BULK_FRAME = 16 << 10;
/** A batch this large goes out without waiting for the end of the turn. */
const BATCH_BYTES = 64 << 10;

export interface TubeEvents {
  frame: [Frame];
  path: [PathKind];
  drain: [];
  closed: [string];
}

export class Tube extends EventEmitter<TubeEvents> {
  constructor() {
    super();
    // Every open connection listens for 'drain' (and removes its listener when it ends): many
    // connections are many listeners, not a leak.
    this.setMaxListeners(0);
  }

  private paths = new Map<PathKind, Transport>();
  private sendPath: Transport | null = null;
  private early: Buffer[] = [];
  private earlyBytes = 0;
  private recvActive: PathKind | null = null;
  private held: Record<PathKind, Frame[]> = { direct: [], relay: [] };
  private heldBytes = 0;
  private done = false;
  private closeReason = '';
  bytesSent = 0;
  bytesReceived = 0;

  /** The path this side sends on now (null before any is ready). */
  get path(): PathKind | null {
    return this.sendPath?.kind ?? null;
  }

  get closed(): boolean {
    return this.done;
  }

  /** Calls fn with the reason once the tube is closed: now, if it already is. */
  onClosed(fn: (reason: string) => void): void {
    if (this.done) fn(this.closeReason);
    else this.once('closed', fn);
  }

  /** Adds a path that is ready to carry frames. */
  add(t: Transport): void {
    if (this.done) return t.close();
    this.paths.set(t.kind, t);
    t.onDrain(() => this.emit('drain'));
    t.onClose((reason) => {
      this.paths.delete(t.kind);
      // Losing the path we send on (or the only one) ends the tube; losing an idle relay does not.
      if (this.sendPath === t || this.paths.size === 0) this.close(reason);
    });
    if (!this.sendPath) {
      this.sendPath = t;
      t.send(encode(F.START, 0));
      for (const b of this.early) t.send(b);
      this.early = [];
      this.earlyBytes = 0;
      this.emit('path', t.kind);
      this.emit('drain');
    } else if (this.sendPath.kind === 'relay' && t.kind === 'direct') {
      this.flush(); // what waits goes out on the old path, before its last frame
      this.sendPath.send(encode(F.SWITCH, 0));
      this.sendPath = t;
      this.emit('path', t.kind);
    }
    // Last: a path can hand over frames that arrived before it was added, and one of them may end
    // the tube. Nothing a peer sends may throw out of here: a throw would escape into the
    // socket's event and end the process, and every other session with it. A frame that breaks
    // the protocol, or one that a handler fails on, ends this tube only.
    t.onMessage((buf) => {
      if (this.done) return;
      try {
        const f = decode(buf);
        if (f.type !== F.BATCH) this.receive(t.kind, f);
        else for (const inner of unbatch(f.payload)) this.receive(t.kind, inner);
      } catch (err) {
        this.close(err instanceof FrameError ? `protocol error: ${err.message}` : `internal error on a frame: ${(err as Error)?.message ?? err}`);
      }
    });
  }

  send(type: number, conn: number, payload?: Buffer | string): void {
    if (this.done) return;
    this.sendFrame(encode(type, conn, payload));
  }

  /**
   * Sends a frame the caller has built in a buffer it reuses as soon as this returns: a bulk one
   * as is on a path that copies what it is given at once (the data channel), else copied first.
   */
  sendBorrowed(frame: Buffer): void {
    if (this.done) return;
    this.sendFrame(frame.length >= BULK_FRAME && this.sendPath?.copiesOnSend ? frame : Buffer.from(frame), true);
  }

  /**
   * Small frames wait for the end of this turn of the event loop and leave together as one
   * message (a BATCH frame): under request/response load many connections' frames are ready in
   * the same turn, and each message costs every process on the path its own framing, system
   * calls and wake-ups (the relay crosses three). A bulk frame goes at once, after what waits.
   * mayBorrow: the buffer is the caller's again once this returns (sent now, never kept).
   */
  private sendFrame(buf: Buffer, mayBorrow = false): void {
    if (buf[0] === F.DATA || buf[0] === F.STDERR) this.bytesSent += buf.length - 5;
    if (!this.sendPath) {
      this.early.push(mayBorrow ? Buffer.from(buf) : buf);
      this.earlyBytes += buf.length;
      return;
    }
    if (buf.length >= BULK_FRAME) {
      this.flush();
      this.sendPath.send(buf);
      return;
    }
    this.outbox.push(buf);
    this.outboxBytes += buf.length;
    if (this.outboxBytes >= BATCH_BYTES) return this.flush();
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushSoon);
    }
  }

  private outbox: Buffer[] = [];
  private outboxBytes = 0;
  private flushScheduled = false;
  private flushSoon = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  /** Sends what waits: one frame as it is, more as one BATCH. */
  private flush(): void {
    const frames = this.outbox;
    if (!frames.length || !this.sendPath || this.done) return;
    this.outbox = [];
    this.outboxBytes = 0;
    this.sendPath.send(frames.length === 1 ? frames[0]! : batch(frames));
  }

  /** True while sources should hold off: too many bytes wait to go out. */
  get congested(): boolean {
    return this.sendPath ? this.sendPath.buffered() + this.outboxBytes > HIGH_WATER : this.earlyBytes > HIGH_WATER;
  }

  private receive(kind: PathKind, f: Frame): void {
    if (this.done) return;
    if (this.recvActive === null && f.conn === 0 && f.type === F.START) {
      this.recvActive = kind;
      return this.release(kind);
    }
    if (this.recvActive !== kind) {
      this.heldBytes += f.payload.length + 5;
      if (this.heldBytes > HELD_MAX) throw new FrameError(`more than ${HELD_MAX} bytes sent on the ${kind} path without a switch to it`);
      this.held[kind].push(f);
      return;
    }
    if (f.conn === 0 && f.type === F.SWITCH) {
      this.recvActive = kind === 'relay' ? 'direct' : 'relay';
      return this.release(this.recvActive);
    }
    if (f.type === F.DATA || f.type === F.STDERR) this.bytesReceived += f.payload.length;
    this.emit('frame', f);
  }

  private release(kind: PathKind): void {
    const frames = this.held[kind];
    this.held[kind] = [];
    for (const f of frames) {
      this.heldBytes -= f.payload.length + 5;
      // receive() holds it again (and counts it) if a SWITCH among these moved the active path.
      this.receive(kind, f);
    }
  }

  close(reason = 'closed'): void {
    if (this.done) return;
    this.done = true;
    this.closeReason = reason;
    for (const t of this.paths.values()) t.close();
    this.paths.clear();
    this.emit('closed', reason);
  }
}
