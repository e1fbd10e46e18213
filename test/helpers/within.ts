// Bounded waits for tests: a hang fails with a description of where things stood instead of
// hanging the suite. `what` may be a function, read when the time is up.
export function within<T>(p: Promise<T>, what: string | (() => string), ms = 60_000): Promise<T> {
  let timer: NodeJS.Timeout;
  const late = new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(typeof what === 'function' ? what() : what)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
