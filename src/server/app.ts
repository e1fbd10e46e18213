// `airlock server`: HTTP API, chat stream WebSockets and the chat worker in one process.
import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Bus } from '../bus/bus.js';
import { openBus } from '../bus/open.js';
import { metrics } from '../metrics.js';
import { loadConfig, type Config } from '../config.js';
import { ApiError, forbidden, tooMany, unauthorized } from '../errors.js';
import { TOKEN_INVALID, announceRevoked, onRevoked, authenticate, bearerToken, bootstrapAdmin, validTokens, type User } from '../auth/tokens.js';
import type { Db } from '../store/db.js';
import { type Logger, silentLogger } from '../log.js';
import { StreamHub } from '../chat/hub.js';
import { ChatService } from '../chat/service.js';
import { Runner, type RunnerOptions } from '../chat/runner.js';
import { ToolBox, type Tool } from '../chat/tools/index.js';
import { AgentSessions } from '../agent/sessions.js';
import { agentTools } from '../agent/tools.js';
import { Approvals } from '../agent/approvals.js';
import { Providers, type ProvidersConfig } from '../chat/providers/index.js';
import { generateTitle } from '../chat/title.js';
import { ev } from '../chat/types.js';
import { Router, Reply, clientErrorReply, errorBody, readJsonBody, sendJson } from './http.js';
import { ChatStreamSocket, type StreamLimits } from './chat-stream.js';
import { wsBase } from '../client/wire.js';
import { chatRoutes } from './routes/chats.js';
import { approvalRoutes } from './routes/approvals.js';
import { authRoutes } from './routes/auth.js';
import { isUuid } from './validate.js';
import { accessRoutes } from './routes/access.js';
import { SecretBox } from '../access/secretbox.js';
import { SignalRouter, announceGatewayDeleted, announceSessionEnd } from '../access/signal.js';
import { forgetOnlineGateways, forgetReplica, registerReplica, resealLegacyCredentials } from '../access/store.js';
import { heartbeat } from '../ws-heartbeat.js';
import { CloseCode } from '../codes.js';

/** Chat streams: a client that stops answering is cut within two of these. */
const STREAM_HEARTBEAT_MS = 30_000;

/** Largest frame a chat stream's client may send: the stream is one-way, so nothing it sends is
 * read, and nothing large need be taken in to find that out. */
export const MAX_CLIENT_FRAME_BYTES = 65_536;

/** What the bus's MAC key is derived for (replicas with the same AIRLOCK_SECRET_KEY derive the same one). */
export const BUS_KEY_PURPOSE = 'airlock bus v1';

export interface ServerOptions {
  db: Db;
  /** The settings (default: read from the environment now). */
  config?: Config;
  bus?: Bus;
  providers: ProvidersConfig;
  port?: number;
  host?: string;
  log?: Logger;
  runner?: RunnerOptions | false;
  /** Tools for the agent besides the built-ins (a program embedding Airlock, the tests). */
  tools?: Tool[];
  titles?: boolean;
  /** Seals target credentials; default: AIRLOCK_SECRET_KEY or the key file in the data folder. */
  secrets?: SecretBox;
  /** Serve HTTPS/WSS with this PEM certificate and key. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Chat stream sockets' bounds (default STREAM_LIMITS). */
  streamLimits?: StreamLimits;
}

export interface AirlockServer {
  url: string;
  port: number;
  db: Db;
  bus: Bus;
  service: ChatService;
  runner: Runner | null;
  /** The HTTP API's routes (the WebSocket endpoints are /api/chats/:id/stream, /api/launch,
   * /api/gateway/connect and /api/gateway/relay/:session). */
  routes: { method: string; pattern: string }[];
  /** Set on the very first start: the admin's token. */
  adminToken: string | null;
  /** Graceful stop (SIGTERM): not ready, no new work, running turns finish or are handed to another
   * replica, clients and gateways are told to reconnect elsewhere. */
  drain(): Promise<void>;
  close(): Promise<void>;
}

/** Whether a bearer token is AIRLOCK_METRICS_TOKEN, compared in constant time (as digests: lengths differ). */
function metricsTokenMatches(token: string | null): boolean {
  const want = process.env.AIRLOCK_METRICS_TOKEN;
  if (!want || !token) return false;
  const digest = (s: string) => crypto.createHash('sha256').update(s).digest();
  return crypto.timingSafeEqual(digest(token), digest(want));
}

