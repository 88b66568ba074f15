// Rate quotas on rate-limiter-flexible: the pre-auth per-IP budget and per-IP new-connection rate (route quotas: principal.ts).
// Keys are the socket's (or trusted proxy's) client address or the verified principal, never an unverified header or claim.
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { LimiterBackend, Window } from './backend.js';
import type { RateConfig } from '../config/fields.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import { GatewayError } from '../errors/catalogue.js';
import type { PreAuthBudget, QuotaDecision } from '../pipeline/stage.js';

const ALLOWED: QuotaDecision = Object.freeze({ allowed: true });

export function memoryLimiter(rate: DeepReadonly<RateConfig>, keyPrefix: string): RateLimiterMemory {
  return new RateLimiterMemory({ keyPrefix, points: rate.points, duration: rate.duration_s, blockDuration: rate.block_s });
}

/** Consumes one point; a limited key becomes a 429 with Retry-After = ceil(msBeforeNext / 1000) (RL-01). */
/** One point of `limiter` for `key`: allowed, or a 429 refusal with Retry-After naming `quotaName` for the operator. */
export async function consumePoint(limiter: Window, key: string, quotaName: string): Promise<QuotaDecision> {
  try {
    await limiter.consume(key);
    return ALLOWED;
  } catch (outcome) {
    if (outcome instanceof RateLimiterRes) {
      const retryAfter = Math.max(1, Math.ceil(outcome.msBeforeNext / 1000));
      return {
        allowed: false,
        error: new GatewayError('rate_limited', { reason: `quota ${quotaName}`, headers: { 'retry-after': String(retryAfter) } }),
      };
    }
    throw outcome;
  }
}

/**
 * The budget every request spends before any credential is examined, keyed by client address; shared by every instance on
 * a shared backend, and never off: while Redis is away each instance counts its share in memory.
 */
export class PreAuthQuota implements PreAuthBudget {
  private readonly limiter: Window;
  constructor(rate: DeepReadonly<RateConfig>, backend: LimiterBackend) {
    this.limiter = backend.rate({ keyPrefix: 'preauth', points: rate.points, durationS: rate.duration_s, blockS: rate.block_s }, 'degrade');
  }
  consume(limitKey: string): Promise<QuotaDecision> {
    return consumePoint(this.limiter, limitKey, 'pre-auth-per-ip');
  }
}
