// A path that carries tube frames: the WebRTC data channel (direct) or a WebSocket through the
// control plane (relay). Both are message based and expose how many bytes wait to be sent.
import type { WebSocket } from 'ws';
import type { DataChannel } from 'node-datachannel';
import type { Config } from '../config.js';
import { CloseCode } from '../codes.js';

export type PathKind = 'direct' | 'relay';

/** Where a peer looks for a path: STUN/TURN servers, and the one address to gather host candidates on ('' any). */
export interface IceOptions {
  servers: string[];
  bindAddress: string;
}

/** A direct path between peers on this machine only (the tests and benchmarks). */
export const LOOPBACK_ICE: IceOptions = { servers: [], bindAddress: '127.0.0.1' };

/** The direct path's settings, or null when it is turned off (AIRLOCK_WEBRTC=0: relay only). */
export function directPath(c: Pick<Config, 'webrtc' | 'iceServers' | 'iceBindAddress'>): IceOptions | null {
  if (!c.webrtc) return null;
  const servers = c.iceServers
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return { servers, bindAddress: c.iceBindAddress };
}

export interface Transport {
  readonly kind: PathKind;
  /** Whether send() is done with the buffer it is given when it returns (it copied it). */
  readonly copiesOnSend: boolean;
  send(frame: Buffer): void;
  /** Bytes accepted by send() and not yet handed to the network. */
  buffered(): number;
  onMessage(cb: (frame: Buffer) => void): void;
  /** Called when buffered() drops below the low-water mark. */
  onDrain(cb: () => void): void;
  onClose(cb: (reason: string) => void): void;
  close(): void;
}

/** Low-water mark: a congested tube resumes its sources below this. */
export const LOW_WATER = 1 << 20;
/** What a data channel keeps before the tube takes it. */
const EARLY_MAX = 8 << 20;

export class WsTransport implements Transport {
  readonly kind = 'relay' as const;
  // ws may queue the buffer itself until the socket takes it.
  readonly copiesOnSend = false;
  private drainCbs: (() => void)[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(private ws: WebSocket) {}

  send(frame: Buffer): void {
    // A socket past OPEN is closing: its 'close' event follows and ends the tube (onClose) if this
    // was its send path, so a frame dropped here is never mistaken for one delivered.
    if (this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(frame, { binary: true }, () => this.maybeDrain());
  }

  buffered(): number {
    return this.ws.bufferedAmount;
  }

  private maybeDrain(): void {
    if (this.ws.bufferedAmount < LOW_WATER) for (const cb of this.drainCbs) cb();
  }

  onMessage(cb: (frame: Buffer) => void): void {
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) cb(Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer));
    });
  }

  onDrain(cb: () => void): void {
    this.drainCbs.push(cb);
  }

  onClose(cb: (reason: string) => void): void {
    this.ws.on('close', (code, reason) => cb(`relay closed (${code}${reason.length ? ` ${reason}` : ''})`));
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.ws.close(CloseCode.normal, 'done');
  }
}

/** node-datachannel: every native callback is guarded; a throw inside one would abort the process. */
export class DataChannelTransport implements Transport {
  readonly kind = 'direct' as const;
  // sendMessageBinary copies the message into the native side before it returns.
  readonly copiesOnSend = true;
  private closed = false;
  private closeCb: ((reason: string) => void) | null = null;
  private early: Buffer[] | null = [];
  private earlyBytes = 0;
  private deliver: ((frame: Buffer) => void) | null = null;

  /** Create it as soon as the channel exists: messages that arrive before the tube takes it are kept. */
  constructor(private dc: DataChannel) {
    dc.setBufferedAmountLowThreshold(LOW_WATER);
    dc.onMessage(
      guard((msg) => {
        if (typeof msg === 'string') return;
        const buf = Buffer.isBuffer(msg) ? msg : Buffer.from(msg);
        if (this.deliver) return this.deliver(buf);
        this.earlyBytes += buf.length;
        // A peer that floods a channel the tube has not taken yet loses it.
        if (this.earlyBytes > EARLY_MAX) {
          this.early = [];
          this.lost('too much sent before the tube took the data channel');
          return this.close();
        }
        this.early?.push(buf);
      }),
    );
  }

  send(frame: Buffer): void {
    if (this.closed) return;
    try {
      this.dc.sendMessageBinary(frame);
    } catch (err) {
      // The frame is lost: the tube must not go on as if it had been sent, and the other side
      // must learn it (the tube does not close a path that reported itself gone).
      this.lost(`data channel send failed: ${(err as Error).message}`);
      this.close();
    }
  }

  private lost(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeCb?.(reason);
  }

  buffered(): number {
    try {
      return this.closed ? 0 : this.dc.bufferedAmount();
    } catch {
      return 0;
    }
  }

  onMessage(cb: (frame: Buffer) => void): void {
    this.deliver = cb;
    const early = this.early ?? [];
    this.early = null;
    for (const b of early) cb(b);
  }

  onDrain(cb: () => void): void {
    this.dc.onBufferedAmountLow(guard(cb));
  }

  onClose(cb: (reason: string) => void): void {
    this.closeCb = cb;
    this.dc.onClosed(guard(() => this.lost('data channel closed')));
  }

  close(): void {
    this.closed = true;
    try {
      this.dc.close();
    } catch {
      /* already gone */
    }
  }
}

/** Runs `fn` once the channel is open: now if it already is (a channel the other side opened can be open before it is handed over). */
export function whenOpen(dc: DataChannel, fn: () => void): void {
  if (dc.isOpen()) fn();
  else dc.onOpen(guard(fn));
}

/** Where an error thrown inside a WebRTC callback goes (a process's logger); by default nowhere: a user of `airlock launch` can do nothing about one, and its session goes on or ends on its own. */
let callbackErrors: (err: unknown) => void = () => {};

export function reportCallbackErrors(to: (err: unknown) => void): void {
  callbackErrors = to;
}

export function guard<A extends unknown[]>(fn: (...a: A) => void): (...a: A) => void {
  return (...a: A) => {
    try {
      fn(...a);
    } catch (err) {
      callbackErrors(err);
    }
  };
}
