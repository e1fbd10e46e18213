// `airlock gateway`: dials out to the control plane, stays connected (reconnecting with backoff)
// and serves launch sessions for the resources of its group.
import WebSocket from 'ws';
import type { Logger } from '../log.js';
import { retryDelay } from '../backoff.js';
import { parseJson, readUpgradeError, wsBase } from '../client/wire.js';
import { heartbeat } from '../ws-heartbeat.js';
import { GatewaySession, type SessionOffer } from './session.js';
import type { ShellUser } from './shell-user.js';
import type { IceOptions } from '../tube/transport.js';
import { CloseCode } from '../codes.js';

/** Reconnects from 100 ms doubling to 5 s: back at once after a server restart, gentle on one that is down. */
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5_000;

export interface GatewayOptions {
  server: string;
  token: string;
  log: Logger;
  /** The account shell sessions run as; null: this gateway refuses shell resources. */
  shellAs: ShellUser | null;
  /** The direct path's settings; null: relay only. */
  direct: IceOptions | null;
  /** Origins besides --server's that relay sockets may be opened to (other server replicas). */
  relayOrigins?: string[];
}

export class GatewayDaemon {
  private ws: WebSocket | null = null;
  private sessions = new Map<string, GatewaySession>();
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private wsUrl: string;
  name: string | null = null;
  /** Resolves on the first successful connection; rejects when the token is refused. */
  readonly ready: Promise<void>;
  private settle!: { resolve: () => void; reject: (err: Error) => void };
  /** Resolves with the reason when the server refuses this gateway for good (its token was deleted). */
  readonly refused: Promise<string>;
  private refuse!: (why: string) => void;

  constructor(private opts: GatewayOptions) {
    this.wsUrl = wsBase(opts.server);
    this.ready = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.ready.catch(() => {});
    this.refused = new Promise((resolve) => (this.refuse = resolve));
  }

