// Signing-key material: generating a key pair (private key sealed under the KEK, kid = RFC 7638 thumbprint) and opening a
// stored row again (public JWK checked member by member, private key decrypted and matched to it). No store, no clock.
import { createPrivateKey, createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import type { SigningAlgorithm, SigningKey } from '../store/contract.js';
import { KeyDecryptionError, type KeyEncryptionKey } from '../lib/key-encryption.js';

export type { SigningAlgorithm } from '../store/contract.js';

export const SIGNING_ALGORITHMS: readonly SigningAlgorithm[] = ['EdDSA', 'ES256'];

export type SigningKeyErrorCode = 'no_signing_key' | 'invalid_key_row' | 'undecryptable_key' | 'invalid_rotation';

export class SigningKeyError extends Error {
  constructor(
    readonly code: SigningKeyErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'SigningKeyError';
  }
}

/** The public members a published JWK may carry; anything else (above all `d`) is refused on the way in and out. */
export interface PublicSigningJwk {
  readonly kty: 'OKP' | 'EC';
  readonly crv: 'Ed25519' | 'P-256';
  readonly x: string;
  readonly y?: string;
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  readonly use: 'sig';
}

export interface SigningKeyHandle {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  /** Non-extractable: it can sign, but nothing can export it again. */
  readonly privateKey: CryptoKey | KeyObject;
}

export interface VerificationKey {
  readonly key: CryptoKey | KeyObject;
  /** The only algorithm this key verifies: pass it as jwtVerify's `algorithms` (JWT-03 / JWT-04). */
  readonly alg: SigningAlgorithm;
}

interface Profile {
  readonly kty: 'OKP' | 'EC';
  readonly crv: 'Ed25519' | 'P-256';
  /** node:crypto's names, for checking a decrypted PKCS#8 key is the type its row claims. */
  readonly nodeType: 'ed25519' | 'ec';
  readonly nodeCurve: string | undefined;
  readonly webcrypto: { readonly name: 'Ed25519' } | { readonly name: 'ECDSA'; readonly namedCurve: 'P-256' };
}

// One profile per algorithm: the kty/crv a key must have is fixed by its alg, so a row cannot pair ES256 with an Ed25519 key.
const PROFILES: Readonly<Record<SigningAlgorithm, Profile>> = {
  EdDSA: { kty: 'OKP', crv: 'Ed25519', nodeType: 'ed25519', nodeCurve: undefined, webcrypto: { name: 'Ed25519' } },
  ES256: { kty: 'EC', crv: 'P-256', nodeType: 'ec', nodeCurve: 'prime256v1', webcrypto: { name: 'ECDSA', namedCurve: 'P-256' } },
};

// Members that would make a JWK private (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
const PUBLIC_JWK_MEMBERS = new Set(['kty', 'crv', 'x', 'y', 'kid', 'alg', 'use']);
// Both curves have 32-byte coordinates: exactly 43 unpadded base64url characters.
const COORDINATE = /^[A-Za-z0-9_-]{43}$/;
/** Every kid this issuer makes (and opens): an RFC 7638 SHA-256 thumbprint, 43 unpadded base64url characters. */
export const KID_SHAPE = /^[A-Za-z0-9_-]{43}$/;

export function isSigningAlgorithm(value: unknown): value is SigningAlgorithm {
  return value === 'EdDSA' || value === 'ES256';
}

/**
 * Generates a key pair for `alg` and returns the store row: public JWK (kid, alg, use "sig", nothing private) and the
 * PKCS#8 (DER) private key sealed under `kek` with the kid as AAD.
 *
 * The kid is the RFC 7638 JWK thumbprint (SHA-256) of the public key rather than random bytes: it is self-certifying, so
 * the KeyRing can check on load that a row's kid, public JWK and (through the AAD) sealed private key all belong together,
 * and it reveals nothing beyond the public key that is published anyway.
 */
export async function generateSigningKey(alg: SigningAlgorithm, kek: KeyEncryptionKey, now: number, activatesAt: number): Promise<SigningKey> {
  if (!isSigningAlgorithm(alg)) throw new SigningKeyError('invalid_rotation', 'The signing algorithm must be EdDSA or ES256.');
  assertTime(now, 'now');
  assertTime(activatesAt, 'activatesAt');
  // jose's 'EdDSA' generates Ed25519. Extractable only so the private key can be sealed right here; the copy the KeyRing
  // signs with is imported non-extractable.
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const exported = await exportJWK(publicKey);
  const profile = PROFILES[alg];
  if (PRIVATE_JWK_MEMBERS.some((member) => member in exported))
    throw new SigningKeyError('invalid_key_row', 'The exported public key carries private members.');
  if (exported.kty !== profile.kty || exported.crv !== profile.crv || typeof exported.x !== 'string') {
    throw new SigningKeyError('invalid_key_row', `The generated ${alg} key is not ${profile.kty}/${profile.crv}.`);
  }
  const kid = await thumbprint(profile, exported.x, exported.y);
  const jwk: PublicSigningJwk = publicJwk(profile, alg, kid, exported.x, exported.y);
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', privateKey));
  try {
    return {
      kid,
      alg,
      publicJwk: JSON.stringify(jwk),
      encryptedPrivateKey: kek.encrypt(der, kid),
      createdAt: now,
      activatesAt,
      retiredAt: null,
      expiresAt: null,
      revokedAt: null,
    };
  } finally {
    der.fill(0);
  }
}

function publicJwk(profile: Profile, alg: SigningAlgorithm, kid: string, x: string, y: string | undefined): PublicSigningJwk {
  // Built member by member (never spread from an exported JWK), so no private or unexpected member can slip through.
  const jwk: PublicSigningJwk =
    profile.kty === 'EC' && y !== undefined
      ? { kty: profile.kty, crv: profile.crv, x, y, kid, alg, use: 'sig' }
      : { kty: profile.kty, crv: profile.crv, x, kid, alg, use: 'sig' };
  if ('d' in jwk) throw new SigningKeyError('invalid_key_row', 'A public JWK must not carry a private member.');
  return jwk;
}

async function thumbprint(profile: Profile, x: string, y: string | undefined): Promise<string> {
  // RFC 7638: only the required members take part (kty, crv, x[, y]), so kid/alg/use do not change it.
  const required: JWK =
    profile.kty === 'EC' ? { kty: profile.kty, crv: profile.crv, x, ...(y === undefined ? {} : { y }) } : { kty: profile.kty, crv: profile.crv, x };
  return calculateJwkThumbprint(required, 'sha256');
}

export function assertTime(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new SigningKeyError('invalid_rotation', `${name} must be epoch milliseconds (a non-negative integer).`);
}

/** The decrypted, validated key material of one row; reused across refreshes while the row's material is unchanged. */
export interface KeyMaterial {
  /** alg, public JWK text and ciphertext: when any of them changes, the row is decrypted and checked again. */
  readonly identity: string;
  readonly jwk: Readonly<PublicSigningJwk>;
  readonly signing: SigningKeyHandle;
  readonly verification: VerificationKey;
}

/** Validates a row, decrypts its private key and checks that it matches the published public key. */
export async function openKey(row: SigningKey, identity: string, kek: KeyEncryptionKey): Promise<KeyMaterial> {
  const bad = (why: string): SigningKeyError => new SigningKeyError('invalid_key_row', `Signing key ${row.kid}: ${why}`);
  if (!isSigningAlgorithm(row.alg)) throw bad('unsupported algorithm.');
  const profile = PROFILES[row.alg];
  const jwk = parsePublicJwk(row, profile, bad);
  // The kid must be the public key's own thumbprint: a row cannot publish one key under another key's kid.
  if ((await thumbprint(profile, jwk.x, jwk.y)) !== row.kid) throw bad('the kid is not the thumbprint of its public key.');

  let der: Buffer;
  try {
    // The kid is the AAD: a sealed private key copied into another row does not decrypt there.
    der = kek.decrypt(row.encryptedPrivateKey, row.kid);
  } catch (err: unknown) {
    if (!(err instanceof KeyDecryptionError)) throw err;
    throw new SigningKeyError(
      'undecryptable_key',
      `Signing key ${row.kid}: the private key does not decrypt. The key-encryption key (GATEHOUSE_MASTER_KEY or the master key file) is not the one it was sealed with, or the row was altered.`,
    );
  }
  try {
    let derived: { x?: string | undefined; y?: string | undefined };
    try {
      const keyObject = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
      if (keyObject.asymmetricKeyType !== profile.nodeType || keyObject.asymmetricKeyDetails?.namedCurve !== profile.nodeCurve) {
        throw bad(`the private key is not an ${profile.crv} key.`);
      }
      derived = createPublicKey(keyObject).export({ format: 'jwk' });
    } catch (err: unknown) {
      if (err instanceof SigningKeyError) throw err;
      throw bad('the decrypted private key is not a valid PKCS#8 key.');
    }
    // The published key must be the private key's own public half, or tokens would be signed with a key nobody can verify.
    if (derived.x !== jwk.x || derived.y !== jwk.y) throw bad('the public JWK does not match the private key.');
    const privateKey = await webcrypto.subtle.importKey('pkcs8', der, profile.webcrypto, false, ['sign']);
    const publicKey = await importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, ...(jwk.y === undefined ? {} : { y: jwk.y }) }, row.alg);
    if (publicKey instanceof Uint8Array) throw bad('the public JWK imported as a symmetric key.');
    return {
      identity,
      jwk: Object.freeze(jwk),
      signing: Object.freeze({ kid: row.kid, alg: row.alg, privateKey }),
      verification: Object.freeze({ key: publicKey, alg: row.alg }),
    };
  } finally {
    der.fill(0);
  }
}

