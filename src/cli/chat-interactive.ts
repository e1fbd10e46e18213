// The interactive `airlock chat` session: a prompt, the reply streamed, the keyboard meanwhile.
import readline from 'node:readline';
import { ApiClientError } from '../client/api.js';
import { CliError } from './config.js';
import type { Printer, TurnRunner } from './chat-turn.js';
import { TypeAhead } from './type-ahead.js';

/**
 * The interactive session: a prompt, then the reply streamed. While it streams, Ctrl-C
 * interrupts the turn (twice: back to the prompt) and lines typed meanwhile are sent, in order,
 * when it ends. At the prompt, Ctrl-C clears the line, or on an empty one quits, as Ctrl-D does.
 */
export async function interactive(session: TurnRunner, out: Printer, turn: (text: string) => Promise<number>, what: string): Promise<number> {
  process.stderr.write(`${what}; Ctrl-D to quit\n`);
  let code = 0;
  let unfinished = '';
  const typedAhead: string[] = [];
  for (;;) {
    const keys = new TypeAhead(
      process.stdin,
      () => {
        if (session.interrupt() === 'gave up') typedAhead.length = 0;
      },
      (line) => {
        typedAhead.push(line);
        out.endLine();
        process.stderr.write(`[sent when this reply ends] ${line}\n`);
      },
    );
    let text = typedAhead.shift();
    if (text !== undefined) {
      process.stdout.write(`you> ${text}\n`);
      keys.partial = unfinished; // what was being typed after it is still being typed
      keys.start();
    } else {
      const line = await prompt(unfinished, keys);
      if (line === null) return code;
      text = line.trim();
      if (!text) {
        unfinished = keys.stop();
        continue;
      }
    }
    try {
      code = await turn(text);
    } catch (err) {
      // The session goes on: a refused message (no provider configured, too long) or a lost
      // server is reported and the user can try again or quit.
      if (!(err instanceof ApiClientError || err instanceof CliError)) throw err;
      out.endLine();
      process.stderr.write(`airlock: ${err.message}\n`);
      code = 1;
      typedAhead.length = 0;
    } finally {
      unfinished = keys.stop();
    }
  }
}

/**
 * One line from the user (null: Ctrl-D, or Ctrl-C on an empty line), `typed` already in it. The
 * moment the line is entered, `next` takes the keyboard: it starts inside that key's own event,
 * so the keys after it in the same read (a pasted block) reach it rather than nobody.
 */
function prompt(typed: string, next: TypeAhead): Promise<string | null> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, prompt: 'you> ' });
  return new Promise((resolve) => {
    let answered = false;
    rl.once('line', (line) => {
      answered = true;
      rl.close();
      next.start();
      resolve(line);
    });
    rl.once('close', () => {
      if (!answered) {
        process.stdout.write('\n');
        resolve(null);
      }
    });
    rl.on('SIGINT', () => {
      if (!rl.line) return rl.close();
      rl.write(null, { ctrl: true, name: 'u' }); // clear what is typed
    });
    rl.prompt();
    if (typed) rl.write(typed);
  });
}
