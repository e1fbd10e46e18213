// One launch session on the gateway: answers the client's WebRTC offer, opens the relay socket in
// parallel, and serves the tube's connections by dialling the target.
import WebSocket from 'ws';
import type { DataChannel } from 'node-datachannel';
import type { Credential } from '../access/store.js';
import type { Logger } from '../log.js';
import { F, i32, type OpenRequest } from '../tube/frame.js';
import { Tube } from '../tube/tube.js';
import { TubeConn } from '../tube/conn.js';
import { DataChannelTransport, WsTransport, guard, whenOpen, type IceOptions } from '../tube/transport.js';
import { Peer, type Signal } from '../tube/peer.js';
import { heartbeat } from '../ws-heartbeat.js';
import { SshLogin, connectTarget, TargetError, type Target, type TargetSpec } from './connectors.js';
import type { ShellUser } from './shell-user.js';

/** Connections one session may have open at once (each may hold up to a window of bytes). */
const MAX_CONNS = 1024;

/** Time to connect (and, for ssh, log in) to a target: a host that is down fails the open in
 * this long rather than TCP's minutes. */
const TARGET_CONNECT_TIMEOUT_MS = 10_000;

export interface SessionOffer {
  session: string;
  user: string;
  resource: TargetSpec;
  credential: Credential | null;
}

export class GatewaySession {
  readonly id: string;
  private tube = new Tube();
  private peer: Peer | null = null;
  private conns = new Map<number, { conn: TubeConn; target: Target | null; exited?: boolean }>();
  private exitStatus: number | null = null;
  private error: string | null = null;
  /** The path reported for the audit trail: 'direct' once it was used, else the relay once it was up. */
  private usedPath: 'direct' | 'relay' | null = null;
  private ended = false;
  /** An ssh resource's login, shared by this session's connections. */
  private sshLogin: SshLogin | null = null;

  constructor(
    private offer: SessionOffer,
    private serverWsUrl: string,
    private token: string,
    private control: (msg: unknown) => void,
    private log: Logger,
    private onEnd: () => void,
    private shellAs: ShellUser | null,
    /** null: the direct path is off, offers are left unanswered and the relay carries the session. */
    private direct: IceOptions | null,
  ) {
    this.id = offer.session;
    this.tube.on('frame', (f) => this.frame(f.type, f.conn, f.payload));
    this.tube.on('path', (p) => {
      if (this.usedPath !== 'direct') this.usedPath = p;
      this.log.debug({ session: this.id, path: p }, 'tube path');
      this.control({ type: 'path', session: this.id, path: p }); // the audit trail shows it while the session runs
    });
    this.tube.on('closed', (reason) => this.end(reason));
  }

  /** The path the tube sends on now (null before one is up). */
  get path(): string | null {
    return this.tube.path;
  }

  start(): void {
    const ws = new WebSocket(`${this.serverWsUrl}/api/gateway/relay/${this.id}`, {
      headers: { authorization: `Bearer ${this.token}` },
      perMessageDeflate: false,
    });
    ws.on('error', (err) => this.log.debug({ err, session: this.id }, 'relay socket error'));
    ws.once('open', () => {
      heartbeat(ws);
      this.tube.add(new WsTransport(ws));
    });
  }

  signal(msg: Signal): void {
    if (this.ended) return;
    if (msg.type === 'offer') {
      if (!this.direct || this.peer) return;
      this.peer = new Peer(
        `gw-${this.id}`,
        (s) => this.control({ ...s, session: this.id }),
        this.direct,
        (what) => this.log.debug({ session: this.id, webrtc: what }, 'webrtc state'),
      );
      this.peer.pc.onDataChannel(
        guard((dc: DataChannel) => {
          const transport = new DataChannelTransport(dc);
          whenOpen(dc, () => this.tube.add(transport));
        }),
      );
    }
    this.peer?.remote(msg);
  }