export async function startServer(opts: ServerOptions): Promise<AirlockServer> {
  const { db } = opts;
  const config = opts.config ?? loadConfig();
  const log = opts.log ?? silentLogger();
  const secrets = opts.secrets ?? SecretBox.load(config.dataDir, config.secretKey);
  const bus = opts.bus ?? (await openBus(db, log, secrets.deriveKey(BUS_KEY_PURPOSE), config.bus));
  const providers = new Providers(opts.providers, config.llmTimeoutMs);
  let listenUrl = '';
  // The agent's sessions go through this replica's own launch endpoint: its public URL when set (a
  // name its TLS certificate is for), else its listener.
  const agentSessions = new AgentSessions(db, () => config.publicUrl || listenUrl, log);
  const approvals = new Approvals(db, bus, config.approvalTimeoutMs);
  const tools = ToolBox.withExtra([
    ...agentTools({
      db,
      sessions: agentSessions,
      outputBytes: config.agentOutputBytes,
      approvals,
    }),
    ...(opts.tools ?? []),
  ]);
  const service = new ChatService(db, bus, providers, tools, config);
  const adminToken = await bootstrapAdmin(db).catch(() => null);
  // The embedded database has one server (its lock file): no gateway is connected to it yet.
  if (db.kind === 'pglite') await forgetOnlineGateways(db);
  const resealed = await resealLegacyCredentials(db, secrets, log);
  if (resealed) log.info({ resources: resealed }, 'sealed credentials again, each bound to its resource');
  const titles = opts.titles ?? config.titles;

  const runner =
    opts.runner === false || (opts.runner?.concurrency ?? config.chatConcurrency) === 0
      ? null
      : new Runner(db, bus, providers, log, config, {
          tools,
          ...opts.runner,
          onSweep: () => service.expireActions(),
          onFinished: (chatId, status) => {
            if (titles && status === 'waiting') {
              generateTitle(db, bus, providers, log, chatId).catch((err) => log.warn({ err, chat_id: chatId }, 'title generation failed'));
            }
          },
        });

  service.attachRunner(runner);
  const hub = new StreamHub(db, bus, () => runner?.workerId);
  let draining = false;

  const router = new Router();
  authRoutes(router, db, (what) => announceRevoked(bus, what));
  chatRoutes(router, service, config.maxMessageChars);
  approvalRoutes(router, db, approvals);
  accessRoutes(router, db, secrets, {
    gatewayDeleted: (id) => announceGatewayDeleted(bus, id),
    sessionEnded: (id, reason) => announceSessionEnd(bus, id, reason),
  });

  const maxBody = config.maxBodyBytes;
  const userStreams = config.userStreams;
  // Tokens seen recently skip the database; never longer than the token has left to live.
  const authCacheMs = config.authCacheMs;
  const authCache = new Map<string, { user: User; until: number }>();
  /** Chat stream sockets, each with the user (and token) it was opened by. */
  const sockets = new Map<WebSocket, User>();
  // Revocations heard (and bus gaps, after which some may have been missed). A token verified
  // while one arrived may have been read before it committed: it is not cached, and a socket
  // opened with it is checked again.
  let revocations = 0;
  const verifiedAt = new WeakMap<User, number>();
  // A revoked token or a disabled user (on any replica) is forgotten here at once, and its
  // streams are closed.
  const unsubAuth = onRevoked(bus, (revoked, reason) => {
    revocations++;
    for (const [token, hit] of authCache) if (revoked(hit.user)) authCache.delete(token);
    for (const [ws, user] of sockets) if (revoked(user)) ws.close(CloseCode.unauthorized, reason);
  });
  // Revocations lost on the bus are made up for: every verified token is checked again.
  const unsubGap = bus.onGap(() => {
    revocations++;
    authCache.clear();
    const ids = [...new Set([...sockets.values()].map((u) => u.token_id!))];
    void validTokens(db, ids)
      .then((valid) => {
        for (const [ws, user] of sockets) if (!valid.has(user.token_id!)) ws.close(CloseCode.unauthorized, TOKEN_INVALID);
      })
      .catch((err) => log.warn({ err }, 'could not check the stream sockets\' tokens after a bus gap'));
  });
  /** For a socket about to be kept open: closes it if a revocation came in after its user was verified and applies to it. */
  const recheckIfStale = (user: User, close: () => void) => {
    if (verifiedAt.get(user) === revocations) return;
    void validTokens(db, [user.token_id!]).then((valid) => valid.has(user.token_id!) || close(), () => close());
  };
  const auth = async (req: http.IncomingMessage): Promise<User> => {
    const token = bearerToken(req.headers.authorization);
    if (!token) throw unauthorized();
    const hit = authCache.get(token);
    if (hit && hit.until > Date.now()) {
      // Still cached: no revocation heard since applied to it.
      verifiedAt.set(hit.user, revocations);
      return hit.user;
    }
    const epoch = revocations;
    const user = await authenticate(db, token);
    if (user === 'disabled') {
      authCache.delete(token);
      throw unauthorized('this user is disabled (an admin can enable it again)');
    }
    if (!user) {
      authCache.delete(token);
      throw unauthorized('the API token is unknown or has expired');
    }
    verifiedAt.set(user, epoch);
    if (authCacheMs > 0 && epoch === revocations) {
      if (authCache.size >= 10_000) authCache.clear();
      authCache.set(token, { user, until: Date.now() + Math.min(authCacheMs, user.expires_in_ms ?? Infinity) });
    }
    return user;
  };

  const ready = async () => {
    if (draining) return { ready: false, reason: 'draining' };
    try {
      await db.query('SELECT 1');
    } catch {
      return { ready: false, reason: 'database unreachable' };
    }
    return { ready: true };
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const started = performance.now();
    const url = new URL(req.url ?? '/', 'http://x');
    const reqId = (req.headers['x-request-id'] as string | undefined)?.slice(0, 64) || crypto.randomUUID();
    res.setHeader('x-request-id', reqId);
    let userId: string | undefined;
    try {
      if (url.pathname === '/healthz') return sendJson(res, 200, { ok: true });
      // Unauthenticated: for load balancers, so it says nothing about this replica but its readiness.
      if (url.pathname === '/readyz') {
        const r = await ready();
        return sendJson(res, r.ready ? 200 : 503, r);
      }
      if (url.pathname === '/metrics') {
        if (!metricsTokenMatches(bearerToken(req.headers.authorization))) {
          const u = await auth(req);
          if (!u.is_admin) throw forbidden('metrics are for admins (or the AIRLOCK_METRICS_TOKEN bearer token)');
        }
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(await metrics.registry.metrics());
        return;
      }
      const { handler, params } = router.match(req.method ?? 'GET', url.pathname);
      const user = await auth(req);
      userId = user.id;
      const out = await handler({ req, res, params, query: url.searchParams, user, body: () => readJsonBody(req, maxBody) });
      if (out instanceof Reply) sendJson(res, out.status, out.body);
      else sendJson(res, 200, out);
    } catch (err) {
      const { status, body } = errorBody(err);
      if (status >= 500) log.error({ err, req_id: reqId, method: req.method, path: url.pathname }, 'request failed');
      sendJson(res, status, body);
      if (!req.complete) req.resume();
    } finally {
      metrics.httpRequests.inc({ code: `${Math.floor(res.statusCode / 100)}xx` });
      if (url.pathname !== '/healthz' && url.pathname !== '/readyz') {
        log.info({ req_id: reqId, user_id: userId, method: req.method, path: url.pathname, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'request');
      }
    }
  };
  const server = opts.tls ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, handle) : http.createServer(handle);
  server.keepAliveTimeout = 65_000;
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => clientErrorReply(err, socket));

  const signal = new SignalRouter(db, secrets, log, { user: auth, recheckIfStale }, bus, config.userSessions);
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_CLIENT_FRAME_BYTES });
  server.on('upgrade', async (req, socket, head) => {
    const reject = (err: unknown) => {
      const { status, body } = errorBody(err);
      const text = JSON.stringify(body);
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
      );
    };
    socket.on('error', () => {});
    try {
      const url = new URL(req.url ?? '/', 'http://x');
      if (await signal.upgrade(req, socket, head, url)) return;
      const m = /^\/api\/chats\/([^/]+)\/stream$/.exec(url.pathname);
      if (!m) throw new ApiError(404, 'not_found', `no WebSocket endpoint at ${url.pathname}`);
      const user = await auth(req);
      let mine = 0;
      for (const u of sockets.values()) if (u.id === user.id) mine++;
      if (mine >= userStreams) throw tooMany(`you have ${userStreams} chat streams open on this server (the limit per user); close some first`, 'too_many_streams');
      const chatId = m[1]!;
      if (!isUuid(chatId) || !(await service.exists(user.id, chatId))) throw new ApiError(404, 'not_found', 'chat not found');
      const afterRaw = url.searchParams.get('after') ?? '0';
      const after = Number(afterRaw);
      if (!/^\d+$/.test(afterRaw) || !Number.isSafeInteger(after)) {
        throw new ApiError(400, 'invalid_after', '"after" must be a non-negative integer seq');
      }
      wss.handleUpgrade(req, socket, head, (ws) => void openStream(ws, chatId, after, user));
    } catch (err) {
      reject(err);
    }
  });

  async function openStream(ws: WebSocket, chatId: string, after: number, user: User) {
    sockets.set(ws, user);
    recheckIfStale(user, () => ws.close(CloseCode.unauthorized, TOKEN_INVALID));
    metrics.activeStreams.inc();
    const stream = new ChatStreamSocket(ws, after, opts.streamLimits);
    let unsubscribe: (() => void) | null = null;
    const stopHeartbeat = heartbeat(ws, STREAM_HEARTBEAT_MS);
    stream.onClose = () => {
      stopHeartbeat();
      if (sockets.delete(ws)) metrics.activeStreams.dec();
      unsubscribe?.();
    };
    ws.on('message', () => stream.close(CloseCode.policy, 'this stream is one-way; use the HTTP API to send'));
    try {
      const unsub = await hub.subscribe(chatId, after, stream, async () => [ev(chatId, undefined, 'queue', { queue: await service.queue(chatId) })]);
      if (ws.readyState !== ws.OPEN) unsub();
      else unsubscribe = unsub;
    } catch (err) {
      log.error({ err, chat_id: chatId }, 'stream subscribe failed');
      stream.close(CloseCode.internal, 'internal error');
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  runner?.start();
  const port = (server.address() as AddressInfo).port;
  let refresh: NodeJS.Timeout | undefined;
  const host = opts.host && opts.host !== '0.0.0.0' && opts.host !== '::' ? opts.host : '127.0.0.1';
  const scheme = opts.tls ? 'https' : 'http';
  listenUrl = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  // Replicas on a shared bus register where gateways reach them (the relay across replicas).
  const registered = bus.kind !== 'local';
  if (registered) {
    const publicWsUrl = wsBase(config.publicUrl || listenUrl);
    await registerReplica(db, bus.replicaId, publicWsUrl);
    refresh = setInterval(() => void registerReplica(db, bus.replicaId, publicWsUrl).catch(() => {}), 3600_000).unref();
  }
  let drained: Promise<void> | null = null;
  let listenerClosed: Promise<void> | null = null;
  const drain = () =>
    (drained ??= (async () => {
      draining = true;
      listenerClosed = new Promise((r) => server.close(() => r())); // no new connections; requests in flight finish
      await runner?.stop();
      await agentSessions.closeAll();
      approvals.close();
      // Clients resume with ?after= on another replica; gateways reconnect (to another one behind a balancer).
      for (const ws of sockets.keys()) ws.close(CloseCode.restarting, 'server restarting; reconnect');
      signal.close(CloseCode.restarting);
    })());
  return {
    url: listenUrl,
    port,
    db,
    bus,
    service,
    runner,
    routes: router.list(),
    adminToken,
    drain,
    async close() {
      await drain();
      hub.close();
      unsubAuth();
      unsubGap();
      for (const ws of sockets.keys()) ws.close(CloseCode.goingAway, 'server shutting down'); // upgraded after the drain began
      server.closeAllConnections();
      await listenerClosed;
      clearInterval(refresh);
      if (registered) await forgetReplica(db, bus.replicaId).catch(() => {});
      if (!opts.bus) await bus.close();
    },
  };
}
