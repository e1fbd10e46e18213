// What a gateway connects a tube connection to: a TCP target, an SSH login with the injected
// credential, or a shell on the gateway host as its shell account (shell-user.ts). Each gives
// back a Node stream plus terminal controls.
import net from 'node:net';
import os from 'node:os';
import { spawn } from 'node:child_process';
import { Duplex, type Readable } from 'node:stream';
import { Client as SshClient, type ClientChannel } from 'ssh2';
import type { Credential, ResourceKind } from '../access/store.js';
import type { OpenRequest } from '../tube/frame.js';
import { shellEnv, type ShellUser } from './shell-user.js';

export interface TargetSpec {
  name: string;
  kind: ResourceKind;
  target: string;
}

export interface Target {
  stream: Duplex;
  /** A second output stream (stderr) that shares the connection. */
  stderr?: Readable;
  resize?(cols: number, rows: number): void;
  /** Called once with the exit status of the remote process (ssh, shell). */
  onExit?(cb: (code: number) => void): void;
  /** Stops the process now (its connection ended before it exited: an interrupt, a session end). */
  kill?(): void;
}

/** A failure the user should read as is (bad credential, refused connection). */
export class TargetError extends Error {
  constructor(
    message: string,
    readonly code: 'auth_failed' | 'unreachable' | 'failed',
  ) {
    super(message);
  }
}

function killGroup(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** A process's exit status as a shell reports it: its code, or 128 + the signal number. */
function exitStatus(code: number | null, signal: string | null | undefined): number {
  if (code !== null) return code;
  if (!signal) return 255;
  const name = signal.startsWith('SIG') ? signal : `SIG${signal}`;
  return 128 + ((os.constants.signals as Record<string, number>)[name] ?? 127);
}

export function splitHostPort(target: string): { host: string; port: number } {
  const i = target.lastIndexOf(':');
  return { host: target.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(target.slice(i + 1)) };
}

/**
 * reader: how a TCP target's socket reads (TubeConn.socketReader: straight into frames).
 * shellAs: the account shells run as; null when this gateway serves no shells.
 */
export async function connectTarget(
  spec: TargetSpec,
  cred: Credential | null,
  req: OpenRequest,
  timeoutMs: number,
  shellAs: ShellUser | null,
  reader?: net.OnReadOpts,
  /** An ssh resource's login shared by the session's connections. */
  sshLogin?: SshLogin,
): Promise<Target> {
  switch (spec.kind) {
    case 'tcp':
      return { stream: await dialTcp(spec.target, timeoutMs, reader) };
    case 'ssh':
      if (!cred) throw new TargetError(`resource "${spec.name}" has no credential`, 'failed');
      return sshLogin ? sshSession(sshLogin, false, req) : sshSession(new SshLogin(spec.target, cred, timeoutMs), true, req);
    case 'shell':
      if (!shellAs) throw new TargetError(`this gateway does not serve shell resources (its operator can start it with --allow-shell --shell-user USER)`, 'failed');
      return req.pty ? ptyShell(req, shellAs) : pipedShell(req, shellAs);
  }
}

function dialTcp(target: string, timeoutMs: number, onread?: net.OnReadOpts): Promise<net.Socket> {
  const { host, port } = splitHostPort(target);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, allowHalfOpen: true, ...(onread ? { onread } : {}) });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new TargetError(`connecting to ${target} timed out after ${timeoutMs} ms`, 'unreachable'));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.setNoDelay(true);
      resolve(sock);
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new TargetError(`cannot connect to ${target}: ${err.code ?? err.message}`, 'unreachable'));
    });
  });
}

/**
 * One SSH login that a session's connections share: the first connection logs in, the next ones
 * open channels on it (a chat agent's second command costs a channel, not a handshake and a
 * login). It is forgotten when the connection closes, and ended with the session.
 */
export class SshLogin {
  private client: Promise<SshClient> | null = null;

  constructor(
    private target: string,
    private cred: Credential,
    private timeoutMs: number,
  ) {}

  get(): Promise<SshClient> {
    if (this.client) return this.client;
    const p = sshConnect(this.target, this.cred, this.timeoutMs);
    this.client = p;
    const forget = () => {
      if (this.client === p) this.client = null;
    };
    p.then((c) => c.once('close', forget), forget);
    return p;
  }

  end(): void {
    void this.client?.then((c) => c.end(), () => {});
    this.client = null;
  }
}

