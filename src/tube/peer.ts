// WebRTC peer set-up shared by the client and the gateway (node-datachannel).
import { PeerConnection, type DescriptionType, type RtcConfig } from 'node-datachannel';
import { guard, type IceOptions } from './transport.js';

function rtcConfig(ice: IceOptions): RtcConfig {
  return { iceServers: ice.servers, ...(ice.bindAddress ? { bindAddress: ice.bindAddress } : {}), maxMessageSize: 262_144 };
}

export interface Signal {
  type: 'offer' | 'answer' | 'candidate';
  sdp?: string;
  candidate?: string;
  mid?: string;
}

/**
 * A peer connection whose local offer/answer and candidates go to `signal`. Remote candidates that
 * arrive before the remote description are held (adding them early throws inside libdatachannel).
 */
const live = new Set<Peer>();

export class Peer {
  /** Waits until every peer this process created has closed (bounded): call before exiting. */
  static async allClosed(ms = 1000): Promise<void> {
    await Promise.all([...live].map((p) => p.closed(ms)));
  }

  readonly pc: PeerConnection;
  private haveRemote = false;
  private early: { candidate: string; mid: string }[] = [];

  private closedCbs: (() => void)[] = [];
  private isClosed = false;
  private closing = false;

  constructor(
    name: string,
    signal: (s: Signal) => void,
    ice: IceOptions,
    private onState?: (what: string) => void,
  ) {
    this.pc = new PeerConnection(name, rtcConfig(ice));
    live.add(this);
    this.pc.onStateChange(
      guard((st: string) => {
        onState?.(`peer ${st}`);
        if (st === 'closed') {
          this.isClosed = true;
          live.delete(this);
          for (const cb of this.closedCbs.splice(0)) cb();
        }
      }),
    );
    if (onState) {
      this.pc.onIceStateChange(guard((st: string) => onState(`ice ${st}`)));
      this.pc.onGatheringStateChange(guard((st: string) => onState(`gathering ${st}`)));
    }
    this.pc.onLocalDescription(guard((sdp: string, type: DescriptionType) => signal({ type: type === 'offer' ? 'offer' : 'answer', sdp })));
    this.pc.onLocalCandidate(guard((candidate: string, mid: string) => signal({ type: 'candidate', candidate, mid })));
  }

  remote(s: Signal): void {
    // A candidate or answer that arrives after this side gave the connection up (the session
    // ended, the relay won and the peer was closed) has nothing left to apply to.
    if (this.isClosed || this.closing) return;
    try {
      if ((s.type === 'offer' || s.type === 'answer') && typeof s.sdp === 'string') {
        this.pc.setRemoteDescription(s.sdp, s.type);
        this.haveRemote = true;
        for (const c of this.early) this.pc.addRemoteCandidate(c.candidate, c.mid);
        this.early = [];
      } else if (s.type === 'candidate' && typeof s.candidate === 'string') {
        const c = { candidate: s.candidate, mid: typeof s.mid === 'string' ? s.mid : '0' };
        if (this.haveRemote) this.pc.addRemoteCandidate(c.candidate, c.mid);
        else this.early.push(c);
      }
    } catch (err) {
      // A malformed or late signal from the other side: the direct path may not come up, and
      // the relay carries the session. Not the user's concern; the state callback logs it.
      this.onState?.(`signal ignored: ${(err as Error).message}`);
    }
  }

  close(): void {
    this.closing = true;
    try {
      this.pc.close();
    } catch {
      /* already closed */
    }
  }

  /** Resolves once the native side reports the connection closed (bounded by `ms`). */
  closed(ms = 1000): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.closedCbs.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
