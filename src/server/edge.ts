// The edge check: validates one request's method, framing, headers, Host and target exactly once and matches its route.
// Rejects what Node's parsers accept but a hardened edge must not (SECURITY-MATRIX E, G, H). Inside, the result is trusted.
import { isIP } from 'node:net';
import type { Config } from '../config/schema.js';
import { GatewayError } from '../errors/catalogue.js';
import type { ClientConnection, RequestContext, RequestTrace } from '../pipeline/stage.js';
import type { ServerRequest } from '../pipeline/stage.js';
import { parseRequestTarget } from './request-target.js';
import type { Router } from './router.js';

const SUPPORTED_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
/** Methods a gateway must never route: TRACE reflects credentials, CONNECT would make it a tunnel (H1-11). */
const REFUSED_METHODS = new Set(['TRACE', 'TRACK', 'CONNECT']);

/** reg-name (letters, digits, '-', '.'), IPv4, or [IPv6], then an optional port. No userinfo, no path (H1-09). */
const AUTHORITY = /^(?:([A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?)|\[([0-9A-Fa-f:.]{2,45})\])(?::(\d{1,5}))?$/;

/** The gateway's own probes: answered after the same checks as every request, but outside the route table. */
export type Probe = 'liveness' | 'readiness';

export type EdgeResult =
  | { readonly ok: true; readonly context: RequestContext }
  | { readonly ok: true; readonly probe: Probe }
  | {
      readonly ok: false;
      readonly error: GatewayError;
      /** What is known about the refused request, for the audit record. */
      readonly partial: { readonly method: string; readonly rawTarget: string; readonly path: string | undefined; readonly routeId: string | undefined };
      /** The HTTP/1.1 byte stream can no longer be trusted: answer and close. */
      readonly close: boolean;
    };

export interface EdgeLimits {
  readonly maxHeaders: number;
  readonly maxHeaderBytes: number;
  readonly maxUriBytes: number;
  readonly allowedHosts: ReadonlySet<string>;
}

export function edgeLimits(config: Config): EdgeLimits {
  return {
    maxHeaders: config.limits.max_headers,
    maxHeaderBytes: config.limits.max_header_bytes,
    maxUriBytes: config.limits.max_uri_bytes,
    allowedHosts: new Set(config.server.hosts),
  };
}

/** Parses and validates an authority; returns the lower-case host without port, or undefined when invalid. */
export function parseAuthority(authority: string): string | undefined {
  const match = AUTHORITY.exec(authority);
  if (match === null) return undefined;
  const port = match[3];
  if (port !== undefined && Number(port) > 65_535) return undefined;
  if (match[2] !== undefined) return isIP(match[2]) === 6 ? `[${match[2].toLowerCase()}]` : undefined;
  const host = (match[1] ?? '').toLowerCase();
  return host.endsWith('.') ? host.slice(0, -1) : host;
}

export function checkRequest(
  req: ServerRequest,
  id: string,
  trace: RequestTrace,
  connection: ClientConnection,
  router: Router,
  limits: EdgeLimits,
  startedAt: number,
): EdgeResult {
  const method = req.method ?? '';
  const rawTarget = req.url ?? '';
  let path: string | undefined;
  let routeId: string | undefined;
  // A refused HTTP/1.1 request whose body is left unread poisons the connection for the next request: always close it.
  const unreadBody = connection.protocol === 'h1' && (req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0');
  const refuse = (error: GatewayError, close = false): EdgeResult => ({
    ok: false,
    error,
    partial: { method, rawTarget, path, routeId },
    close: close || unreadBody,
  });

  if (REFUSED_METHODS.has(method)) return refuse(new GatewayError('method_not_allowed', { reason: `method ${method}`, headers: { allow: '' } }));
  if (!SUPPORTED_METHODS.has(method)) return refuse(new GatewayError('not_implemented', { reason: 'unsupported method' }));

  // One pass over the raw header list: counts and sizes are taken before Node's maxHeadersCount could truncate anything.
  const raw = req.rawHeaders;
  const isH1 = connection.protocol === 'h1';
  if (raw.length / 2 > limits.maxHeaders) return refuse(new GatewayError('headers_too_large', { reason: 'header count' }), true);
  let headerBytes = 0;
  let hostCount = 0;
  let transferEncodingCount = 0;
  let authorizationCount = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] ?? '';
    const value = raw[i + 1] ?? '';
    headerBytes += name.length + value.length + 4;
    if (name.includes('_')) return refuse(new GatewayError('invalid_header', { reason: 'underscore in header name' }));
    const lower = name.toLowerCase();
    if (lower === 'host') hostCount++;
    else if (lower === 'transfer-encoding') transferEncodingCount++;
    else if (lower === 'authorization') authorizationCount++;
    else if (lower === 'http2-settings') return refuse(new GatewayError('upgrade_refused', { reason: 'h2c upgrade' }), true);
  }
  // Node keeps only the first of repeated Authorization headers; two credentials in one request are ambiguous (RFC 9110 §11.6.2).
  if (authorizationCount > 1) return refuse(new GatewayError('invalid_header', { reason: 'repeated authorization' }));
  if (headerBytes > limits.maxHeaderBytes) return refuse(new GatewayError('headers_too_large', { reason: 'header bytes' }), true);

  const headers = req.headers;
  const upgrade = headers['upgrade'];
  if (upgrade !== undefined && /h2c/i.test(upgrade)) return refuse(new GatewayError('upgrade_refused', { reason: 'h2c upgrade' }), true);

  // Message framing (H1-03, H1-04): only a single, exact `chunked` on HTTP/1.1; HTTP/2 frames bodies itself.
  let contentLength: number | undefined;
  let chunked = false;
  if (transferEncodingCount > 0) {
    if (!isH1 || req.httpVersion !== '1.1' || transferEncodingCount !== 1) {
      return refuse(new GatewayError('invalid_framing', { reason: 'transfer-encoding' }), true);
    }
    const te = headers['transfer-encoding'];
    if (te === undefined || te.toLowerCase() !== 'chunked') return refuse(new GatewayError('invalid_framing', { reason: 'transfer-encoding' }), true);
    chunked = true;
  }
  const cl = headers['content-length'];
  if (cl !== undefined) {
    // llhttp already refuses repeats and non-digits on HTTP/1.1; HTTP/2 values are checked here.
    if (!/^\d{1,15}$/.test(cl)) return refuse(new GatewayError('invalid_framing', { reason: 'content-length' }), true);
    contentLength = Number(cl);
  }

  // Host (H1-09): exactly one on HTTP/1.1; on HTTP/2 :authority, and a host header must agree with it.
  let authority: string;
  if (isH1) {
    if (hostCount !== 1 || headers.host === undefined) return refuse(new GatewayError('invalid_host', { reason: `host count ${hostCount}` }), true);
    authority = headers.host;
  } else {
    const pseudo = headers[':authority'];
    const plain = headers.host;
    if (hostCount > 1) return refuse(new GatewayError('invalid_host', { reason: 'host count' }));
    if (typeof pseudo === 'string' && plain !== undefined && pseudo !== plain) {
      return refuse(new GatewayError('invalid_host', { reason: 'host differs from :authority' }));
    }
    const chosen = typeof pseudo === 'string' ? pseudo : plain;
    if (chosen === undefined) return refuse(new GatewayError('invalid_host', { reason: 'missing authority' }));
    authority = chosen;
  }
  const host = parseAuthority(authority);
  if (host === undefined) return refuse(new GatewayError('invalid_host', { reason: 'invalid authority' }), true);
  // Exactly these targets (no query, no other spelling) are the probes; everything else is for the route table.
  const probe: Probe | undefined = rawTarget === '/healthz' ? 'liveness' : rawTarget === '/readyz' ? 'readiness' : undefined;
  // Load balancers and kubelets probe by IP address: the served-hosts list is about routing, not about a malformed message,
  // so it does not apply to the probes (every other check does).
  if (probe === undefined && limits.allowedHosts.size > 0 && !limits.allowedHosts.has(host)) {
    return refuse(new GatewayError('misdirected_request', { reason: 'host not served' }));
  }

  if (rawTarget.length > limits.maxUriBytes) return refuse(new GatewayError('uri_too_long'), true);
  const target = parseRequestTarget(rawTarget);
  if (!target.ok) return refuse(new GatewayError('invalid_target', { reason: target.reason }), true);
  path = target.path;
  if (probe !== undefined) return { ok: true, probe };

  const route = router.match(host, target.path);
  if (route === undefined) return refuse(new GatewayError('not_found'));
  routeId = route.id;
  if (!route.methods.has(method)) {
    return refuse(new GatewayError('method_not_allowed', { reason: `method ${method}`, headers: { allow: route.allowHeader } }));
  }
  if (contentLength !== undefined && contentLength > route.bodyLimitBytes) {
    return refuse(new GatewayError('payload_too_large', { reason: 'content-length over route limit' }), true);
  }

  const hasBody = chunked || (contentLength !== undefined ? contentLength > 0 : !isH1 && !h2EndedWithHeaders(req));
  return {
    ok: true,
    context: {
      id,
      trace,
      startedAt,
      method,
      host,
      authority,
      path: target.path,
      rawPath: target.rawPath,
      query: target.query,
      contentLength,
      hasBody,
      authorization: typeof headers.authorization === 'string' ? headers.authorization : undefined,
      dpop: headers['dpop'],
      connection,
      route,
    },
  };
}

function h2EndedWithHeaders(req: ServerRequest): boolean {
  return 'stream' in req && req.stream.endAfterHeaders;
}
