// A tube: many connections multiplexed over whichever path is up. Each side sends on the first
// path that becomes ready (announced by START) and moves to the direct path when it opens (the
// last frame on the old path is SWITCH), so the receiver can keep every connection's bytes in
// order while both paths briefly carry frames.
import { EventEmitter } from 'node:events';
import { F, decode, encode, type Frame } from './frame.js';
import type { PathKind, Transport } from './transport.js';

/** Above this many bytes waiting on the path, sources pause until it drains. */
export const HIGH_WATER = 4 << 20;

export interface TubeEvents {
  frame: [Frame];
  path: [PathKind];
  drain: [];
  closed: [string];
}

export class Tube extends EventEmitter<TubeEvents> {
  private paths = new Map<PathKind, Transport>();
  private sendPath: Transport | null = null;
  private early: Buffer[] = [];
  private earlyBytes = 0;
  private recvActive: PathKind | null = null;
  private held: Record<PathKind, Frame[]> = { direct: [], relay: [] };
  private done = false;
  bytesSent = 0;
  bytesReceived = 0;

  /** The path this side sends on now (null before any is ready). */
  get path(): PathKind | null {
    return this.sendPath?.kind ?? null;
  }

  get closed(): boolean {
    return this.done;
  }

  /** Adds a path that is ready to carry frames. */
  add(t: Transport): void {
    if (this.done) return t.close();
    this.paths.set(t.kind, t);
    t.onMessage((buf) => {
      let f: Frame;
      try {
        f = decode(buf);
      } catch (err) {
        return this.close(`bad frame: ${(err as Error).message}`);
      }
      this.receive(t.kind, f);
    });
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
      this.sendPath.send(encode(F.SWITCH, 0));
      this.sendPath = t;
      this.emit('path', t.kind);
    }
  }

  send(type: number, conn: number, payload?: Buffer | string): void {
    if (this.done) return;
    this.sendFrame(encode(type, conn, payload));
  }

  /**
   * Sends a frame the caller has built in a buffer it reuses as soon as this returns: as is on a
   * path that copies what it is given at once (the data channel), else copied first.
   */
  sendBorrowed(frame: Buffer): void {
    if (this.done) return;
    this.sendFrame(this.sendPath?.copiesOnSend ? frame : Buffer.from(frame));
  }

  private sendFrame(buf: Buffer): void {
    if (buf[0] === F.DATA) this.bytesSent += buf.length - 5;
    if (this.sendPath) this.sendPath.send(buf);
    else {
      this.early.push(buf);
      this.earlyBytes += buf.length;
    }
  }

  /** True while sources should hold off: too many bytes wait to go out. */
  get congested(): boolean {
    return this.sendPath ? this.sendPath.buffered() > HIGH_WATER : this.earlyBytes > HIGH_WATER;
  }

  private receive(kind: PathKind, f: Frame): void {
    if (this.recvActive === null && f.conn === 0 && f.type === F.START) {
      this.recvActive = kind;
      return this.release(kind);
    }
    if (this.recvActive !== kind) {
      this.held[kind].push(f);
      return;
    }
    if (f.conn === 0 && f.type === F.SWITCH) {
      this.recvActive = kind === 'relay' ? 'direct' : 'relay';
      return this.release(this.recvActive);
    }
    if (f.type === F.DATA) this.bytesReceived += f.payload.length;
    this.emit('frame', f);
  }

  private release(kind: PathKind): void {
    const frames = this.held[kind];
    this.held[kind] = [];
    for (const f of frames) {
      if (this.recvActive !== kind) this.held[kind].push(f);
      else this.receive(kind, f);
    }
  }

  close(reason = 'closed'): void {
    if (this.done) return;
    this.done = true;
    for (const t of this.paths.values()) t.close();
    this.paths.clear();
    this.emit('closed', reason);
  }
}
