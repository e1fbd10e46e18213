// Built-in tools the agent can call. A tool says whether running it twice is harmless
// (`idempotent`); the chat loop uses that when a crash interrupts a tool.
import type { ToolSpec } from '../providers/types.js';
import type { ClientTool } from '../types.js';
import { calculator } from './calculator.js';
import { currentTime } from './time.js';

/** What a tool knows of the call it serves. */
export interface ToolContext {
  chatId: string;
  /** The chat's owner: a tool acts as this user, never as more. */
  ownerId: string;
  toolCallId: string;
  /** Streams output to the chat while the tool runs (a `tool_output` event, marked with its stream). */
  output(text: string, stream?: 'stdout' | 'stderr'): void;
  /** Publishes and stores an event of the call (an approval asked for or decided, a status). */
  event(type: 'approval_required' | 'approval_decided' | 'status', data: Record<string, unknown>): void;
}

export interface Tool extends ToolSpec {
  idempotent: boolean;
  /** A tool's own limit on its run time (default: 30 s); it honours `signal` within it. */
  maxRunMs?: number;
  run(args: any, signal: AbortSignal, ctx: ToolContext): Promise<string>;
}

export class ToolError extends Error {}

export const builtinTools: Tool[] = [currentTime, calculator];

/** The tools the server's agent can run: the built-ins plus any the embedding program adds. */
export class ToolBox {
  private byName: Map<string, Tool>;

  constructor(readonly tools: Tool[] = builtinTools) {
    this.byName = new Map();
    for (const t of tools) {
      if (this.byName.has(t.name)) throw new Error(`two tools have the same name "${t.name}"`);
      this.byName.set(t.name, t);
    }
  }

  find(name: string): Tool | undefined {
    return this.byName.get(name);
  }

  static withExtra(extra: Tool[] = []): ToolBox {
    return new ToolBox([...builtinTools, ...extra]);
  }
}

/** The tools a provider is offered: the built-in ones, then the chat's own (client) tools. */
export function toolSpecs(tools: ToolBox, clientTools: ClientTool[]): ToolSpec[] {
  return [
    ...tools.tools.map(({ name, description, parameters }) => ({ name, description, parameters })),
    ...clientTools
      .filter((t) => !tools.find(t.name))
      .map((t) => ({ name: t.name, description: t.description ?? '', parameters: t.parameters ?? { type: 'object' } })),
  ];
}
