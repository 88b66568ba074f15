// Where limiter counters live: this process's memory (one process), or a store every process shares — Redis (every
// instance, every worker), or the primary of `serve --workers N` without Redis (every worker of one gateway; cluster.ts).
// The one place a rate limiter is built, so the pre-auth budget and the route quotas move to a shared store together.
//
// In a shared store a limiter is never unlimited (RL-05..07). Every call is bounded (on Redis RLWrapperTimeouts: a slow
// Redis costs at most redis.timeout_ms per request), and when the store cannot answer, the caller's outage policy decides:
//   degrade — an in-memory limiter takes over, sized to this process's share (points / shares, rounded up), so the
//             processes together still admit about the limit; no request fails because of the outage;
//   deny    — consume() rejects with LimiterUnavailable, which the caller answers 503 (temporarily unavailable).
// On Redis a key over its rate is also remembered in memory for the rest of its block or window (RL-04), so a hammered key
// does not hammer Redis.
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, RLWrapperTimeouts } from 'rate-limiter-flexible';
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

/** The shared store (Redis, or the primary of the workers) could not answer, and the policy is `deny`. */
export class LimiterUnavailable extends Error {
  constructor() {
    super('the shared limiter store cannot answer');
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

/**
 * One limiter of a shared store (rate-limiter-flexible's API): a verdict over the limit rejects with a RateLimiterRes, a
 * store that cannot answer with any other error, which the outage policy then decides.
 */
export interface SharedStore {
  consume(key: string, points?: number): Promise<RateLimiterRes>;
  get(key: string): Promise<RateLimiterRes | null>;
  block(key: string, seconds: number): Promise<RateLimiterRes>;
  delete(key: string): Promise<boolean>;
}

/** A window of a shared store that is only ever consumed (a calendar period's). */
export type ConsumeStore = Pick<SharedStore, 'consume'>;

/** What differs between the limiters a shared backend builds (rate-limiter-flexible's option names). */
export interface StoreSpec {
  readonly keyPrefix: string;
  readonly points: number;
  readonly duration: number;
  readonly blockDuration?: number;
  /** Redis only: a key over its limit is refused from memory for the rest of its block (RL-04). */
  readonly inMemoryBlockOnConsumed?: number;
  readonly inMemoryBlockDuration?: number;
}

/**
 * Limits shared by every process that counts in one store (Redis; the primary of `serve --workers N`), each limiter with its
 * outage policy: `degrade` counts this process's share (points / shares, rounded up) in its own memory, `deny` refuses.
 */
export abstract class SharedLimiterBackend implements LimiterBackend {
  readonly shared = true;

  /** `shares`: how many processes split a limit while the store is away. */
  constructor(private readonly shares: number) {}

  /** One limiter in the store. */
  protected abstract store(spec: StoreSpec): SharedStore;
  /** The store's counter of calendar periods: a window per period, whose verdicts and failures mean what store()'s do. */
  protected abstract periodWindow(spec: CalendarSpec): (period: CalendarPeriod) => ConsumeStore;
  /** Concurrency slots in the store; `fallback` answers while it cannot, else acquire() rejects with LimiterUnavailable. */
  protected abstract storeSlots(spec: { readonly keyPrefix: string; readonly max: number }, fallback: Slots | undefined): Slots;

  rate(spec: RateSpec, onOutage: OutagePolicy = 'degrade'): Window {
    const blockS = spec.blockS ?? 0;
    const limiter = this.store({
      keyPrefix: spec.keyPrefix,
      points: spec.points,
      duration: spec.durationS,
      blockDuration: blockS,
      // Once refused, a key is refused from memory for the rest of its block (or of its window, without one). With a block,
      // the block is also written to the store first (rate-limiter-flexible skips that write when no in-memory duration is set).
      inMemoryBlockOnConsumed: spec.points + 1,
      ...(blockS > 0 ? { inMemoryBlockDuration: blockS } : {}),
    });
    return new SharedWindow(limiter, onOutage === 'degrade' ? memoryRate(spec, this.share(spec.points)) : undefined);
  }

  calendar(spec: CalendarSpec, onOutage: OutagePolicy = 'degrade'): CalendarCounter {
    const fallback = onOutage === 'degrade' ? new MemoryCalendarCounter({ ...spec, points: this.share(spec.points) }) : undefined;
    const forPeriod = this.periodWindow(spec);
    return new SharedCalendarCounter((period) => new SharedWindow(forPeriod(period), undefined), fallback);
  }

  counter(spec: RateSpec): Counter {
    const limiter = this.store({ keyPrefix: spec.keyPrefix, points: spec.points, duration: spec.durationS, blockDuration: spec.blockS ?? 0 });
    return new SharedCounter(limiter, memoryRate(spec, this.share(spec.points)));
  }

  slots(spec: { readonly keyPrefix: string; readonly max: number }, onOutage: OutagePolicy = 'degrade'): Slots {
    return this.storeSlots(spec, onOutage === 'degrade' ? new MemorySlots(this.share(spec.max)) : undefined);
  }

  private share(points: number): number {
    return Math.max(1, Math.ceil(points / this.shares));
  }
}

export interface RedisLimiterOptions {
  /** redis.key_prefix: every key is `<prefix>:<limiter>:<key>`. */
  readonly keyPrefix: string;
  /** How many processes count in Redis (redis.instances × workers): each one's share during an outage is points / shares. */
  readonly shares: number;
  readonly timeoutMs: number;
}

export class RedisLimiterBackend extends SharedLimiterBackend {
  constructor(
    private readonly redis: RedisConnection,
    private readonly opts: RedisLimiterOptions,
  ) {
    super(opts.shares);
  }

  /**
   * A limiter on Redis under this backend's key prefix, every command bounded by the timeout. A command while
   * disconnected is refused at once (no offline queue), so the outage policy answers rather than a wait.
   */
  protected store(options: StoreSpec): SharedStore {
    const limiter = new RateLimiterRedis({
      ...options,
      storeClient: this.redis.client,
      keyPrefix: `${this.opts.keyPrefix}:${options.keyPrefix}`,
      rejectIfRedisNotReady: true,
    });
    return new RLWrapperTimeouts({ limiter, timeoutMs: this.opts.timeoutMs });
  }

  /** One limiter per period, its keys named by it; they expire a day after the period could have ended. */
  protected periodWindow(spec: CalendarSpec): (period: CalendarPeriod) => ConsumeStore {
    return (period) => this.store({ keyPrefix: `${spec.keyPrefix}:${period.id}`, points: spec.points, duration: period.lengthS + 86_400 });
  }

  protected storeSlots(spec: { readonly keyPrefix: string; readonly max: number }, fallback: Slots | undefined): Slots {
    return new RedisSlots(this.redis, `${this.opts.keyPrefix}:${spec.keyPrefix}`, spec.max, fallback, () => new LimiterUnavailable());
  }
}

/** A window in a shared store with its outage policy: any answer but a verdict goes to the fallback, or is LimiterUnavailable. */
class SharedWindow implements Window {
  constructor(
    private readonly window: ConsumeStore,
    protected readonly fallback: Window | undefined,
  ) {}

  async consume(key: string, points = 1): Promise<RateLimiterRes> {
    try {
      return await this.window.consume(key, points);
    } catch (outcome) {
      if (outcome instanceof RateLimiterRes) throw outcome;
      if (this.fallback === undefined) throw new LimiterUnavailable();
      return this.fallback.consume(key, points);
    }
  }
}

/** A counter in a shared store: any answer but a verdict is asked of the in-memory fallback instead (it always degrades). */
class SharedCounter extends SharedWindow implements Counter {
  constructor(
    private readonly shared: SharedStore,
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
 * Points per key within one UTC day or month, in a shared store: each period has its own window (on Redis its keys are named
 * by it, `…:2026-12-07:<key>`), so a new period starts from zero on every instance at once.
 */
class SharedCalendarCounter implements CalendarCounter {
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
