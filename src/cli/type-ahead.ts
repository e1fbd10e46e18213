// The keyboard while a reply streams in an interactive `airlock chat`. The prompt's readline is
// closed for the turn (its echo and line redraws would land in the middle of the reply) and the
// terminal stays in raw mode, so Ctrl-C reaches us as a key rather than a signal. What the user
// types meanwhile is kept, not echoed: each finished line is handed on (to be sent when the reply
// ends) and an unfinished one returns to the next prompt.
import readline from 'node:readline';

interface Key {
  name?: string;
  ctrl?: boolean;
  meta?: boolean;
  sequence?: string;
}

export class TypeAhead {
  /** The line being typed (no Enter yet). */
  partial = '';
  private listening = false;

  constructor(
    private input: NodeJS.ReadStream,
    private onInterrupt: () => void,
    private onLine: (line: string) => void,
  ) {}

  start(): void {
    if (this.listening || !this.input.isTTY) return;
    this.listening = true;
    readline.emitKeypressEvents(this.input);
    this.input.setRawMode(true);
    this.input.on('keypress', this.onKey);
    this.input.resume();
  }

  /** Stops listening; returns the unfinished line. */
  stop(): string {
    if (this.listening) {
      this.listening = false;
      this.input.off('keypress', this.onKey);
      this.input.pause();
      this.input.setRawMode(false);
    }
    return this.partial;
  }

  /** One key, as readline's keypress decoder reports it. */
  readonly onKey = (str: string | undefined, key: Key | undefined): void => {
    if (key?.ctrl && key.name === 'c') return this.onInterrupt();
    if (key?.name === 'return' || key?.name === 'enter') {
      const line = this.partial.trim();
      this.partial = '';
      if (line) this.onLine(line);
      return;
    }
    if (key?.name === 'backspace') {
      this.partial = [...this.partial].slice(0, -1).join('');
      return;
    }
    if (key?.ctrl && key.name === 'u') {
      this.partial = '';
      return;
    }
    // Other control keys, arrows and escape sequences have no meaning here.
    if (key?.ctrl || key?.meta || !str || str.charCodeAt(0) < 32 || str.startsWith('\x1b')) return;
    this.partial += str;
  };
}
