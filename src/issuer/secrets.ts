// Client identifiers and secrets: generation, argon2id hashing, and verification with bounded concurrency.
// A secret exists in clear only in the response of `clients add` / `rotate-secret`; the store holds argon2id hashes.
import { randomBytes } from 'node:crypto';
import argon2 from 'argon2';
import { MAX_SECRETS_PER_CLIENT, type SecretHash } from '../store/contract.js';

/**
 * argon2id at the OWASP minimum (m=19 MiB, t=2, p=1): ~21 ms per verify here. Stored hashes made with weaker parameters
 * are re-hashed with these after their next successful use (SEC-02).
 */
export const ARGON2_OPTIONS = Object.freeze({ type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 });

/** Client secrets are 256-bit; anything presented that is longer than any secret we issue is refused before argon2. */
export const MAX_SECRET_LENGTH = 256;

/**
 * A client id: 128 random bits, base64url (22 characters). Never reused, never derived from the name. Never starts with
 * `-`, so no command line can mistake it for an option: a draw that would is drawn again (one in 64; the ids stay uniform
 * over the rest, losing 0.02 bits).
 */
export function generateClientId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

/** A client secret: 256 random bits from the CSPRNG, base64url (43 characters). */
export function generateClientSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** A secret authenticates until its expiry (an old secret during a rotation); null = no expiry. */
export function isActiveSecret(secret: SecretHash, now: number): boolean {
  return secret.expiresAt === null || secret.expiresAt > now;
}

/** Client ids as issued (and as anything presented must look before a store lookup). */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export async function hashSecret(secret: string): Promise<string> {
  return argon2.hash(secret, ARGON2_OPTIONS);
}

export class HashQueueFullError extends Error {
  constructor() {
    super('too many client authentications in progress');
    this.name = 'HashQueueFullError';
  }
}

export interface SecretVerifierOptions {
  /** argon2 verifications running at once: each holds one of libuv's (by default 4) threads. */
  readonly maxConcurrent: number;
  /** Verifications allowed to wait; beyond this `verify` throws HashQueueFullError at once. */
  readonly maxQueued: number;
}

export type SecretCheck =
  | {
      readonly ok: true /** A new hash for the matched secret when its parameters are below ARGON2_OPTIONS. */;
      readonly rehash: { readonly old: string; readonly hash: string } | undefined;
    }
  | { readonly ok: false };

const FAILED: SecretCheck = Object.freeze({ ok: false });

/**
 * Verifies presented secrets. A failure always costs MAX_SECRETS_PER_CLIENT argon2 verifications (padded with a dummy
 * hash), whether the client is unknown, disabled, has one secret or two, so the time taken does not tell them apart (SEC-04). At most `maxConcurrent`
 * verifications run at once, so a flood of token requests cannot take every libuv thread from fs writes and WebCrypto
 * token verification (SEC-10).
 */
export class SecretVerifier {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private dummy: Promise<string> | undefined;

  constructor(private readonly options: SecretVerifierOptions) {
    if (!Number.isSafeInteger(options.maxConcurrent) || options.maxConcurrent < 1) throw new RangeError('maxConcurrent must be a positive integer');
    if (!Number.isSafeInteger(options.maxQueued) || options.maxQueued < 0) throw new RangeError('maxQueued must be a non-negative integer');
    // Made now, so the first refused attempt costs no more than any other.
    this.dummyHash().catch(() => undefined);
  }

  /** Verifications running plus waiting (for tests and metrics). */
  get load(): { readonly running: number; readonly queued: number } {
    return { running: this.running, queued: this.waiting.length };
  }

  /**
   * `hashes` are the client's stored hashes, or undefined when the client is unknown or may not authenticate (disabled):
   * the dummy verification then runs and the answer is a failure. Expired hashes (`expiresAt` ≤ now) never match.
   */
  async verify(hashes: readonly SecretHash[] | undefined, secret: string, now: number): Promise<SecretCheck> {
    const candidates = hashes?.filter((entry) => isActiveSecret(entry, now)) ?? [];
    await this.acquire();
    try {
      const presentable = secret.length > 0 && secret.length <= MAX_SECRET_LENGTH;
      let verifications = 0;
      for (const candidate of presentable ? candidates : []) {
        verifications++;
        if (!(await argon2.verify(candidate.hash, secret).catch(() => false))) continue;
        const rehash = argon2.needsRehash(candidate.hash, ARGON2_OPTIONS)
          ? { old: candidate.hash, hash: await argon2.hash(secret, ARGON2_OPTIONS) }
          : undefined;
        return { ok: true, rehash };
      }
      // Every failure costs as many verifications as a client with the most secrets would: an unknown id, a disabled
      // client and a client in the middle of a secret rotation take the same time to refuse (SEC-04).
      const dummy = await this.dummyHash();
      for (; verifications < MAX_SECRETS_PER_CLIENT; verifications++) await argon2.verify(dummy, secret.slice(0, MAX_SECRET_LENGTH)).catch(() => false);
      return FAILED;
    } finally {
      this.release();
    }
  }

  private dummyHash(): Promise<string> {
    // Made once per process from a random secret nobody knows, with the current parameters (same cost as a real hash). A
    // failed attempt is not kept, so the next call tries again.
    this.dummy ??= argon2.hash(randomBytes(32).toString('base64url'), ARGON2_OPTIONS).catch((error: unknown) => {
      this.dummy = undefined;
      throw error;
    });
    return this.dummy;
  }

  private acquire(): Promise<void> {
    if (this.running < this.options.maxConcurrent) {
      this.running++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.options.maxQueued) return Promise.reject(new HashQueueFullError());
    // The slot is handed over by release(), so `running` never drops below the limit while anyone waits.
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next !== undefined) next();
    else this.running--;
  }
}
