// Thread priorities: the server's background threads yield the CPU to its event loop. Run in a
// child process, whose threads are its own to change.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const linux = fs.existsSync('/proc/thread-self');

function runChild(code: string): any {
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  return JSON.parse(out.trim().split('\n').at(-1)!);
}

const prelude = `
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { niceOtherThreads, niceThisThread } from ${JSON.stringify(new URL('../src/thread-priority.ts', import.meta.url).href)};
// A thread may end between the listing and the read of its stat (one did, in CI): it is left out.
const niceOf = (t) => { try { return [[t, Number(fs.readFileSync('/proc/self/task/' + t + '/stat', 'utf8').split(') ')[1].split(' ')[16])]]; } catch { return []; } };
const niceness = () => Object.fromEntries(fs.readdirSync('/proc/self/task').flatMap(niceOf));
`;

// Relative to the niceness the tests run at (a CI may run them niced already).
const base = linux ? Number(fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[16]) : 0;
const room = linux && base <= 12 ? false : 'the tests already run at niceness above 12';

test('the other threads of the process get the niceness, the main thread keeps its own, and none is ever lowered', { skip: (!linux && 'Linux only') || room }, () => {
  const r = runChild(`${prelude}
    const before = niceness();
    const changed = niceOtherThreads(${base + 7});
    const after = niceness();
    const again = niceOtherThreads(${base + 3});
    console.log(JSON.stringify({ pid: process.pid, before, changed, after, again, final: niceness() }));
  `);
  const main = String(r.pid);
  const others = Object.keys(r.after).filter((t) => t !== main);
  assert.ok(others.length >= 4, `expected V8's background threads, found ${others.length}`);
  assert.equal(r.changed, others.length);
  for (const t of others) assert.equal(r.after[t], base + 7, `thread ${t}`);
  assert.equal(r.after[main], r.before[main], 'the main thread keeps its priority');
  assert.equal(r.again, 0, 'a lower niceness is not applied');
  for (const t of others) assert.equal(r.final[t], base + 7);
});

test('a worker thread raises its own niceness only', { skip: (!linux && 'Linux only') || room }, () => {
  const r = runChild(`${prelude}
    const before = niceness();
    const w = new Worker(\`
      import { parentPort } from 'node:worker_threads';
      import fs from 'node:fs';
      const { register } = await import('tsx/esm/api');
      register(); // a worker does not inherit the parent's TypeScript loader
      const { niceThisThread } = await import(${JSON.stringify(new URL('../src/thread-priority.ts', import.meta.url).href)});
      const tid = fs.readlinkSync('/proc/thread-self').split('/').pop();
      parentPort.postMessage({ tid, changed: niceThisThread(${base + 4}), again: niceThisThread(${base + 2}) });
    \`, { eval: true });
    const m = await new Promise((resolve) => w.once('message', resolve));
    const after = niceness();
    await w.terminate();
    console.log(JSON.stringify({ pid: process.pid, before, after, ...m }));
  `);
  assert.equal(r.changed, true);
  assert.equal(r.again, false, 'never lowered');
  assert.equal(r.after[r.tid], base + 4);
  for (const [t, n] of Object.entries(r.after)) if (t !== r.tid && r.before[t] !== undefined) assert.equal(n, r.before[t], `thread ${t} unchanged`);
});

test('niceness 0 changes nothing; above 19 is 19', { skip: !linux && 'Linux only' }, () => {
  const r = runChild(`${prelude}
    const zero = { others: niceOtherThreads(0), self: niceThisThread(0) };
    niceOtherThreads(40);
    console.log(JSON.stringify({ zero, pid: process.pid, after: niceness() }));
  `);
  assert.deepEqual(r.zero, { others: 0, self: false });
  for (const [t, n] of Object.entries(r.after)) assert.equal(n, t === String(r.pid) ? base : 19, `thread ${t}`);
});