function parsePublicJwk(row: SigningKey, profile: Profile, bad: (why: string) => SigningKeyError): PublicSigningJwk {
  let parsed: unknown;
  try {
    parsed = JSON.parse(row.publicJwk);
  } catch {
    throw bad('the public JWK is not JSON.');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw bad('the public JWK is not an object.');
  const members = new Map(Object.entries(parsed));
  if (PRIVATE_JWK_MEMBERS.some((member) => members.has(member))) throw bad('the public JWK carries private key material.');
  for (const name of members.keys()) {
    if (!PUBLIC_JWK_MEMBERS.has(name)) throw bad(`the public JWK has an unexpected member "${name.slice(0, 32)}".`);
  }
  const x = members.get('x');
  const y = members.get('y');
  if (members.get('kty') !== profile.kty || members.get('crv') !== profile.crv)
    throw bad(`the public JWK is not ${profile.kty}/${profile.crv} as ${row.alg} requires.`);
  if (typeof x !== 'string' || !COORDINATE.test(x)) throw bad('the public JWK has no valid x coordinate.');
  if (profile.kty === 'EC' ? typeof y !== 'string' || !COORDINATE.test(y) : y !== undefined) throw bad('the public JWK has an invalid y coordinate.');
  if (members.get('kid') !== row.kid || members.get('alg') !== row.alg || members.get('use') !== 'sig') {
    throw bad('the public JWK does not carry the row\'s kid, its alg and use "sig".');
  }
  return publicJwk(profile, row.alg, row.kid, x, typeof y === 'string' ? y : undefined);
}
