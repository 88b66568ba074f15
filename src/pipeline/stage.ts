// Stage contracts of the request pipeline: what each stage receives and the tagged result it returns.
// Expected outcomes (a missing credential, a deny, a limit) are values; throwing is reserved for faults.
import type { GatewayError } from '../errors/catalogue.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';

export type ServerRequest = IncomingMessage | Http2ServerRequest;
export type ServerReply = ServerResponse | Http2ServerResponse;

/**
 * One request/response pair as the server hands it to the pipeline, the same shape for HTTP/1.1 and HTTP/2. Only the
 * pipeline and server/exchange.ts write answers on it, and the forwarder streams the upstream's answer through it after
 * its allow is on record; intakes and services get a RequestBody instead, and cannot answer.
 */
export interface HttpExchange {
  readonly req: ServerRequest;
  readonly res: ServerReply;
  readonly requestId: string;
  readonly protocol: 'h1' | 'h2';
  /** HEAD responses carry headers only. */
  readonly isHead: boolean;
  /** Set while the gateway drains: HTTP/1.1 responses then ask the client to close. */
  readonly closeAfterResponse: () => boolean;
  /** Set by the request-body deadline (server/exchange.ts) when it answered 408 (or cut the response): what was sent. */
  bodyDeadlinePassed?: boolean;
}

/** What an intake or a service gets of a request beyond its context: its headers and its body, read once and bounded. */
export interface RequestBody {
  /** A request header as received (repeated fields joined with ", "). */
  header(name: string): string | undefined;
  /** The whole body; 'too_large' as soon as it crosses `limit` (reading stops); 'gone' when the client left or the stream failed. */
  read(limit: number): Promise<Buffer | 'too_large' | 'gone'>;
  /** The same, keeping nothing: the body is read only so the connection stays usable. */
  discard(limit: number): Promise<'read' | 'too_large' | 'gone'>;
}

/** Who is calling, as established by one authenticator from a verified credential. Never from headers or paths. */
export interface Principal {
  /** Stable identity: a certificate SAN, later a token subject. `anonymous` for public routes. */
  readonly subject: string;
  /** How it authenticated: the OAuth client methods occur only on the issuer's endpoints (RFC 6749 §2.3.1). */
  readonly method: 'anonymous' | 'mtls' | 'bearer' | 'dpop' | 'client_secret_basic' | 'client_secret_post' | 'tls_client_auth';
  readonly scopes: ReadonlySet<string>;
  /** RFC 8705 x5t#S256 of the client certificate that authenticated, when any. */
  readonly certificateThumbprint?: string;
  /** Bearer: the token's `client_id` claim (RFC 9068 §2.2). */
  readonly clientId?: string;
  /** Bearer: the token's `jti`, the key of revocation together with its issuer. */
  readonly tokenId?: string;
  /** Bearer: the token's `aud`, always as an array; authorization checks the route's audience against it. */
  readonly audiences?: readonly string[];
  /** Bearer: the token's `exp`, in epoch milliseconds. */
  readonly expiresAt?: number;
  /** RFC 9449 `cnf.jkt`: the thumbprint of the key a DPoP-bound token is bound to (and the request's proof was signed with). */
  readonly dpopJkt?: string;
}

/** What the TLS layer established about the peer. */
export interface PeerCertificate {
  /** DER bytes of the leaf certificate the client presented. */
  readonly raw: Buffer;
  /** True only when the handshake verified the chain against the configured client CA. */
  readonly authorized: boolean;
  readonly authorizationError: string | undefined;
  readonly subjectAltName: string | undefined;
  readonly extKeyUsage: readonly string[] | undefined;
  readonly validTo: string;
}

export interface ClientConnection {
  /** The TCP peer. */
  readonly peerAddress: string;
  /** Peer, or the client named by a trusted proxy's X-Forwarded-For. The key of per-IP limits and the audit's source. */
  readonly clientAddress: string;
  /** What per-IP limits count under: the client address, or its IPv6 prefix (limits.ipv6_prefix_length). */
  readonly limitKey: string;
  readonly protocol: 'h1' | 'h2';
  readonly peerCertificate: PeerCertificate | undefined;
}

/** Parameters of an application/x-www-form-urlencoded body, in order; a repeated name keeps every value. */
export type FormParams = ReadonlyMap<string, readonly string[]>;

/** A request's W3C trace context (lib/trace-context.ts makes it): a trusted proxy's, or one made by the gateway. */
export interface RequestTrace {
  readonly traceId: string;
  readonly flags: string;
  readonly state: string | undefined;
}

