import type { Tool } from './index.js';
import { ToolError } from './index.js';

export const currentTime: Tool = {
  name: 'current_time',
  description: 'Returns the current date and time, in ISO 8601 and in the given IANA time zone (default UTC).',
  parameters: {
    type: 'object',
    properties: { timezone: { type: 'string', description: 'IANA time zone, e.g. Europe/Paris' } },
  },
  idempotent: true,
  async run(args: { timezone?: unknown }) {
    const tz = typeof args?.timezone === 'string' && args.timezone ? args.timezone : 'UTC';
    const now = new Date();
    let local: string;
    try {
      local = now.toLocaleString('en-GB', { timeZone: tz, dateStyle: 'full', timeStyle: 'long' });
    } catch {
      throw new ToolError(`unknown time zone "${tz}"`);
    }
    return JSON.stringify({ iso: now.toISOString(), timezone: tz, local });
  },
};
