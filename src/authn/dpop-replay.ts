// The embedded DPoP replay cache (OA-20): each proof's (key thumbprint, jti) is remembered until the proof could no longer
// be accepted anyway, so the same proof is good once. Bounded: entries leave when they expire, and when every slot holds a
// live proof the cache refuses to answer (the DPoP request then fails closed) instead of forgetting one that could replay.
import { hash as digest } from 'node:crypto';
import { RateLimiterRes } from 'rate-limiter-flexible';
import type { ProofReplayCache } from './dpop-proof.js';

/** The cache cannot say whether a proof is fresh: the request is refused (503), never admitted on a guess. */
export class ReplayCacheUnavailable extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'ReplayCacheUnavailable';
  }
}

export class MemoryProofReplayCache implements ProofReplayCache {
  /** Key → expiry (epoch ms), in insertion order: proofs arrive about in the order they expire, so the oldest are first. */
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly maxEntries: number,
    private readonly now: () => number = Date.now,
  ) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new RangeError('replay cache: maxEntries must be a positive integer');
  }

  get size(): number {
    return this.seen.size;
  }

  firstUse(jkt: string, jti: string, expiresAtMs: number): boolean {
    const now = this.now();
    this.evictExpired(now);
    // A fixed-size key whatever the jti's length; the thumbprint keeps one key's jti from colliding with another key's.
    const key = digest('sha256', `${jkt}.${jti}`, 'base64url');
    const known = this.seen.get(key);
    if (known !== undefined && known > now) return false;
    if (known !== undefined) this.seen.delete(key);
    if (this.seen.size >= this.maxEntries) throw new ReplayCacheUnavailable('DPoP replay cache full of live proofs');
    this.seen.set(key, expiresAtMs);
    return true;
  }

  /** Drops expired entries from the front; a long-lived entry ahead of expired ones holds them only until it expires too. */
  private evictExpired(now: number): void {
    for (const [key, expiresAt] of this.seen) {
      if (expiresAt > now) return;
      this.seen.delete(key);
    }
  }
}

/** A window of one point per key on a shared limiter store, refusing while the store cannot answer (quota `rate(…, 'deny')`). */
export interface OncePerWindow {
  /** Resolves the first time; rejects with a RateLimiterRes for a key already used, with anything else when it cannot say. */
  consume(key: string): Promise<unknown>;
}

/**
 * The replay cache of gateways that share their limits (Redis, or the primary of `serve --workers N`): a proof is one point
 * of a one-point window as long as the proof's lifetime, so one of any number of instances and workers accepts it, once.
 * A store that cannot answer (Redis away, the primary stalled) is never guessed around: the DPoP request fails closed —
 * an in-memory fallback would let each process accept the proof once.
 */
export class SharedProofReplayCache implements ProofReplayCache {
  constructor(private readonly window: OncePerWindow) {}

  async firstUse(jkt: string, jti: string): Promise<boolean> {
    try {
      await this.window.consume(digest('sha256', `${jkt}.${jti}`, 'base64url'));
      return true;
    } catch (error) {
      if (error instanceof RateLimiterRes) return false;
      throw new ReplayCacheUnavailable(`DPoP replay cache unavailable: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}
