// Brings a tube up to a resource: in parallel, the signalling socket (which also carries the
// relay) and the WebRTC peer with its offer. Resolves as soon as either path is ready; the
// direct path joins later if it comes up. Transient failures are retried with backoff.
import WebSocket from 'ws';
import type { DataChannel } from 'node-datachannel';
import { retryDelay } from '../backoff.js';
import { Tube } from '../tube/tube.js';
import { DataChannelTransport, WsTransport, guard, type IceOptions } from '../tube/transport.js';
import type { Peer } from '../tube/peer.js';
import type { Timing } from './timing.js';
import { parseJson, readUpgradeError, wsBase } from '../client/wire.js';
import { heartbeat } from '../ws-heartbeat.js';
import { CloseCode } from '../codes.js';

export interface LaunchTarget {
  server: string;
  token: string;
  resource: string;
  /** The direct path's settings; null: relay only. */
  direct: IceOptions | null;
  /** Tries in all when a try fails for a reason that may pass (gateway offline, timeout, 502-504). */
  attempts: number;
}

/** Default tries: with the backoff below they span ~2 s, a gateway's reconnect after a blip. */
export const LAUNCH_ATTEMPTS = 4;
/** Retries wait from 250 ms doubling to 3 s. */
const RETRY_BASE_MS = 250;
const RETRY_MAX_MS = 3_000;
/** One try's time to bring a path up: signalling and the relay take milliseconds, so this is only
 * reached when something on the way hangs. */
const ATTEMPT_TIMEOUT_MS = 10_000;

export interface OpenTube {
  tube: Tube;
  session: string;
  kind: 'tcp' | 'ssh' | 'shell';
  /** Tells the server the client is done (the gateway reports the outcome) and closes everything. */
  close(): void;
}

/** permanent: retrying cannot help (no such resource, no grant, bad token). */
export class LaunchError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly transient: boolean,
  ) {
    super(message);
  }
}

// The WebRTC stack (node-datachannel) takes ~25 ms of synchronous loading: it is loaded only
// when a launch wants the direct path, after the signalling request has left.
let peerModule: Promise<typeof import('../tube/peer.js')> | null = null;
const loadPeer = () => (peerModule ??= import('../tube/peer.js'));

/** Waits (bounded) for every WebRTC peer of this process to close; call before exiting. */
export async function closePeers(): Promise<void> {
  if (peerModule) await (await peerModule).Peer.allClosed();
}

