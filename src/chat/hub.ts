// Per-chat event logs in memory and their subscribers. A subscriber asks for events after a seq
// and gets the gap filled (durable events from the database, drafts from memory) before live
// events, with each seq delivered once.
import { type Bus, REPLICA_ANSWER_MS } from '../bus/bus.js';
import type { Db } from '../store/db.js';
import { type StreamEvent, TURN_ENDS, epochOf, ev, isDraft } from './types.js';
import { runningWorker } from './sql/chats.js';
import { type StoredRow, readEvents } from './sql/events.js';
import { publishedMessage } from './sql/messages.js';

export interface Sink {
  /** Hands events to the subscriber; must not block. */
  push(events: StreamEvent[]): void;
  /** Tells the subscriber to resume from its last seq (events may have been missed). */
  resync(reason: string): void;
  /** Resolves once what was pushed has left (a long replay goes on page by page); bounded. */
  drained?(): Promise<void>;
}

/** Stored events a replay reads and sends at a time: a long chat's history goes out in pages, each its own frame, and one subscriber holds one page. */
export const REPLAY_PAGE = 200;

/** Events a chat's log keeps in memory for catch-up: a reconnect further back reads the database. */
const LOG_EVENTS = 50_000;
/** A chat log with no subscriber and no event for this long is dropped. */
const LOG_IDLE_MS = 120_000;


export interface ReplayRequest {
  req: string;
  chat_id: string;
  after: number;
  worker_id: string;
  to: string;
}

interface Sub {
  sink: Sink;
  /** Events that arrived while the replay was being read. */
  held: StreamEvent[] | null;
  /**
   * Seqs the replay read from the database before this replica's bus delivered them: when they
   * arrive live they are not sent again. Dropped after REPLAYED_WINDOW_MS (a bus later than that
   * has a gap, and a gap resyncs every subscriber).
   */
  replayed: Set<number> | null;
}

const REPLAYED_WINDOW_MS = 60_000;

class ChatLog {
  /** The last ended turn and the current one, as streamed (older turns are read from the database). */
  events: StreamEvent[] = [];
  seqs = new Set<number>();
  /** Everything up to this seq is stored (or was a draft its stored messages replaced). */
  storedThrough = 0;
  /** The status event that ended the last turn. */
  lastTurnEnd = 0;
  subs = new Set<Sub>();
  /** Epoch of the newest status event: drafts of older epochs are stale (their owner lost the chat). */
  statusEpoch = 0;
  lastActive = Date.now();
}

export class StreamHub {
  private logs = new Map<string, ChatLog>();
  private unsub: () => void;
  private janitor: NodeJS.Timeout;
  private maxEvents = LOG_EVENTS;
  private idleMs = LOG_IDLE_MS;
  private unsubs: (() => void)[] = [];
  private replies = new Map<string, (events: StreamEvent[]) => void>();
  private reqs = 0;

  /** localWorkerId: the worker in this process, whose unsaved events other replicas may ask for. */
  constructor(
    private db: Db,
    private bus: Bus,
    private localWorkerId: () => string | undefined = () => undefined,
  ) {
    this.unsub = bus.subscribe('events', (ev: StreamEvent | StreamEvent[]) => {
      for (const e of Array.isArray(ev) ? ev : [ev]) this.ingest(e);
    });
    if (bus.kind !== 'local') {
      this.unsubs.push(
        bus.subscribe('replay', (m: ReplayRequest) => this.answerReplay(m)),
        bus.subscribe('replay_reply', (m: { req: string; to: string; events: StreamEvent[] }) => {
          if (m.to === bus.replicaId) this.replies.get(m.req)?.(m.events);
        }),
        // Messages from other replicas may be lost: every subscriber resumes from its last seq.
        bus.onGap(() => {
          for (const log of this.logs.values()) for (const sub of log.subs) sub.sink.resync('the server lost its connection to the other replicas');
        }),
      );
    }
    this.janitor = setInterval(() => this.sweep(), Math.min(this.idleMs, 30_000)).unref();
  }

  close(): void {
    this.unsub();
    for (const u of this.unsubs) u();
    clearInterval(this.janitor);
  }

