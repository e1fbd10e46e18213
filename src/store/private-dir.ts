// The embedded database's folder holds every chat, token hash and sealed credential, in the
// catalog files and the write-ahead log as well as the tables: no other local user may read or
// write any of it. PGlite creates its files 0666 and its folders 0777 (less the umask).
import fs from 'node:fs';
import path from 'node:path';

/**
 * Creates `dir` 0700 (or makes an existing one so), and takes group and other access off
 * everything under it; returns how many entries it had to repair. Files made afterwards by this
 * process are private too: the umask becomes 077 (the database thread shares it).
 */
export function makePrivateDir(dir: string): number {
  process.umask(0o077);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  let repaired = 0;
  const fix = (p: string, st: fs.Stats) => {
    if (st.isSymbolicLink() || (st.mode & 0o077) === 0) return;
    fs.chmodSync(p, st.mode & 0o7700);
    repaired++;
  };
  fix(dir, fs.statSync(dir));
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      fix(p, fs.lstatSync(p));
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return repaired;
}
