// The bounded set of keys a route quota keeps state for (RL-08): at most max_keys, each until its counters can no longer
// exist; past the cap, a new key is not admitted and the quota counts it in its one overflow bucket.

/**
 * Keys in order of last use, each with the instant its counters are gone for sure (the longest window or block after
 * its last use, or the end of the calendar period). That instant only grows with the time of use, so the oldest entry
 * always expires first and expired entries are dropped from the front without scanning the rest.
 */
export class KeyTable {
  private readonly live = new Map<string, number>();
  /** The key used last, at the back of the map: its next use only extends its expiry (no delete and re-insert). */
  private newest: string | undefined;

  constructor(private readonly max: number) {}

  get size(): number {
    return this.live.size;
  }

  /** Records a use of `key` whose state lasts until `expiresAt`; false when the table is full of live keys. */
  admit(key: string, now: number, expiresAt: number): boolean {
    if (key === this.newest && this.live.has(key)) {
      this.live.set(key, expiresAt);
      return true;
    }
    if (this.live.has(key)) {
      // Delete and set: moves the key to the back, keeping the map in order of last use.
      this.live.delete(key);
      this.live.set(key, expiresAt);
      this.newest = key;
      return true;
    }
    if (this.live.size >= this.max) {
      this.sweep(now);
      if (this.live.size >= this.max) return false;
    }
    this.live.set(key, expiresAt);
    this.newest = key;
    return true;
  }

  private sweep(now: number): void {
    for (const [key, expiresAt] of this.live) {
      if (expiresAt > now) return;
      this.live.delete(key);
    }
  }
}
