// The error catalogue: every client-facing refusal has a stable code, one HTTP status and one generic title.
// Tests assert codes, never message text. Titles never say which part of a credential was wrong.

export const ERROR_CATALOGUE = {
  // Request framing and syntax (server edge)
  bad_request: { status: 400, title: 'The request is malformed.' },
  invalid_target: { status: 400, title: 'The request target is not an acceptable origin-form path.' },
  invalid_host: { status: 400, title: 'The Host header is missing, repeated or invalid.' },
  invalid_header: { status: 400, title: 'A request header is not acceptable.' },
  invalid_framing: { status: 400, title: 'The request message framing is not acceptable.' },
  upgrade_refused: { status: 400, title: 'Protocol upgrade is not supported here.' },
  misdirected_request: { status: 421, title: 'This server does not serve the requested host.' },
  uri_too_long: { status: 414, title: 'The request target is too long.' },
  headers_too_large: { status: 431, title: 'The request headers are too large or too many.' },
  payload_too_large: { status: 413, title: 'The request body exceeds the limit for this route.' },
  unsupported_media_type: { status: 415, title: 'The request body media type is not supported here.' },
  not_found: { status: 404, title: 'No route matches the request.' },
  no_such_resource: { status: 404, title: 'The resource does not exist.' },
  conflict: { status: 409, title: 'The request conflicts with the current state of the resource.' },
  method_not_allowed: { status: 405, title: 'The method is not allowed for this resource.' },
  not_implemented: { status: 501, title: 'The method is not supported.' },
  request_timeout: { status: 408, title: 'The request was not completed in time.' },

  // Authentication, authorization, quotas (pipeline)
  unauthenticated: { status: 401, title: 'Authentication is required.' },
  invalid_credential: { status: 401, title: 'The presented credential is not acceptable.' },
  /** RFC 6750 §3.1: an access token that is malformed, expired, revoked or otherwise invalid. */
  invalid_token: { status: 401, title: 'The access token is not acceptable.' },
  /** RFC 6750 §3.1 / RFC 6749 §5.2: a malformed authentication request (e.g. a token in the URL). */
  invalid_request: { status: 400, title: 'The request is missing a parameter or is otherwise malformed.' },
  /** RFC 9449 §7.1: the DPoP proof accompanying a DPoP-bound token is missing, malformed, replayed or does not match. */
  invalid_dpop_proof: { status: 401, title: 'The DPoP proof is not acceptable.' },
  /** RFC 9449 §9: the proof must carry the nonce in the DPoP-Nonce header of this answer. */
  use_dpop_nonce: { status: 401, title: 'The DPoP proof must carry the server-provided nonce.' },
  forbidden: { status: 403, title: 'The principal may not perform this request.' },
  /** RFC 6750 §3.1: the token is good but lacks a scope the route requires. */
  insufficient_scope: { status: 403, title: 'The access token does not carry a scope this resource requires.' },

  // OAuth 2 authorization server (RFC 6749 §5.2, RFC 8707 §2, RFC 7009 §2.2.1): the code is the OAuth `error` value
  /** Unknown client, wrong secret, disabled client and locked client all look exactly like this (OA-05). */
  invalid_client: { status: 401, title: 'Client authentication failed.' },
  unauthorized_client: { status: 400, title: 'The client is not allowed to make this request.' },
  unsupported_grant_type: { status: 400, title: 'The grant type is not supported.' },
  invalid_scope: { status: 400, title: 'The requested scope is invalid, unknown or not allowed for this client.' },
  /** RFC 8707 §2 `invalid_target` (that code name is taken by the request-target refusal above). */
  invalid_resource: { status: 400, title: 'The requested resource is invalid or not allowed for this client.' },
  /** RFC 9449 §5: the DPoP proof sent to the token endpoint is not acceptable (answered as OAuth `invalid_dpop_proof`). */
  invalid_dpop_proof_grant: { status: 400, title: 'The DPoP proof of the token request is not acceptable.' },
  /** RFC 9449 §8: the token request's proof must carry the nonce in the DPoP-Nonce header (OAuth `use_dpop_nonce`). */
  use_dpop_nonce_grant: { status: 400, title: 'The DPoP proof of the token request must carry the server-provided nonce.' },
  unsupported_token_type: { status: 400, title: 'The token type is not supported.' },
  rate_limited: { status: 429, title: 'Too many requests; retry later.' },

  // Handlers and faults
  upstream_unavailable: { status: 502, title: 'The upstream service could not be reached.' },
  upstream_invalid_response: { status: 502, title: 'The upstream service sent an invalid response.' },
  upstream_timeout: { status: 504, title: 'The upstream service did not answer in time.' },
  no_healthy_upstream: { status: 503, title: 'No instance of the upstream service is available.' },
  shutting_down: { status: 503, title: 'The gateway is shutting down.' },
  service_unavailable: { status: 503, title: 'The service is temporarily unavailable.' },
  internal_error: { status: 500, title: 'The gateway failed to process the request.' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/** A typed refusal: the one way a stage ends a request. Never carries secrets or internal detail. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** Extra response headers (WWW-Authenticate, Retry-After, Allow, ...). */
  readonly headers: Readonly<Record<string, string>>;
  /** A short machine-readable reason for the audit log only; never sent to the client. */
  readonly reason: string;
  /**
   * What the client did wrong, sent as the problem's `detail` (RFC 9457 §3.1.4): only where the caller is trusted to learn
   * it (the admin API's validation, naming the field); never about a credential.
   */
  readonly detail: string | undefined;

  constructor(code: ErrorCode, opts: { reason?: string; headers?: Record<string, string>; detail?: string } = {}) {
    super(ERROR_CATALOGUE[code].title);
    this.name = 'GatewayError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code].status;
    this.headers = Object.freeze({ ...opts.headers });
    this.reason = opts.reason ?? code;
    this.detail = opts.detail;
  }
}

/** Problem types are URNs: stable identifiers documented in SECURITY.md, not links to a site that could change hands. */
export const PROBLEM_TYPE_BASE = 'urn:gatehouse:problem:';

/** RFC 9457 problem body for a refusal. `instance` carries the request id so operators can find the audit record. */
/** The OAuth `error` for a refusal answered by an OAuth endpoint (RFC 6749 §5.2 body), for every catalogue code. */
export function oauthErrorCode(code: ErrorCode): string {
  switch (code) {
    case 'invalid_request':
    case 'invalid_client':
    case 'unauthorized_client':
    case 'unsupported_grant_type':
    case 'invalid_scope':
    case 'unsupported_token_type':
      return code;
    case 'invalid_resource':
      return 'invalid_target';
    case 'invalid_dpop_proof':
    case 'invalid_dpop_proof_grant':
      return 'invalid_dpop_proof';
    case 'use_dpop_nonce':
    case 'use_dpop_nonce_grant':
      return 'use_dpop_nonce';
    // RFC 8628 §3.5, registered for token endpoint responses: the standard way to say "back off".
    case 'rate_limited':
      return 'slow_down';
    case 'service_unavailable':
    case 'no_healthy_upstream':
    case 'shutting_down':
      return 'temporarily_unavailable';
    default:
      return ERROR_CATALOGUE[code].status >= 500 ? 'server_error' : 'invalid_request';
  }
}

/** RFC 6749 §5.2 error body. The description is the catalogue's generic title: never which part of a credential failed. */
export function oauthErrorBody(error: GatewayError): string {
  return JSON.stringify({ error: oauthErrorCode(error.code), error_description: ERROR_CATALOGUE[error.code].title });
}

export function problemBody(error: GatewayError, requestId: string): string {
  return JSON.stringify({
    type: PROBLEM_TYPE_BASE + error.code,
    title: ERROR_CATALOGUE[error.code].title,
    status: error.status,
    code: error.code,
    ...(error.detail !== undefined ? { detail: error.detail } : {}),
    request_id: requestId,
  });
}
