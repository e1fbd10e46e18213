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

export function decode(buf: Buffer): Frame {
  if (buf.length < 5) throw new Error(`tube frame too short (${buf.length} bytes)`);
  return { type: buf[0]!, conn: buf.readUInt32BE(1), payload: buf.subarray(5) };
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