async function sshConnect(target: string, cred: Credential, timeoutMs: number): Promise<SshClient> {
  const { host, port } = splitHostPort(target);
  const client = new SshClient();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('error', (err: Error & { level?: string }) => {
      if (err.level === 'client-authentication') {
        reject(new TargetError(`authentication failed at ${target} for user "${cred.username}" (check the resource's credential)`, 'auth_failed'));
      } else if (err.level === 'client-timeout') {
        reject(new TargetError(`ssh to ${target} timed out after ${timeoutMs} ms`, 'unreachable'));
      } else reject(new TargetError(`ssh to ${target} failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`, 'unreachable'));
    });
    client.connect({
      host,
      port,
      username: cred.username,
      ...(cred.password ? { password: cred.password } : {}),
      ...(cred.private_key ? { privateKey: cred.private_key } : {}),
      ...(cred.passphrase ? { passphrase: cred.passphrase } : {}),
      readyTimeout: timeoutMs,
      keepaliveInterval: 15_000,
    });
  });
  client.on('error', () => {});
  return client;
}

/** A channel (a command, or a shell) on the login; without a shared login, one of its own that ends with the channel. */
async function sshSession(login: SshLogin, own: boolean, req: OpenRequest): Promise<Target> {
  const client = await login.get();
  const pty = req.pty ? { term: req.pty.term, cols: req.pty.cols, rows: req.pty.rows } : undefined;
  // A quick command's exit status can arrive in the same read as the channel confirmation, before
  // our caller gets the channel: record it from the first moment.
  let exited: number | null = null;
  const exitCbs: ((code: number) => void)[] = [];
  const channel = await new Promise<ClientChannel>((resolve, reject) => {
    const done = (err: Error | undefined, ch: ClientChannel) => {
      if (err) return reject(new TargetError(`ssh session failed: ${err.message}`, 'failed'));
      ch.once('exit', (code: number | null, signal?: string) => {
        exited = exitStatus(code, signal);
        for (const cb of exitCbs) cb(exited);
      });
      resolve(ch);
    };
    if (req.exec !== undefined) client.exec(req.exec, pty ? { pty } : {}, done);
    else client.shell(pty ?? { term: 'dumb' }, done);
  }).catch((err) => {
    if (own) login.end();
    throw err;
  });
  if (own) channel.on('close', () => login.end());
  return {
    stream: channel,
    stderr: channel.stderr,
    resize: (cols, rows) => channel.setWindow(rows, cols, 0, 0),
    onExit: (cb) => (exited !== null ? cb(exited) : exitCbs.push(cb)),
    kill: () => {
      try {
        channel.signal('KILL');
      } catch {
        /* the channel is gone */
      }
      channel.close();
    },
  };
}

async function ptyShell(req: OpenRequest, u: ShellUser): Promise<Target> {
  const pty = await import('@lydell/node-pty');
  const p = pty.spawn(u.shell, req.exec !== undefined ? ['-c', req.exec] : [], {
    name: req.pty!.term,
    cols: req.pty!.cols,
    rows: req.pty!.rows,
    cwd: u.home,
    env: shellEnv(u, req.pty!.term),
    uid: u.uid,
    gid: u.gid,
  });
  let exited: number | null = null;
  const exitCbs: ((code: number) => void)[] = [];
  const stream = new Duplex({
    read: () => p.resume(),
    write: (chunk: Buffer, _enc, cb) => {
      // Typed as a string, but the Unix implementation hands whatever it gets to its socket: a
      // Buffer keeps a character that a read split in two whole.
      p.write(chunk as unknown as string);
      cb();
    },
    final: (cb) => cb(),
    destroy: (_err, cb) => {
      if (exited === null) p.kill();
      cb(null);
    },
  });
  p.onData((d) => {
    if (!stream.push(Buffer.from(d, 'utf8'))) p.pause();
  });
  p.onExit(({ exitCode, signal }) => {
    exited = signal ? 128 + signal : exitCode;
    for (const cb of exitCbs) cb(exited);
    stream.push(null);
  });
  return {
    stream,
    resize: (cols, rows) => {
      if (exited === null) p.resize(cols, rows);
    },
    onExit: (cb) => (exited !== null ? cb(exited) : exitCbs.push(cb)),
  };
}

function pipedShell(req: OpenRequest, u: ShellUser): Target {
  const child = spawn(u.shell, req.exec !== undefined ? ['-c', req.exec] : [], {
    cwd: u.home,
    env: shellEnv(u),
    uid: u.uid,
    gid: u.gid,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true, // its own process group: a kill reaches what the shell started too
  });
  const stream = Duplex.from({ readable: child.stdout, writable: child.stdin });
  child.on('error', () => stream.destroy());
  return {
    stream,
    stderr: child.stderr,
    onExit: (cb) => child.once('exit', (code, signal) => cb(exitStatus(code, signal))),
    kill: () => killGroup(child.pid),
  };
}
