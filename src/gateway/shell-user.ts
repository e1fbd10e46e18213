// The account a gateway runs `shell` sessions as. A shell is code execution on the gateway host
// for whoever is granted the resource: it must not run as the gateway itself, whose memory,
// environment and files hold the gateway token (and with it every credential the server opens
// for the gateway's group). So the gateway serves shells only when told to (--allow-shell) and
// only as another, unprivileged account (--shell-user), with an environment of its own.
import { execFileSync, spawnSync } from 'node:child_process';

export interface ShellUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** Looks the account up and checks that this process can run programs as it; throws a message for the operator. */
export function shellUser(name: string): ShellUser {
  let entry: string;
  try {
    entry = execFileSync('getent', ['passwd', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    throw new Error(`--shell-user: there is no user "${name}" on this host (create an unprivileged account for the shells, e.g. useradd -m -s /bin/bash airlock-shell)`);
  }
  const [, , uid, gid, , home, shell] = entry.split(':');
  const u: ShellUser = { name, uid: Number(uid), gid: Number(gid), home: home || '/', shell: shell || '/bin/sh' };
  if (u.uid === 0) throw new Error(`--shell-user: "${name}" is root; shells must run as an unprivileged account`);
  if (u.uid === process.getuid?.()) {
    throw new Error(`--shell-user: "${name}" is the account the gateway runs as; a shell could read the gateway's token. Use another account`);
  }
  if (/\/(nologin|false)$/.test(u.shell)) throw new Error(`--shell-user: "${name}" has no login shell (${u.shell}); give it one, e.g. usermod -s /bin/bash ${name}`);
  const probe = spawnSync('true', [], { uid: u.uid, gid: u.gid, stdio: 'ignore' });
  if (probe.error) {
    throw new Error(`--shell-user: the gateway cannot run programs as "${name}" (${(probe.error as NodeJS.ErrnoException).code}); run the gateway as root, it starts each shell as ${name}`);
  }
  return u;
}

/** The whole environment a shell gets: nothing of the gateway's own. */
export function shellEnv(u: ShellUser, term?: string): Record<string, string> {
  return {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: u.home,
    USER: u.name,
    LOGNAME: u.name,
    SHELL: u.shell,
    LANG: process.env.LANG || 'C.UTF-8',
    ...(term ? { TERM: term } : {}),
  };
}
