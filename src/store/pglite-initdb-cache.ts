// A freshly initialized embedded database, kept as a gzipped tarball in the user's cache folder.
// PGlite runs initdb for every new database: 5-6 s of CPU on a 2-core VM, where loading the
// tarball of one takes 1-1.5 s. A new data folder (and every in-memory database the tests open)
// starts from it; the first one made on a machine saves it. It is taken straight after
// initdb, before any migration, so it holds nothing of any user's data.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);

/** The cache folder: airlock in the user's cache folder ($XDG_CACHE_HOME, else ~/.cache). */
export function initdbCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'airlock');
}

/** The cache file for the installed PGlite: another version may lay its files out differently. */
export function initdbCacheFile(cacheDir: string): string {
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const { version } = JSON.parse(fs.readFileSync(path.join(path.dirname(entry), '..', 'package.json'), 'utf8')) as { version: string };
  return path.join(cacheDir, `pglite-${version}-initdb.tar.gz`);
}

/**
 * The cached tarball, or null when there is none. One that another user could have written is not
 * used: it becomes the database that will hold this server's tokens and credentials. Unpacked
 * here, where a cut or damaged file throws (PGlite's own unpacking ends the thread).
 */
export async function readInitdbCache(file: string): Promise<Blob | null> {
  const gz = readOwnFile(file);
  return gz && new Blob([await gunzip(gz)], { type: 'application/x-tar' });
}

function readOwnFile(file: string): Buffer | null {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return null;
  }
  try {
    const st = fs.fstatSync(fd);
    const dir = fs.statSync(path.dirname(file));
    const mine = (s: fs.Stats) => process.getuid === undefined || s.uid === process.getuid();
    if (!st.isFile() || !mine(st) || !mine(dir) || st.mode & 0o022 || dir.mode & 0o022) return null;
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Saves the (uncompressed) tarball gzipped, whole or not at all: a concurrent start may be saving
 * it too, and the last one stays. Compressed by libuv's pool, not by the database's thread.
 */
export async function saveInitdbCache(file: string, tarball: Blob): Promise<void> {
  const gz = await gzip(Buffer.from(await tarball.arrayBuffer()), { level: 1 }); // 5.2 MB against 4.5 at the default level, in a third of the time
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    fs.writeFileSync(tmp, gz, { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  // Another PGlite version's file would stay behind for good (4-5 MB each).
  for (const other of fs.readdirSync(path.dirname(file))) {
    if (CACHE_FILE.test(other) && other !== path.basename(file)) fs.rmSync(path.join(path.dirname(file), other), { force: true });
  }
}

const CACHE_FILE = /^pglite-[^/]+-initdb\.tar\.gz$/;

/** A data folder PGlite has not initialized yet (it starts from the cached tarball, or runs initdb). */
export function isNewDatabase(dataDir: string | undefined): boolean {
  return !dataDir || !fs.existsSync(path.join(dataDir, 'PG_VERSION'));
}
