// The signing-key schedule, pure: which key signs, which are published, the states `keys list` shows, and the store
// changes of an immediate rotation and of an emergency revocation. Every function takes the key rows and the time.
import { StoreError, type SigningKey, type SigningKeyChange } from '../store/contract.js';
import { isoTime } from '../lib/iso-time.js';

/** Margin added after the last possible token expiry before a retired key is unpublished: covers verifiers' clock tolerance. */
export const RETIREMENT_GRACE_MS = 60_000;

/** How far behind the revoking machine another gateway's clock may run and still sign with an emergency key at once. */
export const CLOCK_SKEW_ALLOWANCE_MS = 60_000;

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

export type Schedule = Pick<SigningKey, 'createdAt' | 'activatesAt' | 'retiredAt' | 'expiresAt' | 'revokedAt'>;

/** A revoked key is out of service whatever the clock says: a gateway whose clock runs behind the CLI's must not keep it. */
export function isPublished(key: Pick<SigningKey, 'createdAt' | 'expiresAt' | 'revokedAt'>, now: number): boolean {
  return key.revokedAt === null && key.createdAt <= now && (key.expiresAt === null || key.expiresAt > now);
}

export function canSign(key: Schedule, now: number): boolean {
  // A key must be published before it signs: verifiers must be able to find every kid the issuer uses.
  return isPublished(key, now) && key.activatesAt <= now && (key.retiredAt === null || key.retiredAt > now);
}

/** Newest first: the signing key is the first entry that can sign, the JWKS lists the newest key first. */
export function newestFirst(a: Pick<SigningKey, 'kid' | 'activatesAt' | 'createdAt'>, b: Pick<SigningKey, 'kid' | 'activatesAt' | 'createdAt'>): number {
  if (a.activatesAt !== b.activatesAt) return b.activatesAt - a.activatesAt;
  if (a.createdAt !== b.createdAt) return b.createdAt - a.createdAt;
  return a.kid < b.kid ? 1 : a.kid > b.kid ? -1 : 0;
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

/**
 * The key that signs last before a new key takes over: the newest key not yet scheduled for retirement. Usually the active
 * key; if a rotation is still pending it is that pending key (its predecessor's retirement is already scheduled), so a
 * second rotation hands over from it instead of leaving it published forever.
 */
export function successionHead(keys: readonly SigningKey[], now: number): SigningKey | undefined {
  return keys.filter((key) => key.retiredAt === null && isLive(key, now)).sort(newestFirst)[0];
}

/** Neither expired nor revoked: the key may still be published or sign. */
export function isLive(key: SigningKey, now: number): boolean {
  return (key.expiresAt === null || key.expiresAt > now) && key.revokedAt === null;
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
export function signerAt(keys: readonly SigningKey[], now: number): SigningKey | undefined {
  return [...keys].sort(newestFirst).find((key) => canSign(key, now));
}

/** A signing key as `keys list --json` and the admin API show it: its state and times, never key material. */
export function signingKeyView(key: SigningKey, states: ReadonlyMap<string, string>) {
  return {
    kid: key.kid,
    alg: key.alg,
    state: states.get(key.kid) ?? 'expired',
    created_at: isoTime(key.createdAt),
    activates_at: isoTime(key.activatesAt),
    retired_at: isoTime(key.retiredAt),
    expires_at: isoTime(key.expiresAt),
    revoked_at: isoTime(key.revokedAt),
  };
}
