// Errors that reach a client as HTTP 4xx/5xx with a JSON body {error:{code,message}}; the codes
// and their statuses are listed in codes.ts.
import { ERROR_STATUS, type ErrorCode } from './codes.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export const badRequest = (message: string, code: ErrorCode = 'invalid_request') => new ApiError(ERROR_STATUS[code], code, message);
export const unauthorized = (message = 'a valid API token is required (Authorization: Bearer <token>)') =>
  new ApiError(401, 'unauthorized', message);
export const forbidden = (message = 'this action needs an admin token') => new ApiError(403, 'forbidden', message);
export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} not found`);
export const conflict = (message: string, code: ErrorCode) => new ApiError(ERROR_STATUS[code], code, message);
/** A per-user limit (AIRLOCK_USER_*): the caller may try again once something of theirs ends. */
export const tooMany = (message: string, code: ErrorCode) => new ApiError(ERROR_STATUS[code], code, message);

/** A setting the server cannot start with (bad AIRLOCK_BUS, unreachable bus): the CLI prints it. */
export class ConfigError extends Error {}
