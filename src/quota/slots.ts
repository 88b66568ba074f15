// Concurrency slots of a route quota: requests of one key in flight at once, each holding a lease until it ends however it
// ends. In memory (one instance), or as leases in Redis shared by every instance: a sorted set per key, scored by when
// each lease lapses, so a slot of an instance that died frees itself (LEASE_MS) instead of locking its key out for good;
// live leases are renewed while their requests run.
import type { RedisConnection } from '../lib/redis.js';

export interface SlotLease {
  /** Slots of this key still free once this one is taken (the RateLimit field's `r`). */
  readonly remaining: number;
  /** Frees the slot; later calls do nothing. */
  release(): void;
}

export interface Slots {
  /** A lease, or undefined when every slot of the key is taken. May reject with LimiterUnavailable (policy `deny`). */
  acquire(key: string): SlotLease | undefined | Promise<SlotLease | undefined>;
  /** Slots this instance holds now, all keys together (RL-03: back to 0 once its requests ended). */
  readonly held: number;
}

/** In-flight requests per key. An entry exists only while its key holds a slot, so it can neither leak nor go negative. */
export class MemorySlots implements Slots {
  private readonly perKey = new Map<string, number>();
  held = 0;

  constructor(private readonly max: number) {}

  acquire(key: string): SlotLease | undefined {
    const n = this.perKey.get(key) ?? 0;
    if (n >= this.max) return undefined;
    this.perKey.set(key, n + 1);
    this.held++;
    let released = false;
    return {
      remaining: this.max - n - 1,
      release: () => {
        if (released) return;
        released = true;
        const now = this.perKey.get(key) ?? 0;
        if (now <= 1) this.perKey.delete(key);
        else this.perKey.set(key, now - 1);
        this.held--;
      },
    };
  }
}

/** How long a Redis lease lives without renewal: the most a slot of a vanished instance stays taken. */
export const LEASE_MS = 30_000;

// Times are Redis's own (TIME), so instances whose clocks disagree still agree on when a lease lapses.
// Drops lapsed leases, then takes a slot if one is free: the remaining count, or -1 when the key is full.
const ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[2])
if held >= max then return -1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return max - held - 1`;

// Pushes a lease's expiry, if it is still there.
const RENEW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0`;

/** Leases in Redis; `fallback` answers while Redis cannot (`degrade`), else acquire() rejects with `unavailable()`. */
export class RedisSlots implements Slots {
  private readonly leases = new Map<string, string>();
  private renewal: NodeJS.Timeout | undefined;
  private serial = 0;
  private readonly instance = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

  constructor(
    private readonly redis: RedisConnection,
    private readonly keyPrefix: string,
    private readonly max: number,
    private readonly fallback: Slots | undefined,
    private readonly unavailable: () => Error,
    /** Renewed every third of it. */
    private readonly leaseMs = LEASE_MS,
  ) {}

  get held(): number {
    return this.leases.size + (this.fallback?.held ?? 0);
  }

  async acquire(key: string): Promise<SlotLease | undefined> {
    const slotKey = `${this.keyPrefix}:${key}`;
    const id = `${this.instance}-${++this.serial}`;
    let remaining: unknown;
    try {
      remaining = await this.redis.client.eval(ACQUIRE, 1, slotKey, id, this.max, this.leaseMs);
    } catch {
      if (this.fallback === undefined) throw this.unavailable();
      return this.fallback.acquire(key);
    }
    if (typeof remaining !== 'number' || remaining < 0) return undefined;
    this.leases.set(id, slotKey);
    this.renewal ??= setInterval(() => this.renew(), this.leaseMs / 3).unref();
    let released = false;
    return {
      remaining,
      release: () => {
        if (released) return;
        released = true;
        this.leases.delete(id);
        if (this.leases.size === 0 && this.renewal !== undefined) {
          clearInterval(this.renewal);
          this.renewal = undefined;
        }
        // A release Redis does not hear (it is away) lapses with the lease.
        this.redis.client.zrem(slotKey, id).catch(() => undefined);
      },
    };
  }

  /** Pushes the expiry of every lease this instance holds (only those still present), in one round trip. */
  private renew(): void {
    const batch = this.redis.client.pipeline();
    for (const [id, slotKey] of this.leases) batch.eval(RENEW, 1, slotKey, id, this.leaseMs);
    batch.exec().catch(() => undefined);
  }
}
