// Starts one of our worker threads: `name` is its entry file, beside the module that starts it
// (bundled: dist/<name>.js beside the chunk; from source, under tsx: the .ts file).
import { Worker, type TransferListItem } from 'node:worker_threads';

export function startWorker(callerUrl: string, name: string, workerData: unknown, transferList: TransferListItem[] = []): Worker {
  const fromSource = callerUrl.endsWith('.ts');
  const entry = new URL(`./${name}.${fromSource ? 'ts' : 'js'}`, callerUrl);
  // Node 20 does not apply `--import tsx` to workers: from source, register tsx in the worker first.
  return fromSource
    ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`, { eval: true, workerData, transferList })
    : new Worker(entry, { workerData, transferList });
}
