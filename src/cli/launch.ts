// `airlock launch <resource>`: a local port for tcp resources, an interactive terminal (or one
// command with --exec) for ssh and shell resources.
import net from 'node:net';
import { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { CLIENT_OPTIONS, CliError, resolveClient } from './config.js';
import { openTube, closePeers, LaunchError, LAUNCH_ATTEMPTS } from '../launch/connect.js';
import { loadConfig } from '../config.js';
import { directPath } from '../tube/transport.js';
import { ClientSession, TargetFailure } from '../launch/session.js';
import { Timing } from '../launch/timing.js';
import { F, size } from '../tube/frame.js';

const HELP = `Usage: airlock launch <resource> [options]

Opens a session to a resource through its gateway (WebRTC data channel, or the relay through
the server until / unless the direct path is up).

  tcp resources    listen on a local port and forward every connection to the target;
                   runs until Ctrl-C
  ssh / shell      an interactive terminal (raw mode, resize, Ctrl-C goes to the remote side);
                   exits with the remote exit status

Options:
  --port N           local port for tcp (default: a free one, printed)
  --bind ADDR        local address for tcp (default 127.0.0.1)
  --exec CMD         ssh/shell: run CMD, stream its output, exit with its status
  --attempts N       tries while the gateway is offline or a try times out, with backoff
                     (default ${LAUNCH_ATTEMPTS}, about 2 s in all; 1: fail at once)
  --timing-json FILE write the connect checkpoints as JSON
  --server URL, --token T   override the CLI config (see airlock login)

Environment: AIRLOCK_CONNECT_TIMING=1 prints named checkpoints to stderr; AIRLOCK_WEBRTC=0
uses the relay only; AIRLOCK_ICE_SERVERS and AIRLOCK_ICE_BIND_ADDRESS (see \`airlock env\`)
shape the direct path.

Exit status: the remote command's status for ssh/shell; 1 the session failed; 2 usage;
3 unknown resource or no grant; 4 no gateway online / timed out after retries;
5 the gateway could not reach or log in to the target.`;

export async function launchCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...CLIENT_OPTIONS,
      port: { type: 'string' },
      bind: { type: 'string' },
      exec: { type: 'string' },
      attempts: { type: 'string' },
      'timing-json': { type: 'string' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const resource = positionals[0];
  if (!resource || positionals.length > 1) throw new CliError('usage: airlock launch <resource> [--port N] [--exec CMD]; see --help', 2);
  const port = values.port !== undefined ? Number(values.port) : 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliError('--port must be a port number (0-65535)', 2);
  const attempts = values.attempts !== undefined ? Number(values.attempts) : LAUNCH_ATTEMPTS;
  if (!Number.isInteger(attempts) || attempts < 1 || attempts > 100) throw new CliError('--attempts must be a whole number from 1 to 100', 2);
  const direct = directPath(loadConfig());
  const timing = new Timing();
  const { server, token } = resolveClient(values);
  // Every way out waits for the WebRTC peers to close: exiting mid-teardown can hang the process.
  const finish = async (code: number) => {
    await closePeers();
    if (values['timing-json']) timing.writeJson(values['timing-json']);
    return code;
  };

  // Bind the local port while the tube comes up; connections wait for it.
  const listener = values.exec === undefined ? listen(values.bind ?? '127.0.0.1', port) : null;
  listener?.catch(() => {});
  let open;
  try {
    open = await openTube({ server, token, resource, direct, attempts }, timing);
  } catch (err) {
    (await listener?.catch(() => null))?.close();
    if (err instanceof LaunchError) {
      process.stderr.write(`airlock: ${err.message}\n`);
      return finish(err.transient ? 4 : err.code === 'not_found' || err.code === 'unauthorized' ? 3 : 1);
    }
    await finish(1);
    throw err;
  }
  const session = new ClientSession(open);
  session.onFirstByte = () => timing.mark('first_byte');
  if (open.kind === 'tcp') {
    if (values.exec !== undefined) {
      open.close();
      await finish(2);
      throw new CliError(`--exec is for ssh and shell resources; "${resource}" is a tcp resource`, 2);
    }
    return finish(await forwardPort(session, await listener!, resource, timing));
  }
  (await listener?.catch(() => null))?.close();
  return finish(await terminal(session, values.exec, timing));
}

function listen(host: string, port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    srv.once('error', (err: NodeJS.ErrnoException) =>
      reject(new CliError(err.code === 'EADDRINUSE' ? `port ${port} on ${host} is in use; pick another with --port` : `cannot listen on ${host}:${port}: ${err.message}`)),
    );
    srv.listen(port, host, () => resolve(srv));
  });
}