  private frame(type: number, id: number, payload: Buffer): void {
    if (id === 0) return;
    if (type === F.OPEN) return void this.open(id, payload);
    const entry = this.conns.get(id);
    if (!entry) return;
    if (type === F.RESIZE) {
      if (payload.length >= 4) entry.target?.resize?.(payload.readUInt16BE(0), payload.readUInt16BE(2));
      return;
    }
    entry.conn.handle(type, payload);
  }

  private async open(id: number, payload: Buffer): Promise<void> {
    if (this.conns.has(id)) return;
    if (this.conns.size >= MAX_CONNS) return this.tube.send(F.ERROR, id, `this session has ${MAX_CONNS} connections open; close some first`);
    let req: OpenRequest;
    try {
      req = parseOpen(payload);
    } catch (err) {
      return this.tube.send(F.ERROR, id, `bad open request: ${(err as Error).message}`);
    }
    const conn = new TubeConn(this.tube, id);
    const entry: { conn: TubeConn; target: Target | null; exited?: boolean } = { conn, target: null };
    this.conns.set(id, entry);
    conn.onFinish = (err) => {
      this.conns.delete(id);
      // Cut before its process exited (the client went, an interrupt, the session ended): stop it.
      if (err && !entry.exited) entry.target?.kill?.();
    };
    try {
      const reader = this.offer.resource.kind === 'tcp' ? conn.socketReader() : undefined;
      if (this.offer.resource.kind === 'ssh' && this.offer.credential && !this.sshLogin) {
        this.sshLogin = new SshLogin(this.offer.resource.target, this.offer.credential, TARGET_CONNECT_TIMEOUT_MS);
      }
      const target = await connectTarget(this.offer.resource, this.offer.credential, req, TARGET_CONNECT_TIMEOUT_MS, this.shellAs, reader, this.sshLogin ?? undefined);
      entry.target = target;
      this.tube.send(F.OPENED, id);
      target.onExit?.((code) => {
        entry.exited = true;
        this.exitStatus = code;
        this.tube.send(F.EXIT, id, i32(code));
      });
      if (target.stderr) conn.attachExtra(target.stderr, req.stderr ? F.STDERR : F.DATA);
      conn.attach(target.stream);
    } catch (err) {
      const msg = err instanceof TargetError ? err.message : `target failed: ${(err as Error).message}`;
      if (err instanceof TargetError && err.code === 'auth_failed') this.error = msg;
      this.log.info({ session: this.id, resource: this.offer.resource.name, err: msg }, 'target connection failed');
      conn.fail(JSON.stringify({ code: err instanceof TargetError ? err.code : 'failed', message: msg.slice(0, 1000) }));
    }
  }

  end(reason = 'ended'): void {
    if (this.ended) return;
    this.ended = true;
    for (const { conn } of this.conns.values()) conn.destroy(reason);
    this.conns.clear();
    this.sshLogin?.end();
    this.tube.close(reason);
    this.peer?.close();
    this.control({
      type: 'ended',
      session: this.id,
      path: this.usedPath, // as the live 'path' messages set it, so a lost one changes nothing
      bytes_up: this.tube.bytesReceived,
      bytes_down: this.tube.bytesSent,
      exit_status: this.exitStatus,
      error: this.error,
      reason,
    });
    this.onEnd();
  }
}

function parseOpen(payload: Buffer): OpenRequest {
  const o = payload.length ? JSON.parse(payload.toString()) : {};
  const req: OpenRequest = {};
  if (o.pty) {
    const { cols, rows, term } = o.pty;
    if (!Number.isInteger(cols) || !Number.isInteger(rows)) throw new Error('pty needs integer cols and rows');
    req.pty = { cols: Math.min(Math.max(cols, 1), 1000), rows: Math.min(Math.max(rows, 1), 1000), term: typeof term === 'string' ? term.slice(0, 64) : 'xterm-256color' };
  }
  if (o.exec !== undefined) {
    if (typeof o.exec !== 'string') throw new Error('exec must be a string');
    req.exec = o.exec;
  }
  if (o.stderr === true) req.stderr = true;
  return req;
}
