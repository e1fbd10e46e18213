// Liveness of a long-lived WebSocket (a gateway's control and relay sockets, a launch, a chat
// stream): TCP alone may not notice a peer that is stopped, hung or behind a dropped NAT mapping
// for many minutes, and such a gateway would stay "online" and be chosen for launches.
import type { WebSocket } from 'ws';

/** Gateway, launch and relay sockets: a peer that stops answering is cut within 2 × this. */
export const HEARTBEAT_MS = 3_000;

/**
 * Pings every `intervalMs`; a socket that showed no sign of life over a whole interval is
 * terminated (its 'close' follows, and the owner's close handling runs). A pong, any message,
 * or bytes of ours leaving the buffer count as life: a ping queued behind a large backlog of
 * ours is answered late by a peer that is reading all the while. Returns a stop function.
 */
export function heartbeat(ws: WebSocket, intervalMs = HEARTBEAT_MS): () => void {
  let alive = true;
  let buffered = ws.bufferedAmount;
  const onLife = () => {
    alive = true;
  };
  ws.on('pong', onLife);
  ws.on('message', onLife);
  const timer = setInterval(() => {
    if (ws.bufferedAmount < buffered) alive = true;
    buffered = ws.bufferedAmount;
    if (!alive) return ws.terminate();
    alive = false;
    try {
      ws.ping();
    } catch {
      /* closing: its 'close' follows */
    }
  }, intervalMs);
  timer.unref();
  const stop = () => {
    clearInterval(timer);
    ws.off('pong', onLife);
    ws.off('message', onLife);
  };
  ws.once('close', stop);
  return stop;
}

/** Resolves true when the peer answers a ping within ms (an extra ping is harmless). */
export function answersPing(ws: WebSocket, ms: number): Promise<boolean> {
  if (ws.readyState !== ws.OPEN) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      ws.off('pong', onPong);
      ws.off('close', onClose);
      resolve(ok);
    };
    const onPong = () => done(true);
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), ms);
    ws.on('pong', onPong);
    ws.once('close', onClose);
    try {
      ws.ping();
    } catch {
      done(false);
    }
  });
}
