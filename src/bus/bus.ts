// Pub/sub between the parts of the control plane. Local subscribers always get a message
// synchronously and in order; with several replicas a remote bus (PostgreSQL LISTEN/NOTIFY or
// NATS) also carries it to the others (see docs/ARCHITECTURE.md "Replicas").

import type { StreamEvent } from '../chat/types.js';
import type { ReplayRequest } from '../chat/hub.js';
import type { BusSignal } from '../access/signal.js';

/**
 * What each topic carries. A message from another replica is authentic (signed, see remote.ts),
 * but its receivers still check what they rely on: replicas of other versions may be on the bus.
 */
export interface TopicMap {
  /** Stream events (one, or the events of one commit): every replica's hub keeps its logs. */
  events: StreamEvent | StreamEvent[];
  /** A chat became pending: every runner tries to acquire. */
  wake: { chat_id: string };
  /** Interrupt or cancel the run of a chat at this epoch (none: whichever holds it). */
  control: { chat_id: string; action: 'interrupt' | 'cancel'; epoch?: number };
  /** A subscriber asks the replica running a chat for its unsaved drafts. */
  replay: ReplayRequest;
  replay_reply: { req: string; to: string; events: StreamEvent[] };
  /** Launch signalling across replicas, gateway deletions, session ends, gateway probes. */
  signal: BusSignal;
  /** A person decided a chat agent's call: the replica running the turn reads the decision. */
  approval: { chat_id: string; tool_call_id: string };
  /** A token revoked, or a user disabled. */
  auth: { revoked: string } | { disabled_user: string };
}

/** A request to another replica (a chat's unsaved events, opening a session on its gateway) that
 * has no answer in this long is taken as unanswered: that replica is gone or cut off. A bus round
 * trip takes milliseconds. */
export const REPLICA_ANSWER_MS = 2_000;

export type Topic = keyof TopicMap;
export type Handler<T extends Topic = Topic> = (msg: TopicMap[T]) => void;

export interface Bus {
  /** Identifies this process on the bus (replies and signalling are addressed to it). */
  readonly replicaId: string;
  readonly kind: 'local' | 'postgres' | 'nats';
  publish<T extends Topic>(topic: T, msg: TopicMap[T]): void;
  subscribe<T extends Topic>(topic: T, handler: Handler<T>): () => void;
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

  publish<T extends Topic>(topic: T, msg: TopicMap[T]): void {
    this.deliver(topic, msg);
  }

  protected deliver(topic: Topic, msg: unknown): void {
    for (const h of (this.handlers.get(topic) ?? []) as Set<(m: unknown) => void>) {
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

  subscribe<T extends Topic>(topic: T, handler: Handler<T>): () => void {
    let set = this.handlers.get(topic);
    if (!set) this.handlers.set(topic, (set = new Set()));
    set.add(handler as Handler);
    return () => set!.delete(handler as Handler);
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
