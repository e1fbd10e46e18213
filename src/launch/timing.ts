// Named launch checkpoints: ms since start and since the previous one. Printed to stderr with
// AIRLOCK_CONNECT_TIMING=1, or written as JSON (--timing-json FILE).
import fs from 'node:fs';

export interface Checkpoint {
  name: string;
  ms: number;
  delta_ms: number;
  detail?: string;
}

export class Timing {
  readonly points: Checkpoint[] = [];
  private last: number;

  /** t0 = 0 measures from process start (performance.now()'s origin), which is what a user waits for. */
  constructor(
    private readonly t0 = 0,
    private readonly print = process.env.AIRLOCK_CONNECT_TIMING === '1',
  ) {
    this.last = t0;
  }

  mark(name: string, detail?: string): void {
    const now = performance.now();
    const p: Checkpoint = { name, ms: round(now - this.t0), delta_ms: round(now - this.last), ...(detail ? { detail } : {}) };
    this.last = now;
    this.points.push(p);
    if (this.print) process.stderr.write(`[airlock] ${name.padEnd(18)} ${p.ms.toFixed(1).padStart(8)} ms  (+${p.delta_ms.toFixed(1)})${detail ? `  ${detail}` : ''}\n`);
  }

  has(name: string): boolean {
    return this.points.some((p) => p.name === name);
  }

  writeJson(file: string): void {
    fs.writeFileSync(file, JSON.stringify({ checkpoints: this.points }, null, 2) + '\n');
  }
}

const round = (n: number) => Math.round(n * 10) / 10;
