// Stage contracts of the request pipeline: what each stage receives and the tagged result it returns.
// Expected outcomes (a missing credential, a deny, a limit) are values; throwing is reserved for faults.
import type { GatewayError } from '../errors/catalogue.js';
import type { HttpExchange } from '../server/exchange.js';

/** Who is calling, as established by one authenticator from a verified credential. Never from headers or paths. */
export interface Principal {
  /** Stable identity: a certificate SAN, later a token subject. `anonymous` for public routes. */
  readonly subject: string;
  readonly method: 'anonymous' | 'mtls' | 'bearer';
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

/** A request that passed the edge: framing validated, target canonicalized, route matched. */
export interface RequestContext {
  readonly id: string;
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
  readonly connection: ClientConnection;
  readonly route: Route;
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
  readonly method: Principal['method'];
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

export type QuotaDecision = { readonly allowed: true } | { readonly allowed: false; readonly error: GatewayError };

export interface QuotaPolicy {
  readonly name: string;
  consume(request: AuthenticatedRequest): Promise<QuotaDecision>;
}

export interface Handler {
  handle(request: AuthenticatedRequest, exchange: HttpExchange): Promise<void>;
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
  /**
   * The handler records its own decision (the OAuth endpoints, which know the client): the pipeline then writes no
   * anonymous `allow` before it, and records a `deny` if the handler fails.
   */
  readonly selfAudited: boolean;
}

