// Bundles the CLI into dist/ with esbuild: one file per command (code splitting), so that
// `airlock launch` starts fast (its figure includes the process start-up). Type checking is
// `npm run typecheck` (tsc). Native and file-loading packages stay external.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import path from 'node:path';

// ws loads https, tls and zlib when it is loaded, for wss:// and permessage-deflate. A CLI that
// dials ws:// with compression off uses none of them, and compiling them took ~15 ms of
// `airlock launch`'s start-up (its launch figure includes that). In ws's files they are proxies
// that load the module on first use.
const LAZY_IN_WS = /^(https|tls|zlib)$/;
const wsDir = `${path.sep}node_modules${path.sep}ws${path.sep}`;
const lazyBuiltinsInWs = {
  name: 'lazy-builtins-in-ws',
  setup(b) {
    b.onResolve({ filter: LAZY_IN_WS }, (args) => (args.importer.includes(wsDir) ? { path: args.path, namespace: 'lazy-builtin' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => ({
      contents: `let m; module.exports = new Proxy({}, { get: (_, k) => (m ??= require('node:${args.path}'))[k] });`,
      loader: 'js',
    }));
  },
};

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
await build({
  // The embedded database runs in its own thread (src/store/db-thread.ts), from its own file.
  entryPoints: { main: 'src/cli/main.ts', 'pglite-worker': 'src/store/pglite-worker.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
  plugins: [lazyBuiltinsInWs],
  // bufferutil: ws's native masking addon, found at run time (bundled, it could not find its prebuilt binary).
  external: ['node-datachannel', '@lydell/node-pty', 'ssh2', '@electric-sql/pglite', 'pg', 'pino', 'bufferutil'],
  // Bundled CommonJS packages (ws) call require() for Node built-ins.
  banner: { js: "import { createRequire as __airlockRequire } from 'node:module'; const require = __airlockRequire(import.meta.url);" },
});
