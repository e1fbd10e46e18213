// One chat stream WebSocket: batches the events handed to it by one callback into one frame,
// bounds what it holds for a slow client, and tells a client that falls behind to resync
// (then closes) instead of stalling the producer or skipping events.
import type { WebSocket } from 'ws';
import type { Sink } from '../chat/hub.js';
import type { StreamEvent } from '../chat/types.js';
import { CloseCode } from '../codes.js';

export const RESYNC_CLOSE_CODE = CloseCode.resync;

/** How far one socket may fall behind before it is told to resync: what it holds unsent, and how
 * long it may accept nothing (the same timeout bounds how long the resync notice may wait). */
export interface StreamLimits {
  queueBytes: number;
  writeTimeoutMs: number;
}

/** 4 MiB (seconds of the fastest model's output) and 10 s: a client held up longer catches up
 * from the database instead, and the server holds no more for it. */
export const STREAM_LIMITS: StreamLimits = { queueBytes: 4 * 1024 * 1024, writeTimeoutMs: 10_000 };

export class ChatStreamSocket implements Sink {
  private pending: StreamEvent[] = [];
  private scheduled = false;
  private closed = false;
  private unacked = 0;
  private lastSent: Promise<void> = Promise.resolve();
  private lastProgress = Date.now();
  private watchdog: NodeJS.Timeout | null = null;
  private maxBytes: number;
  private writeTimeoutMs: number;
  lastSeq = 0;
  onClose: (() => void) | null = null;

  /** after: the client has every event up to this seq (it resumes from there). */
  constructor(
    private ws: WebSocket,
    private after = 0,
    limits: StreamLimits = STREAM_LIMITS,
  ) {
    this.maxBytes = limits.queueBytes;
    this.writeTimeoutMs = limits.writeTimeoutMs;
    ws.on('close', () => this.shutdown());
    ws.on('error', () => this.shutdown());
  }

  push(events: StreamEvent[]): void {
    if (this.closed) return;
    // An event the client already has can still arrive live: read from the database by its
    // previous connection before this replica's bus delivered it.
    for (const e of events) if (e.seq === undefined || e.seq > this.after) this.pending.push(e);
    if (!this.scheduled) {
      this.scheduled = true;
      // A microtask, not setImmediate: events published by one callback (a provider read, a
      // commit) still leave as one frame, but they leave when that callback is done instead of
      // after every other callback the loop has ready (under load, tens of ms of them).
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    if (this.closed || !this.pending.length) return;
    const batch = this.pending;
    this.pending = [];
    // Bytes still waiting from earlier frames mean the client reads slower than we produce.
    if (this.ws.bufferedAmount > this.maxBytes) {
      this.resync(`the client fell more than ${this.maxBytes} bytes behind`);
      return;
    }
    const frame = JSON.stringify(batch);
    for (const e of batch) if (e.seq !== undefined && e.seq > this.lastSeq) this.lastSeq = e.seq;
    this.unacked++;
    this.lastSent = new Promise<void>((resolve) =>
      this.ws.send(frame, (err) => {
        resolve();
        if (err) return this.shutdown();
        this.unacked--;
        this.lastProgress = Date.now();
      }),
    );
    if (this.ws.bufferedAmount > 0 && !this.watchdog) {
      // Only armed while bytes wait in user space; a healthy client never sees it fire.
      this.watchdog = setInterval(() => this.checkProgress(), Math.max(50, this.writeTimeoutMs / 4));
    }
  }

  /**
   * Resolves once every frame pushed so far has been handed to the socket (or it closed); a
   * client that takes nothing for the write timeout is told to resync. Pushed events leave on a
   * microtask: this waits for that flush first.
   */
  async drained(): Promise<void> {
    await Promise.resolve();
    if (this.closed || this.ws.bufferedAmount === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => (timer = setTimeout(r, this.writeTimeoutMs)));
    await Promise.race([this.lastSent, late]);
    clearTimeout(timer);
    if (!this.closed && this.ws.bufferedAmount > this.maxBytes) this.resync(`the client took no data for ${this.writeTimeoutMs} ms`);
  }

  private checkProgress(): void {
    if (this.closed) return;
    if (this.unacked === 0 && this.ws.bufferedAmount === 0) {
      clearInterval(this.watchdog!);
      this.watchdog = null;
      return;
    }
    if (Date.now() - this.lastProgress > this.writeTimeoutMs) {
      this.resync(`the client accepted no data for ${this.writeTimeoutMs} ms`);
    }
  }

  /** Drops what is queued, tells the client where to resume, and closes. */
  resync(reason: string): void {
    if (this.closed) return;
    const last = this.lastSeq;
    this.shutdown();
    const msg = JSON.stringify([{ type: 'resync', reason, last_seq: last }]);
    try {
      this.ws.send(msg, () => this.ws.close(RESYNC_CLOSE_CODE, 'resync'));
    } catch {
      /* socket already gone */
    }
    // The notice waits behind what the client has not read yet; give it the write timeout to
    // get there, then cut a client that reads nothing at all.
    setTimeout(() => this.ws.terminate(), this.writeTimeoutMs).unref();
  }

  close(code: number, reason: string): void {
    this.shutdown();
    this.ws.close(code, reason);
  }

  private shutdown(): void {
    if (this.closed) return;
    this.closed = true;
    this.pending = [];
    if (this.watchdog) clearInterval(this.watchdog);
    this.onClose?.();
  }
}
