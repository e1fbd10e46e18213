// What `airlock chat` keeps of the keys typed while a reply streams (the keypress decoding is
// readline's; the session itself is driven through a real terminal in cli.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TypeAhead } from '../src/cli/type-ahead.js';

test('type-ahead: lines on Enter, editing keys, Ctrl-C to the turn, the rest ignored', () => {
  const lines: string[] = [];
  let interrupts = 0;
  const keys = new TypeAhead(process.stdin, () => interrupts++, (l) => lines.push(l));
  const type = (s: string) => {
    for (const ch of s) keys.onKey(ch, { name: ch, sequence: ch });
  };
  type('helo');
  keys.onKey('\x7f', { name: 'backspace' });
  type('lo wörld');
  keys.onKey('\r', { name: 'return' });
  keys.onKey('\r', { name: 'return' }); // an empty line is not sent
  type('discarded');
  keys.onKey('\x15', { name: 'u', ctrl: true });
  keys.onKey('\x1b[A', { name: 'up', sequence: '\x1b[A' });
  keys.onKey('\x04', { name: 'd', ctrl: true });
  keys.onKey('\x03', { name: 'c', ctrl: true });
  type('unfinished');
  assert.deepEqual(lines, ['hello wörld']);
  assert.equal(interrupts, 1);
  assert.equal(keys.stop(), 'unfinished');
});
