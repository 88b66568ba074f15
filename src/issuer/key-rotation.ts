// Signing-key rotation and revocation against the store: publish-first rotation, `keys rotate --now`, emergency
// revocation and the first key of a new installation. Each is one atomic store change; the plans are in key-schedule.ts.
import type { SigningKey, SigningKeyStore } from '../store/contract.js';
import type { KeyEncryptionKey } from '../lib/key-encryption.js';
import { isoTime } from '../lib/iso-time.js';
import { canSign, newestFirst, planImmediateRotation, planRevocation, RETIREMENT_GRACE_MS, successionHead, type SigningKeyRevocation } from './key-schedule.js';
import { assertTime, generateSigningKey, SigningKeyError, type SigningAlgorithm } from './signing-key.js';

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
export async function rotateSigningKey(store: SigningKeyStore, kek: KeyEncryptionKey, opts: RotateSigningKeyOptions): Promise<SigningKey> {
  return (await publishNextKey(store, kek, opts)).next;
}

/** rotateSigningKey, also saying which key it retired and when (undefined when none was in line to sign). */
async function publishNextKey(
  store: SigningKeyStore,
  kek: KeyEncryptionKey,
  opts: RotateSigningKeyOptions,
): Promise<{ readonly next: SigningKey; readonly retire: { readonly kid: string; readonly retiredAt: number; readonly expiresAt: number } | undefined }> {
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
  return { next, retire };
}

/** `keys rotate --now` (see planImmediateRotation): one store transaction. Returns the new key and the keys it stopped. */
export async function rotateSigningKeyNow(
  store: SigningKeyStore,
  kek: KeyEncryptionKey,
  opts: Omit<RotateSigningKeyOptions, 'activationDelayS'>,
): Promise<{ readonly next: SigningKey; readonly stopped: readonly SigningKey[] }> {
  assertTime(opts.now, 'now');
  const spare = await generateSigningKey(opts.alg, kek, opts.now, opts.now);
  const change = await store.changeSigningKeys((keys) => planImmediateRotation(keys, opts.now, spare, opts.maxTokenLifetimeS));
  return { next: change.insert[0] as SigningKey, stopped: change.update };
}

/** What `keys rotate` did, as the CLI's --json and the admin API show it; `changes` is its admin record's. */
export interface RotationReport {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  readonly created_at: string | null;
  readonly activates_at: string | null;
  /** Publish-first: the key this rotation retires, and when it stops signing and is unpublished. */
  readonly retires: { readonly kid: string; readonly retired_at: string | null; readonly expires_at: string | null } | null;
  /** Immediate (`--now`): the keys that stopped signing or will never sign. */
  readonly stopped: ReadonlyArray<{ readonly kid: string; readonly retired_at: string | null; readonly expires_at: string | null; readonly signed: boolean }>;
  /** The new key signs before verifiers could have seen it published. */
  readonly without_publication_delay: boolean;
}

/**
 * `gatehouse keys rotate [--now]`, for the CLI and the admin API alike: the rotation and what its admin record says
 * (never key material).
 */
export async function rotateSigningKeys(
  store: SigningKeyStore,
  kek: KeyEncryptionKey,
  opts: RotateSigningKeyOptions & { readonly immediately: boolean },
): Promise<{ readonly report: RotationReport; readonly changes: Readonly<Record<string, unknown>> }> {
  const { alg, now, maxTokenLifetimeS, activationDelayS } = opts;
  if (opts.immediately) {
    // Every key that was signing or in line to sign stops now: what signs is the new key, and only it.
    const { next, stopped } = await rotateSigningKeyNow(store, kek, { alg, now, maxTokenLifetimeS });
    const stops = stopped.map((key) => ({
      kid: key.kid,
      retired_at: isoTime(key.retiredAt),
      expires_at: isoTime(key.expiresAt),
      signed: key.activatesAt <= now,
    }));
    return rotationReport(next, null, stops, activationDelayS > 0 && stops.length > 0);
  }
  const { next, retire } = await publishNextKey(store, kek, opts);
  const retires = retire === undefined ? null : { kid: retire.kid, retired_at: isoTime(retire.retiredAt), expires_at: isoTime(retire.expiresAt) };
  return rotationReport(next, retires, [], false);
}

/** The report of a rotation and its admin record's fields: `retires` names the retired key, or the keys `stopped`. */
function rotationReport(
  next: SigningKey,
  retires: RotationReport['retires'],
  stopped: RotationReport['stopped'],
  withoutPublicationDelay: boolean,
): { readonly report: RotationReport; readonly changes: Readonly<Record<string, unknown>> } {
  const activatesAt = isoTime(next.activatesAt);
  return {
    report: {
      kid: next.kid,
      alg: next.alg,
      created_at: isoTime(next.createdAt),
      activates_at: activatesAt,
      retires,
      stopped,
      without_publication_delay: withoutPublicationDelay,
    },
    changes: {
      alg: next.alg,
      activates_at: activatesAt,
      retires: retires?.kid ?? (stopped.map((key) => key.kid).join(' ') || null),
      without_publication_delay: withoutPublicationDelay,
    },
  };
}

export interface RevokeSigningKeyOptions {
  readonly kid: string;
  /** The algorithm of a new key, should one be needed to sign at once. */
  readonly alg: SigningAlgorithm;
  /** Epoch ms. */
  readonly now: number;
}

/**
 * Emergency revocation (`gatehouse keys revoke`): see planRevocation. One atomic store change; the spare key is generated
 * (and sealed under `kek`) beforehand because the change runs inside a synchronous transaction, and is discarded unused
 * when another key can sign.
 */
export async function revokeSigningKey(store: SigningKeyStore, kek: KeyEncryptionKey, opts: RevokeSigningKeyOptions): Promise<SigningKeyRevocation> {
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
  store: SigningKeyStore,
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
