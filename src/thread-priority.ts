// Every token a client receives passes through the server's main thread (the event loop). The
// process's other threads do work that can wait a few milliseconds: V8's background threads
// compile hot code (PGlite's WebAssembly, for minutes after a start) and help the garbage
// collector; the embedded database's thread batches statements that arrive while it is busy.
// On a machine with few cores they took the CPU from the event loop when turns ended together,
// and the tokens of other chats waited. Linux lets a process raise the niceness (lower the
// priority) of each of its own threads without any privilege; only raising is attempted, never
// lowering, and elsewhere (no /proc) nothing happens.
import fs from 'node:fs';
import os from 'node:os';

/** Linux's lowest priority. */
const MAX_NICE = 19;

function renice(tid: number, wanted: number): boolean {
  const nice = Math.min(MAX_NICE, wanted);
  try {
    if (os.getPriority(tid) >= nice) return false;
    os.setPriority(tid, nice);
    return true;
  } catch {
    return false; // the thread ended meanwhile, or the system does not allow it
  }
}

/**
 * Raises to `nice` the niceness of every thread of this process but the main one, as they are
 * now. Called first thing at start-up, those are V8's background workers (its optimizing
 * compilers and garbage-collection helpers), Node's idle signal thread and libuv's thread pool,
 * which the ES module loader has started by then (the server gives it only log writes and DNS
 * lookups, none on a token's way). Threads started later inherit the priority of the thread that
 * starts them. Returns how many were changed.
 */
export function niceOtherThreads(nice: number): number {
  if (nice <= 0) return 0;
  let tids: string[];
  try {
    tids = fs.readdirSync('/proc/self/task');
  } catch {
    return 0;
  }
  return tids.map(Number).filter((tid) => tid !== process.pid && renice(tid, nice)).length;
}

/** Raises the calling thread's niceness to `nice` (from a worker thread: its own thread only). */
export function niceThisThread(nice: number): boolean {
  if (nice <= 0) return false;
  let tid: number;
  try {
    tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return false;
  }
  return Number.isInteger(tid) && tid > 0 && renice(tid, nice);
}
