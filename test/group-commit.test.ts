// Group commit (store/group-commit.ts): calls that arrive while a batch is in flight go together
// in the next one; the same key never shares a batch; one bad call fails alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CALLERS_PER_TURN, GroupCommit } from '../src/store/group-commit.js';

function recorder(fail?: (item: string) => boolean) {
  const batches: string[][] = [];
  let release: (() => void) | null = null;
  const gc = new GroupCommit<string, string>(
    async (items) => {
      batches.push([...items]);
      if (batches.length === 1) await new Promise<void>((r) => (release = r)); // hold the first batch in flight
      if (fail && items.some(fail)) throw new Error(`bad item in ${items.join(',')}`);
      return items.map((i) => i.toUpperCase());
    },
    { max: 3, key: (i) => i.split(':')[0]! },
  );
  return { gc, batches, releaseFirst: () => release?.() };
}

test('the first call runs at once; calls made meanwhile go together, at most max per batch, never two of one key', async () => {
  const { gc, batches, releaseFirst } = recorder();
  const first = gc.submit('a:1');
  assert.deepEqual(batches, [['a:1']], 'an idle batcher runs the first call without waiting');
  const rest = ['b:1', 'a:2', 'c:1', 'd:1', 'e:1'].map((i) => gc.submit(i));
  releaseFirst();
  assert.deepEqual(await Promise.all([first, ...rest]), ['A:1', 'B:1', 'A:2', 'C:1', 'D:1', 'E:1']);
  assert.deepEqual(batches, [['a:1'], ['b:1', 'a:2', 'c:1'], ['d:1', 'e:1']]);
  const same = ['x:1', 'x:2', 'x:3'].map((i) => gc.submit(i));
  assert.deepEqual(await Promise.all(same), ['X:1', 'X:2', 'X:3']);
  assert.deepEqual(batches.slice(3), [['x:1'], ['x:2'], ['x:3']], 'one key: one call per batch, in order');
});

test('a failing batch is run again one call at a time: only the bad call fails', async () => {
  const { gc, batches, releaseFirst } = recorder((i) => i === 'bad:1');
  const first = gc.submit('a:1');
  const rest = ['b:1', 'bad:1', 'c:1'].map((i) => gc.submit(i).catch((e: Error) => `error: ${e.message}`));
  releaseFirst();
  assert.deepEqual(await Promise.all([first, ...rest]), ['A:1', 'B:1', 'error: bad item in bad:1', 'C:1']);
  assert.deepEqual(batches, [['a:1'], ['b:1', 'bad:1', 'c:1'], ['b:1'], ['bad:1'], ['c:1']]);
});

test('the next batch leaves before the callers of the batch before it continue', async () => {
  const order: string[] = [];
  let release: (() => void) | null = null;
  const gc = new GroupCommit<string, string>(
    async (items) => {
      order.push(`batch ${items.join(',')}`);
      if (order.length === 1) await new Promise<void>((r) => (release = r));
      return items;
    },
    { max: 10, key: (i) => i },
  );
  const a = gc.submit('a').then(() => order.push('a continues'));
  const b = gc.submit('b').then(() => order.push('b continues'));
  const c = gc.submit('c').then(() => order.push('c continues'));
  release!();
  await Promise.all([a, b, c]);
  // The database is not left idle while a's caller publishes its events.
  assert.deepEqual(order, ['batch a', 'batch b,c', 'a continues', 'b continues', 'c continues']);
});

test("a large batch's callers continue a few per event-loop turn, other work runs between them, and a later batch's never overtake", async () => {
  const order: string[] = [];
  let release: (() => void) | null = null;
  let batches = 0;
  const gc = new GroupCommit<string, string>(
    async (items) => {
      if (batches++ === 0) await new Promise<void>((r) => (release = r));
      return items;
    },
    { max: 20, key: (i) => i },
  );
  const first = gc.submit('first');
  const big = Array.from({ length: 10 }, (_, i) =>
    gc.submit(`c${i}`).then(() => {
      order.push(`c${i}`);
      // Work that became ready meanwhile (a socket read, say): it runs between the callers.
      if (i === 0) setImmediate(() => order.push('other'));
      // A call made by the first caller goes in a later batch, committed before the last callers continue.
      if (i === 0) void gc.submit('later').then(() => order.push('later'));
    }),
  );
  release!();
  await first;
  await Promise.all(big);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(CALLERS_PER_TURN, 4);
  assert.deepEqual(order, ['c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'other', 'c8', 'c9', 'later']);
});
