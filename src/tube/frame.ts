// The tube's framing: every message on a transport is one frame,
// [type u8][connection id u32][payload]. Connection 0 is the tube itself.
export const F = {
  /** Client → gateway: open a connection; payload JSON OpenRequest. */
  OPEN: 1,
  /** Gateway → client: the target is connected. */
  OPENED: 2,
  DATA: 3,
  /** No more data from this side (half close). */
  END: 4,
  /** Tear the connection down; payload: a UTF-8 reason. */
  ERROR: 5,
  /** Flow control: the receiver has consumed N more bytes (u32). */
  WINDOW: 6,
  /** Terminal size: u16 cols, u16 rows. */
  RESIZE: 7,
  /** The remote process ended: i32 exit status. */
  EXIT: 8,
  /** Connection 0: the first frame a side sends on the path it starts on. */
  START: 9,
  /** Connection 0: the last frame a side sends on the old path before it moves to the new one. */
  SWITCH: 10,
  /** Connection 0: the sender is done with the session; payload JSON stats. */
  BYE: 11,
  /** Connection 0: several frames as one message; payload: [u32 length][frame] repeated. */
  BATCH: 12,
  /** Gateway → client: bytes of the process's stderr, under the same window as DATA; sent only
   * to a connection whose OPEN asked for it (`stderr: true`), else stderr comes as DATA. */
  STDERR: 13,
} as const;

export type FrameType = (typeof F)[keyof typeof F];

export interface Frame {
  type: number;
  conn: number;
  payload: Buffer;
}

export interface OpenRequest {
  /** A terminal of this size (ssh / shell); absent for a plain byte stream. */
  pty?: { cols: number; rows: number; term: string };
  /** Run this command instead of an interactive shell. */
  exec?: string;
  /** Send the process's stderr as STDERR frames (else it is mixed into DATA). */
  stderr?: boolean;
}

const EMPTY = Buffer.alloc(0);

export function encode(type: number, conn: number, payload: Buffer | string = EMPTY): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeUInt32BE(conn, 1);
  body.copy(out, 5);
  return out;
}

/** A frame that breaks the protocol: the tube that got it closes with this reason. */
export class FrameError extends Error {}

/** Largest OPEN request (JSON) and ERROR reason a side accepts. */
export const MAX_OPEN_BYTES = 16 * 1024;
export const MAX_REASON_BYTES = 4 * 1024;

/**
 * What each frame type's payload must be, checked before any field is read: a peer is not
 * trusted (a user's client can be anything, and so can whatever answers as a gateway), and a
 * read past a short payload throws. conn: whether the type belongs to a connection (else to
 * connection 0, the tube itself).
 */
const SHAPES: Record<number, { conn: boolean; min: number; max: number }> = {
  [F.OPEN]: { conn: true, min: 0, max: MAX_OPEN_BYTES },
  [F.OPENED]: { conn: true, min: 0, max: 0 },
  [F.DATA]: { conn: true, min: 0, max: Infinity },
  [F.STDERR]: { conn: true, min: 0, max: Infinity },
  [F.END]: { conn: true, min: 0, max: 0 },
  [F.ERROR]: { conn: true, min: 0, max: MAX_REASON_BYTES },
  [F.WINDOW]: { conn: true, min: 4, max: 4 },
  [F.RESIZE]: { conn: true, min: 4, max: 4 },
  [F.EXIT]: { conn: true, min: 4, max: 4 },
  [F.START]: { conn: false, min: 0, max: 0 },
  [F.SWITCH]: { conn: false, min: 0, max: 0 },
  [F.BYE]: { conn: false, min: 0, max: MAX_OPEN_BYTES },
  [F.BATCH]: { conn: false, min: 9, max: Infinity },
};

/** Splits a frame and checks its shape; throws FrameError for one that breaks the protocol. */
export function decode(buf: Buffer): Frame {
  if (buf.length < 5) throw new FrameError(`tube frame too short (${buf.length} bytes)`);
  const type = buf[0]!;
  const conn = buf.readUInt32BE(1);
  const shape = SHAPES[type];
  if (!shape) throw new FrameError(`unknown tube frame type ${type}`);
  if (shape.conn !== (conn !== 0)) throw new FrameError(`tube frame type ${type} ${shape.conn ? 'needs a connection id' : 'belongs to connection 0'}`);
  const n = buf.length - 5;
  if (n < shape.min || n > shape.max) throw new FrameError(`tube frame type ${type} with a ${n}-byte payload`);
  return { type, conn, payload: buf.subarray(5) };
}

export const u32 = (n: number) => {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

export const i32 = (n: number) => {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32BE(n | 0);
  return b;
};

export const size = (cols: number, rows: number) => {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(Math.max(1, Math.min(cols, 65535)));
  b.writeUInt16BE(Math.max(1, Math.min(rows, 65535)), 2);
  return b;
};

/** Several encoded frames as one BATCH frame (one transport message). */
export function batch(frames: Buffer[]): Buffer {
  let n = 5;
  for (const f of frames) n += 4 + f.length;
  const out = Buffer.allocUnsafe(n);
  out[0] = F.BATCH;
  out.writeUInt32BE(0, 1);
  let at = 5;
  for (const f of frames) {
    out.writeUInt32BE(f.length, at);
    f.copy(out, at + 4);
    at += 4 + f.length;
  }
  return out;
}

/** The frames a BATCH frame's payload holds, each decoded (checked); a batch in a batch is refused. */
export function unbatch(payload: Buffer): Frame[] {
  const frames: Frame[] = [];
  for (let at = 0; at < payload.length; ) {
    if (payload.length - at < 4) throw new FrameError('a batch ends in the middle of a length');
    const len = payload.readUInt32BE(at);
    if (len > payload.length - at - 4) throw new FrameError(`a batched frame of ${len} bytes runs past its batch`);
    const f = decode(payload.subarray(at + 4, at + 4 + len));
    if (f.type === F.BATCH) throw new FrameError('a batch inside a batch');
    frames.push(f);
    at += 4 + len;
  }
  return frames;
}
