// Every error code the server can answer and every close code it uses is in docs/API.md, with
// the same status, and the document lists none that the code does not have.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { CloseCode, ERROR_STATUS } from '../src/codes.js';

const doc = fs.readFileSync(new URL('../docs/API.md', import.meta.url), 'utf8');
const section = (title: string) => doc.split(`## ${title}`)[1]!.split('\n## ')[0]!;

test('docs/API.md lists every HTTP error code with its status, and no other', () => {
  const documented: Record<string, number> = {};
  for (const line of section('Error codes').split('\n')) {
    const m = /^\| (\d{3}) \| ([^|]+) \|/.exec(line);
    if (!m) continue;
    for (const code of m[2]!.matchAll(/`([a-z_]+)`/g)) documented[code[1]!] = Number(m[1]);
  }
  const { internal: _internal, ...answered } = ERROR_STATUS; // a 500 says only `internal` (documented in the introduction)
  assert.deepEqual(documented, answered);
  assert.match(doc, /a 5xx says only `internal`/);
});

test('docs/API.md lists every WebSocket close code, and no other', () => {
  const documented = new Set<number>();
  for (const line of section('WebSocket close codes').split('\n')) {
    const m = /^\| (\d{4}) \|/.exec(line);
    if (m) documented.add(Number(m[1]));
  }
  assert.deepEqual([...documented].sort(), Object.values(CloseCode).map(Number).sort());
});
