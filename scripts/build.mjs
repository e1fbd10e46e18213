// Bundles the CLI into dist/ with esbuild: one file per command (code splitting), so that
// `airlock launch` starts fast (its figure includes the process start-up). Type checking is
// `npm run typecheck` (tsc). Native and file-loading packages stay external.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
await build({
  // The embedded database runs in its own thread (src/store/pglite-thread.ts), from its own file.
  entryPoints: { main: 'src/cli/main.ts', 'pglite-worker': 'src/store/pglite-worker.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
  // bufferutil: ws's native masking addon, found at run time (bundled, it could not find its prebuilt binary).
  external: ['node-datachannel', 'node-pty', 'ssh2', '@electric-sql/pglite', 'pg', 'pino', 'bufferutil'],
  // Bundled CommonJS packages (ws) call require() for Node built-ins.
  banner: { js: "import { createRequire as __airlockRequire } from 'node:module'; const require = __airlockRequire(import.meta.url);" },
});
