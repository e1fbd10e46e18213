// Errors that reach a client as HTTP 4xx/5xx with a JSON body {error:{code,message}}.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export const badRequest = (message: string, code = 'invalid_request') => new ApiError(400, code, message);
export const unauthorized = (message = 'a valid API token is required (Authorization: Bearer <token>)') =>
  new ApiError(401, 'unauthorized', message);
export const forbidden = (message = 'this action needs an admin token') => new ApiError(403, 'forbidden', message);
export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} not found`);
export const conflict = (message: string, code = 'conflict') => new ApiError(409, code, message);
/** A per-user limit (AIRLOCK_USER_*): the caller may try again once something of theirs ends. */
export const tooMany = (message: string, code: string) => new ApiError(429, code, message);

/** A setting the server cannot start with (bad AIRLOCK_BUS, unreachable bus): the CLI prints it. */
export class ConfigError extends Error {}
