// Every error code an HTTP answer can carry, with its status, and every WebSocket close code:
// the one list (docs/API.md describes each; test/codes.test.ts keeps the two the same).

/** HTTP error codes and their statuses. */
export const ERROR_STATUS = {
  bad_request: 400,
  invalid_json: 400,
  incomplete_body: 400,
  invalid_request: 400,
  invalid_field: 400,
  missing_field: 400,
  unknown_field: 400,
  too_long: 400,
  invalid_after: 400,
  not_user_message: 400,
  invalid_tool_results: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  archived: 409,
  queue_full: 409,
  not_requires_action: 409,
  already_decided: 409,
  user_exists: 409,
  resource_exists: 409,
  gateway_exists: 409,
  invalid_name: 409,
  self_disable: 409,
  session_ended: 409,
  gateway_connected: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  no_provider: 422,
  too_many_turns: 429,
  too_many_chats: 429,
  too_many_sessions: 429,
  too_many_streams: 429,
  headers_too_large: 431,
  internal: 500,
  gateway_offline: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** WebSocket close codes the server (and the gateway) use. */
export const CloseCode = {
  /** The session is over, or the client said bye. */
  normal: 1000,
  /** The server is shutting down. */
  goingAway: 1001,
  /** A frame of a kind the endpoint does not take (text where binary is expected, or the reverse). */
  unsupported: 1003,
  /** A message the endpoint does not take (the reason says which). */
  policy: 1008,
  /** Too much sent before the session started. */
  tooBig: 1009,
  internal: 1011,
  /** The server is restarting or draining: reconnect. */
  restarting: 1012,
  /** The gateway was lost before the session started. */
  tryAgain: 1013,
  /** A newer connection replaced this one (a relay socket). */
  replaced: 4000,
  /** A chat stream fell behind: reconnect with after=<last seq>. */
  resync: 4001,
  /** The gateway was deleted. */
  gatewayDeleted: 4003,
  /** The token was revoked or is no longer valid, or the user was disabled. */
  unauthorized: 4401,
  /** The session was ended (API, grant revoked, resource deleted), or a second connection of a gateway. */
  ended: 4409,
  /** The gateway ended the session. */
  gatewayEnded: 4410,
  /** The resource's credential cannot be opened. */
  credential: 4500,
} as const;