/** A request that passed the edge: framing validated, target canonicalized, route matched. */
export interface RequestContext {
  readonly id: string;
  readonly trace: RequestTrace;
  readonly startedAt: number;
  readonly method: string;
  /** Lower-case host without port, validated. */
  readonly host: string;
  /** The Host / :authority as the client sent it (validated). */
  readonly authority: string;
  /** Canonical path: the one path used for matching, authorization, audit and forwarding. */
  readonly path: string;
  /** The path exactly as received (audit only). */
  readonly rawPath: string;
  /** Query string without '?', unchanged. */
  readonly query: string;
  readonly contentLength: number | undefined;
  readonly hasBody: boolean;
  /** The single Authorization header value, when present (repeats are refused at the edge). */
  readonly authorization: string | undefined;
  /** The `DPoP` header (RFC 9449) as received: a repeated one is joined or listed, which no single proof matches. */
  readonly dpop: string | readonly string[] | undefined;
  readonly connection: ClientConnection;
  readonly route: Route;
  /** The form body, read before authentication on routes whose credential travels in it (Route.intake). */
  readonly form?: FormParams;
}

export interface AuthenticatedRequest extends RequestContext {
  readonly principal: Principal;
}

/**
 * What a refused credential verifiably says about its holder, for the audit record only — never for a decision. Only
 * facts the gateway established itself: the identity in a token whose signature verified (then refused as revoked,
 * expired, …), or the thumbprint of a certificate it computed; never text an attacker could have written.
 */
export interface PresentedCredential {
  /** Absent when nothing verified: an OAuth client id presented with a bad secret. */
  readonly method?: Principal['method'];
  /** The verified subject; for a failed OAuth client authentication, the well-formed client id presented (who is being tried). */
  readonly subject?: string;
  readonly clientId?: string;
  readonly tokenId?: string;
  readonly scopes?: ReadonlySet<string>;
  readonly certificateThumbprint?: string;
}

export type AuthnResult =
  | { readonly outcome: 'authenticated'; readonly principal: Principal }
  /** No credential of this authenticator's kind: the next one is tried. */
  | { readonly outcome: 'not-applicable' }
  /** A credential was presented and is bad: stop here, never fall through. */
  | { readonly outcome: 'rejected'; readonly error: GatewayError; readonly presented?: PresentedCredential };

export interface Authenticator {
  readonly id: string;
  authenticate(request: RequestContext): Promise<AuthnResult> | AuthnResult;
}

export type AuthzDecision = { readonly allowed: true } | { readonly allowed: false; readonly error: GatewayError };

export interface Authorizer {
  authorize(request: AuthenticatedRequest): AuthzDecision;
}

/**
 * What an admitted request holds until it ends (a concurrency slot, RL-03). The pipeline releases it exactly once, in the
 * one `finally` of its run, so every ending (response sent, client gone, upstream failure or timeout, a throw) frees it.
 */
export interface QuotaLease {
  release(): void;
}

export type QuotaDecision =
  | {
      readonly allowed: true;
      /** draft-ietf-httpapi-ratelimit-headers fields for the response (`RateLimit-Policy`, `RateLimit`), when the quota advertises itself. */
      readonly rateLimitPolicy?: string | undefined;
      readonly rateLimit?: string | undefined;
      readonly lease?: QuotaLease | undefined;
    }
  /** The error carries Retry-After (and the RateLimit fields) for the 429. */
  | { readonly allowed: false; readonly error: GatewayError };

/** The per-address budget every request spends before any credential is looked at (it protects the CPU from floods). */
export interface PreAuthBudget {
  consume(limitKey: string): Promise<QuotaDecision>;
}

export interface QuotaPolicy {
  readonly name: string;
  consume(request: AuthenticatedRequest): Promise<QuotaDecision>;
}

/** A refusal made after the edge: the client is answered from the catalogue and the pipeline records it. */
export interface Refusal {
  readonly outcome: 'refused';
  readonly error: GatewayError;
  /** Who it concerns, as far as verified (see PresentedCredential). */
  readonly credential?: PresentedCredential;
  /** The request body was not read: the connection (HTTP/1.1) or stream (HTTP/2) cannot carry anything more. */
  readonly unreadBody?: boolean;
}

/** The client left before it could be answered: recorded as a deny with no status, nothing is written. */
export interface ClientGone {
  readonly outcome: 'gone';
  readonly reason: string;
}

/** Reads and checks a body before authentication, on routes whose credential travels in it (the OAuth endpoints). */
export interface BodyIntake {
  read(request: RequestContext, body: RequestBody): Promise<{ readonly outcome: 'read'; readonly form: FormParams } | Refusal | ClientGone>;
}

