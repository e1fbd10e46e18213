// The signalling router: gateways dial in and stay connected; a client's launch socket is paired
// with an online gateway serving the resource. Offers, answers and ICE candidates are relayed as
// JSON text frames; binary frames on the same sockets are the relay path of the tube.
// Across replicas: when the gateway's control socket is on another replica, signalling crosses the
// bus ('signal' messages addressed to a replica) and the gateway opens its relay socket straight to
// the client's replica (its public URL), so relayed bytes never cross the bus.
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Db } from '../store/db.js';
import type { Logger } from '../log.js';
import { TOKEN_INVALID, bearerToken, onRevoked, validTokens, type User } from '../auth/tokens.js';
import { ApiError, conflict, notFound, tooMany, unauthorized } from '../errors.js';
import { answersPing, heartbeat } from '../ws-heartbeat.js';
import type { SecretBox } from './secretbox.js';
import * as store from './store.js';
import { parseJson } from '../client/wire.js';
import { type Bus, REPLICA_ANSWER_MS } from '../bus/bus.js';
import { metrics } from '../metrics.js';
import { isUuid } from '../server/validate.js';
import { CloseCode } from '../codes.js';

const uuid = (x: unknown): x is string => typeof x === 'string' && isUuid(x);

const RELAY_HIGH_WATER = 8 << 20;
const CREDENTIAL_UNOPENABLE = "the resource's credential cannot be opened (it was sealed with another key or for another resource); an admin must set it again";
/** How long a gateway's live connection has to answer a ping before a new one may replace it. */
const PROBE_MS = 2_000;
/** What a client may send before its session starts (its WebRTC offer and candidates). */
const EARLY_MAX = 256 << 10;

interface GatewayLink {
  gateway: store.Gateway;
  ws: WebSocket;
  sessions: Set<string>;
  /** Sessions that started before this connection are the gateway's earlier ones. */
  connectedAt: Date;
}

interface RemoteGateway {
  id: string;
  name: string;
  replica: string;
}

interface Session {
  id: string;
  user: User;
  resource: store.Resource;
  /** The gateway's control socket: here, or on another replica. */
  link: GatewayLink | null;
  remote: RemoteGateway | null;
  gatewayId: string;
  client: WebSocket;
  relay: WebSocket | null;
  startedAt: number;
  offerAt: number;
  openTimer?: NodeJS.Timeout;
  /** Why the server closed it (token revoked, user disabled, ended by someone): kept in the audit trail. */
  endReason?: string;
}

/** A session whose client is on another replica and whose gateway is connected here. */
interface Hosted {
  link: GatewayLink;
  origin: string;
}

export type BusSignal =
  | ({ to: string; session: string } & (
      | { kind: 'open'; from: string; gateway_id: string; user: string; resource: unknown; resource_id: string; credential_enc: string | null }
      | { kind: 'opened' }
      | { kind: 'to_gateway' | 'to_client'; msg: Record<string, unknown> }
      | { kind: 'gone' | 'gateway_ended'; message: string }
      | { kind: 'gateway_probe'; req: string; gateway_id: string; from: string }
      | { kind: 'gateway_probe_reply'; req: string; alive: boolean }
    ))
  /** To every replica: an admin deleted this gateway; whichever replica holds its connection cuts it. */
  | { to: '*'; kind: 'gateway_deleted'; gateway_id: string }
  /** To every replica: this session was ended through the API; whichever replica holds it closes it. */
  | { to: '*'; kind: 'end_session'; session: string; reason: string };

/** Tells every replica that a gateway was deleted (its connection, wherever it is, is closed). */
export function announceGatewayDeleted(bus: Bus, gatewayId: string): void {
  bus.publish('signal', { to: '*', kind: 'gateway_deleted', gateway_id: gatewayId } satisfies BusSignal);
}

/** Tells every replica to close a launch session (whichever holds it), giving the client `reason`. */
export function announceSessionEnd(bus: Bus, sessionId: string, reason: string): void {
  bus.publish('signal', { to: '*', kind: 'end_session', session: sessionId, reason } satisfies BusSignal);
}

