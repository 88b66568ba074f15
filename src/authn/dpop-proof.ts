// DPoP proofs (RFC 9449 §4.3): the checks a server makes of a `DPoP` header before it believes the sender holds the key a
// token is (or is to be) bound to. Everything an attacker controls is checked by hand and cheaply first — one header, the
// compact shape, the header's typ / alg / jwk (public members only), the claims' types, method, URI, age and `ath` — and
// only then is the signature verified with the embedded key (node:crypto, synchronously: a proof is checked on every request,
// and the key, imported once per client key, is kept in a bounded cache). A proof is good once: its (key, jti) is remembered for
// as long as the proof could be accepted (OA-20), and that is the last check, so nothing unsigned can fill the cache.
import { constants, createPublicKey, hash as digest, verify, type KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { GatewayError } from '../errors/catalogue.js';
import type { DpopNonces } from './dpop-nonce.js';
import { DPOP_ALGORITHMS, type DpopAlgorithm, dpopChallenge } from '../lib/dpop-syntax.js';
import { COMPACT_JWS, hasUndecodableSegment, isPlainObject, jsonSegment, own } from '../lib/jws-syntax.js';

/** A proof is a few hundred bytes; an RSA-4096 key in its header makes it about 1 500. */
const MAX_PROOF_BYTES = 4096;
const MAX_JTI_LENGTH = 256;
/** Members of a private or symmetric JWK (RFC 7518 §6): a proof carries the public key only (check 7). */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
/** The key types and curves the allowed algorithms use, and which algorithm each may sign with. */
const KEY_FOR_ALG: Readonly<Record<DpopAlgorithm, (jwk: Readonly<Record<string, unknown>>) => boolean>> = {
  ES256: (jwk) => jwk['kty'] === 'EC' && jwk['crv'] === 'P-256',
  ES384: (jwk) => jwk['kty'] === 'EC' && jwk['crv'] === 'P-384',
  EdDSA: (jwk) => jwk['kty'] === 'OKP' && jwk['crv'] === 'Ed25519',
  PS256: (jwk) => jwk['kty'] === 'RSA',
  RS256: (jwk) => jwk['kty'] === 'RSA',
};
/** RFC 7638 §3.2: the required members of each key type, in lexicographic order — the thumbprint's input. */
const THUMBPRINT_MEMBERS: Readonly<Record<string, readonly string[]>> = { EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'], RSA: ['e', 'kty', 'n'] };
/** How each algorithm is verified with node:crypto (JWS ECDSA signatures are r ‖ s, RFC 7518 §3.4). */
const VERIFY: Readonly<Record<DpopAlgorithm, { readonly hash: string | null; readonly options: Readonly<Record<string, unknown>> }>> = {
  ES256: { hash: 'sha256', options: { dsaEncoding: 'ieee-p1363' } },
  ES384: { hash: 'sha384', options: { dsaEncoding: 'ieee-p1363' } },
  EdDSA: { hash: null, options: {} },
  PS256: { hash: 'sha256', options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } },
  RS256: { hash: 'sha256', options: { padding: constants.RSA_PKCS1_PADDING } },
};
const MIN_RSA_BITS = 2048;
/** Client keys imported lately, by thumbprint: one client sends many proofs with one key. */
const KEY_CACHE_ENTRIES = 10_000;

/** What a proof must match: the request it came with, and the access token it accompanies (resource requests). */
export interface ProofTarget {
  readonly method: string;
  /** The request's URI without query or fragment: `https://` + authority + canonical path. */
  readonly uri: string;
  /** Resource requests: the access token, whose SHA-256 the proof's `ath` must be (check 12). */
  readonly accessToken?: string;
}

export interface VerifiedProof {
  /** RFC 7638 SHA-256 thumbprint of the proof's key: what `cnf.jkt` binds a token to. */
  readonly jkt: string;
  readonly jti: string;
}

export type ProofCheck =
  | { readonly ok: true; readonly proof: VerifiedProof }
  /** `nonce`: the proof lacked a current server nonce; the answer is `use_dpop_nonce` with this fresh one. */
  | { readonly ok: false; readonly reason: string; readonly nonce?: string };

/** Remembers the proofs already used; the answer may need I/O (a shared store), and a store that cannot answer throws. */
export interface ProofReplayCache {
  /** True the first time (key thumbprint, jti) is seen until `expiresAtMs`; false for a replay. */
  firstUse(jkt: string, jti: string, expiresAtMs: number): boolean | Promise<boolean>;
}

export interface DpopProofOptions {
  /** How long after its `iat` a proof is accepted, in seconds; its jti is remembered that long (plus the tolerance). */
  readonly maxAgeS: number;
  /** How far a proof's `iat` may lie ahead of this clock, in seconds. */
  readonly clockToleranceS: number;
  readonly replays: ProofReplayCache;
  /** When set, every proof must carry a nonce these accept (RFC 9449 §8-9). */
  readonly nonces?: DpopNonces | undefined;
  readonly now?: () => number;
}

export function invalidProof(reason: string): GatewayError {
  return new GatewayError('invalid_dpop_proof', { reason, headers: { 'www-authenticate': dpopChallenge('invalid_dpop_proof') } });
}

/** RFC 9449 §9: 401 `use_dpop_nonce` with the nonce the next proof must carry. */
export function useNonce(reason: string, nonce: string): GatewayError {
  return new GatewayError('use_dpop_nonce', { reason, headers: { 'www-authenticate': dpopChallenge('use_dpop_nonce'), 'dpop-nonce': nonce } });
}

export class DpopProofVerifier {
  private readonly now: () => number;
  private readonly keys = new LRUCache<string, KeyObject>({ max: KEY_CACHE_ENTRIES });

  constructor(private readonly options: DpopProofOptions) {
    if (!Number.isFinite(options.maxAgeS) || options.maxAgeS <= 0) throw new RangeError('dpop: maxAgeS must be positive');
    if (!Number.isFinite(options.clockToleranceS) || options.clockToleranceS < 0) throw new RangeError('dpop: clockToleranceS must be non-negative');
    this.now = options.now ?? Date.now;
  }

  /**
   * Checks the `DPoP` header of a request (`header` as received: Node joins a repeated header with ", ", which no compact
   * JWS contains, so two headers fail the shape check — RFC 9449 §4.3 check 1). Reasons are fixed strings: nothing of the
   * proof is ever reflected into the answer or the audit.
   */
  async verify(header: string | readonly string[] | undefined, target: ProofTarget): Promise<ProofCheck> {
    if (header === undefined) return refused('no DPoP proof');
    if (typeof header !== 'string') return refused('more than one DPoP header');
    if (header.length > MAX_PROOF_BYTES) return refused('proof too large');
    if (!COMPACT_JWS.test(header)) return refused(header.includes(',') ? 'more than one DPoP header' : 'not a compact JWS');
    const segments = header.split('.');
    if (hasUndecodableSegment(segments)) return refused('not a compact JWS');
    const protectedHeader = decodeObject(segments[0] ?? '');
    const claims = decodeObject(segments[1] ?? '');
    if (protectedHeader === undefined) return refused('protected header is not a JSON object');
    if (claims === undefined) return refused('claims are not a JSON object');

    // RFC 9449 §4.2: typ dpop+jwt (media types compare case-insensitively), an allowed asymmetric alg, a public jwk.
    const typ = own(protectedHeader, 'typ');
    if (typeof typ !== 'string' || typ.toLowerCase() !== 'dpop+jwt') return refused('typ is not dpop+jwt');
    const alg = own(protectedHeader, 'alg');
    if (!isAllowedAlgorithm(alg)) return refused('alg not allowed');
    if (Object.hasOwn(protectedHeader, 'crit') || Object.hasOwn(protectedHeader, 'b64')) return refused('forbidden header parameter');
    const jwk = own(protectedHeader, 'jwk');
    if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return refused('jwk missing');
    const key = jwk as Readonly<Record<string, unknown>>;
    if (PRIVATE_JWK_MEMBERS.some((name) => Object.hasOwn(key, name))) return refused('jwk is not a public key');
    if (!KEY_FOR_ALG[alg](key)) return refused('jwk does not fit alg');

    const jti = own(claims, 'jti');
    const htm = own(claims, 'htm');
    const htu = own(claims, 'htu');
    const iat = own(claims, 'iat');
    if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) return refused('jti missing or malformed');
    if (htm !== target.method) return refused('htm does not match the request method');
    if (typeof htu !== 'string' || normalizedUri(htu) !== target.uri) return refused('htu does not match the request URI');
    if (typeof iat !== 'number' || !Number.isFinite(iat)) return refused('iat missing or malformed');
    const nowS = this.now() / 1000;
    if (iat > nowS + this.options.clockToleranceS) return refused('iat in the future');
    if (iat < nowS - this.options.maxAgeS) return refused('proof too old');
    const { nonces } = this.options;
    // Before the signature: a nonce is free to hand out, so junk may get one; it proves nothing until a signed proof carries it.
    if (nonces !== undefined && !nonces.accepts(own(claims, 'nonce'))) {
      return { ok: false, reason: Object.hasOwn(claims, 'nonce') ? 'nonce stale or not ours' : 'nonce missing', nonce: nonces.issue() };
    }
    if (target.accessToken !== undefined) {
      // RFC 9449 §4.3 check 12: the proof names the very token it accompanies (base64url SHA-256 of its ASCII bytes).
      if (own(claims, 'ath') !== digest('sha256', target.accessToken, 'base64url')) return refused('ath does not match the access token');
    }

    const imported = this.publicKey(key);
    if (imported === undefined) return refused('jwk unusable');
    const { jkt, publicKey } = imported;
    const { hash, options } = VERIFY[alg];
    const signingInput = Buffer.from(header.slice(0, header.lastIndexOf('.')), 'ascii');
    const signature = Buffer.from(segments[2] ?? '', 'base64url');
    let valid: boolean;
    try {
      valid = verify(hash, signingInput, { key: publicKey, ...options }, signature);
    } catch {
      // A signature of the wrong length for the curve, say: no signature at all.
      valid = false;
    }
    if (!valid) return refused('signature invalid');
    // Last, once the proof is known to be signed by its key: a replay of the same (key, jti) within its lifetime is refused.
    const expiresAtMs = (iat + this.options.maxAgeS + this.options.clockToleranceS) * 1000;
    if (!(await this.options.replays.firstUse(jkt, jti, expiresAtMs))) return refused('proof replayed');
    return { ok: true, proof: { jkt, jti } };
  }

  /**
   * The proof's public key and its RFC 7638 thumbprint, imported once per key and cached by thumbprint (the thumbprint
   * covers every member that defines the key, so equal thumbprints are the same key). Undefined for a JWK that is no
   * usable public key of its type (members missing or not strings, a point off the curve, RSA under 2048 bits).
   */
  private publicKey(jwk: Readonly<Record<string, unknown>>): { readonly jkt: string; readonly publicKey: KeyObject } | undefined {
    const members = THUMBPRINT_MEMBERS[String(jwk['kty'])];
    if (members === undefined) return undefined;
    const required: Record<string, string> = {};
    for (const name of members) {
      const value = own(jwk, name);
      if (typeof value !== 'string' || value === '') return undefined;
      required[name] = value;
    }
    const jkt = digest('sha256', JSON.stringify(required), 'base64url');
    let publicKey = this.keys.get(jkt);
    if (publicKey === undefined) {
      try {
        publicKey = createPublicKey({ key: required, format: 'jwk' });
      } catch {
        return undefined;
      }
      if (publicKey.asymmetricKeyType === 'rsa' && (publicKey.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) return undefined;
      this.keys.set(jkt, publicKey);
    }
    return { jkt, publicKey };
  }
}

function refused(reason: string): ProofCheck {
  return { ok: false, reason };
}

function isAllowedAlgorithm(value: unknown): value is DpopAlgorithm {
  return typeof value === 'string' && (DPOP_ALGORITHMS as readonly string[]).includes(value);
}

function decodeObject(segment: string): Readonly<Record<string, unknown>> | undefined {
  const value = jsonSegment(segment);
  return isPlainObject(value) ? value : undefined;
}

/**
 * A proof's `htu` as the request URI it must equal: scheme and host lower-cased, the default port dropped, dot segments
 * resolved, query and fragment ignored (RFC 9449 §4.3 check 9, RFC 3986 §6.2.2–6.2.3). Undefined for anything but an
 * absolute https URI without credentials.
 */
export function normalizedUri(htu: string): string | undefined {
  let url: URL;
  try {
    url = new URL(htu);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '') return undefined;
  return `https://${url.host}${url.pathname}`;
}

/** The URI a proof for this request must name: the authority the client sent and the canonical path. */
export function requestUri(authority: string, path: string): string | undefined {
  return normalizedUri(`https://${authority}${path}`);
}
