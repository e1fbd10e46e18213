// Tokens ahead of a turn boundary's work. When 50 turns end together, the main thread has tens of
// callbacks ready (HTTP sends, database replies, the callers of a group commit, a few per loop
// turn) and the provider thread's replies (every chat's next tokens) wait behind them in the order
// the loop found them. A token source here is read without waiting for the event loop; each of
// those callbacks takes what waits there first, so tokens stream between the boundary's pieces.
const sources = new Set<() => void>();

/** Registers `take` (hands on whatever tokens wait, synchronously); returns its removal. */
export function addTokenSource(take: () => void): () => void {
  sources.add(take);
  return () => sources.delete(take);
}

/** Hands on the tokens that are waiting: called first by callbacks that do a turn boundary's work. */
export function takeTokensFirst(): void {
  for (const take of sources) take();
}