export class SignalRouter {
  private wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
  private links = new Map<string, GatewayLink>();
  private sessions = new Map<string, Session>();
  private hosted = new Map<string, Hosted>();
  private unsubBus: () => void;
  private probes = 0;
  /** Replica id → its registered relay URL (a replica's URL does not change while it runs). */
  private replicaUrls = new Map<string, string>();
  private probeWaiters = new Map<string, (alive: boolean) => void>();

  constructor(
    private db: Db,
    private secrets: SecretBox,
    private log: Logger,
    private auth: {
      user: (req: http.IncomingMessage) => Promise<User>;
      /** Ends what `close` stands for if a revocation arrived after the user was verified and applies to it. */
      recheckIfStale: (user: User, close: () => void) => void;
    },
    private bus: Bus,
    /** Launch sessions one user may have open at once (AIRLOCK_USER_SESSIONS). */
    private userSessions: number,
  ) {
    const unsubSignal = bus.subscribe('signal', (m: BusSignal) => {
      if (m?.kind === 'gateway_deleted') this.links.get(m.gateway_id)?.ws.close(CloseCode.gatewayDeleted, 'this gateway was deleted');
      else if (m?.kind === 'end_session') {
        const s = this.sessions.get(m.session);
        if (s) this.endByServer(s, CloseCode.ended, m.reason);
      } else if (m?.to === bus.replicaId) this.fromBus(m);
    });
    // A revoked API token or a disabled user (on any replica) ends the launch sessions opened with it.
    const unsubAuth = onRevoked(bus, (revoked, reason) => {
      for (const s of this.sessions.values()) if (revoked(s.user)) this.endByServer(s, CloseCode.unauthorized, reason);
    });
    // Revocations, deletions and ends lost on the bus are made up for from the database.
    const unsubGap = bus.onGap(() => void this.recheckAll().catch((err) => this.log.warn({ err }, 'could not check sessions and gateways after a bus gap')));
    this.unsubBus = () => {
      unsubSignal();
      unsubAuth();
      unsubGap();
    };
  }

  /**
   * After a bus gap: every session held here whose token, grant, resource or row is gone ends,
   * and every gateway connection whose gateway was deleted is cut.
   */
  private async recheckAll(): Promise<void> {
    const sessions = [...this.sessions.values()];
    const [tokens, allowed, gateways] = await Promise.all([
      validTokens(this.db, [...new Set(sessions.map((s) => s.user.token_id!))]),
      store.sessionsStillAllowed(this.db, sessions.map((s) => s.id)),
      store.existingGateways(this.db, [...this.links.keys()]),
    ]);
    for (const s of sessions) {
      if (!tokens.has(s.user.token_id!)) this.endByServer(s, CloseCode.unauthorized, TOKEN_INVALID);
      else if (!allowed.has(s.id)) this.endByServer(s, CloseCode.ended, 'access to the resource was withdrawn, or the session was ended');
    }
    for (const [id, link] of this.links) if (!gateways.has(id)) link.ws.close(CloseCode.gatewayDeleted, 'this gateway was deleted');
  }

