// Reconnect / retry delays: about baseMs on the first retry, doubling up to maxMs, ±25 % jitter so
// that many clients cut off together do not come back in step.
export function retryDelay(attempt: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30)) * (0.75 + Math.random() * 0.5);
}
