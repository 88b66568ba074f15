// Where limiter counters live: this process's memory (one instance), or Redis (every instance shares them). The one place
// a rate limiter is built, so the pre-auth budget, the token endpoint's brute-force limits and the route quotas all move
// to Redis together.
//
// On Redis a limiter is never unlimited (RL-05..07). Each one is wrapped in a timeout (RLWrapperTimeouts: a slow Redis
// costs at most redis.timeout_ms per request), and when Redis cannot answer, the limiter's outage policy decides:
//   degrade — an in-memory insurance limiter takes over, sized to this instance's share (points / redis.instances,
//             rounded up), so N instances together still admit about the limit;
//   deny    — the caller is refused (503, temporarily unavailable) until Redis is back.
// A key over its limit is also remembered in memory for the rest of its block or window (RL-04), so a hammered key
// does not hammer Redis.
import { RateLimiterMemory, RateLimiterRedis, RLWrapperTimeouts, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { RedisConnection } from '../lib/redis.js';

export interface RateSpec {
  readonly keyPrefix: string;
  readonly points: number;
  readonly durationS: number;
  readonly blockS?: number;
}

export type OutagePolicy = 'degrade' | 'deny';

export interface LimiterBackend {
  readonly shared: boolean;
  rate(spec: RateSpec, onOutage?: OutagePolicy): RateLimiterAbstract;
}

export class MemoryLimiterBackend implements LimiterBackend {
  readonly shared = false;

  rate(spec: RateSpec): RateLimiterAbstract {
    return memoryRate(spec, spec.points);
  }
}

export class RedisLimiterBackend implements LimiterBackend {
  readonly shared = true;

  constructor(
    private readonly redis: RedisConnection,
    private readonly opts: { readonly keyPrefix: string; readonly instances: number; readonly timeoutMs: number },
  ) {}

  rate(spec: RateSpec, onOutage: OutagePolicy = 'degrade'): RateLimiterAbstract {
    const insurance = onOutage === 'degrade' ? memoryRate(spec, Math.max(1, Math.ceil(spec.points / this.opts.instances))) : undefined;
    const blockS = spec.blockS ?? 0;
    const limiter = new RateLimiterRedis({
      storeClient: this.redis.client,
      keyPrefix: `${this.opts.keyPrefix}:${spec.keyPrefix}`,
      points: spec.points,
      duration: spec.durationS,
      blockDuration: blockS,
      // Once refused, a key is refused from memory for the rest of its block (or of its window, without one). With a block,
      // the block is also written to Redis first (rate-limiter-flexible skips that write when no in-memory duration is set).
      inMemoryBlockOnConsumed: spec.points + 1,
      ...(blockS > 0 ? { inMemoryBlockDuration: blockS } : {}),
      ...(insurance !== undefined ? { insuranceLimiter: insurance } : {}),
      rejectIfRedisNotReady: true,
    });
    return new RLWrapperTimeouts({ limiter, timeoutMs: this.opts.timeoutMs, ...(insurance !== undefined ? { insuranceLimiter: insurance } : {}) });
  }
}

function memoryRate(spec: RateSpec, points: number): RateLimiterMemory {
  return new RateLimiterMemory({ keyPrefix: spec.keyPrefix, points, duration: spec.durationS, blockDuration: spec.blockS ?? 0 });
}
