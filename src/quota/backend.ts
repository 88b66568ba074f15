// Where limiter counters live: this process's memory (one instance), or Redis (every instance shares them). The one place
// a rate limiter is built, so the pre-auth budget and the route quotas move to Redis together.
//
// On Redis a limiter is never unlimited (RL-05..07). Every command is bounded (RLWrapperTimeouts: a slow Redis costs at
// most redis.timeout_ms per request), and when Redis cannot answer, the caller's outage policy decides:
//   degrade — an in-memory limiter takes over, sized to this instance's share (points / redis.instances, rounded up), so
//             N instances together still admit about the limit; no request fails because of the outage;
//   deny    — consume() rejects with LimiterUnavailable, which the caller answers 503 (temporarily unavailable).
// A key over its rate is also remembered in memory for the rest of its block or window (RL-04), so a hammered key does
// not hammer Redis.
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, RLWrapperTimeouts, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { RedisConnection } from '../lib/redis.js';
import { MemoryCalendarCounter, type CalendarCounter, type CalendarPeriod, type CalendarSpec } from './calendar.js';
import { MemorySlots, RedisSlots, type Slots } from './slots.js';

export interface RateSpec {
  readonly keyPrefix: string;
  readonly points: number;
  readonly durationS: number;
  readonly blockS?: number;
}

export type OutagePolicy = 'degrade' | 'deny';

/** A fixed window: resolves with the key's state, rejects with a RateLimiterRes when over the limit. */
export interface Window {
  consume(key: string, points?: number): Promise<RateLimiterRes>;
}

/** The shared store could not answer, and the policy is `deny`. */
export class LimiterUnavailable extends Error {
  constructor() {
    super('the shared limiter store (Redis) cannot be reached');
    this.name = 'LimiterUnavailable';
  }
}

/** A window that can also be read, blocked and cleared: the token endpoint's failure counters (rate-limiter-flexible's API). */
export interface Counter extends Window {
  get(key: string): Promise<RateLimiterRes | null>;
  block(key: string, seconds: number): Promise<RateLimiterRes>;
  delete(key: string): Promise<boolean>;
}

export interface LimiterBackend {
  /** True when instances share the counters: then an outage policy matters. */
  readonly shared: boolean;
  rate(spec: RateSpec, onOutage?: OutagePolicy): Window;
  calendar(spec: CalendarSpec, onOutage?: OutagePolicy): CalendarCounter;
  /** A counter that always degrades: the brute-force limits of client authentication must never stop while Redis is away. */
  counter(spec: RateSpec): Counter;
  /** Concurrency slots: at most `max` requests of one key in flight at once. */
  slots(spec: { readonly keyPrefix: string; readonly max: number }, onOutage?: OutagePolicy): Slots;
}

export class MemoryLimiterBackend implements LimiterBackend {
  readonly shared = false;

  rate(spec: RateSpec): Window {
    return memoryRate(spec, spec.points);
  }

  calendar(spec: CalendarSpec): CalendarCounter {
    return new MemoryCalendarCounter(spec);
  }

  counter(spec: RateSpec): Counter {
    return memoryRate(spec, spec.points);
  }

  slots(spec: { readonly max: number }): Slots {
    return new MemorySlots(spec.max);
  }
}

export interface RedisLimiterOptions {
  /** redis.key_prefix: every key is `<prefix>:<limiter>:<key>`. */
  readonly keyPrefix: string;
  /** redis.instances: the share an instance enforces alone during an outage is points / instances. */
  readonly instances: number;
  readonly timeoutMs: number;
}

export class RedisLimiterBackend implements LimiterBackend {
  readonly shared = true;

  constructor(
    private readonly redis: RedisConnection,
    private readonly opts: RedisLimiterOptions,
  ) {}

  rate(spec: RateSpec, onOutage: OutagePolicy = 'degrade'): Window {
    const blockS = spec.blockS ?? 0;
    const limiter = this.bounded({
      keyPrefix: spec.keyPrefix,
      points: spec.points,
      duration: spec.durationS,
      blockDuration: blockS,
      // Once refused, a key is refused from memory for the rest of its block (or of its window, without one). With a block,
      // the block is also written to Redis first (rate-limiter-flexible skips that write when no in-memory duration is set).
      inMemoryBlockOnConsumed: spec.points + 1,
      ...(blockS > 0 ? { inMemoryBlockDuration: blockS } : {}),
    });
    return new SharedWindow(limiter, onOutage === 'degrade' ? memoryRate(spec, this.share(spec.points)) : undefined);
  }

