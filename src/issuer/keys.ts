// Access-token signing keys: generation (private key sealed under the KEK), the in-memory KeyRing, and publish-first rotation.
// The KeyRing is the only place the gateway finds keys: a kid is a Map key into it, never a path, URL or query (JWT-08).
import { createPrivateKey, createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import { StoreError, type CredentialStore, type SigningAlgorithm, type SigningKey, type SigningKeyChange } from '../store/contract.js';
import { KeyDecryptionError, type KeyEncryptionKey } from '../lib/key-encryption.js';

export type { SigningAlgorithm } from '../store/contract.js';

export const SIGNING_ALGORITHMS: readonly SigningAlgorithm[] = ['EdDSA', 'ES256'];

/** Margin added after the last possible token expiry before a retired key is unpublished: covers verifiers' clock tolerance. */
export const RETIREMENT_GRACE_MS = 60_000;

/** How far behind the revoking machine another gateway's clock may run and still sign with an emergency key at once. */
export const CLOCK_SKEW_ALLOWANCE_MS = 60_000;

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

function assertTime(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new SigningKeyError('invalid_rotation', `${name} must be epoch milliseconds (a non-negative integer).`);
}

/**
 * Where a key stands at `now`, for `gatehouse keys list`: exactly one key is `signing` (the one the issuer signs with);
 * `pending` keys sign from their activation on; `verifying` keys sign no more but stay published (tokens they signed
 * still verify) until they expire; `expired` and `revoked` keys are unpublished.
 */
export type SigningKeyState = 'signing' | 'pending' | 'verifying' | 'expired' | 'revoked';

/** The state of every key of a set: which one signs depends on the others. */
export function signingKeyStates(keys: readonly SigningKey[], now: number): Map<string, SigningKeyState> {
  const signer = signerAt(keys, now)?.kid;
  const states = new Map<string, SigningKeyState>();
  for (const key of keys) {
    let state: SigningKeyState;
    if (key.revokedAt !== null) state = 'revoked';
    else if (key.expiresAt !== null && key.expiresAt <= now) state = 'expired';
    else if (key.kid === signer) state = 'signing';
    else if ((key.activatesAt > now || key.createdAt > now) && (key.retiredAt === null || key.retiredAt > key.activatesAt)) state = 'pending';
    else state = 'verifying';
    states.set(key.kid, state);
  }
  return states;
}

type Schedule = Pick<SigningKey, 'createdAt' | 'activatesAt' | 'retiredAt' | 'expiresAt' | 'revokedAt'>;

/** A revoked key is out of service whatever the clock says: a gateway whose clock runs behind the CLI's must not keep it. */
function isPublished(key: Pick<SigningKey, 'createdAt' | 'expiresAt' | 'revokedAt'>, now: number): boolean {
  return key.revokedAt === null && key.createdAt <= now && (key.expiresAt === null || key.expiresAt > now);
}

function canSign(key: Schedule, now: number): boolean {
  // A key must be published before it signs: verifiers must be able to find every kid the issuer uses.
  return isPublished(key, now) && key.activatesAt <= now && (key.retiredAt === null || key.retiredAt > now);
}

/** Newest first: the signing key is the first entry that can sign, the JWKS lists the newest key first. */
function newestFirst(a: Pick<SigningKey, 'kid' | 'activatesAt' | 'createdAt'>, b: Pick<SigningKey, 'kid' | 'activatesAt' | 'createdAt'>): number {
  if (a.activatesAt !== b.activatesAt) return b.activatesAt - a.activatesAt;
  if (a.createdAt !== b.createdAt) return b.createdAt - a.createdAt;
  return a.kid < b.kid ? 1 : a.kid > b.kid ? -1 : 0;
}

/** The decrypted, validated key material of one row; reused across refreshes while the row's material is unchanged. */
interface KeyMaterial {
  /** alg, public JWK text and ciphertext: when any of them changes, the row is decrypted and checked again. */
  readonly identity: string;
  readonly jwk: Readonly<PublicSigningJwk>;
  readonly signing: SigningKeyHandle;
  readonly verification: VerificationKey;
}

interface RingEntry extends Schedule {
  readonly kid: string;
  readonly material: KeyMaterial;
}

interface Snapshot {
  /** Newest first. */
  readonly entries: readonly RingEntry[];
  readonly byKid: ReadonlyMap<string, RingEntry>;
}

export interface KeyRingOptions {
  /** Epoch ms; injected by tests to walk through a rotation. */
  readonly now?: (() => number) | undefined;
}

/**
 * In-memory view of the store's signing keys. Private keys are decrypted once (at load, and at refresh for rows that are
 * new or changed) and live only here, as non-extractable CryptoKeys. Lookups never touch the store.
 */
export class KeyRing {
  readonly #store: CredentialStore;
  readonly #kek: KeyEncryptionKey;
  readonly #now: () => number;
  #snapshot: Snapshot = { entries: [], byKid: new Map() };
  // Refreshes run one after another, so a slow older read can never overwrite a newer snapshot.
  #refreshing: Promise<void> = Promise.resolve();

  private constructor(store: CredentialStore, kek: KeyEncryptionKey, now: () => number) {
    this.#store = store;
    this.#kek = kek;
    this.#now = now;
  }

  /** Reads and decrypts every unexpired key. Throws SigningKeyError when a row is invalid or does not decrypt (wrong KEK). */
  static async load(store: CredentialStore, kek: KeyEncryptionKey, opts: KeyRingOptions = {}): Promise<KeyRing> {
    const ring = new KeyRing(store, kek, opts.now ?? Date.now);
    await ring.refresh();
    return ring;
  }

  /**
   * Re-reads the store (after `gatehouse keys rotate`, no restart needed). Validate-then-swap: if any row is invalid the
   * error is thrown and the previous snapshot stays in use.
   */
  refresh(): Promise<void> {
    const run = this.#refreshing.then(() => this.#reload());
    this.#refreshing = run.catch(() => undefined);
    return run;
  }

  async #reload(): Promise<void> {
    const rows = await this.#store.listSigningKeys();
    const now = this.#now();
    const previous = this.#snapshot.byKid;
    const byKid = new Map<string, RingEntry>();
    for (const row of rows) {
      // Expired and revoked keys are never used or published again (the clock only moves on), so they are not even decrypted.
      if (!isLive(row, now)) continue;
      if (byKid.has(row.kid)) throw new SigningKeyError('invalid_key_row', `The store lists signing key ${row.kid} twice.`);
      const identity = JSON.stringify([row.alg, row.publicJwk, row.encryptedPrivateKey]);
      const known = previous.get(row.kid)?.material;
      const material = known !== undefined && known.identity === identity ? known : await openKey(row, identity, this.#kek);
      byKid.set(row.kid, {
        kid: row.kid,
        createdAt: row.createdAt,
        activatesAt: row.activatesAt,
        retiredAt: row.retiredAt,
        expiresAt: row.expiresAt,
        revokedAt: row.revokedAt,
        material,
      });
    }
    this.#snapshot = { entries: [...byKid.values()].sort(newestFirst), byKid };
  }

  /** The newest published, activated, unretired key. Throws SigningKeyError('no_signing_key') when there is none. */
  signingKey(): SigningKeyHandle {
    const now = this.#now();
    for (const entry of this.#snapshot.entries) {
      if (canSign(entry, now)) return entry.material.signing;
    }
    throw new SigningKeyError('no_signing_key', 'No signing key is active: run the gateway once to create one, or wait for a pending key to activate.');
  }

  /** Every key from creation until expiry: pending keys (published before they sign) and retired keys whose tokens may live on. */
  publishedJwks(): { keys: JWK[] } {
    const now = this.#now();
    const keys: JWK[] = [];
    for (const entry of this.#snapshot.entries) {
      // A fresh copy per call: a caller mutating the response must not change what the ring publishes next time.
      if (isPublished(entry, now)) keys.push({ ...entry.material.jwk });
    }
    return { keys };
  }

  /** The public key of a published kid with its pinned alg; undefined for anything else. A Map lookup only (JWT-08). */
  verificationKey(kid: string): VerificationKey | undefined {
    // Token headers are attacker-controlled: a non-string kid (number, object) simply finds nothing.
    if (typeof kid !== 'string') return undefined;
    const entry = this.#snapshot.byKid.get(kid);
    if (entry === undefined || !isPublished(entry, this.#now())) return undefined;
    return entry.material.verification;
  }
}

/** Validates a row, decrypts its private key and checks that it matches the published public key. */
async function openKey(row: SigningKey, identity: string, kek: KeyEncryptionKey): Promise<KeyMaterial> {
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

export interface RotateSigningKeyOptions {
  readonly alg: SigningAlgorithm;
  /** Epoch ms. */
  readonly now: number;
  /** How long the new key is published before it signs, so verifiers holding a cached JWKS see it first. */
  readonly activationDelayS: number;
  /** The longest access-token lifetime the issuer may grant: the retired key stays published that long after it stops signing. */
  readonly maxTokenLifetimeS: number;
}

/**
 * Publishes a new key that signs from now + activationDelayS. The key that would otherwise go on signing is retired at
 * that moment and expires maxTokenLifetimeS + 60 s later, when every token it signed has expired. One atomic store call.
 *
 * When no key is in line to sign (empty store, everything retired), the new key activates at once: no verifier can hold
 * tokens from a predecessor, and waiting would only prolong the time the issuer cannot sign at all.
 */
export async function rotateSigningKey(store: CredentialStore, kek: KeyEncryptionKey, opts: RotateSigningKeyOptions): Promise<SigningKey> {
  const { alg, now, activationDelayS, maxTokenLifetimeS } = opts;
  assertTime(now, 'now');
  if (!Number.isFinite(activationDelayS) || activationDelayS < 0)
    throw new SigningKeyError('invalid_rotation', 'The activation delay must be zero or more seconds.');
  if (!Number.isFinite(maxTokenLifetimeS) || maxTokenLifetimeS <= 0)
    throw new SigningKeyError('invalid_rotation', 'The maximum token lifetime must be a positive number of seconds.');

  const predecessor = successionHead(await store.listSigningKeys(), now);
  const activatesAt = predecessor === undefined ? now : now + Math.ceil(activationDelayS * 1000);
  const next = await generateSigningKey(alg, kek, now, activatesAt);
  const retire =
    predecessor === undefined
      ? undefined
      : { kid: predecessor.kid, retiredAt: activatesAt, expiresAt: activatesAt + Math.ceil(maxTokenLifetimeS * 1000) + RETIREMENT_GRACE_MS };
  await store.rotateSigningKey(next, retire);
  return next;
}

/**
 * `keys rotate --now`: `next` signs at once, dated back by the skew allowance (gateways whose clocks run a little behind
 * use it at once too). Every key that was signing or in line to sign stops now, so what `keys list` says signs is what
 * signs: the signer stays published until its last token expired; a pending key that never signed is unpublished now.
 * Pure; exported for tests.
 */
export function planImmediateRotation(keys: readonly SigningKey[], now: number, next: SigningKey, maxTokenLifetimeS: number): SigningKeyChange {
  const early = now - CLOCK_SKEW_ALLOWANCE_MS;
  const tokensEnd = now + Math.ceil(maxTokenLifetimeS * 1000) + RETIREMENT_GRACE_MS;
  const update = keys
    .filter((key) => isLive(key, now) && (key.retiredAt === null || key.retiredAt > now))
    .map(
      (key): SigningKey =>
        key.activatesAt > now
          ? { ...key, retiredAt: now, expiresAt: now }
          : { ...key, retiredAt: now, expiresAt: Math.min(key.expiresAt ?? tokensEnd, tokensEnd) },
    );
  return { update, insert: [{ ...next, createdAt: early, activatesAt: early }] };
}

/** `keys rotate --now` (see planImmediateRotation): one store transaction. Returns the new key and the keys it stopped. */
export async function rotateSigningKeyNow(
  store: CredentialStore,
  kek: KeyEncryptionKey,
  opts: Omit<RotateSigningKeyOptions, 'activationDelayS'>,
): Promise<{ readonly next: SigningKey; readonly stopped: readonly SigningKey[] }> {
  assertTime(opts.now, 'now');
  const spare = await generateSigningKey(opts.alg, kek, opts.now, opts.now);
  const change = await store.changeSigningKeys((keys) => planImmediateRotation(keys, opts.now, spare, opts.maxTokenLifetimeS));
  return { next: change.insert[0] as SigningKey, stopped: change.update };
}

/**
 * The key that signs last before a new key takes over: the newest key not yet scheduled for retirement. Usually the active
 * key; if a rotation is still pending it is that pending key (its predecessor's retirement is already scheduled), so a
 * second rotation hands over from it instead of leaving it published forever.
 */
function successionHead(keys: readonly SigningKey[], now: number): SigningKey | undefined {
  return keys.filter((key) => key.retiredAt === null && isLive(key, now)).sort(newestFirst)[0];
}

/** Neither expired nor revoked: the key may still be published or sign. */
function isLive(key: SigningKey, now: number): boolean {
  return (key.expiresAt === null || key.expiresAt > now) && key.revokedAt === null;
}

export interface RevokeSigningKeyOptions {
  readonly kid: string;
  /** The algorithm of a new key, should one be needed to sign at once. */
  readonly alg: SigningAlgorithm;
  /** Epoch ms. */
  readonly now: number;
}

/** What an emergency revocation did, and which key signs now as a result. */
export interface SigningKeyRevocation {
  /** The revoked row as stored, or undefined when the key was already revoked (nothing changed). */
  readonly revoked: SigningKey | undefined;
  /**
   * How signing goes on: `unchanged` (another key was signing and keeps signing), `kept` (a key whose retirement was
   * scheduled in favour of the revoked one keeps signing), `activated` (a pending key signs now, before its publication
   * delay ran out) or `created` (no other key could sign: a new key signs at once, with no publication delay).
   */
  readonly succession: 'unchanged' | 'kept' | 'activated' | 'created';
  /** The key that signs from now on. */
  readonly signer: SigningKey | undefined;
  /** The key that signed just before the revocation (the revoked key itself, when it was the signer). */
  readonly previousSigner: string | undefined;
}

/**
 * The store change of an emergency revocation of `kid` at `now` (pure; exported for tests). The key is unpublished at once
 * (its tokens are refused by every verifier that refreshes), and signing goes on without a gap: when no other key can
 * sign now, a key whose retirement was scheduled keeps signing, else a pending key is activated early, else `spare` — a
 * new key, active at once — is added. Throws StoreError('not_found') for an unknown kid.
 */
export function planRevocation(
  keys: readonly SigningKey[],
  kid: string,
  now: number,
  spare: SigningKey,
): SigningKeyChange & Omit<SigningKeyRevocation, 'revoked'> {
  // A key that must sign at once is dated back by the skew allowance, so a gateway whose clock runs somewhat behind this
  // one publishes and signs with it at once too (instead of having no signing key until its clock catches up).
  const early = now - CLOCK_SKEW_ALLOWANCE_MS;
  const target = keys.find((key) => key.kid === kid);
  if (target === undefined) throw new StoreError('not_found', `no signing key with kid ${kid}`);
  const previousSigner = signerAt(keys, now)?.kid;
  if (target.revokedAt !== null) return { update: [], insert: [], succession: 'unchanged', signer: signerAt(keys, now), previousSigner };
  const revoked: SigningKey = {
    ...target,
    revokedAt: now,
    retiredAt: Math.min(target.retiredAt ?? now, now),
    expiresAt: Math.min(target.expiresAt ?? now, now),
  };
  const others = keys.filter((key) => key.kid !== kid && isLive(key, now));
  const signer = signerAt(others, now);
  const head = successionHead(others, now);
  if (head === undefined) {
    // Nothing is in line to take over for good: the revoked key was the end of the succession. The last key whose handover
    // was scheduled (to the revoked key) keeps its place instead — the current signer, or a pending key between them.
    const last = others.filter((key) => key.retiredAt !== null && key.retiredAt > now).sort(newestFirst)[0];
    if (last !== undefined) {
      const kept: SigningKey = { ...last, retiredAt: null, expiresAt: null };
      const keys = others.map((key) => (key.kid === kept.kid ? kept : key));
      return { update: [revoked, kept], insert: [], succession: 'kept', signer: signerAt(keys, now), previousSigner };
    }
    const created: SigningKey = { ...spare, createdAt: early, activatesAt: early };
    return { update: [revoked], insert: [created], succession: 'created', signer: created, previousSigner };
  }
  if (signer === undefined) {
    // The successor is still pending and nobody signs until it activates: it signs now.
    const activated: SigningKey = { ...head, createdAt: Math.min(head.createdAt, early), activatesAt: early };
    return { update: [revoked, activated], insert: [], succession: 'activated', signer: activated, previousSigner };
  }
  return { update: [revoked], insert: [], succession: 'unchanged', signer, previousSigner };
}

/** The key the KeyRing signs with at `now` among `keys`. */
function signerAt(keys: readonly SigningKey[], now: number): SigningKey | undefined {
  return [...keys].sort(newestFirst).find((key) => canSign(key, now));
}

/**
 * Emergency revocation (`gatehouse keys revoke`): see planRevocation. One atomic store change; the spare key is generated
 * (and sealed under `kek`) beforehand because the change runs inside a synchronous transaction, and is discarded unused
 * when another key can sign.
 */
export async function revokeSigningKey(store: CredentialStore, kek: KeyEncryptionKey, opts: RevokeSigningKeyOptions): Promise<SigningKeyRevocation> {
  assertTime(opts.now, 'now');
  const spare = await generateSigningKey(opts.alg, kek, opts.now, opts.now);
  let outcome: Omit<SigningKeyRevocation, 'revoked'> = { succession: 'unchanged', signer: undefined, previousSigner: undefined };
  const change = await store.changeSigningKeys((keys) => {
    const plan = planRevocation(keys, opts.kid, opts.now, spare);
    outcome = { succession: plan.succession, signer: plan.signer, previousSigner: plan.previousSigner };
    return { update: plan.update, insert: plan.insert };
  });
  return { revoked: change.update.find((key) => key.kid === opts.kid), ...outcome };
}

/**
 * On first start: when no key signs now or is in line to sign, creates one that is active at once. `alg` applies only to
 * that new key; changing the algorithm of an existing installation is a rotation.
 */
export async function ensureSigningKey(
  store: CredentialStore,
  kek: KeyEncryptionKey,
  alg: SigningAlgorithm,
  now: number,
): Promise<{ readonly key: SigningKey; readonly created: boolean }> {
  assertTime(now, 'now');
  const keys = await store.listSigningKeys();
  const current = [...keys].sort(newestFirst).find((key) => canSign(key, now));
  if (current !== undefined) return { key: current, created: false };
  const pending = successionHead(keys, now);
  if (pending !== undefined) return { key: pending, created: false };
  const key = await generateSigningKey(alg, kek, now, now);
  await store.addSigningKey(key);
  return { key, created: true };
}
