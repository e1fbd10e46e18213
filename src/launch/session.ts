// The client side of a session's connections: opens them in the tube and routes frames to them.
import type { Duplex, Writable } from 'node:stream';
import { F, type OpenRequest } from '../tube/frame.js';
import { TubeConn } from '../tube/conn.js';
import type { OpenTube } from './connect.js';

export interface ClientConn {
  conn: TubeConn;
  /** Resolves when the gateway reached the target; rejects with its reason. */
  opened: Promise<void>;
  /** Resolves with the exit status of the remote process (ssh, shell). */
  exit: Promise<number>;
  /** Resolves with the reason if the connection is cut (an error on either side, the tube closed). */
  cut: Promise<string>;
}

export class ClientSession {
  private next = 1;
  private conns = new Map<number, { conn: TubeConn; opened: Deferred<void>; exit: Deferred<number> }>();
  private exits = new Map<number, Deferred<number>>();
  onFirstByte: (() => void) | null = null;
  private closedReason: string | null = null;

  constructor(readonly open: OpenTube) {
    open.tube.on('frame', (f) => {
      if (f.type === F.EXIT) {
        // May come after both sides ended the byte stream.
        this.exits.get(f.conn)?.resolve(f.payload.readInt32BE(0));
        this.exits.delete(f.conn);
        return;
      }
      const c = this.conns.get(f.conn);
      if (!c) return;
      if (f.type === F.OPENED) return c.opened.resolve();
      if (f.type === F.ERROR) {
        const err = targetError(f.payload);
        c.opened.reject(err);
        c.exit.reject(err);
      }
      if ((f.type === F.DATA || f.type === F.STDERR) && this.onFirstByte) {
        this.onFirstByte();
        this.onFirstByte = null;
      }
      c.conn.handle(f.type, f.payload);
    });
    open.tube.onClosed((reason) => {
      this.closedReason = reason;
      for (const e of this.exits.values()) e.reject(new Error(`the tube closed: ${reason}`));
      for (const c of this.conns.values()) {
        const err = new Error(`the tube closed: ${reason}`);
        c.opened.reject(err);
        c.exit.reject(err);
        c.conn.destroy(reason);
      }
    });
  }

  /**
   * Opens a connection to the target and starts moving `stream`'s bytes through it. With
   * `opts.stderr`, the remote process's stderr goes there (else it comes mixed into `stream`).
   */
  connect(stream: Duplex, req: OpenRequest = {}, opts: { expectExit?: boolean; stderr?: Writable } = {}): ClientConn {
    const id = this.next++;
    const conn = new TubeConn(this.open.tube, id);
    if (opts.stderr) {
      conn.stderrSink = opts.stderr;
      req = { ...req, stderr: true };
    }
    const entry = { conn, opened: deferred<void>(), exit: deferred<number>() };
    const cut = deferred<string>();
    this.conns.set(id, entry);
    if (opts.expectExit) this.exits.set(id, entry.exit);
    conn.onFinish = (err) => {
      this.conns.delete(id);
      if (err) cut.resolve(err);
    };
    if (this.closedReason !== null) {
      // The tube closed before this connection could start (a gateway that broke the protocol).
      const err = new Error(`the tube closed: ${this.closedReason}`);
      entry.opened.reject(err);
      entry.exit.reject(err);
      conn.attach(stream);
      conn.destroy(this.closedReason);
      return { conn, opened: entry.opened.promise, exit: entry.exit.promise, cut: cut.promise };
    }
    this.open.tube.send(F.OPEN, id, JSON.stringify(req));
    conn.attach(stream);
    return { conn, opened: entry.opened.promise, exit: entry.exit.promise, cut: cut.promise };
  }

  get tube() {
    return this.open.tube;
  }
}

export class TargetFailure extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

function targetError(payload: Buffer): TargetFailure {
  const text = payload.toString();
  try {
    const o = JSON.parse(text);
    if (o && typeof o.message === 'string') return new TargetFailure(o.message, String(o.code ?? 'failed'));
  } catch {
    /* plain text */
  }
  return new TargetFailure(text || 'the connection was closed by the gateway', 'closed');
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: Error) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}