  private answerReplay(m: ReplayRequest): void {
    if (!m.worker_id || m.worker_id !== this.localWorkerId()) return;
    const log = this.logs.get(m.chat_id);
    const events = log ? log.events.filter((e) => e.seq! > m.after) : [];
    this.bus.publish('replay_reply', { req: m.req, to: m.to, events });
  }

  /**
   * The events a turn running on another replica has streamed but not stored yet (drafts), from
   * that replica's memory; an owner that does not answer in time is presumed dead (its drafts will
   * be truncated by the next owner anyway).
   */
  private async fetchFromOwner(chatId: string, after: number): Promise<StreamEvent[]> {
    if (this.bus.kind === 'local') return [];
    const owner = await runningWorker(this.db, chatId);
    if (!owner || owner === this.localWorkerId()) return [];
    const req = `${this.bus.replicaId}:${++this.reqs}`;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<StreamEvent[]>((resolve) => {
        this.replies.set(req, resolve);
        timer = setTimeout(() => resolve([]), REPLICA_ANSWER_MS);
        this.bus.publish('replay', { req, chat_id: chatId, after, worker_id: owner, to: this.bus.replicaId } satisfies ReplayRequest);
      });
    } finally {
      clearTimeout(timer);
      this.replies.delete(req);
    }
  }

  private log(chatId: string): ChatLog {
    let log = this.logs.get(chatId);
    if (!log) this.logs.set(chatId, (log = new ChatLog()));
    return log;
  }

  ingest(e: StreamEvent): void {
    const log = this.log(e.chat_id);
    log.lastActive = Date.now();
    if (e.seq !== undefined) {
      if (log.seqs.has(e.seq)) return;
      const epoch = epochOf(e.seq);
      if (isDraft(e.type) && (epoch < log.statusEpoch || e.seq <= log.storedThrough)) return;
      if (e.type === 'status' && epoch > log.statusEpoch) log.statusEpoch = epoch;
      if (e.type === 'status' && TURN_ENDS.has(e.status as string) && e.seq > log.lastTurnEnd) {
        // A turn's end is published after the statement that stored it, and a run stores its
        // messages at the latest in that statement: every event before it is in the database
        // now, or was a draft that a stored message (or the turn's end) replaced. The log keeps
        // the last turn that ended, exactly as streamed (a client back from a short absence
        // catches up delta by delta); turns before it are read from the database, their
        // messages in place of their drafts.
        this.forgetStored(log, log.lastTurnEnd);
        log.lastTurnEnd = e.seq;
      }
      if (e.seq > log.storedThrough) {
        log.seqs.add(e.seq);
        log.events.push(e);
        // Out-of-order arrival (two commits published in the other order) keeps the log sorted.
        for (let i = log.events.length - 1; i > 0 && log.events[i - 1]!.seq! > e.seq; i--) {
          [log.events[i - 1], log.events[i]] = [log.events[i]!, log.events[i - 1]!];
        }
        while (log.events.length > this.maxEvents) log.seqs.delete(log.events.shift()!.seq!);
      }
    }
    for (const sub of log.subs) {
      if (sub.held) {
        // A replay that takes long (a slow client reading a long history) while a turn streams:
        // what piles up meanwhile is bounded; past it the client resumes from where it is.
        if (sub.held.push(e) === this.maxEvents + 1) sub.sink.resync('too many events arrived while the history was being sent');
      } else if (e.seq === undefined || !sub.replayed?.delete(e.seq)) sub.sink.push([e]);
    }
    if (e.type === 'deleted') {
      this.logs.delete(e.chat_id);
    }
  }

  private forgetStored(log: ChatLog, through: number): void {
    log.storedThrough = Math.max(log.storedThrough, through);
    let keep = 0;
    while (keep < log.events.length && log.events[keep]!.seq! <= log.storedThrough) log.seqs.delete(log.events[keep++]!.seq!);
    if (keep) log.events = log.events.slice(keep);
  }

  /**
   * Subscribes from `after`: replays what the subscriber missed, then streams live events.
   * `snapshot` runs after the replay to add unsequenced current state (queue, caught_up).
   */
  async subscribe(
    chatId: string,
    after: number,
    sink: Sink,
    snapshot: () => Promise<StreamEvent[]>,
  ): Promise<() => void> {
    const log = this.log(chatId);
    const sub: Sub = { sink, held: [], replayed: null };
    // Subscribe first, then read: nothing published meanwhile is lost. The memory log is taken
    // at once and the database read after it (after the owner's answer too, when another replica
    // runs the turn): an event the log forgets meanwhile was stored before the read began.
    log.subs.add(sub);
    const memory = log.events.filter((e) => e.seq! > after);
    const unsubscribe = () => {
      log.subs.delete(sub);
      log.lastActive = Date.now();
    };
    const toEvent = (r: StoredRow) => ev(chatId, Number(r.seq), r.type as StreamEvent['type'], r.message ? { message: publishedMessage(r.message) } : r.data);
    /** What the database had that this replica's bus has not delivered yet: not sent again when it arrives. */
    const noteReplayed = (seq: number) => {
      if (!log.seqs.has(seq) && seq > log.storedThrough) (sub.replayed ??= new Set()).add(seq);
    };
    try {
      const remote = await this.fetchFromOwner(chatId, after);
      // The stored history before what memory holds goes out a page at a time, the next page
      // read once the client has taken the last; the rest (the last turns, bounded) joins
      // memory's events, the owner's and those that arrived meanwhile below.
      const memoryFrom = memory.length ? memory[0]!.seq! : Infinity;
      let sent = after;
      let stored: StoredRow[];
      for (;;) {
        const page = await readEvents(this.db, chatId, sent, REPLAY_PAGE);
        const last = page.length ? Number(page[page.length - 1]!.seq) : sent;
        if (page.length === REPLAY_PAGE && last < memoryFrom) {
          for (const r of page) noteReplayed(Number(r.seq));
          sink.push(page.map(toEvent));
          sent = last;
          await sink.drained?.();
          continue;
        }
        stored = page.length === REPLAY_PAGE ? [...page, ...(await readEvents(this.db, chatId, last))] : page;
        break;
      }
      const bySeq = new Map<number, StreamEvent>();
      for (const r of stored) bySeq.set(Number(r.seq), toEvent(r));
      for (const e of remote) if (e.seq !== undefined && e.seq > sent) bySeq.set(e.seq, e);
      for (const e of memory) if (e.seq! > sent) bySeq.set(e.seq!, e);
      const state = await snapshot();
      const held = sub.held ?? [];
      sub.held = null;
      // The database can be ahead of this replica's bus: what the read found that the log has
      // not ingested yet will arrive live too (events held meanwhile were ingested: in the log).
      for (const seq of bySeq.keys()) noteReplayed(seq);
      if (sub.replayed) setTimeout(() => (sub.replayed = null), REPLAYED_WINDOW_MS).unref();
      // What arrived live meanwhile joins the replay in seq order (a draft streamed while the
      // database was read comes before the message the read found), as it was published (the
      // database's JSON may order an object's keys differently).
      for (const e of held) if (e.seq !== undefined && e.seq > sent) bySeq.set(e.seq, e);
      let statusEpoch = log.statusEpoch;
      for (const e of bySeq.values()) if (e.type === 'status') statusEpoch = Math.max(statusEpoch, epochOf(e.seq!));
      const replay = [...bySeq.values()]
        .filter((e) => !(isDraft(e.type) && epochOf(e.seq!) < statusEpoch))
        .sort((a, b) => a.seq! - b.seq!);
      const live = held.filter((e) => e.seq === undefined);
      const last = replay.length ? replay[replay.length - 1]!.seq! : sent;
      sink.push([...replay, ...state, { chat_id: chatId, type: 'caught_up', last_seq: last }, ...live]);
    } catch (err) {
      unsubscribe();
      throw err;
    }
    return unsubscribe;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, log] of this.logs) {
      if (!log.subs.size && now - log.lastActive > this.idleMs) this.logs.delete(id);
    }
  }
}
