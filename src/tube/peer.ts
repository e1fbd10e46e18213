// WebRTC peer set-up shared by the client and the gateway (node-datachannel).
import { PeerConnection, type DescriptionType, type RtcConfig } from 'node-datachannel';
import { num, str } from '../config.js';
import { guard } from './transport.js';

export const webrtcEnabled = () => num('webrtc') !== 0;

export function rtcConfig(): RtcConfig {
  const iceServers = str('iceServers')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bind = str('iceBindAddress');
  return { iceServers, ...(bind ? { bindAddress: bind } : {}), maxMessageSize: 262_144 };
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
export class Peer {
  readonly pc: PeerConnection;
  private haveRemote = false;
  private early: { candidate: string; mid: string }[] = [];

  constructor(name: string, signal: (s: Signal) => void, onState?: (what: string) => void) {
    this.pc = new PeerConnection(name, rtcConfig());
    if (onState) {
      this.pc.onStateChange(guard((st: string) => onState(`peer ${st}`)));
      this.pc.onIceStateChange(guard((st: string) => onState(`ice ${st}`)));
      this.pc.onGatheringStateChange(guard((st: string) => onState(`gathering ${st}`)));
    }
    this.pc.onLocalDescription(guard((sdp: string, type: DescriptionType) => signal({ type: type === 'offer' ? 'offer' : 'answer', sdp })));
    this.pc.onLocalCandidate(guard((candidate: string, mid: string) => signal({ type: 'candidate', candidate, mid })));
  }

  remote(s: Signal): void {
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
      process.emitWarning(`WebRTC signal ignored: ${(err as Error).message}`);
    }
  }

  close(): void {
    try {
      this.pc.close();
    } catch {
      /* already closed */
    }
  }
}
