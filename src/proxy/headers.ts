// Header hygiene for forwarding: what may cross the gateway in each direction (SECURITY-MATRIX G).
// Requests lose hop-by-hop and Connection-listed headers, anything claiming identity or client origin, and method/URL overrides;
// the gateway then sets identity and X-Forwarded-* itself. Responses lose hop-by-hop headers and server fingerprints.
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1 hop-by-hop fields plus the historical ones proxies must not pass on (HDR-03). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'trailer',
  'proxy-authorization',
  'proxy-authenticate',
  'http2-settings',
]);

/** Headers a client could use to claim an identity, an origin or a different request (HDR-01, HDR-04, HDR-05, OA-18). */
const CLIENT_CLAIMS = new Set([
  'x-user-id',
  'x-user',
  'x-client-id',
  'x-scopes',
  'x-forwarded-user',
  'x-remote-user',
  'remote-user',
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-for',
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'true-client-ip',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'client-cert',
  'client-cert-chain',
  'x-client-cert',
  'x-ssl-client-cert',
  'x-ssl-client-dn',
  'x-ssl-client-verify',
  'x-request-id',
]);

/** Response headers that fingerprint the upstream stack (HDR-08). */
const RESPONSE_FINGERPRINTS = new Set(['server', 'x-powered-by', 'x-aspnet-version', 'x-aspnetmvc-version']);

function connectionListed(value: string | string[] | undefined): Set<string> | undefined {
  // The common values name no extra header: skip the split on the hot path.
  if (value === undefined || value === 'keep-alive' || value === 'close' || value === 'Keep-Alive') return undefined;
  const set = new Set<string>();
  for (const part of (Array.isArray(value) ? value.join(',') : value).split(',')) {
    const token = part.trim().toLowerCase();
    if (token !== '') set.add(token);
  }
  return set;
}

export interface ForwardedIdentity {
  readonly subject: string;
  readonly method: string;
  readonly scopes: string;
  readonly certificateThumbprint: string | undefined;
}

export interface RequestHeaderPlan {
  /** Lower-case prefix of the gateway's identity headers; client headers carrying it are removed. */
  readonly identityPrefix: string;
  readonly forwardAuthorization: boolean;
}

/**
 * Builds the upstream request headers from the client's. Pseudo-headers (HTTP/2) are dropped; `host` is set by the caller.
 * `forwardedFor` is the complete X-Forwarded-For value the gateway vouches for.
 */
export function upstreamRequestHeaders(
  client: IncomingHttpHeaders,
  plan: RequestHeaderPlan,
  set: {
    host: string;
    forwardedFor: string;
    forwardedHost: string;
    requestId: string;
    /** The W3C traceparent (and a trusted proxy's tracestate) the upstream receives instead of the client's. */
    traceparent: string;
    tracestate: string | undefined;
    identity: ForwardedIdentity | undefined;
    contentLength: number | undefined;
  },
): Record<string, string | string[]> {
  const listed = connectionListed(client['connection']);
  const out: Record<string, string | string[]> = {};
  for (const name in client) {
    const value = client[name];
    if (value === undefined || name.charCodeAt(0) === 0x3a /* ':' */) continue;
    if (HOP_BY_HOP.has(name) || CLIENT_CLAIMS.has(name) || listed?.has(name) === true) continue;
    if (name === 'host' || name === 'content-length' || name === 'expect' || name === 'traceparent' || name === 'tracestate') continue;
    // Whole families are removed by prefix: proxies and auth sidecars invent new members (x-forwarded-client-cert,
    // x-forwarded-email, x-auth-request-user, ...) and an exact list would always miss one.
    if (name.startsWith('x-forwarded-') || name.startsWith('x-auth-request-') || name.startsWith('x-authenticated-') || name.startsWith(plan.identityPrefix))
      continue;
    // The credential stays at the gateway unless the route passes it on: the token, and its DPoP proof with it.
    if ((name === 'authorization' || name === 'dpop') && !plan.forwardAuthorization) continue;
    out[name] = value;
  }
  out['host'] = set.host;
  if (set.contentLength !== undefined) out['content-length'] = String(set.contentLength);
  out['x-forwarded-for'] = set.forwardedFor;
  out['x-forwarded-proto'] = 'https';
  out['x-forwarded-host'] = set.forwardedHost;
  out['x-request-id'] = set.requestId;
  out['traceparent'] = set.traceparent;
  if (set.tracestate !== undefined) out['tracestate'] = set.tracestate;
  if (set.identity !== undefined) {
    const p = plan.identityPrefix;
    out[`${p}subject`] = set.identity.subject;
    out[`${p}method`] = set.identity.method;
    if (set.identity.scopes !== '') out[`${p}scopes`] = set.identity.scopes;
    if (set.identity.certificateThumbprint !== undefined) out[`${p}cert-thumbprint`] = set.identity.certificateThumbprint;
  }
  return out;
}

/**
 * Filters upstream response headers in place of copying them blindly; the caller adds the gateway's own headers. On a
 * route with a quota (`ownRateLimit`) the gateway's RateLimit / RateLimit-Policy fields are the only ones: the upstream's
 * would replace or double them.
 */
export function clientResponseHeaders(upstream: Readonly<Record<string, string | string[] | undefined>>, ownRateLimit = false): OutgoingHttpHeaders {
  const listed = connectionListed(upstream['connection']);
  const out: OutgoingHttpHeaders = {};
  for (const name in upstream) {
    const value = upstream[name];
    if (value === undefined) continue;
    if (HOP_BY_HOP.has(name) || RESPONSE_FINGERPRINTS.has(name) || listed?.has(name) === true) continue;
    if (name === 'strict-transport-security' || name === 'x-request-id') continue;
    if (ownRateLimit && (name === 'ratelimit' || name === 'ratelimit-policy')) continue;
    out[name] = value;
  }
  return out;
}
