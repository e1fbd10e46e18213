// Launch test harness: a real server, a real gateway process (the CLI), real targets (TCP echo
// and bulk servers, a real sshd), and `airlock launch` run as a process or in-process.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestServer } from './server.js';

export const BIN = fileURLToPath(new URL('../../bin/airlock.js', import.meta.url));

/** Files and folders this test process made, removed when it exits. */
const made: string[] = [];
process.once('exit', () => {
  for (const p of made) fs.rmSync(p, { recursive: true, force: true });
});

/** A temporary folder, removed when the test process exits. */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

// The children's CLI config (a first server start writes its admin token there).
const childConfig = path.join(os.tmpdir(), `airlock-none-${process.pid}.json`);
made.push(childConfig);

/** Environment for every child: loopback-only ICE, no CLI config from the developer's machine. */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    AIRLOCK_ICE_BIND_ADDRESS: '127.0.0.1',
    AIRLOCK_CLI_CONFIG: childConfig,
    AIRLOCK_LOG_LEVEL: 'warn',
    ...extra,
  };
}

export class GatewayProcess {
  proc: ChildProcess | null = null;
  log = '';
  /** args: more `airlock gateway` options (--allow-shell --shell-user U, --relay-origin O). */
  constructor(
    private url: string,
    private token: string,
    private env: NodeJS.ProcessEnv = {},
    private args: string[] = [],
  ) {}

