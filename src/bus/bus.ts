// Pub/sub between the parts of the control plane. In one process delivery is synchronous and
// in order; replicas on PostgreSQL extend it (see docs/ARCHITECTURE.md).

export type Topic = 'events' | 'wake' | 'control';
export type Handler = (msg: any) => void;

export interface Bus {
  publish(topic: Topic, msg: unknown): void;
  subscribe(topic: Topic, handler: Handler): () => void;
  close(): Promise<void>;
}

export class LocalBus implements Bus {
  private handlers = new Map<Topic, Set<Handler>>();

  publish(topic: Topic, msg: unknown): void {
    for (const h of this.handlers.get(topic) ?? []) {
      try {
        h(msg);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  subscribe(topic: Topic, handler: Handler): () => void {
    let set = this.handlers.get(topic);
    if (!set) this.handlers.set(topic, (set = new Set()));
    set.add(handler);
    return () => set!.delete(handler);
  }

  async close(): Promise<void> {
    this.handlers.clear();
  }
}
