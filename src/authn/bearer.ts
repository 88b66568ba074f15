// The `bearer` authenticator: RFC 6750 `Authorization: Bearer` carrying an RFC 9068 JWT access token from our own issuer.
// Everything an attacker controls is checked by hand, cheaply, before any crypto: header syntax and size (JWT-26, JWT-27),
// the compact-JWS shape (JWT-12, JWT-13), the protected header (typ, kid, alg pinned per key, no crit/jku/x5u/jwk/x5c:
// JWT-01..08, JWT-14, JWT-22). Only then does jose verify the signature and the registered claims, and the claim types
// are checked again here (JWT-20, JWT-21). A kid is a Map key into the gateway's own key set: nothing in a token makes the
// gateway fetch a URL or read a file.
//
// Signature verification costs more CPU than the whole proxy hop, so verified tokens are cached by SHA-256 of the exact
// token bytes (bounded LRU, held no longer than the token is acceptable). What can change between two requests carrying
// the same token is checked on every request, cached or not: expiry and maximum age against the clock, revocation by
// (iss, jti), that the signing key is still published, and a certificate binding (cnf) against this connection.
import { hash as digest, KeyObject } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type CryptoKey, type JWTPayload } from 'jose';
import { LRUCache } from 'lru-cache';
import { GatewayError } from '../errors/catalogue.js';
import type { Authenticator, AuthnResult, PeerCertificate, Principal, RequestContext } from '../pipeline/stage.js';
import { schemeCredentials } from '../lib/auth-scheme.js';
import { COMPACT_JWS, hasUndecodableSegment, isPlainObject, jsonSegment, NOT_JSON, own } from '../lib/jws-syntax.js';
import { certificateThumbprintSha256 } from '../lib/thumbprint.js';
import type { RevokedCertificates } from './mtls.js';

export type BearerAlgorithm = 'EdDSA' | 'ES256';

export interface VerificationKey {
  readonly key: KeyObject | CryptoKey;
  /** The only algorithm this key verifies (JWT-03 / JWT-04). */
  readonly alg: BearerAlgorithm;
}

export interface VerificationKeys {
  /** Public key + pinned alg for a published kid; a Map lookup, never I/O. */
  verificationKey(kid: string): VerificationKey | undefined;
  /**
   * A kid this instance does not hold may be a key another instance began signing with a moment ago: resolves once the
   * keys were read again (shared and rate-limited by the implementation), after which verificationKey() is asked once
   * more. Absent = an unknown kid is refused at once.
   */
  resolveKid?(kid: string): Promise<void>;
}

/** In-memory and synchronous: a revocation takes effect on the very next request, cached token or not. */
export interface RevocationList extends Partial<RevokedCertificates> {
  isRevoked(iss: string, jti: string): boolean;
  /**
   * False for a client that was disabled or removed, and for a token issued (`iat`, epoch seconds) before the client's
   * last disable: its tokens stop working before they expire, and an enable does not bring them back. 'unknown': this
   * instance has not seen the client yet (added since its last read): resolveClient() looks it up. Absent = every token.
   */
  acceptsClientToken?(clientId: string, issuedAtS: number): boolean | 'unknown';
  /** Looks up a client this instance has not seen (one lookup per id at a time); resolves once the answer is known. */
  resolveClient?(clientId: string): Promise<void>;
}

/** admit(): the token's client is not known here yet; one store lookup decides (never a refusal outright). */
const UNKNOWN_CLIENT = Symbol('unknown client');
type Admitted = AuthnResult | undefined | typeof UNKNOWN_CLIENT;

/** A token that verified and is acceptable now (RFC 7662 `active`), as the introspection endpoint reports it. */
export interface ActiveToken {
  readonly principal: Principal;
  readonly iss: string;
  readonly jti: string;
  /** Epoch seconds. */
  readonly exp: number;
  readonly iat: number;
  readonly boundThumbprint: string | undefined;
  /** RFC 9449 cnf.jkt: the token is DPoP-bound to the key with this thumbprint. */
  readonly boundJkt: string | undefined;
}

