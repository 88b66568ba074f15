// Server-provided DPoP nonces (RFC 9449 §8, §9): with `issuer.dpop.require_nonce`, every proof must carry a nonce the
// gateway handed out recently, so a proof cannot be made in advance — not even by someone who held the client's key for
// a moment. Nonces are stateless: the time they were made and a MAC over it under a key derived from the master key, so
// every instance sharing that key accepts every other's, and nothing is stored. They rotate by age: a nonce older than its
// lifetime is refused with a fresh one (`use_dpop_nonce`), which the client retries with.
import { createHmac, timingSafeEqual, type KeyObject } from 'node:crypto';

const TIME_BYTES = 6;
const MAC_BYTES = 16;
/** base64url of 6 + 16 bytes. */
const NONCE = /^[A-Za-z0-9_-]{30}$/;
/** A nonce made by another instance whose clock runs this far ahead is still accepted. */
const AHEAD_S = 5;

export class DpopNonces {
  constructor(
    private readonly key: KeyObject,
    private readonly lifetimeS: number,
    private readonly now: () => number = Date.now,
  ) {
    if (!Number.isSafeInteger(lifetimeS) || lifetimeS < 1) throw new RangeError('dpop nonces: lifetimeS must be a positive integer');
  }

  /** A fresh nonce: when it was made (epoch seconds, 48 bits) and a truncated HMAC-SHA256 over that. */
  issue(): string {
    const made = Buffer.alloc(TIME_BYTES);
    made.writeUIntBE(Math.floor(this.now() / 1000), 0, TIME_BYTES);
    return Buffer.concat([made, this.mac(made)]).toString('base64url');
  }

  /** True for a nonce this key made, no older than the lifetime (and not from the future beyond clock skew). */
  accepts(nonce: unknown): boolean {
    if (typeof nonce !== 'string' || !NONCE.test(nonce)) return false;
    const bytes = Buffer.from(nonce, 'base64url');
    const made = bytes.subarray(0, TIME_BYTES);
    if (!timingSafeEqual(bytes.subarray(TIME_BYTES), this.mac(made))) return false;
    const ageS = Math.floor(this.now() / 1000) - made.readUIntBE(0, TIME_BYTES);
    return ageS >= -AHEAD_S && ageS <= this.lifetimeS;
  }

  private mac(made: Buffer): Buffer {
    return createHmac('sha256', this.key).update(made).digest().subarray(0, MAC_BYTES);
  }
}
