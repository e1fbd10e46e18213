// Evaluates arithmetic with a small recursive-descent parser (never eval).
import type { Tool } from './index.js';
import { ToolError } from './index.js';

const FUNCS: Record<string, (...a: number[]) => number> = {
  sqrt: Math.sqrt, abs: Math.abs, sin: Math.sin, cos: Math.cos, tan: Math.tan, log: Math.log10, ln: Math.log,
  exp: Math.exp, floor: Math.floor, ceil: Math.ceil, round: Math.round, min: Math.min, max: Math.max, pow: Math.pow,
};
const CONSTS: Record<string, number> = { pi: Math.PI, e: Math.E };

export function evaluate(expr: string): number {
  if (expr.length > 1000) throw new ToolError('expression is longer than 1000 characters');
  const tokens = expr.match(/\d+(?:\.\d+)?(?:e[+-]?\d+)?|\.\d+|[a-z_]+|\*\*|[-+*/%^(),]|\S/gi) ?? [];
  let i = 0;
  const peek = () => tokens[i];
  const next = () => tokens[i++];
  const expect = (t: string) => {
    if (next() !== t) throw new ToolError(`expected "${t}" in "${expr}"`);
  };
  const sum = (): number => {
    let v = product();
    while (peek() === '+' || peek() === '-') v = next() === '+' ? v + product() : v - product();
    return v;
  };
  const product = (): number => {
    let v = unary();
    while (peek() === '*' || peek() === '/' || peek() === '%') {
      const op = next();
      const r = unary();
      v = op === '*' ? v * r : op === '/' ? v / r : v % r;
    }
    return v;
  };
  const unary = (): number => {
    if (peek() === '-') return next(), -unary();
    if (peek() === '+') return next(), unary();
    return power();
  };
  const power = (): number => {
    const b = atom();
    if (peek() === '^' || peek() === '**') return next(), Math.pow(b, unary());
    return b;
  };
  const atom = (): number => {
    const t = next();
    if (t === undefined) throw new ToolError(`unexpected end of "${expr}"`);
    if (t === '(') {
      const v = sum();
      expect(')');
      return v;
    }
    if (/^[\d.]/.test(t)) return Number(t);
    const name = t.toLowerCase();
    if (Object.hasOwn(CONSTS, name)) return CONSTS[name]!;
    if (Object.hasOwn(FUNCS, name)) {
      expect('(');
      const args = [sum()];
      while (peek() === ',') next(), args.push(sum());
      expect(')');
      return FUNCS[name]!(...args);
    }
    throw new ToolError(`unknown token "${t}" in "${expr}"`);
  };
  const v = sum();
  if (i < tokens.length) throw new ToolError(`unexpected "${tokens[i]}" in "${expr}"`);
  if (!Number.isFinite(v)) throw new ToolError(`"${expr}" has no finite value`);
  return v;
}

export const calculator: Tool = {
  name: 'calculator',
  description: 'Evaluates an arithmetic expression: + - * / % ^, parentheses, pi, e, sqrt, abs, sin, cos, tan, log, ln, exp, floor, ceil, round, min, max, pow.',
  parameters: {
    type: 'object',
    properties: { expression: { type: 'string', description: 'e.g. (2+3)*sqrt(16)' } },
    required: ['expression'],
  },
  idempotent: true,
  async run(args: { expression?: unknown }) {
    if (typeof args?.expression !== 'string') throw new ToolError('"expression" must be a string');
    return String(evaluate(args.expression));
  },
};
