// A queue one consumer awaits: items in arrival order, then the end (or an error, thrown once the
// items before it are taken). Shared by the response reader (sse-post.ts) and the provider
// thread's calls (provider-io.ts).
export class WakeQueue<T> {
  private items: T[] = [];
  private head = 0;
  private ended = false;
  private error: unknown = null;
  private wake: (() => void) | null = null;

  /** onDrained: called when a shift takes the last queued item. */
  constructor(private onDrained: () => void = () => {}) {}

  /** Items queued and not yet taken. */
  get held(): number {
    return this.items.length - this.head;
  }

  get done(): boolean {
    return this.ended;
  }

  push(item: T): void {
    this.items.push(item);
    this.notify();
  }

  /** No more items; with err, next() throws it once the queued ones are taken. Only the first end counts. */
  end(err: unknown = null): void {
    if (this.ended) return;
    this.ended = true;
    this.error = err;
    this.notify();
  }

  /** The next queued item, or undefined when none is queued (then await next()). */
  shift(): T | undefined {
    if (this.head === this.items.length) return undefined;
    const item = this.items[this.head++]!;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
      this.onDrained();
    }
    return item;
  }

  /** The next item once one arrives; null at the end; throws the end's error. */
  async next(): Promise<T | null> {
    for (;;) {
      const item = this.shift();
      if (item !== undefined) return item;
      if (this.ended) {
        if (this.error) throw this.error;
        return null;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
}
