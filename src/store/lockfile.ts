// One process owns an embedded data folder: two PGlite instances on one folder silently lose data.
//
// On Linux the lock is a socket in the abstract namespace, named after the folder: the kernel frees
// it the moment its process ends, however it ends, so a holder that was killed and not yet reaped
// (a zombie, as in a container without an init) or a recycled pid never reads as alive. The pid
// file beside it only names the holder in the message. Elsewhere the pid file is the lock.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export class DataDirLockedError extends Error {
  constructor(readonly dir: string, readonly pid: number) {
    super(`the data folder ${dir} is in use by another Airlock process${pid ? ` (pid ${pid})` : ''}; stop it first or use another --data-dir`);
  }
}

/** Takes the data folder's lock or throws DataDirLockedError; resolves with the release function. */
export async function acquireDataDirLock(dir: string): Promise<() => void> {
  const file = path.join(dir, 'airlock.lock');
  const releaseSocket = process.platform === 'linux' ? await bindLock(dir, file) : pidLock(dir, file);
  fs.writeFileSync(file, String(process.pid));
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off('exit', release);
    try {
      if (fs.readFileSync(file, 'utf8') === String(process.pid)) fs.unlinkSync(file);
    } catch {
      /* already gone */
    }
    releaseSocket();
  };
  process.on('exit', release);
  return release;
}

function holder(file: string): number {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/** Linux: listens on an abstract socket named after the folder's real path. */
function bindLock(dir: string, file: string): Promise<() => void> {
  const name = `\0airlock-data-${crypto.createHash('sha256').update(fs.realpathSync(dir)).digest('hex').slice(0, 40)}`;
  return new Promise((resolve, reject) => {
    const srv = net.createServer((c) => c.destroy());
    srv.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') reject(new DataDirLockedError(dir, holder(file)));
      else reject(err);
    });
    srv.listen({ path: name }, () => {
      srv.unref();
      resolve(() => srv.close());
    });
  });
}

/** Other systems: the pid file, checked for a live process. */
function pidLock(dir: string, file: string): () => void {
  const pid = holder(file);
  if (pid && (pid === process.pid || alive(pid))) throw new DataDirLockedError(dir, pid);
  return () => {};
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
