// The chat worker: claims runnable chats under a lease, keeps the leases alive, and runs each
// claimed chat. Acquisition happens on a wake signal sent after every commit that makes a chat
// pending; the timer is only the safety net for expired leases and lost signals.
import crypto from 'node:crypto';
import type { Bus } from '../bus/bus.js';
import type { Db } from '../store/db.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Providers } from './providers/index.js';
import { ChatRun, LLM_RETRY, type LlmRetry } from './run.js';
import { ToolBox } from './tools/index.js';
import { type ClaimedChat, claimChats, expireLeases, nextForeignExpiry, renewLeases } from './sql/claimChats.js';
import { HistoryCache } from './history-cache.js';
import type { ChatStatus } from './types.js';
import { metrics } from '../metrics.js';

/** The settings a worker reads. */
export type RunnerConfig = Pick<Config, 'chatConcurrency' | 'leaseMs' | 'drainMs' | 'maxSteps' | 'actionTimeoutMs'>;

/** The safety-net timer: finds chats whose lease expired unseen or whose wake signal was lost.
 * Work is found on wake signals; this only bounds how long a lost one can delay a chat. */
export const SWEEP_MS = 5_000;

/** Changes to the settings' behaviour for one worker (the tests, `airlock server --sweep-ms/--no-wake`). */
export interface RunnerOptions {
  workerId?: string;
  concurrency?: number;
  leaseMs?: number;
  /** Default: a third of the lease, so that two renewals can fail before it expires. */
  heartbeatMs?: number;
  sweepMs?: number;
  /** false: ignore wake signals and rely on the sweep timer (the polling baseline). */
  wake?: boolean;
  /** Retries of a transient provider error (default LLM_RETRY). */
  llmRetry?: LlmRetry;
  onFinished?: (chatId: string, status: ChatStatus) => void;
  /** The tools turns may run (default: the built-ins). */
  tools?: ToolBox;
  /** Runs on the sweep timer too (e.g. expiring requires_action deadlines). */
  onSweep?: () => Promise<void>;
}

export class Runner {
  readonly workerId: string;
  private active = new Map<string, ChatRun>();
  private done = new Map<string, Promise<void>>();
  private acquiring = false;
  private again = false;
  /** Slots promised to chats this replica claims itself (see reserve()). */
  private reserved = 0;
  /** The last acquisition may have left runnable chats behind (it had no free slot, or filled them all). */
  private mayHaveMore = true;
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  private expiryTimer: NodeJS.Timeout | undefined;
  private unsubs: (() => void)[] = [];
  private concurrency: number;
  readonly leaseMs: number;
  /** false: the polling baseline (no wake signals, no claim on send). */
  private wakeEnabled: boolean;
  private tools: ToolBox;
  /** The histories of the chats this worker ran last, so that a turn reads only what is new. */
  private history = new HistoryCache();

  constructor(
    private db: Db,
    private bus: Bus,
    private providers: Providers,
    private log: Logger,
    private config: RunnerConfig,
    private opts: RunnerOptions = {},
  ) {
    this.workerId = opts.workerId ?? `w-${crypto.randomUUID()}`;
    this.concurrency = opts.concurrency ?? config.chatConcurrency;
    this.leaseMs = opts.leaseMs ?? config.leaseMs;
    this.wakeEnabled = opts.wake ?? true;
    this.tools = opts.tools ?? new ToolBox();
  }

  start(): void {
    if (this.wakeEnabled) this.unsubs.push(this.bus.subscribe('wake', () => this.kick()));
    this.unsubs.push(
      this.bus.subscribe('control', (m: { chat_id: string; action: 'interrupt' | 'cancel'; epoch?: number }) => {
        const run = this.active.get(m.chat_id);
        // A command for an earlier run of the chat (it ended, and a send claimed the chat again
        // before the command arrived) does not stop the one running now.
        if (!run || (m.epoch !== undefined && m.epoch !== run.epoch)) return;
        if (m.action === 'interrupt') run.interrupt();
        else run.cancel();
      }),
    );
    this.timers.push(
      setInterval(() => {
        void this.heartbeat();
        void this.armExpiryTimer();
      }, this.opts.heartbeatMs ?? Math.max(100, Math.floor(this.leaseMs / 3))),
    );
    this.timers.push(
      setInterval(() => {
        this.kick();
        this.opts.onSweep?.().catch((err) => this.log.warn({ err }, 'sweep failed'));
      }, this.opts.sweepMs ?? SWEEP_MS),
    );
    this.kick();
  }

  get activeCount(): number {
    return this.active.size;
  }

  /** Claims runnable chats up to the concurrency limit. Coalesces concurrent calls. */
  kick(): void {
    if (this.stopped) return;
    if (this.acquiring) {
      this.again = true;
      return;
    }
    this.acquiring = true;
    void this.acquireLoop().finally(() => {
      this.acquiring = false;
      if (this.again && !this.stopped) {
        this.again = false;
        this.kick();
      }
    });
  }