/**
 * How the token was presented, which decides how its binding is checked: `Authorization: Bearer` (a DPoP-bound token is
 * refused), `Authorization: DPoP` (only a DPoP-bound token; the DPoP authenticator checks the proof), or to introspection
 * (the binding is reported, not checked: there is no connection of the holder to check it against).
 */
export type Presentation = 'bearer' | 'dpop' | 'introspection';

export interface BearerOptions {
  /** The exact `iss` (RFC 9068 §4, JWT-17): compared byte for byte, no normalization. */
  readonly issuer: string;
  /** Leeway for exp / nbf / iat, in seconds (e.g. 30). */
  readonly clockToleranceS: number;
  /** Oldest acceptable `iat`, in seconds; also makes jose reject an `iat` in the future (JWT-19). */
  readonly maxTokenAgeS: number;
  /** Longest token accepted, checked before any decoding or crypto (JWT-27), e.g. 8192. */
  readonly maxTokenBytes: number;
  /** Bound of the verified-token cache, e.g. 10 000. */
  readonly cacheEntries: number;
  /** Wall clock in epoch milliseconds (tests inject one). */
  readonly now?: () => number;
}

export interface BearerStats {
  /** Calls into jose's jwtVerify (signature verifications attempted). */
  readonly verifications: number;
  /** Requests answered from the verified-token cache. */
  readonly cacheHits: number;
  /** Entries currently held. */
  readonly cacheSize: number;
}

/** RFC 6749 §3.3 scope-token = 1*NQCHAR. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
/** Header parameters that would let a token choose its own key or its own processing rules (JWT-05..07, JWT-22). */
const FORBIDDEN_HEADER_PARAMETERS = ['crit', 'jku', 'x5u', 'jwk', 'x5c', 'b64', '__proto__'] as const;
const ACCEPTED_TYP = new Set(['at+jwt', 'application/at+jwt']);
const MAX_KID_LENGTH = 128;
/** A SHA-256 thumbprint in unpadded base64url (cnf `x5t#S256`, `jkt`). */
const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;
const REQUIRED_CLAIMS = ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'];

const INVALID_TOKEN_CHALLENGE = Object.freeze({ 'www-authenticate': 'Bearer error="invalid_token"' });
const INVALID_REQUEST_CHALLENGE = Object.freeze({ 'www-authenticate': 'Bearer error="invalid_request"' });
const NOT_APPLICABLE: AuthnResult = Object.freeze({ outcome: 'not-applicable' });

/** Reasons are fixed strings: nothing from the token (kid, claims) is ever reflected into the audit or the response (JWT-25). */
function invalidToken(reason: string, presented?: Principal): AuthnResult {
  const error = new GatewayError('invalid_token', { reason, headers: INVALID_TOKEN_CHALLENGE });
  // A token whose signature verified names its holder truthfully even when it is refused now: the audit says whose it was.
  return presented === undefined ? { outcome: 'rejected', error } : { outcome: 'rejected', error, presented };
}

function invalidRequest(reason: string): AuthnResult {
  return { outcome: 'rejected', error: new GatewayError('invalid_request', { reason, headers: INVALID_REQUEST_CHALLENGE }) };
}

/**
 * True when the raw query carries an `access_token` parameter (RFC 6750 §2.3), however it is percent-encoded or cased.
 * Exported for tests of the query forms it recognizes.
 */
export function hasQueryAccessToken(query: string): boolean {
  if (query === '') return false;
  // Fast path: a name that decodes to access_token either contains it literally or contains a percent escape.
  if (!query.includes('%') && !/access_token/i.test(query)) return false;
  for (const name of new URLSearchParams(query).keys()) {
    if (name.toLowerCase() === 'access_token') return true;
  }
  return false;
}