  /** Handles the launch and gateway WebSocket endpoints; false for other paths. */
  async upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, url: URL): Promise<boolean> {
    if (url.pathname === '/api/launch') {
      const user = await this.auth.user(req);
      const name = url.searchParams.get('resource') ?? '';
      const resource = name ? await store.launchableResource(this.db, user, name) : null;
      if (!resource) throw notFound(`resource "${name}"`);
      const limit = this.userSessions;
      if ((await store.openSessionCount(this.db, user.id)) >= limit) {
        throw tooMany(`you have ${limit} launch sessions open (the limit per user); end one first (airlock session list --open)`, 'too_many_sessions');
      }
      const link = this.pickGateway(resource.gateway);
      const remote = link || this.bus.kind === 'local' ? null : await store.remoteGateway(this.db, resource.gateway, this.bus.replicaId);
      if (!link && !remote) throw new ApiError(503, 'gateway_offline', `no gateway of "${resource.gateway}" is online to serve "${name}"`);
      this.wss.handleUpgrade(req, socket, head, (ws) => void this.openSession(ws, user, resource, link, remote));
      return true;
    }
    if (url.pathname === '/api/gateway/connect') {
      const gateway = await this.authGateway(req);
      await this.refuseTakeover(gateway, req);
      this.wss.handleUpgrade(req, socket, head, (ws) => this.attachGateway(ws, gateway));
      return true;
    }
    const m = /^\/api\/gateway\/relay\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const gateway = await this.authGateway(req);
      const s = this.sessions.get(m[1]!);
      if (!s || s.gatewayId !== gateway.id) throw notFound('session');
      this.wss.handleUpgrade(req, socket, head, (ws) => this.attachRelay(ws, s));
      return true;
    }
    return false;
  }

  onlineGateways(): string[] {
    return [...this.links.values()].map((l) => l.gateway.name);
  }

  /** Tells gateways to reconnect (1012: to another replica) and ends the launch sockets here. */
  close(code: number = CloseCode.goingAway): void {
    this.unsubBus();
    for (const s of this.sessions.values()) s.client.close(code, code === CloseCode.restarting ? 'server restarting' : 'server shutting down');
    for (const l of this.links.values()) l.ws.close(CloseCode.restarting, 'server restarting');
  }

  private async authGateway(req: http.IncomingMessage): Promise<store.Gateway> {
    const token = bearerToken(req.headers.authorization);
    const gw = token ? await store.gatewayForToken(this.db, token) : null;
    if (!gw) throw unauthorized('a valid gateway token is required');
    return gw;
  }

  private pickGateway(group: string): GatewayLink | null {
    let best: GatewayLink | null = null;
    for (const l of this.links.values()) {
      if (l.gateway.group === group && (!best || l.sessions.size < best.sessions.size)) best = l;
    }
    return best;
  }

  /**
   * A gateway token is one gateway: a second connection with it while the first still answers is
   * refused (409), logged, and told to the live one, never a silent takeover (whoever holds the
   * connection receives the credentials of the group's launches). A first connection that no
   * longer answers a ping (a restarted gateway, a dropped network) is replaced.
   */
  private async refuseTakeover(gateway: store.Gateway, req: http.IncomingMessage): Promise<void> {
    const old = this.links.get(gateway.id);
    let alive = false;
    if (old) {
      alive = await answersPing(old.ws, PROBE_MS);
      if (!alive) old.ws.terminate();
    } else if (this.bus.kind !== 'local') {
      const replica = await store.gatewayReplica(this.db, gateway.id);
      if (replica && replica !== this.bus.replicaId) alive = await this.probeRemote(replica, gateway.id);
    }
    if (!alive) return;
    const from = req.socket.remoteAddress ?? 'unknown';
    metrics.gatewayTakeoversRefused.inc();
    this.log.warn({ gateway: gateway.name, from }, 'refused a second connection with the token of a gateway that is connected and answering');
    if (old) send(old.ws, { type: 'notice', message: `another connection (from ${from}) presented this gateway's token and was refused` });
    throw conflict(`gateway "${gateway.name}" is already connected and answering; a token serves one gateway process (stop the other one, or create another gateway)`, 'gateway_connected');
  }

  /** Asks the replica that holds a gateway's connection whether it still answers. */
  private probeRemote(replica: string, gatewayId: string): Promise<boolean> {
    const req = `${this.bus.replicaId}:${++this.probes}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), PROBE_MS + 1000);
      const done = (alive: boolean) => {
        clearTimeout(timer);
        this.probeWaiters.delete(req);
        resolve(alive);
      };
      this.probeWaiters.set(req, done);
      this.signal(replica, { kind: 'gateway_probe', session: '', req, gateway_id: gatewayId, from: this.bus.replicaId });
    });
  }

  private attachGateway(ws: WebSocket, gateway: store.Gateway): void {
    // Two connections that were both let in at once: the first stays.
    if (this.links.has(gateway.id)) return ws.close(CloseCode.ended, 'another connection of this gateway is live');
    heartbeat(ws);
    const link: GatewayLink = { gateway, ws, sessions: new Set(), connectedAt: new Date() };
    this.links.set(gateway.id, link);
    void store.setGatewayOnline(this.db, gateway.id, true, this.bus.replicaId).catch((err) => this.log.warn({ err }, 'gateway status update failed'));
    this.log.info({ gateway: gateway.name }, 'gateway online');
    ws.on('message', (data, isBinary) => {
      if (isBinary) return ws.close(CloseCode.unsupported, 'the gateway socket takes JSON text frames');
      const msg = signalMessage(data as Buffer, GATEWAY_MESSAGES);
      if (typeof msg === 'string') return ws.close(CloseCode.policy, msg);
      this.fromGateway(link, msg);
    });
    ws.on('close', () => {
      if (this.links.get(gateway.id) !== link) return;
      this.links.delete(gateway.id);
      void store.setGatewayOnline(this.db, gateway.id, false, this.bus.replicaId).catch(() => {});
      this.log.info({ gateway: gateway.name }, 'gateway offline');
      const message = `gateway "${gateway.name}" disconnected`;
      for (const id of link.sessions) {
        const s = this.sessions.get(id);
        if (s) send(s.client, { type: 'gateway_lost', message });
        const h = this.hosted.get(id);
        if (h) {
          this.hosted.delete(id);
          this.signal(h.origin, { kind: 'gone', session: id, message });
        }
      }
    });
    ws.on('error', () => {});
    send(ws, { type: 'welcome', gateway: gateway.name });
  }

  private fromGateway(link: GatewayLink, msg: any): void {
    const s = typeof msg?.session === 'string' ? this.sessions.get(msg.session) : undefined;
    switch (msg?.type) {
      case 'answer':
      case 'candidate':
      case 'error': {
        if (s && s.link === link) return this.toClient(s, msg);
        const h = typeof msg.session === 'string' ? this.hosted.get(msg.session) : undefined;
        if (h && h.link === link) this.signal(h.origin, { kind: 'to_client', session: msg.session, msg });
        return;
      }
      // Reports may be about a session the gateway had before it reconnected (here or to another
      // replica): the statements only touch sessions of this gateway.
      case 'path':
        if (uuid(msg.session) && (msg.path === 'direct' || msg.path === 'relay')) {
          void store.sessionPath(this.db, msg.session, link.gateway.id, msg.path).catch((err) => this.log.warn({ err }, 'session report failed'));
        }
        return;
      case 'ended':
        if (uuid(msg.session)) {
          // A report sent again after a reconnect is logged at debug level only.
          const level = link.sessions.delete(msg.session) ? 'info' : 'debug';
          const r = report(msg);
          this.log[level]({ session: msg.session, gateway: link.gateway.name, ...r }, 'session ended');
          void store.endSession(this.db, msg.session, r, link.gateway.id).catch((err) => this.log.warn({ err }, 'session report failed'));
          // The gateway ended it on its own (its tube broke, it is stopping): the client learns
          // why at once instead of waiting on a tube that carries nothing any more.
          const why = `the gateway ended the session: ${typeof msg.reason === 'string' ? msg.reason.slice(0, 300) : 'ended'}`;
          const s = this.sessions.get(msg.session);
          if (s?.link === link) this.endByServer(s, CloseCode.gatewayEnded, why);
          const h = this.hosted.get(msg.session);
          if (h?.link === link) {
            this.hosted.delete(msg.session);
            this.signal(h.origin, { kind: 'gateway_ended', session: msg.session, message: why });
          }
        }
        return;
      case 'alive': {
        // Sent once after each connect: the sessions the gateway still has. Its other sessions
        // from before this connection ended while nobody could hear it (a gateway that restarted,
        // a server that went down): close them.
        // Sessions handed over this connection count as live too, whatever the clocks say.
        const live = [...(Array.isArray(msg.sessions) ? msg.sessions.filter(uuid).slice(0, 100_000) : []), ...link.sessions];
        void store
          .closeLostSessions(this.db, link.gateway.id, live, link.connectedAt)
          .then((n) => n && this.log.info({ gateway: link.gateway.name, sessions: n }, 'closed sessions the gateway no longer had'))
          .catch((err) => this.log.warn({ err }, 'session reconciliation failed'));
        return;
      }
      default:
        return;
    }
  }

  private async openSession(
    client: WebSocket,
    user: User,
    resource: store.Resource & { credential_enc: string | null },
    link: GatewayLink | null,
    remote: RemoteGateway | null,
  ) {
    client.on('error', () => {});
    heartbeat(client);
    // The client sends its offer the moment the socket opens: listen before the first await.
    let s: Session | null = null;
    const early: { data: Buffer; isBinary: boolean }[] = [];
    let earlyBytes = 0;
    let left = false;
    client.on('message', (data, isBinary) => {
      if (s) return this.fromClient(s, data as Buffer, isBinary);
      // Before the session row exists a client has an offer and candidates to send, no more.
      earlyBytes += (data as Buffer).length;
      if (earlyBytes > EARLY_MAX) return client.close(CloseCode.tooBig, 'too much sent before the session started');
      early.push({ data: data as Buffer, isBinary });
    });
    client.on('close', () => {
      left = true;
      if (!s) return;
      this.sessions.delete(s.id);
      metrics.activeSessions.dec();
      clearTimeout(s.openTimer);
      this.toGateway(s, { type: 'close', session: s.id });
      s.relay?.close(CloseCode.normal, 'client left');
      void store.endSession(this.db, s.id, { error: s.endReason }).catch(() => {});
    });
    const gatewayId = link?.gateway.id ?? remote!.id;
    const gatewayName = link?.gateway.name ?? remote!.name;
    let id: string;
    try {
      id = await store.startSession(this.db, { user_id: user.id, resource, gateway_id: gatewayId, token_id: user.token_id });
    } catch (err) {
      this.log.error({ err }, 'session start failed');
      return client.close(CloseCode.internal, 'internal error');
    }
    if (left) return void store.endSession(this.db, id, { error: 'client left' }).catch(() => {});
    if (link && link.ws.readyState !== link.ws.OPEN) {
      send(client, { type: 'gateway_lost', message: `gateway "${link.gateway.name}" disconnected` });
      void store.endSession(this.db, id, { error: 'gateway lost before the session started' }).catch(() => {});
      return client.close(CloseCode.tryAgain, 'gateway lost');
    }
    const session: Session = { id, user, resource, link, remote, gatewayId, client, relay: null, startedAt: performance.now(), offerAt: 0 };
    this.sessions.set(id, session);
    this.auth.recheckIfStale(user, () => this.endByServer(session, CloseCode.unauthorized, TOKEN_INVALID));
    metrics.activeSessions.inc();
    const offer = {
      user: user.name,
      resource: { name: resource.name, kind: resource.kind, target: resource.target },
      resource_id: resource.id,
    };
    if (link) {
      try {
        this.handToGateway(link, { session: id, ...offer, credential_enc: resource.credential_enc });
      } catch {
        this.log.warn({ session: id, resource: resource.name }, 'the resource\'s credential does not open with this server\'s key for this resource');
        return this.endByServer(session, CloseCode.credential, CREDENTIAL_UNOPENABLE);
      }
    } else {
      // The credential crosses the bus sealed; the gateway's replica opens it.
      this.signal(remote!.replica, {
        kind: 'open',
        session: id,
        from: this.bus.replicaId,
        gateway_id: remote!.id,
        ...offer,
        credential_enc: resource.credential_enc,
      });
      session.openTimer = setTimeout(() => {
        // The replica holding the gateway did not answer: it died; the gateway will reconnect elsewhere.
        this.toClient(session, { type: 'gateway_lost', message: `gateway "${gatewayName}" is not reachable through its server replica` });
      }, REPLICA_ANSWER_MS);
    }
    send(client, { type: 'session', session: id, kind: resource.kind, gateway: gatewayName });
    this.log.info({ session: id, user: user.name, resource: resource.name, gateway: gatewayName, via: remote?.replica }, 'session started');
    s = session;
    for (const m of early.splice(0)) this.fromClient(session, m.data, m.isBinary);
  }

  private fromClient(s: Session, data: Buffer, isBinary: boolean): void {
    if (s.client.readyState !== s.client.OPEN) return; // closing (a bye, an end): nothing more goes on
    if (isBinary) return this.pipe(s.client, s.relay, data);
    const msg = signalMessage(data, CLIENT_MESSAGES);
    if (typeof msg === 'string') return s.client.close(CloseCode.policy, msg);
    if (msg.type === 'offer' || msg.type === 'candidate') {
      if (msg.type === 'offer') s.offerAt = performance.now();
      this.toGateway(s, { ...msg, session: s.id });
    } else if (msg.type === 'bye') {
      // The client only closes its side: the audit record is the gateway's and the server's to
      // write (a client that reported its own end could make a live session read as ended).
      s.client.close(CloseCode.normal, 'bye');
    }
  }

  private attachRelay(ws: WebSocket, s: Session): void {
    s.relay?.close(CloseCode.replaced, 'replaced');
    s.relay = ws;
    ws.on('error', () => {});
    heartbeat(ws);
    ws.on('message', (data, isBinary) => {
      if (isBinary) this.pipe(ws, s.client, data as Buffer);
      else ws.close(CloseCode.unsupported, 'the relay socket takes binary frames');
    });
    ws.on('close', () => {
      if (s.relay === ws) s.relay = null;
    });
    metrics.launchPhaseMs.observe({ phase: 'session_to_relay' }, performance.now() - s.startedAt);
    send(s.client, { type: 'relay_ready' });
  }

  /**
   * A session whose client is on another replica, for a gateway connected here. The gateway opens
   * its relay socket to that replica, at the URL the replica registered: a message names the
   * replica, never the URL the gateway is sent to (where it would take its token).
   */
  private async openForReplica(m: Extract<BusSignal, { kind: 'open' }>): Promise<void> {
    const gone = (message: string) => this.signal(m.from, { kind: 'gone', session: m.session, message });
    let relayUrl = this.replicaUrls.get(m.from);
    if (!relayUrl) {
      relayUrl = (await store.replicaUrl(this.db, m.from).catch(() => null)) ?? undefined;
      if (!relayUrl) return gone('the server replica that holds the client is not registered (it cannot be reached for the relay)');
      if (this.replicaUrls.size > 1000) this.replicaUrls.clear();
      this.replicaUrls.set(m.from, relayUrl);
    }
    const link = this.links.get(m.gateway_id);
    if (!link || link.ws.readyState !== link.ws.OPEN) return gone('the gateway is no longer connected to that server replica');
    try {
      this.handToGateway(link, { ...m, relay_url: relayUrl });
    } catch {
      return gone(`${CREDENTIAL_UNOPENABLE} (replicas need the same AIRLOCK_SECRET_KEY)`);
    }
    this.hosted.set(m.session, { link, origin: m.from });
    this.signal(m.from, { kind: 'opened', session: m.session });
  }

  /** Gives the gateway its session: the credential is opened here, on the gateway's replica. */
  private handToGateway(
    link: GatewayLink,
    o: { session: string; user: string; resource: unknown; resource_id: string; credential_enc: string | null; relay_url?: string },
  ): void {
    // Sealed for this resource: a blob copied from another resource's row does not open.
    const credential = o.credential_enc ? this.secrets.open(o.credential_enc, o.resource_id) : null;
    link.sessions.add(o.session);
    send(link.ws, { type: 'session', session: o.session, user: o.user, resource: o.resource, credential, relay_url: o.relay_url });
  }

  private toGateway(s: Session, msg: Record<string, unknown>): void {
    if (s.link) send(s.link.ws, msg);
    else if (s.remote) this.signal(s.remote.replica, { kind: 'to_gateway', session: s.id, msg });
  }

  private toClient(s: Session, msg: Record<string, unknown>): void {
    if (msg.type === 'answer' && s.offerAt) metrics.launchPhaseMs.observe({ phase: 'offer_to_answer' }, performance.now() - s.offerAt);
    send(s.client, msg);
  }

  private signal(to: string, m: BusSignal extends infer T ? (T extends unknown ? Omit<T, 'to'> : never) : never): void {
    this.bus.publish('signal', { ...m, to } as BusSignal);
  }

  /**
   * Closes a session from the server's side; the gateway is told when the client socket closes.
   * The reason goes first as a message: the client reads it before the close (and before the
   * gateway closes the data channel, which would otherwise race it to the user).
   */
  private endByServer(s: Session, code: number, reason: string): void {
    s.endReason ??= reason;
    // The audit trail has the reason before the client hears it (whoever reacts to the client's
    // exit finds it there); a database that does not answer delays the cut by 2 s at most.
    let told = false;
    const tell = () => {
      if (told) return;
      told = true;
      clearTimeout(cap);
      send(s.client, { type: 'ended', reason });
      s.client.close(code, closeReason(reason));
    };
    const cap = setTimeout(tell, 2000);
    store.endSession(this.db, s.id, { error: s.endReason }).then(tell, tell);
  }

  private fromBus(m: Exclude<BusSignal, { kind: 'gateway_deleted' | 'end_session' }>): void {
    if (typeof m.session !== 'string') return;
    const s = this.sessions.get(m.session);
    switch (m.kind) {
      case 'gateway_probe': {
        const link = this.links.get(m.gateway_id);
        void (link ? answersPing(link.ws, PROBE_MS) : Promise.resolve(false)).then((alive) => {
          if (alive && link) send(link.ws, { type: 'notice', message: "another connection presented this gateway's token to another server replica and was refused" });
          this.signal(m.from, { kind: 'gateway_probe_reply', session: '', req: m.req, alive });
        });
        return;
      }
      case 'gateway_probe_reply':
        this.probeWaiters.get(m.req)?.(m.alive === true);
        return;
      case 'open':
        return void this.openForReplica(m);
      case 'to_gateway': {
        const h = this.hosted.get(m.session);
        if (h) send(h.link.ws, { ...m.msg, session: m.session });
        return;
      }
      case 'opened':
        if (s) clearTimeout(s.openTimer);
        return;
      case 'to_client':
        if (s) this.toClient(s, m.msg);
        return;
      case 'gateway_ended':
        if (s && s.remote) this.endByServer(s, CloseCode.gatewayEnded, m.message);
        return;
      case 'gone':
        if (s) {
          clearTimeout(s.openTimer);
          send(s.client, { type: 'gateway_lost', message: m.message });
        }
        return;
    }
  }

  /** Forwards one relay frame; pauses the sender while the receiver has too much queued. */
  private pipe(from: WebSocket, to: WebSocket | null, data: Buffer): void {
    if (!to || to.readyState !== to.OPEN) return;
    to.send(data, { binary: true }, () => {
      if (from.isPaused && to.bufferedAmount < RELAY_HIGH_WATER / 2) from.resume();
    });
    if (to.bufferedAmount > RELAY_HIGH_WATER && !from.isPaused) from.pause();
  }
}

/** A WebSocket close reason holds at most 123 bytes (ws throws past that): the whole reason goes in a message first. */
export function closeReason(reason: string): string {
  const b = Buffer.from(reason);
  if (b.length <= 123) return reason;
  return b.subarray(0, 120).toString().replace(/\uFFFD$/, '') + '…';
}

function send(ws: WebSocket, msg: unknown): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
}

function report(msg: any): store.SessionReport {
  const n = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? Math.floor(x) : undefined);
  return {
    path: msg.path === 'direct' || msg.path === 'relay' ? msg.path : null,
    bytes_up: n(msg.bytes_up),
    bytes_down: n(msg.bytes_down),
    exit_status: typeof msg.exit_status === 'number' && Number.isInteger(msg.exit_status) ? msg.exit_status : null,
    error: typeof msg.error === 'string' ? msg.error.slice(0, 500) : null,
  };
}

const GATEWAY_MESSAGES = new Set(['answer', 'candidate', 'error', 'path', 'ended', 'alive']);
const CLIENT_MESSAGES = new Set(['offer', 'candidate', 'bye']);

/** A signalling message, or why it is refused (the close reason: at most 123 bytes). */
function signalMessage(data: Buffer, types: Set<string>): { type: string; [k: string]: unknown } | string {
  const msg = parseJson(data.toString());
  if (msg === undefined) return 'invalid JSON';
  if (!msg || typeof msg !== 'object' || Array.isArray(msg) || typeof msg.type !== 'string') return 'expected a JSON object with a "type"';
  if (!types.has(msg.type)) return `unknown message type "${msg.type.slice(0, 40)}"; expected ${[...types].join(', ')}`;
  if (msg.session !== undefined && typeof msg.session !== 'string') return '"session" must be a string';
  return msg;
}