  calendar(spec: CalendarSpec, onOutage: OutagePolicy = 'degrade'): CalendarCounter {
    const fallback = onOutage === 'degrade' ? new MemoryCalendarCounter({ ...spec, points: this.share(spec.points) }) : undefined;
    // One limiter per period, its keys named by it; they expire a day after the period could have ended.
    const forPeriod = (period: CalendarPeriod): Window =>
      new SharedWindow(this.bounded({ keyPrefix: `${spec.keyPrefix}:${period.id}`, points: spec.points, duration: period.lengthS + 86_400 }), undefined);
    return new RedisCalendarCounter(forPeriod, fallback);
  }

  counter(spec: RateSpec): Counter {
    const limiter = this.bounded({ keyPrefix: spec.keyPrefix, points: spec.points, duration: spec.durationS, blockDuration: spec.blockS ?? 0 });
    return new SharedCounter(limiter, memoryRate(spec, this.share(spec.points)));
  }

  slots(spec: { readonly keyPrefix: string; readonly max: number }, onOutage: OutagePolicy = 'degrade'): Slots {
    const fallback = onOutage === 'degrade' ? new MemorySlots(this.share(spec.max)) : undefined;
    return new RedisSlots(this.redis, `${this.opts.keyPrefix}:${spec.keyPrefix}`, spec.max, fallback, () => new LimiterUnavailable());
  }

  private share(points: number): number {
    return Math.max(1, Math.ceil(points / this.opts.instances));
  }

  /**
   * A limiter on Redis under this backend's key prefix, every command bounded by the timeout. A command while
   * disconnected is refused at once (no offline queue), so the outage policy answers rather than a wait.
   */
  private bounded(options: RedisLimiterSpec): RateLimiterAbstract {
    const limiter = new RateLimiterRedis({
      ...options,
      storeClient: this.redis.client,
      keyPrefix: `${this.opts.keyPrefix}:${options.keyPrefix}`,
      rejectIfRedisNotReady: true,
    });
    return new RLWrapperTimeouts({ limiter, timeoutMs: this.opts.timeoutMs });
  }
}

/** What differs between the Redis limiters a backend builds (rate-limiter-flexible's option names). */
interface RedisLimiterSpec {
  readonly keyPrefix: string;
  readonly points: number;
  readonly duration: number;
  readonly blockDuration?: number;
  readonly inMemoryBlockOnConsumed?: number;
  readonly inMemoryBlockDuration?: number;
}

/** A window on Redis with its outage policy: any answer but a verdict goes to the fallback, or is LimiterUnavailable. */
class SharedWindow implements Window {
  constructor(
    protected readonly shared: RateLimiterAbstract,
    protected readonly fallback: Window | undefined,
  ) {}

  async consume(key: string, points = 1): Promise<RateLimiterRes> {
    try {
      return await this.shared.consume(key, points);
    } catch (outcome) {
      if (outcome instanceof RateLimiterRes) throw outcome;
      if (this.fallback === undefined) throw new LimiterUnavailable();
      return this.fallback.consume(key, points);
    }
  }
}

/** A counter on Redis: any answer but a verdict is asked of the in-memory fallback instead (it always degrades). */
class SharedCounter extends SharedWindow implements Counter {
  constructor(
    shared: RateLimiterAbstract,
    protected override readonly fallback: Counter,
  ) {
    super(shared, fallback);
  }

  get(key: string): Promise<RateLimiterRes | null> {
    return this.shared.get(key).catch(() => this.fallback.get(key));
  }

  block(key: string, seconds: number): Promise<RateLimiterRes> {
    return this.shared.block(key, seconds).catch(() => this.fallback.block(key, seconds));
  }

  delete(key: string): Promise<boolean> {
    // Cleared in both: a success must not leave a failure count behind in the fallback either.
    return Promise.all([this.shared.delete(key).catch(() => false), this.fallback.delete(key)]).then(([shared, local]) => shared || local);
  }
}

/**
 * Points per key within one UTC day or month, on Redis: the keys of each period are named by it (`…:2026-12-07:<key>`),
 * so a new period starts from zero on every instance at once.
 */
class RedisCalendarCounter implements CalendarCounter {
  private window: Window | undefined;
  private startsAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly forPeriod: (period: CalendarPeriod) => Window,
    private readonly fallback: CalendarCounter | undefined,
  ) {}

  async consume(key: string, points: number, period: CalendarPeriod): Promise<RateLimiterRes> {
    // Only forward: a clock stepped back across midnight must not hand out a fresh period.
    if (this.window === undefined || period.startsAt > this.startsAt) {
      this.window = this.forPeriod(period);
      this.startsAt = period.startsAt;
    }
    try {
      return await this.window.consume(key, points);
    } catch (outcome) {
      if (!(outcome instanceof LimiterUnavailable) || this.fallback === undefined) throw outcome;
      return this.fallback.consume(key, points, period);
    }
  }
}

function memoryRate(spec: RateSpec, points: number): RateLimiterMemory {
  return new RateLimiterMemory({ keyPrefix: spec.keyPrefix, points, duration: spec.durationS, blockDuration: spec.blockS ?? 0 });
}