interface Verified {
  readonly principal: Principal;
  readonly kid: string;
  readonly key: KeyObject | CryptoKey;
  readonly alg: BearerAlgorithm;
  readonly iss: string;
  readonly jti: string;
  /** Epoch seconds, as in the token. */
  readonly exp: number;
  readonly iat: number;
  /** RFC 8705 cnf.x5t#S256: the token is only valid on a connection authenticated with this certificate. */
  readonly boundThumbprint: string | undefined;
  /** RFC 9449 cnf.jkt: the token is only valid with a DPoP proof signed by the key with this thumbprint. */
  readonly boundJkt: string | undefined;
}

type Verification = Verified | AuthnResult;

function isNonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}

function isNumericDate(value: unknown): value is number {
  // JSON.parse turns 1e999 into Infinity: a finite number is required, or an "exp" could never expire.
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

/**
 * The scopes of a cached principal are shared by every request that presents the same token, so they are immutable at
 * run time too, not only by type: a stray `add` elsewhere must not grant a scope to the token's later requests.
 */
class ScopeSet extends Set<string> {
  constructor(scopes: Iterable<string>) {
    super();
    for (const scope of scopes) Set.prototype.add.call(this, scope);
    Object.freeze(this);
  }
  override add(): this {
    throw new TypeError('principal scopes are read-only');
  }
  override delete(): boolean {
    throw new TypeError('principal scopes are read-only');
  }
  override clear(): void {
    throw new TypeError('principal scopes are read-only');
  }
}

export class BearerAuthenticator implements Authenticator {
  readonly id = 'bearer';
  private readonly now: () => number;
  private readonly cache: LRUCache<string, Verified>;
  /** Single flight: concurrent requests with the same unverified token share one verification. */
  private readonly pending = new Map<string, Promise<Verification>>();
  private readonly thumbprints = new WeakMap<PeerCertificate, string>();
  private verifications = 0;
  private cacheHits = 0;

  constructor(
    private readonly keys: VerificationKeys,
    private readonly revocations: RevocationList,
    private readonly options: BearerOptions,
  ) {
    for (const [name, value] of [
      ['clockToleranceS', options.clockToleranceS],
      ['maxTokenAgeS', options.maxTokenAgeS],
    ] as const) {
      if (!Number.isFinite(value) || value < 0) throw new RangeError(`bearer: ${name} must be a non-negative number`);
    }
    if (!Number.isSafeInteger(options.maxTokenBytes) || options.maxTokenBytes < 1) throw new RangeError('bearer: maxTokenBytes must be a positive integer');
    if (!Number.isSafeInteger(options.cacheEntries) || options.cacheEntries < 1) throw new RangeError('bearer: cacheEntries must be a positive integer');
    if (options.issuer === '') throw new RangeError('bearer: issuer must not be empty');
    this.now = options.now ?? Date.now;
    const now = this.now;
    // The cache's TTL runs on the same clock as the token checks; it only frees memory, the per-request checks decide.
    this.cache = new LRUCache<string, Verified>({ max: options.cacheEntries, perf: { now: () => now() } });
  }

  /** Counters for tests and metrics. */
  get stats(): BearerStats {
    return { verifications: this.verifications, cacheHits: this.cacheHits, cacheSize: this.cache.size };
  }

  authenticate(request: RequestContext): AuthnResult | Promise<AuthnResult> {
    // RFC 6750 §2.3 is not supported: a credential in a URL ends up in logs, histories and Referer headers. Refused even
    // next to an Authorization header (RFC 6750 §2: more than one method) and whatever that header's scheme (JWT-26).
    if (hasQueryAccessToken(request.query)) return invalidRequest('access token in the query string');

    const header = request.authorization;
    if (header === undefined) return NOT_APPLICABLE;
    // RFC 6750 §2.1: "Bearer" 1*SP b64token; another scheme (Basic, DPoP, ...) is another authenticator's credential.
    const credentials = schemeCredentials(header, 'bearer');
    if (credentials.kind === 'other') return NOT_APPLICABLE;
    if (credentials.kind === 'malformed') return invalidRequest(credentials.reason);
    return this.authenticateToken(credentials.token, request, 'bearer');
  }

  /**
   * Verifies an access token presented as `presentation` (the DPoP authenticator presents the token of `Authorization:
   * DPoP`): every check of a bearer token, then its binding as that presentation requires.
   */
  authenticateToken(token: string, request: RequestContext, presentation: 'bearer' | 'dpop'): AuthnResult | Promise<AuthnResult> {
    // Before anything else touches it (JWT-27). The header value is latin1, one byte per character.
    if (token.length > this.options.maxTokenBytes) return invalidToken('token too large');
    if (!COMPACT_JWS.test(token)) return invalidToken('not a compact JWS');

    // The token is ASCII now, so these are its exact bytes. One-shot hash(): about a third of createHash()'s cost.
    const hash = digest('sha256', token, 'base64url');
    const cached = this.cache.get(hash);
    if (cached !== undefined) {
      const admitted = this.admit(cached, request.connection.peerCertificate, presentation);
      if (admitted === UNKNOWN_CLIENT) return this.resolving(cached, request.connection.peerCertificate, presentation);
      if (admitted !== undefined) {
        this.cacheHits++;
        if (admitted.outcome === 'rejected') this.forgetIfDead(hash, cached);
        return admitted;
      }
      // Same kid, different key material: verify again against the key published now.
      this.cache.delete(hash);
    }

    let verification = this.pending.get(hash);
    if (verification === undefined) {
      const started = this.verify(token);
      if (!(started instanceof Promise)) return this.settle(started, request, presentation);
      verification = started.finally(() => this.pending.delete(hash));
      this.pending.set(hash, verification);
      return verification.then((settled) => {
        if (!('outcome' in settled)) this.remember(hash, settled);
        return this.settle(settled, request, presentation);
      });
    }
    return verification.then((settled) => this.settle(settled, request, presentation));
  }

  /**
   * The same verification and per-request checks as `authenticate`, for a token presented to the introspection or
   * revocation endpoint. Undefined for anything not acceptable now. A certificate binding is reported, not enforced:
   * there is no connection of the token's holder to check it against.
   */
  async introspect(token: string): Promise<ActiveToken | undefined> {
    if (token.length > this.options.maxTokenBytes || !COMPACT_JWS.test(token)) return undefined;
    const hash = digest('sha256', token, 'base64url');
    let verified = this.cache.get(hash);
    let admitted: Admitted | AuthnResult = verified === undefined ? undefined : this.admit(verified, undefined, 'introspection');
    if (verified === undefined || admitted === undefined) {
      // Not cached, or the kid now names other key material: verify afresh.
      const settled = await this.verify(token);
      if ('outcome' in settled) return undefined;
      this.remember(hash, settled);
      verified = settled;
      admitted = this.admit(settled, undefined, 'introspection');
    }
    if (admitted === UNKNOWN_CLIENT) admitted = await this.resolving(verified, undefined, 'introspection');
    if (admitted?.outcome !== 'authenticated') return undefined;
    const { principal, iss, jti, exp, iat, boundThumbprint, boundJkt } = verified;
    return { principal, iss, jti, exp, iat, boundThumbprint, boundJkt };
  }

  private settle(verification: Verification, request: RequestContext, presentation: Presentation): AuthnResult | Promise<AuthnResult> {
    if ('outcome' in verification) return verification;
    const admitted = this.admit(verification, request.connection.peerCertificate, presentation);
    if (admitted === UNKNOWN_CLIENT) return this.resolving(verification, request.connection.peerCertificate, presentation);
    return admitted ?? invalidToken('signing key changed during verification');
  }

  /**
   * A token of a client this instance has not seen (added on another instance, or with the CLI, since the last read): one
   * store lookup per client id at a time, then the same checks again. A client the store does not know (or has disabled)
   * is refused like a removed one.
   */
  private async resolving(verified: Verified, peerCertificate: PeerCertificate | undefined, presentation: Presentation): Promise<AuthnResult> {
    await this.revocations.resolveClient?.(verified.principal.clientId ?? '');
    const admitted = this.admit(verified, peerCertificate, presentation);
    if (admitted === UNKNOWN_CLIENT) return invalidToken('client disabled or removed', verified.principal);
    return admitted ?? invalidToken('signing key changed during verification');
  }

  /**
   * The checks that run on every request, cached or not. Undefined means the kid now names different key material, so
   * the cached verification no longer says anything.
   */
  private admit(verified: Verified, peerCertificate: PeerCertificate | undefined, presentation: Presentation): Admitted {
    const current = this.keys.verificationKey(verified.kid);
    // A key removed from the set invalidates every token it signed, cached or not.
    // No holder is named here: a key is revoked because it may be in other hands, and then its tokens may be forged.
    if (current === undefined) return invalidToken('signing key no longer published');
    if (current.alg !== verified.alg || !sameKey(current.key, verified.key)) return undefined;

    // The same arithmetic as jose's, so a cached token is acceptable exactly as long as a fresh verification would accept it.
    const nowS = Math.floor(this.now() / 1000);
    const tolerance = this.options.clockToleranceS;
    const { principal } = verified;
    if (verified.exp <= nowS - tolerance) return invalidToken('token expired', principal);
    if (nowS - verified.iat - tolerance > this.options.maxTokenAgeS) return invalidToken('token too old', principal);

    if (this.revocations.isRevoked(verified.iss, verified.jti)) return invalidToken('token revoked', principal);
    const accepted = this.revocations.acceptsClientToken?.(principal.clientId ?? '', verified.iat) ?? true;
    if (accepted === 'unknown') return this.revocations.resolveClient === undefined ? invalidToken('client disabled or removed', principal) : UNKNOWN_CLIENT;
    if (!accepted) return invalidToken('client disabled or removed', principal);

    if (presentation === 'introspection') return { outcome: 'authenticated', principal };
    // RFC 9449 §7.1: a DPoP-bound token is never a bearer token, and the DPoP scheme carries DPoP-bound tokens only.
    if (presentation === 'bearer' && verified.boundJkt !== undefined) return invalidToken('DPoP-bound token sent as Bearer', principal);
    if (presentation === 'dpop' && verified.boundJkt === undefined) return invalidToken('token is not DPoP-bound', principal);
    if (verified.boundThumbprint !== undefined) {
      // RFC 8705 §3: a certificate-bound token is only good on a connection that proved possession of that certificate.
      const certificate = peerCertificate;
      if (certificate === undefined || this.thumbprintOf(certificate) !== verified.boundThumbprint) {
        return invalidToken('certificate binding mismatch', principal);
      }
      // A revoked certificate proves nothing: the tokens bound to it stop with it.
      if (this.revocations.isCertificateRevoked?.(verified.boundThumbprint) === true) return invalidToken('bound certificate revoked', principal);
    }
    return { outcome: 'authenticated', principal };
  }

  private thumbprintOf(certificate: PeerCertificate): string {
    let thumbprint = this.thumbprints.get(certificate);
    if (thumbprint === undefined) {
      thumbprint = certificateThumbprintSha256(certificate.raw);
      this.thumbprints.set(certificate, thumbprint);
    }
    return thumbprint;
  }

  /** An expired, too old or unpublished-key token never becomes good again: free its slot. Revoked ones stay (cheap refusals). */
  private forgetIfDead(hash: string, verified: Verified): void {
    const nowS = Math.floor(this.now() / 1000);
    const tolerance = this.options.clockToleranceS;
    if (
      verified.exp <= nowS - tolerance ||
      nowS - verified.iat - tolerance > this.options.maxTokenAgeS ||
      this.keys.verificationKey(verified.kid) === undefined
    ) {
      this.cache.delete(hash);
    }
  }

  /**
   * Caches a successful verification until the token stops being acceptable (exp or maximum age, with the tolerance jose
   * applies), never longer. Failures are not cached: an attacker's junk is a fresh string every time, so a negative entry
   * would never be hit and would only evict good ones; nearly all junk is refused before crypto anyway; and a refusal for
   * time (nbf) or for an unknown kid (published a moment later during rotation) can become wrong.
   */
  private remember(hash: string, verified: Verified): void {
    const tolerance = this.options.clockToleranceS;
    const deadlineS = Math.min(verified.exp, verified.iat + this.options.maxTokenAgeS) + tolerance;
    const ttl = Math.floor(deadlineS * 1000 - this.now());
    if (ttl >= 1) this.cache.set(hash, verified, { ttl });
  }

  /** Header checks by hand (synchronous, no crypto), then jose. Returns a refusal or the verified claims. */
  private verify(token: string): Verification | Promise<Verification> {
    const segments = token.split('.');
    if (hasUndecodableSegment(segments)) return invalidToken('not a compact JWS');

    const header = jsonSegment(segments[0] ?? '');
    if (header === NOT_JSON) return invalidToken('protected header is not JSON');
    if (!isPlainObject(header)) return invalidToken('protected header is not an object');
    for (const name of FORBIDDEN_HEADER_PARAMETERS) {
      if (Object.hasOwn(header, name)) return invalidToken('forbidden header parameter');
    }

    // RFC 9068 §4 / RFC 8725 §3.11: only access tokens; media types compare case-insensitively (RFC 7515 §4.1.9).
    const typ = own(header, 'typ');
    if (typeof typ !== 'string' || !ACCEPTED_TYP.has(typ.toLowerCase())) return invalidToken('typ is not at+jwt');

    const kid = own(header, 'kid');
    if (typeof kid !== 'string' || kid.length === 0 || kid.length > MAX_KID_LENGTH) return invalidToken('kid missing or malformed');
    const alg = own(header, 'alg');
    const published = this.keys.verificationKey(kid);
    if (published !== undefined) return this.verifyWith(token, kid, alg, published);
    if (this.keys.resolveKid === undefined) return invalidToken('unknown kid');
    // The signature is checked only against the key the store holds under that kid, never anything the token carries.
    return this.keys.resolveKid(kid).then(() => {
      const found = this.keys.verificationKey(kid);
      return found === undefined ? invalidToken('unknown kid') : this.verifyWith(token, kid, alg, found);
    });
  }

  private verifyWith(token: string, kid: string, alg: unknown, published: VerificationKey): Verification | Promise<Verification> {
    if (alg !== published.alg) return invalidToken('alg does not match the key');
    return this.verifySignature(token, kid, published);
  }

  private async verifySignature(token: string, kid: string, published: VerificationKey): Promise<Verification> {
    const nowMs = this.now();
    let payload: JWTPayload;
    this.verifications++;
    try {
      ({ payload } = await jwtVerify(token, published.key, {
        algorithms: [published.alg],
        issuer: this.options.issuer,
        // jose 6 normalizes both sides (`at+jwt` → `application/at+jwt`, lower-cased): this accepts exactly the two
        // RFC 9068 spellings in any case, like the check above, and nothing else.
        typ: 'at+jwt',
        clockTolerance: this.options.clockToleranceS,
        maxTokenAge: this.options.maxTokenAgeS,
        requiredClaims: REQUIRED_CLAIMS,
        currentDate: new Date(nowMs),
      }));
    } catch (error) {
      if (error instanceof joseErrors.JOSEError) return invalidToken(joseReason(error));
      throw error;
    }
    return this.checkClaims(payload, kid, published);
  }

  /** jose checked presence, iss, times and signature; the types of what the gateway uses are checked here (JWT-21). */
  private checkClaims(claims: Readonly<Record<string, unknown>>, kid: string, published: VerificationKey): Verification {
    if (Object.hasOwn(claims, '__proto__')) return invalidToken('forbidden claim name');
    const iss = own(claims, 'iss');
    const sub = own(claims, 'sub');
    const clientId = own(claims, 'client_id');
    const jti = own(claims, 'jti');
    const exp = own(claims, 'exp');
    const iat = own(claims, 'iat');
    const nbf = own(claims, 'nbf');
    const aud = own(claims, 'aud');
    const scope = own(claims, 'scope');
    const cnf = own(claims, 'cnf');

    if (iss !== this.options.issuer) return invalidToken('claim iss invalid');
    if (!isNonEmptyString(sub)) return invalidToken('claim sub invalid');
    if (!isNonEmptyString(clientId)) return invalidToken('claim client_id invalid');
    if (!isNonEmptyString(jti)) return invalidToken('claim jti invalid');
    if (!isNumericDate(exp)) return invalidToken('claim exp invalid');
    if (!isNumericDate(iat)) return invalidToken('claim iat invalid');
    if (nbf !== undefined && !isNumericDate(nbf)) return invalidToken('claim nbf invalid');

    let audiences: readonly string[];
    if (isNonEmptyString(aud)) audiences = Object.freeze([aud]);
    else if (Array.isArray(aud) && aud.length > 0 && aud.every(isNonEmptyString)) audiences = Object.freeze([...aud]);
    else return invalidToken('claim aud invalid');

    const scopes: string[] = [];
    if (scope !== undefined) {
      if (typeof scope !== 'string') return invalidToken('claim scope invalid');
      for (const item of scope.split(' ')) {
        if (item === '') continue;
        if (!SCOPE_TOKEN.test(item)) return invalidToken('claim scope invalid');
        if (!scopes.includes(item)) scopes.push(item);
      }
    }

    let boundThumbprint: string | undefined;
    let boundJkt: string | undefined;
    if (cnf !== undefined) {
      // RFC 8705 / RFC 9449: honour a binding or refuse; never accept a bound token as a plain bearer token. One binding
      // per token, a SHA-256 thumbprint in base64url either way.
      if (!isPlainObject(cnf)) return invalidToken('claim cnf invalid');
      const names = Object.keys(cnf);
      const [name] = names;
      const value = name === undefined ? undefined : own(cnf, name);
      if (names.length !== 1 || typeof value !== 'string' || !THUMBPRINT.test(value)) return invalidToken('unsupported token binding');
      if (name === 'x5t#S256') boundThumbprint = value;
      else if (name === 'jkt') boundJkt = value;
      else return invalidToken('unsupported token binding');
    }

    // Built field by field from checked values: claims are never spread or merged into anything (JWT-24).
    const principal: Principal = Object.freeze({
      subject: sub,
      method: 'bearer',
      scopes: new ScopeSet(scopes),
      clientId,
      tokenId: jti,
      audiences,
      expiresAt: exp * 1000,
      ...(boundThumbprint !== undefined ? { certificateThumbprint: boundThumbprint } : {}),
      ...(boundJkt !== undefined ? { method: 'dpop' as const, dpopJkt: boundJkt } : {}),
    });
    return { principal, kid, key: published.key, alg: published.alg, iss, jti, exp, iat, boundThumbprint, boundJkt };
  }
}

/** A Map-backed key set hands out the same object every time; equal KeyObjects are accepted too. */
function sameKey(a: KeyObject | CryptoKey, b: KeyObject | CryptoKey): boolean {
  if (a === b) return true;
  return a instanceof KeyObject && b instanceof KeyObject && a.equals(b);
}

function joseReason(error: InstanceType<typeof joseErrors.JOSEError>): string {
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return 'signature invalid';
  if (error instanceof joseErrors.JWTExpired) return `claim ${error.claim} expired`;
  if (error instanceof joseErrors.JWTClaimValidationFailed) return `claim ${error.claim} ${error.reason}`;
  return `jose ${error.code}`;
}
