// The KeyRing: the gateway's in-memory view of the store's signing keys, and the only place it finds one. A kid is a Map
// key into it, never a path, URL or query (JWT-08); lookups never touch the store.
import type { JWK } from 'jose';
import type { SigningKeyStore } from '../store/contract.js';
import type { KeyEncryptionKey } from '../lib/key-encryption.js';
import { canSign, isLive, isPublished, newestFirst, type Schedule } from './key-schedule.js';
import { openKey, SigningKeyError, type KeyMaterial, type SigningKeyHandle, type VerificationKey } from './signing-key.js';

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
  readonly #store: SigningKeyStore;
  readonly #kek: KeyEncryptionKey;
  readonly #now: () => number;
  #snapshot: Snapshot = { entries: [], byKid: new Map() };
  // Refreshes run one after another, so a slow older read can never overwrite a newer snapshot.
  #refreshing: Promise<void> = Promise.resolve();

  private constructor(store: SigningKeyStore, kek: KeyEncryptionKey, now: () => number) {
    this.#store = store;
    this.#kek = kek;
    this.#now = now;
  }

  /** Reads and decrypts every unexpired key. Throws SigningKeyError when a row is invalid or does not decrypt (wrong KEK). */
  static async load(store: SigningKeyStore, kek: KeyEncryptionKey, opts: KeyRingOptions = {}): Promise<KeyRing> {
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

  /** When the key that signs now was made, and when it stops signing (a scheduled rotation), for the metrics; undefined when none signs. */
  signerTimes(): { readonly createdAt: number; readonly retiresAt: number | null } | undefined {
    const now = this.#now();
    const entry = this.#snapshot.entries.find((candidate) => canSign(candidate, now));
    return entry === undefined ? undefined : { createdAt: entry.createdAt, retiresAt: entry.retiredAt };
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
