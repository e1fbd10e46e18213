// Request body checks that turn bad input into 400s naming the field.
import { badRequest } from '../errors.js';

type Obj = Record<string, unknown>;

export function object(body: unknown, allowed: string[]): Obj {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw badRequest('the body must be a JSON object');
  }
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) throw badRequest(`unknown field "${key}" (allowed: ${allowed.join(', ')})`, 'unknown_field');
  }
  return body as Obj;
}

export function str(o: Obj, key: string, opts: { max?: number; min?: number } = {}): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badRequest(`"${key}" must be a string`, 'invalid_field');
  if (opts.min !== undefined && v.length < opts.min) throw badRequest(`"${key}" must have at least ${opts.min} characters`, 'invalid_field');
  if (opts.max !== undefined && v.length > opts.max) {
    throw badRequest(`"${key}" is longer than ${opts.max} characters`, 'too_long');
  }
  return v;
}

export function reqStr(o: Obj, key: string, opts: { max?: number; min?: number } = {}): string {
  const v = str(o, key, { min: 1, ...opts });
  if (v === undefined) throw badRequest(`"${key}" is required`, 'missing_field');
  return v;
}

export function bool(o: Obj, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badRequest(`"${key}" must be true or false`, 'invalid_field');
  return v;
}

export function int(o: Obj, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw badRequest(`"${key}" must be an integer from ${min} to ${max}`, 'invalid_field');
  }
  return v;
}

export function oneOf<T extends string>(o: Obj, key: string, values: readonly T[]): T | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !values.includes(v as T)) {
    throw badRequest(`"${key}" must be one of ${values.join(', ')}`, 'invalid_field');
  }
  return v as T;
}

export function arr(o: Obj, key: string, max: number): unknown[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw badRequest(`"${key}" must be an array`, 'invalid_field');
  if (v.length > max) throw badRequest(`"${key}" has more than ${max} items`, 'too_long');
  return v;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: string) => UUID.test(s);

export const badRequestFor = (field: string, what: string) => badRequest(`"${field}" must be ${what}`, 'invalid_field');