/** A built-in service's whole answer; the pipeline records the decision, then writes it through exchange.ts. */
export interface Answer {
  readonly status: number;
  /** Serialized as JSON; undefined: no body. A `TextBody` is sent as it is, with its own media type. */
  readonly body: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

/** An answer body that is not JSON (the Prometheus text exposition): its text and media type. */
export class TextBody {
  constructor(
    readonly text: string,
    readonly contentType: string,
  ) {}
}

export type ServiceResult =
  | {
      readonly outcome: 'answered';
      readonly answer: Answer;
      /** What the allow record names instead of the principal (the OAuth endpoints: the token issued, introspected, revoked). */
      readonly credential?: PresentedCredential;
    }
  | Refusal
  | ClientGone;

/**
 * A handler of admitted requests. A `service` (issuer endpoints, echo) computes its answer as a value: the pipeline records
 * it, allow or deny, before anything leaves the gateway (no token is sent unrecorded). A `forwarder` (the reverse proxy)
 * streams: its allow is on record before the upstream sees anything, and it writes the upstream's response itself.
 */
export type Handler = Service | Forwarder;

export interface Service {
  readonly kind: 'service';
  serve(request: AuthenticatedRequest, body: RequestBody): Promise<ServiceResult>;
}

/** How a forwarded request ended, for its completion record. */
export interface ForwardOutcome {
  /** `responded`: the upstream's whole response was passed on; `failed`: the upstream failed (answered by the gateway, or cut off mid-response); `aborted`: the client left; `not sent`: the request never went upstream. */
  readonly upstream: 'responded' | 'failed' | 'aborted' | 'not sent';
  /** The status the upstream answered, when it answered. */
  readonly upstreamStatus: number | null;
  /** The code of the refusal the gateway sent in the upstream's place (502, 503, 504, 413), if any. */
  readonly code: string | null;
  /** Why the upstream failed, as the connection reported it (ECONNREFUSED, a TLS verify error, UND_ERR_HEADERS_TIMEOUT…). */
  readonly error: string | null;
  /** Request body bytes passed upstream, and response body bytes passed to the client. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** The target (host:port) the request was last sent to, if any. */
  readonly target: string | null;
  /** Earlier attempts that failed before any byte reached their target (`host:port CODE`), retried on another. */
  readonly retried: readonly string[];
  /** Milliseconds from the first dispatch to the end of the upstream's answer or failure; null when nothing was sent. */
  readonly upstreamMs: number | null;
}

/** Upstream capacity held for one request, from before its allow is recorded until the forward is done with it. */
export interface ForwardTicket {
  /** Gives the capacity back; every call after the first does nothing. */
  release(): void;
}

export type ForwardAdmission = { readonly admitted: true; readonly ticket: ForwardTicket } | { readonly admitted: false; readonly error: GatewayError };

export interface Forwarder {
  readonly kind: 'forwarder';
  /**
   * Checked before the allow is recorded: a request the forwarder cannot take (a full upstream queue) is a refusal on
   * record, never an allow followed by a 503. The capacity is held from here, so the allow's write cannot lose it.
   */
  admit(request: AuthenticatedRequest): ForwardAdmission;
  /** Takes over the ticket: it is released once the upstream is done with the request, however it ends. */
  forward(request: AuthenticatedRequest, exchange: HttpExchange, ticket: ForwardTicket): Promise<ForwardOutcome>;
}

/** A route compiled from config: the pipeline's data for requests it matches. */
export interface Route {
  readonly id: string;
  readonly pathPrefix: string;
  readonly host: string | undefined;
  /** Allowed methods; HEAD is included whenever GET is (it gets GET's authorization, AZ-11). */
  readonly methods: ReadonlySet<string>;
  /** Value of the Allow header for 405 answers. */
  readonly allowHeader: string;
  readonly bodyLimitBytes: number;
  readonly authenticators: readonly Authenticator[];
  /** WWW-Authenticate of a 401 when no credential was presented (`Bearer realm=…` on bearer routes), if any. */
  readonly challenge: string | undefined;
  readonly authorizer: Authorizer;
  readonly quota: QuotaPolicy | undefined;
  readonly handler: Handler;
  /** Runs after the pre-auth budget and before authentication, when the credential is in the body. */
  readonly intake: BodyIntake | undefined;
  /**
   * An OAuth endpoint: refusals past the pre-auth budget are RFC 6749 §5.2 bodies, and its decisions (client
   * authentication, the endpoint's own) are recorded under stage `issuer` with the `error` the client received.
   */
  readonly oauth: boolean;
}