  start(): void {
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    const ws = new WebSocket(`${this.wsUrl}/api/gateway/connect`, {
      headers: { authorization: `Bearer ${this.opts.token}` },
      perMessageDeflate: false,
    });
    this.ws = ws;
    ws.on('unexpected-response', (_req, res) => {
      void readUpgradeError(res).then(({ status, message }) => {
        if (status === 401) {
          const why = `the server refused the gateway token: ${message}`;
          this.opts.log.error(why);
          this.stop();
          this.settle.reject(new Error(why));
          this.refuse(why);
        } else {
          // 409: another process runs with this token (or this one's last connection still
          // answers): the operator must see it, and this one keeps trying in case it is the latter.
          if (status === 409) this.opts.log.warn(`the server refused this connection: ${message}`);
          this.retry(`HTTP ${status}: ${message}`);
        }
      });
    });
    ws.on('error', (err) => {
      if (ws.readyState !== ws.OPEN) this.retry((err as NodeJS.ErrnoException).code ?? err.message);
    });
    ws.once('open', () => heartbeat(ws));
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const msg = parseJson(data.toString());
      if (msg) this.message(msg);
    });
    ws.on('close', (code, reason) => {
      if (this.ws !== ws || this.stopped) return;
      this.opts.log.warn({ code, reason: reason.toString() }, 'lost the server; reconnecting');
      this.retry(`closed ${code}`);
    });
  }

  /** The ws(s):// base of a relay URL on an allowed origin, else null. */
  private allowedRelay(url: unknown): string | null {
    if (typeof url !== 'string' || !/^wss?:\/\/[^/]+$/.test(url)) return null;
    let u: URL;
    try {
      u = new URL(url.replace(/^ws/, 'http'));
    } catch {
      return null;
    }
    return [this.opts.server, ...(this.opts.relayOrigins ?? [])].some((p) => originMatches(p, u)) ? url : null;
  }

  private retry(why: string): void {
    if (this.stopped || this.timer) return;
    this.ws?.removeAllListeners('close');
    this.ws?.terminate();
    const delay = retryDelay(this.attempt++, RECONNECT_MIN_MS, RECONNECT_MAX_MS);
    this.opts.log.info({ why, retry_in_ms: Math.round(delay) }, 'cannot reach the server');
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  /**
   * Final reports of the sessions that ended lately. A report can be lost (sent on a socket whose
   * server just died, or while there was none): each welcome sends them again (the server keeps
   * the first end and fills in what it lacks).
   */
  private ended = new Map<string, { at: number; msg: unknown }>();

  private send = (msg: any): void => {
    if (msg.type === 'ended') {
      this.ended.set(msg.session, { at: Date.now(), msg });
      for (const [id, e] of this.ended) {
        if (this.ended.size <= 1000 && Date.now() - e.at < 600_000) break;
        this.ended.delete(id); // oldest first
      }
    }
    this.write(msg);
  };

  private write(msg: unknown): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private message(msg: any): void {
    switch (msg.type) {
      case 'welcome':
        this.attempt = 0;
        this.name = msg.gateway;
        this.opts.log.info({ gateway: msg.gateway, server: this.opts.server }, 'gateway connected');
        this.settle.resolve();
        // The server closes our sessions from before this connection that we no longer have
        // (we name those that ended lately too: their reports follow), and learns the paths of
        // those that go on.
        this.write({ type: 'alive', sessions: [...this.sessions.keys(), ...this.ended.keys()] });
        for (const { msg } of this.ended.values()) this.write(msg);
        for (const s of this.sessions.values()) if (s.path) this.write({ type: 'path', session: s.id, path: s.path });
        return;
      case 'session': {
        // A session whose client is on another server replica: relay straight to that replica,
        // if it is one this gateway was told of. The relay socket carries the gateway token:
        // it is never sent to a URL the server's messages alone name.
        const relayBase = msg.relay_url === undefined ? this.wsUrl : this.allowedRelay(msg.relay_url);
        if (!relayBase) {
          const why = `the gateway does not dial relay URL ${JSON.stringify(String(msg.relay_url).slice(0, 200))} (not its --server origin nor a --relay-origin)`;
          this.opts.log.warn({ session: msg.session }, why);
          this.send({ type: 'ended', session: msg.session, error: why, reason: why });
          return;
        }
        const s = new GatewaySession(msg as SessionOffer, relayBase, this.opts.token, this.send, this.opts.log, () => this.sessions.delete(s.id), this.opts.shellAs, this.opts.direct);
        this.sessions.set(s.id, s);
        this.opts.log.info({ session: s.id, user: msg.user, resource: msg.resource?.name }, 'session');
        s.start();
        return;
      }
      case 'offer':
      case 'candidate':
        this.sessions.get(msg.session)?.signal(msg);
        return;
      case 'notice':
        this.opts.log.warn({ server: this.opts.server }, `server: ${String(msg.message).slice(0, 500)}`);
        return;
      case 'close':
        this.sessions.get(msg.session)?.end('client left');
        return;
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    for (const s of this.sessions.values()) s.end('gateway stopping');
    this.ws?.close(CloseCode.goingAway, 'gateway stopping');
  }
}

/**
 * Whether url's origin is the pattern's: scheme://host[:port], where the host may begin with "*."
 * (any subdomain) and the port may be "*" (any port).
 */
export function originMatches(pattern: string, url: URL): boolean {
  const m = /^(https?):\/\/(\*\.)?([^/:]+|\[[^\]]+\])(?::(\d+|\*))?\/?$/.exec(pattern);
  if (!m) return false;
  const [, scheme, anySub, host, port] = m;
  if (url.protocol !== `${scheme}:`) return false;
  const h = url.hostname.toLowerCase();
  const want = host!.toLowerCase();
  if (anySub ? !h.endsWith(`.${want}`) : h !== want) return false;
  if (port === '*') return true;
  const defaultPort = scheme === 'https' ? '443' : '80';
  return (url.port || defaultPort) === (port ?? defaultPort);
}