async function forwardPort(session: ClientSession, srv: net.Server, resource: string, timing: Timing): Promise<number> {
  const addr = srv.address() as net.AddressInfo;
  timing.mark('listening', `${addr.address}:${addr.port}`);
  process.stderr.write(`Forwarding ${addr.address}:${addr.port} → ${resource} (${session.tube.path} path). Ctrl-C to stop.\n`);
  session.tube.on('path', (p) => process.stderr.write(`airlock: moved to the ${p} path\n`));
  let first = true;
  srv.on('connection', (sock: net.Socket) => {
    sock.setNoDelay(true);
    const c = session.connect(sock);
    sock.resume();
    c.opened.then(
      () => {
        if (first) timing.mark('target_connected');
        first = false;
        // The application on the local port got a reset; say why here (a closed tube says so itself).
        void c.cut.then((reason) => {
          if (!session.tube.closed) process.stderr.write(`airlock: a connection to ${resource} was cut: ${reason}\n`);
        });
      },
      (err: Error) => {
        process.stderr.write(`airlock: connection to ${resource} failed: ${err.message}\n`);
        sock.destroy();
      },
    );
  });
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (code: number) => {
      if (stopping) return;
      stopping = true;
      srv.close();
      session.open.close();
      resolve(code);
    };
    process.once('SIGINT', () => stop(0));
    process.once('SIGTERM', () => stop(0));
    // The tube may have closed already, while this process was getting ready to forward.
    session.tube.onClosed((reason) => {
      process.stderr.write(`airlock: the session ended: ${reason}\n`);
      stop(1);
    });
  });
}

async function terminal(session: ClientSession, exec: string | undefined, timing: Timing): Promise<number> {
  const stdin = process.stdin;
  const stdout = process.stdout;
  const interactive = Boolean(stdin.isTTY && stdout.isTTY);
  const stream = new Duplex({
    read: () => stdin.resume(),
    write: (chunk: Buffer, _enc, cb) => void stdout.write(chunk, () => cb()),
    final: (cb) => cb(),
  });
  const onData = (d: Buffer) => {
    if (!stream.push(d)) stdin.pause();
  };
  const onEnd = () => stream.push(null);
  stdin.on('data', onData);
  stdin.once('end', onEnd);
  const restore = () => {
    if (interactive && stdin.isRaw) stdin.setRawMode(false);
  };
  process.once('exit', restore);
  const onResize = () => session.tube.send(F.RESIZE, c.conn.id, size(stdout.columns, stdout.rows));
  if (interactive) stdin.setRawMode(true);
  const c = session.connect(
    stream,
    interactive ? { pty: { cols: stdout.columns, rows: stdout.rows, term: process.env.TERM || 'xterm-256color' }, ...(exec !== undefined ? { exec } : {}) } : exec !== undefined ? { exec } : {},
    // Without a terminal the remote stderr stays apart, on ours (a terminal mixes the two anyway).
    { expectExit: true, ...(interactive ? {} : { stderr: process.stderr }) },
  );
  if (interactive) stdout.on('resize', onResize);
  try {
    // All output is written once the remote side's END has flushed through the stream. Listen now:
    // a quick command's OPENED, output, EXIT and END can all arrive in one read, and 'finish'
    // would fire before anything awaited after `opened` could see it.
    const flushed = new Promise<void>((resolve) => stream.once('finish', resolve).once('close', resolve));
    await c.opened;
    timing.mark('target_connected');
    const code = await c.exit;
    await flushed;
    session.open.close();
    return code;
  } catch (err) {
    const msg = (err as Error).message;
    session.open.close();
    restore();
    process.stderr.write(`\r\nairlock: ${msg}\n`);
    return err instanceof TargetFailure && err.code !== 'closed' ? 5 : 1;
  } finally {
    restore();
    stdout.off('resize', onResize);
    stdin.off('data', onData);
    stdin.off('end', onEnd);
    stdin.pause();
  }
}