export async function openTube(t: LaunchTarget, timing: Timing): Promise<OpenTube> {
  const attempts = Math.max(1, t.attempts);
  for (let i = 1; ; i++) {
    try {
      return await attempt(t, timing, i);
    } catch (err) {
      const e = err instanceof LaunchError ? err : new LaunchError((err as Error).message, 'failed', true);
      timing.mark('attempt_failed', `${i}/${attempts} ${e.code}: ${e.message}`);
      if (!e.transient || i >= attempts) throw e;
      const delay = retryDelay(i - 1, RETRY_BASE_MS, RETRY_MAX_MS);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function attempt(t: LaunchTarget, timing: Timing, n: number): Promise<OpenTube> {
  return new Promise((resolve, reject) => {
    const tube = new Tube();
    let session = '';
    let kind: OpenTube['kind'] = 'tcp';
    let settled = false;
    let peer: Peer | null = null;
    const outbox: unknown[] = [];
    const base = wsBase(t.server);
    const ws = new WebSocket(`${base}/api/launch?resource=${encodeURIComponent(t.resource)}`, {
      headers: { authorization: `Bearer ${t.token}` },
      perMessageDeflate: false,
    });
    const write = (msg: any) => {
      ws.send(JSON.stringify(msg));
      if (msg.type === 'offer') timing.mark('offer_sent');
    };
    const send = (msg: unknown) => (ws.readyState === WebSocket.OPEN ? write(msg) : outbox.push(msg));
    const timer = setTimeout(() => fail(new LaunchError(`no path to the gateway within ${ATTEMPT_TIMEOUT_MS} ms`, 'timeout', true)), ATTEMPT_TIMEOUT_MS);

    const closeAll = () => {
      clearTimeout(timer);
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'bye' }));
      tube.close();
      peer?.close();
      ws.close(CloseCode.normal, 'done');
    };
    const fail = (err: LaunchError) => {
      if (settled) return;
      settled = true;
      closeAll();
      ws.terminate();
      reject(err);
    };
    const ready = () => {
      if (settled || !session) return;
      settled = true;
      clearTimeout(timer);
      timing.mark('tube_ready', tube.path ?? undefined);
      resolve({ tube, session, kind, close: closeAll });
    };

    tube.on('path', (p) => {
      timing.mark(p === 'direct' ? 'channel_open' : 'relay_open');
      ready();
    });

    ws.on('unexpected-response', (_req, res) => {
      void readUpgradeError(res).then(({ status, code, message }) => fail(new LaunchError(message, code, status === 502 || status === 503 || status === 504)));
    });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (!settled && ws.readyState !== WebSocket.OPEN) fail(new LaunchError(`cannot reach the Airlock server at ${t.server} (${err.code ?? err.message})`, 'unreachable', true));
    });
    ws.on('open', () => {
      heartbeat(ws);
      timing.mark('ws_open', n > 1 ? `attempt ${n}` : undefined);
      for (const m of outbox.splice(0)) write(m);
    });
    ws.on('close', (code, reason) => {
      if (!settled) fail(new LaunchError(`the server closed the launch (${code} ${reason})`, 'closed', true));
      else if (!tube.closed) tube.close(reason.length ? `${reason} (${code})` : `signalling closed (${code})`);
    });
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const msg = parseJson(data.toString());
      switch (msg?.type) {
        case 'session':
          session = msg.session;
          kind = msg.kind;
          timing.mark('session', `${msg.kind} via gateway ${msg.gateway}`);
          if (tube.path) ready();
          return;
        case 'relay_ready':
          tube.add(new WsTransport(ws));
          return;
        case 'answer':
          timing.mark('answer_received');
          peer?.remote(msg);
          return;
        case 'candidate':
          peer?.remote(msg);
          return;
        case 'ended': {
          // The server ended the session (token revoked, user disabled, ended through the API).
          const reason = typeof msg.reason === 'string' ? msg.reason : 'the server ended the session';
          if (!settled) fail(new LaunchError(reason, 'ended', false));
          else if (!tube.closed) tube.close(reason);
          return;
        }
        case 'gateway_lost':
          // Before the tube is up this is worth another attempt; afterwards the direct path may live on.
          if (!settled) fail(new LaunchError(msg.message ?? 'the gateway disconnected', 'gateway_lost', true));
          return;
      }
    });

    const ice = t.direct;
    if (ice) {
      // After this turn of the event loop: the signalling connection is on its way first.
      setImmediate(() => {
        void loadPeer().then(({ Peer }) => {
          if (tube.closed || (settled && !tube.path)) return; // failed or closed meanwhile
          peer = new Peer(
            `client-${n}`,
            (s) => {
              if (s.type === 'offer') timing.mark('offer_created');
              send(s);
            },
            ice,
            (what) => {
              if (what === 'peer failed') timing.mark('direct_failed', 'WebRTC could not connect; the relay carries the session');
              if (process.env.AIRLOCK_DEBUG_WEBRTC) process.stderr.write(`[webrtc client] ${what}\n`);
            },
          );
          timing.mark('peer_created');
          const dc: DataChannel = peer.pc.createDataChannel('tube');
          const direct = new DataChannelTransport(dc);
          dc.onOpen(guard(() => tube.add(direct)));
        }, (err) => timing.mark('direct_failed', `WebRTC is not available: ${(err as Error).message}`));
      });
    }
  });
}
