// Pub/sub between the parts of the control plane. Local subscribers always get a message
// synchronously and in order; with several replicas a remote bus (PostgreSQL LISTEN/NOTIFY or
// NATS) also carries it to the others (see docs/ARCHITECTURE.md "Replicas").

export type Topic = 'events' | 'wake' | 'control' | 'replay' | 'replay_reply' | 'signal' | 'auth';
export type Handler = (msg: any) => void;

export interface Bus {
  /** Identifies this process on the bus (replies and signalling are addressed to it). */
  readonly replicaId: string;
  readonly kind: 'local' | 'postgres' | 'nats';
  publish(topic: Topic, msg: unknown): void;
  subscribe(topic: Topic, handler: Handler): () => void;
  /** Called after a lost bus connection came back: messages from other replicas may be missing. */
  onGap(handler: () => void): () => void;
  close(): Promise<void>;
}

export class LocalBus implements Bus {
  readonly kind: Bus['kind'] = 'local';
  readonly replicaId: string;
  protected handlers = new Map<Topic, Set<Handler>>();
  protected gapHandlers = new Set<() => void>();

  constructor(replicaId = `r-${Math.random().toString(36).slice(2, 10)}`) {
    this.replicaId = replicaId;
  }

  publish(topic: Topic, msg: unknown): void {
    this.deliver(topic, msg);
  }

  protected deliver(topic: Topic, msg: unknown): void {
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

  protected gap(): void {
    for (const h of this.gapHandlers) h();
  }

  subscribe(topic: Topic, handler: Handler): () => void {
    let set = this.handlers.get(topic);
    if (!set) this.handlers.set(topic, (set = new Set()));
    set.add(handler);
    return () => set!.delete(handler);
  }

  onGap(handler: () => void): () => void {
    this.gapHandlers.add(handler);
    return () => this.gapHandlers.delete(handler);
  }

  async close(): Promise<void> {
    this.handlers.clear();
    this.gapHandlers.clear();
  }
}