  private async acquireLoop(): Promise<void> {
    for (;;) {
      this.again = false;
      const free = this.concurrency - this.active.size - this.reserved;
      if (free <= 0) this.mayHaveMore = true;
      if (free <= 0 || this.stopped) return;
      let rows: (ClaimedChat & { waited_ms: number })[];
      try {
        rows = await claimChats(this.db, this.workerId, free, this.leaseMs);
      } catch (err) {
        this.mayHaveMore = true;
        if (!this.stopped) this.log.error({ err }, 'acquire failed');
        return;
      }
      for (const row of rows) {
        if (row.prev_status === 'pending') metrics.acquisitionMs.observe(row.waited_ms);
        this.launch(row);
      }
      this.mayHaveMore = rows.length >= free;
      if (rows.length < free && !this.again) return;
    }
  }

  /**
   * A slot for a chat that a send on this replica claims in its own statement (no wake signal,
   * no acquiring statement); false when full, stopping, or on the polling baseline. Every true
   * must be followed by adopt().
   */
  reserve(): boolean {
    if (this.stopped || !this.wakeEnabled || this.active.size + this.reserved >= this.concurrency) return false;
    this.reserved++;
    return true;
  }

  /** Runs a chat claimed with a reservation; null gives the reservation back. */
  adopt(row: ClaimedChat | null): void {
    this.reserved--;
    if (!row) return;
    if (this.stopped) {
      // Claimed while the replica began to stop: hand it on at once (its lease is ours only in name).
      void this.handBack([row.id]);
      return;
    }
    metrics.acquisitionMs.observe(0);
    this.launch(row);
  }

  private launch(row: ClaimedChat): void {
    const run = new ChatRun(
      {
        db: this.db,
        bus: this.bus,
        providers: this.providers,
        tools: this.tools,
        history: this.history,
        workerId: this.workerId,
        log: this.log,
        onFinished: this.opts.onFinished,
        limits: this.config,
        llmRetry: this.opts.llmRetry ?? LLM_RETRY,
      },
      row,
    );
    this.active.set(row.id, run);
    metrics.activeRuns.inc();
    this.log.debug({ chat_id: row.id, recovered: row.prev_status === 'running' }, 'chat acquired');
    const p = run
      .run()
      .catch((err) => this.log.error({ err, chat_id: row.id }, 'chat run crashed'))
      .finally(() => {
        this.active.delete(row.id);
        metrics.activeRuns.dec();
        this.done.delete(row.id);
        // A freed slot matters only if work was left behind; new work comes with a wake signal.
        if (this.mayHaveMore) this.kick();
      });
    this.done.set(row.id, p);
  }

  private async heartbeat(): Promise<void> {
    if (!this.active.size || this.stopped) return;
    // The runs as they are now: only these are judged by the result. A chat whose turn ended
    // while the statement was on its way, and that a send claimed again for this worker before
    // the result came back, has a new run that this statement never saw (it found the chat
    // released, not running): cancelling that one stopped the new turn silently until a sweep.
    const runs = [...this.active.entries()];
    try {
      const alive = await renewLeases(this.db, this.workerId, runs.map(([id]) => id), this.leaseMs);
      for (const [id, run] of runs) {
        if (this.active.get(id) !== run || run.finishing) continue;
        if (!alive.has(id)) run.cancel();
        else if (alive.get(id)) run.interrupt(); // safety net for a lost interrupt signal
      }
    } catch (err) {
      this.log.warn({ err }, 'heartbeat failed');
    }
  }

  /**
   * A dead worker's leases run out without any event to say so: wake up when the earliest lease
   * held by someone else expires (re-armed on every heartbeat), so recovery takes one lease, not
   * one lease plus a sweep interval.
   */
  private async armExpiryTimer(): Promise<void> {
    if (this.stopped || this.active.size >= this.concurrency) return;
    try {
      const ms = await nextForeignExpiry(this.db, this.workerId);
      clearTimeout(this.expiryTimer);
      if (ms === null || this.stopped) return;
      this.expiryTimer = setTimeout(() => this.kick(), Math.max(0, ms) + 20);
      this.expiryTimer.unref();
    } catch {
      /* the sweep timer is the safety net */
    }
  }

  /**
   * Stops taking work and waits for running chats to finish (at most graceMs). Turns still running
   * then are handed back: their leases are expired at once and a wake signal sent, so another
   * replica resumes them now rather than after the lease.
   */
  async stop(graceMs = this.config.drainMs): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.expiryTimer);
    const all = Promise.all(this.done.values());
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), graceMs)));
    if ((await Promise.race([all, expired])) === 'late') {
      const ids = [...this.active.keys()];
      for (const run of this.active.values()) run.cancel();
      await Promise.all(this.done.values());
      await this.handBack(ids);
    }
    clearTimeout(timer);
    for (const u of this.unsubs) u();
  }

  /** Expires this worker's leases on these chats and wakes the other replicas, which resume them now. */
  private async handBack(ids: string[]): Promise<void> {
    const handed = await expireLeases(this.db, this.workerId, ids).catch((err) => {
      this.log.warn({ err }, 'could not hand back running chats; their leases will expire');
      return [] as string[];
    });
    if (handed.length) {
      this.log.info({ chats: handed.length }, 'handed running chats back to the other replicas');
      this.bus.publish('wake', { chat_id: handed[0]! });
    }
  }

  /** Test hook: behave like a process that died (no more writes, no heartbeats, no hand-back). */
  crash(): void {
    this.stopped = true;
    clearTimeout(this.expiryTimer);
    for (const t of this.timers) clearInterval(t);
    for (const u of this.unsubs) u();
    for (const run of this.active.values()) run.cancel();
  }
}
