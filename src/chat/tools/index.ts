// Built-in tools the agent can call. A tool says whether running it twice is harmless
// (`idempotent`); the chat loop uses that when a crash interrupts a tool.
import type { ToolSpec } from '../providers/types.js';
import { calculator } from './calculator.js';
import { currentTime } from './time.js';

export interface Tool extends ToolSpec {
  idempotent: boolean;
  run(args: any, signal: AbortSignal): Promise<string>;
}

export class ToolError extends Error {}

export const builtinTools: Tool[] = [currentTime, calculator];

export function findTool(name: string): Tool | undefined {
  return builtinTools.find((t) => t.name === name);
}