  start(): void {
    // The token as an operator passes it: in the environment, never on the command line.
    this.proc = spawn(process.execPath, [BIN, 'gateway', '--server', this.url, ...this.args], {
      env: childEnv({ AIRLOCK_GATEWAY_TOKEN: this.token, ...this.env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stdout!.on('data', (d) => (this.log += d));
    this.proc.stderr!.on('data', (d) => (this.log += d));
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((r) => {
      p.once('exit', () => r());
      p.kill(signal);
    });
  }
}

/** Waits until the server lists the gateway as online (the gateway writes that when it connects). */
export async function waitGatewayOnline(t: Pick<TestServer, 'admin'>, name: string, online = true): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const { gateways } = await t.admin.get('/api/gateways');
    if (gateways.some((g: any) => g.name === name && g.online === online)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`gateway ${name} never became ${online ? 'online' : 'offline'}`);
}

export interface Run {
  proc: ChildProcess;
  stdout: string;
  stderr: string;
  exit: Promise<number>;
  /** Resolves with the first stderr match of `re`; rejects (with the output so far) after 60 s. */
  waitErr(re: RegExp): Promise<RegExpMatchArray>;
  /** The exit status; rejects with the output so far when the process is still running after 60 s. */
  exited(): Promise<number>;
}

type Killable = { kill(signal?: any): unknown };
const children = new Set<Killable>();

/** Tracks a child process or PTY so that killChildren() ends it even when its test failed. */
export function track<T extends Killable>(child: T): T {
  children.add(child);
  return child;
}

export function killChildren(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  children.clear();
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, input?: string): Run {
  const proc = track(spawn(process.execPath, [BIN, ...args], { env: childEnv(env), stdio: ['pipe', 'pipe', 'pipe'] }));
  const r: Run = {
    proc,
    stdout: '',
    stderr: '',
    exit: new Promise((resolve) => proc.once('exit', (code, sig) => resolve(code ?? (sig ? 128 : 1)))),
    exited() {
      let timer: NodeJS.Timeout;
      const late = new Promise<number>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`airlock ${args.join(' ')} still running after 60 s; stdout: ${r.stdout}\nstderr: ${r.stderr}`)), 60_000);
      });
      return Promise.race([r.exit.finally(() => clearTimeout(timer)), late]);
    },
    waitErr(re) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${re} from airlock ${args.join(' ')} within 60 s; stderr: ${r.stderr}`)), 60_000);
        const check = () => {
          const m = re.exec(r.stderr);
          if (m) {
            clearTimeout(timer);
            proc.stderr!.off('data', check);
            resolve(m);
          }
        };
        proc.stderr!.on('data', check);
        proc.once('exit', () => {
          const m = re.exec(r.stderr);
          if (m) resolve(m);
          else reject(new Error(`exited before ${re}; stderr: ${r.stderr}`));
        });
        check();
      });
    },
  };
  proc.stdout!.on('data', (d) => (r.stdout += d));
  proc.stderr!.on('data', (d) => (r.stderr += d));
  if (input !== undefined) proc.stdin!.end(input);
  return r;
}

/** A TCP echo server. */
export async function echoServer(): Promise<{ port: number; close: () => void }> {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => s.on('error', () => {}).pipe(s));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return { port: (srv.address() as net.AddressInfo).port, close: () => srv.close() };
}

/** A TCP server that sends `bytes` pseudo-random bytes to each connection, then closes. */
export async function bulkServer(bytes: number): Promise<{ port: number; sha256: string; close: () => void; written: () => number }> {
  const block = crypto.randomBytes(1 << 20);
  const hash = crypto.createHash('sha256');
  for (let sent = 0; sent < bytes; sent += block.length) hash.update(block.subarray(0, Math.min(block.length, bytes - sent)));
  const sha256 = hash.digest('hex');
  let written = 0;
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        const chunk = block.subarray(0, Math.min(block.length, bytes - sent));
        sent += chunk.length;
        written += chunk.length;
        if (!s.write(chunk)) return void s.once('drain', pump);
      }
      s.end();
    };
    s.on('error', () => {});
    pump();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  // written: bytes handed to the socket so far (at most one block more than the kernel took).
  return { port: (srv.address() as net.AddressInfo).port, sha256, close: () => srv.close(), written: () => written };
}

export interface Sshd {
  port: number;
  user: string;
  password: string;
  stop(): Promise<void>;
}

let shellAccount: string | null = null;

/**
 * The unprivileged account a test gateway runs shells as (`--allow-shell --shell-user`): made
 * once per test process with useradd (root only, as CI runs), removed when the process exits.
 */
export function testShellUser(): string {
  if (shellAccount) return shellAccount;
  const name = `alsh${crypto.randomBytes(3).toString('hex')}`;
  execFileSync('useradd', ['-m', '-s', '/bin/bash', name]);
  shellAccount = name;
  process.once('exit', () => {
    try {
      execFileSync('userdel', ['-r', '-f', name], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
  });
  return name;
}

/** Options for a test gateway that serves shell resources. */
export const shellGatewayArgs = () => ['--allow-shell', '--shell-user', testShellUser()];

/** Shell resources need root (the gateway starts shells as another account); CI runs as root. */
export const noShellUser = process.getuid?.() !== 0 && !process.env.CI ? 'needs root (the gateway runs shells as another account); CI runs as root' : false;

export const SSHD = '/usr/sbin/sshd';
export const haveSshd = () => fs.existsSync(SSHD) && process.getuid?.() === 0;

/**
 * Debian's OpenSSH on a loopback port with a throwaway user and password, in a scratch folder.
 * Needs root (to create the user) and openssh-server (`.ci/run` installs it).
 */
export async function startSshd(opts: { authorizedKey?: string } = {}): Promise<Sshd> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'airlock-sshd-'));
  const user = `alt${crypto.randomBytes(3).toString('hex')}`;
  const password = crypto.randomBytes(12).toString('base64url');
  execFileSync('useradd', ['-m', '-s', '/bin/bash', user]);
  execFileSync('chpasswd', { input: `${user}:${password}\n` });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'host_key')]);
  if (opts.authorizedKey) {
    const home = `/home/${user}`;
    fs.mkdirSync(`${home}/.ssh`, { recursive: true, mode: 0o700 });
    fs.writeFileSync(`${home}/.ssh/authorized_keys`, opts.authorizedKey, { mode: 0o600 });
    execFileSync('chown', ['-R', `${user}:${user}`, `${home}/.ssh`]);
  }
  fs.mkdirSync('/run/sshd', { recursive: true });
  const port = await freePort();
  fs.writeFileSync(
    path.join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${path.join(dir, 'host_key')}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'UsePAM no',
      'PasswordAuthentication yes',
      'KbdInteractiveAuthentication no',
      'StrictModes no',
      `AllowUsers ${user}`,
      'PrintMotd no',
      'LogLevel ERROR',
    ].join('\n') + '\n',
  );
  const proc = spawn(SSHD, ['-D', '-e', '-f', path.join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  // Ready when it accepts a connection and sends its banner.
  for (let i = 0; ; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('data', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (proc.exitCode !== null || i > 500) throw new Error(`sshd did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    user,
    password,
    async stop() {
      await new Promise<void>((r) => {
        if (proc.exitCode !== null) return r();
        proc.once('exit', () => r());
        proc.kill();
      });
      try {
        execFileSync('userdel', ['-r', '-f', user], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}
