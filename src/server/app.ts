// `airlock server`: HTTP API, chat stream WebSockets and the chat worker in one process.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { type Bus, LocalBus } from '../bus/bus.js';
import { num } from '../config.js';
import { ApiError, unauthorized } from '../errors.js';
import { authenticate, bearerToken, bootstrapAdmin, type User } from '../auth/tokens.js';
import type { Db } from '../store/db.js';
import { type Logger, silentLogger } from '../log.js';
import { StreamHub } from '../chat/hub.js';
import { ChatService } from '../chat/service.js';
import { Runner, type RunnerOptions } from '../chat/runner.js';
import { Providers, type ProvidersConfig } from '../chat/providers/index.js';
import { generateTitle } from '../chat/title.js';
import { ev } from '../chat/store.js';
import { Router, Reply, errorBody, readJsonBody, sendJson } from './http.js';
import { ChatStreamSocket } from './chat-stream.js';
import { chatRoutes } from './routes/chats.js';
import { authRoutes } from './routes/auth.js';
import { isUuid } from './validate.js';
import { accessRoutes } from './routes/access.js';
import { SecretBox } from '../access/secretbox.js';
import { SignalRouter } from '../access/signal.js';
import { str } from '../config.js';

export interface ServerOptions {
  db: Db;
  bus?: Bus;
  providers: ProvidersConfig;
  port?: number;
  host?: string;
  log?: Logger;
  runner?: RunnerOptions | false;
  titles?: boolean;
  /** Seals target credentials; default: AIRLOCK_SECRET_KEY or the key file in the data folder. */
  secrets?: SecretBox;
}

export interface AirlockServer {
  url: string;
  port: number;
  db: Db;
  bus: Bus;
  service: ChatService;
  runner: Runner | null;
  /** Set on the very first start: the admin's token. */
  adminToken: string | null;
  close(): Promise<void>;
}

export async function startServer(opts: ServerOptions): Promise<AirlockServer> {
  const { db } = opts;
  const log = opts.log ?? silentLogger();
  const bus = opts.bus ?? new LocalBus();
  const providers = new Providers(opts.providers);
  const service = new ChatService(db, bus, providers);
  const hub = new StreamHub(db, bus);
  const adminToken = await bootstrapAdmin(db).catch(() => null);
  const titles = opts.titles ?? num('titles') !== 0;

  const runner =
    opts.runner === false
      ? null
      : new Runner(db, bus, providers, log, {
          ...opts.runner,
          onSweep: () => service.expireActions(),
          onFinished: (chatId, status) => {
            if (titles && status === 'waiting') {
              generateTitle(db, bus, providers, log, chatId).catch((err) => log.warn({ err, chat_id: chatId }, 'title generation failed'));
            }
          },
        });

  const router = new Router();
  authRoutes(router, db);
  chatRoutes(router, service);
  const secrets = opts.secrets ?? SecretBox.load(str('dataDir'));
  accessRoutes(router, db, secrets);

  const maxBody = num('maxBodyBytes');
  // Tokens seen recently skip the database; never longer than the token has left to live.
  const authCacheMs = num('authCacheMs');
  const authCache = new Map<string, { user: User; until: number }>();
  const auth = async (req: http.IncomingMessage): Promise<User> => {
    const token = bearerToken(req.headers.authorization);
    if (!token) throw unauthorized();
    const hit = authCache.get(token);
    if (hit && hit.until > Date.now()) return hit.user;
    const user = await authenticate(db, token);
    if (!user) {
      authCache.delete(token);
      throw unauthorized('the API token is unknown or has expired');
    }
    if (authCacheMs > 0) {
      if (authCache.size >= 10_000) authCache.clear();
      authCache.set(token, { user, until: Date.now() + Math.min(authCacheMs, user.expires_in_ms ?? Infinity) });
    }
    return user;
  };

  const server = http.createServer(async (req, res) => {
    const started = performance.now();
    const url = new URL(req.url ?? '/', 'http://x');
    try {
      if (url.pathname === '/healthz') return sendJson(res, 200, { ok: true });
      const { handler, params } = router.match(req.method ?? 'GET', url.pathname);
      const user = await auth(req);
      const out = await handler({ req, res, params, query: url.searchParams, user, body: () => readJsonBody(req, maxBody) });
      if (out instanceof Reply) sendJson(res, out.status, out.body);
      else sendJson(res, 200, out);
    } catch (err) {
      const { status, body } = errorBody(err);
      if (status >= 500) log.error({ err, method: req.method, path: url.pathname }, 'request failed');
      sendJson(res, status, body);
      if (!req.complete) req.resume();
    } finally {
      log.debug({ method: req.method, path: url.pathname, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'request');
    }
  });
  server.keepAliveTimeout = 65_000;

  const signal = new SignalRouter(db, secrets, log, auth);
  const wss = new WebSocketServer({ noServer: true, maxPayload: num('wsMaxFrameBytes') });
  const sockets = new Set<WebSocket>();
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
      const chatId = m[1]!;
      if (!isUuid(chatId) || !(await service.exists(user.id, chatId))) throw new ApiError(404, 'not_found', 'chat not found');
      const afterRaw = url.searchParams.get('after') ?? '0';
      const after = Number(afterRaw);
      if (!/^\d+$/.test(afterRaw) || !Number.isSafeInteger(after)) {
        throw new ApiError(400, 'invalid_after', '"after" must be a non-negative integer seq');
      }
      wss.handleUpgrade(req, socket, head, (ws) => void openStream(ws, chatId, after));
    } catch (err) {
      reject(err);
    }
  });

  async function openStream(ws: WebSocket, chatId: string, after: number) {
    sockets.add(ws);
    const stream = new ChatStreamSocket(ws);
    let unsubscribe: (() => void) | null = null;
    let alive = true;
    const ping = setInterval(() => {
      if (!alive) return ws.terminate();
      alive = false;
      ws.ping();
    }, 30_000);
    ws.on('pong', () => (alive = true));
    stream.onClose = () => {
      clearInterval(ping);
      sockets.delete(ws);
      unsubscribe?.();
    };
    ws.on('message', () => stream.close(1008, 'this stream is one-way; use the HTTP API to send'));
    try {
      const unsub = await hub.subscribe(chatId, after, stream, async () => [ev(chatId, undefined, 'queue', { queue: await service.queue(chatId) })]);
      if (ws.readyState !== ws.OPEN) unsub();
      else unsubscribe = unsub;
    } catch (err) {
      log.error({ err, chat_id: chatId }, 'stream subscribe failed');
      stream.close(1011, 'internal error');
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  runner?.start();
  const port = (server.address() as AddressInfo).port;
  const host = opts.host && opts.host !== '0.0.0.0' && opts.host !== '::' ? opts.host : '127.0.0.1';
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    db,
    bus,
    service,
    runner,
    adminToken,
    async close() {
      await runner?.stop();
      hub.close();
      signal.close();
      for (const ws of sockets) ws.close(1001, 'server shutting down');
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
