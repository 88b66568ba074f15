// Route quotas, spent per verified principal after authorization (anonymous callers per client address): a rate with an
// optional burst, calendar days and months, and a concurrency cap, in any combination. The answer carries the
// draft-ietf-httpapi-ratelimit-headers fields; an admitted request holds its concurrency slot as the decision's lease.
import type { Logger } from 'pino';
import { RateLimiterRes } from 'rate-limiter-flexible';
import { burstDurationS, type QuotaConfig } from '../config/quotas.js';
import { GatewayError } from '../errors/catalogue.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import type { AuthenticatedRequest, QuotaDecision, QuotaLease, QuotaPolicy } from '../pipeline/stage.js';
import { LimiterUnavailable, type LimiterBackend, type OutagePolicy, type Window } from './backend.js';
import type { SlotLease, Slots } from './slots.js';
import { calendarPeriod, secondsUntilEnd, type CalendarCounter, type CalendarPeriod, type CalendarUnit } from './calendar.js';
import { KeyTable } from './keys.js';

export interface QuotaDeps {
  /** Where the windows count: this process's memory, or Redis shared by every instance (backend.ts). */
  readonly backend: LimiterBackend;
  readonly log: Logger;
  /**
   * Wall clock, epoch milliseconds: calendar periods, key lifetimes, the overflow log (tests inject one). The fixed
   * windows run on rate-limiter-flexible's own Date.now.
   */
  readonly now: () => number;
}

/** The counting windows of a quota under one outage policy (on a shared backend the policies share their counters). */
interface Windows {
  readonly slots: Slots | undefined;
  readonly rate: Window | undefined;
  readonly burst: Window | undefined;
  readonly daily: CalendarWindow | undefined;
  readonly monthly: CalendarWindow | undefined;
}

/** Every principal key has a `:` (`mtls:…`, `bearer:…`, `ip:…`), so this one is never a principal's. */
const OVERFLOW_KEY = 'overflow';
const OVERFLOW_LOG_INTERVAL_MS = 60_000;
/** What a refused concurrency slot says to retry after: slots free up as requests end, there is no window to wait out. */
const CONCURRENCY_RETRY_S = 1;
/** What a `deny` route says to retry after while the shared limiter store cannot be reached. */
const OUTAGE_RETRY_S = 5;

/** The key a principal's quota is counted under: the verified identity, never an address once authenticated (RL-02). */
export function quotaKey(request: AuthenticatedRequest): string {
  const { principal } = request;
  return principal.method === 'anonymous' ? `ip:${request.connection.limitKey}` : `${principal.method}:${principal.subject}`;
}

export class PrincipalQuota {
  readonly name: string;
  /** The windows under `degrade` (and on an unshared backend, under either policy), and under `deny` once a route asks. */
  private readonly degrading: Windows;
  private denying: Windows | undefined;
  /** Absent for a concurrency-only quota: its state is the slots of requests in flight, bounded by them. */
  private readonly keys: KeyTable | undefined;
  /** How long a key's fixed-window state can outlive its last use: the longest of window, block and burst window. */
  private readonly lifetimeMs: number;
  private readonly rateItem: string;
  private readonly concurrencyItem: string;
  private readonly dailyItem: string;
  private readonly monthlyItem: string;
  private policyField = '';
  private policyMonth = Number.NaN;
  private overflowed = 0;
  private lastOverflowLog = Number.NEGATIVE_INFINITY;

  constructor(
    name: string,
    private readonly config: DeepReadonly<QuotaConfig>,
    private readonly deps: QuotaDeps,
  ) {
    this.name = name;
    const { duration_s: durationS } = config;
    this.rateItem = `"${name}"`;
    this.concurrencyItem = `"${name}.concurrency"`;
    this.dailyItem = `"${name}.day"`;
    this.monthlyItem = `"${name}.month"`;
    this.degrading = this.windows('degrade');
    const { rate, burst, daily, monthly } = this.degrading;
    this.keys = rate !== undefined || daily !== undefined || monthly !== undefined ? new KeyTable(config.max_keys) : undefined;
    this.lifetimeMs = rate === undefined ? 0 : Math.max(durationS ?? 0, config.block_s ?? 0, burst !== undefined ? burstDurationS(config) : 0) * 1000;
  }

  private windows(outage: OutagePolicy): Windows {
    const { config, deps, name } = this;
    const { points, duration_s: durationS, burst, per_day: perDay, per_month: perMonth, concurrent } = config;
    const prefix = `quota:${name}`;
    const rate =
      points !== undefined && durationS !== undefined
        ? deps.backend.rate({ keyPrefix: `${prefix}:rate`, points, durationS, blockS: config.block_s ?? 0 }, outage)
        : undefined;
    const now = deps.now();
    return {
      slots: concurrent !== undefined ? deps.backend.slots({ keyPrefix: `${prefix}:slots`, max: concurrent }, outage) : undefined,
      rate,
      burst:
        burst !== undefined && rate !== undefined
          ? deps.backend.rate({ keyPrefix: `${prefix}:burst`, points: burst, durationS: burstDurationS(config), blockS: 0 }, outage)
          : undefined,
      daily:
        perDay !== undefined
          ? new CalendarWindow('day', this.dailyItem, perDay, deps.backend.calendar({ keyPrefix: `${prefix}:day`, points: perDay }, outage), now)
          : undefined,
      monthly:
        perMonth !== undefined
          ? new CalendarWindow('month', this.monthlyItem, perMonth, deps.backend.calendar({ keyPrefix: `${prefix}:month`, points: perMonth }, outage), now)
          : undefined,
    };
  }

  /** The policy as this route spends it: `cost` points per request on every window, `outage` while Redis is away. */
  forRoute(cost: number, outage: OutagePolicy = 'degrade'): QuotaPolicy {
    if (outage === 'degrade' || !this.deps.backend.shared) return new RouteQuota(this, cost, this.degrading);
    this.denying ??= this.windows('deny');
    return new RouteQuota(this, cost, this.denying);
  }

  /** Requests holding a concurrency slot now, all keys together (RL-03: back to 0 once they all ended). */
  inFlight(): number {
    return (this.degrading.slots?.held ?? 0) + (this.denying?.slots?.held ?? 0);
  }

  /** Keys with windowed state (RL-08: never above max_keys; the overflow bucket is one more). */
  keyCount(): number {
    return this.keys?.size ?? 0;
  }

  async consume(request: AuthenticatedRequest, cost: number, windows: Windows): Promise<QuotaDecision> {
    try {
      return await this.spend(request, cost, windows);
    } catch (fault) {
      if (!(fault instanceof LimiterUnavailable)) throw fault;
      return {
        allowed: false,
        error: new GatewayError('service_unavailable', {
          reason: `quota ${this.name}: the shared limiter store cannot be reached (quota_outage: deny)`,
          headers: { 'retry-after': String(OUTAGE_RETRY_S) },
        }),
      };
    }
  }

  private async spend(request: AuthenticatedRequest, cost: number, windows: Windows): Promise<QuotaDecision> {
    const now = this.deps.now();
    const { rate, burst, daily, monthly } = windows;
    const day = daily?.current(now);
    const month = monthly?.current(now);
    const key = this.admit(quotaKey(request), now, month ?? day);
    const policy = this.policy(month);
    // The slot first: a refusal for concurrency costs no points, and a slot is never held by a refused request.
    const lease = windows.slots === undefined ? undefined : await windows.slots.acquire(key);
    if (windows.slots !== undefined && lease === undefined) return this.refuse('concurrency', key, this.concurrencyItem, undefined, policy, undefined);
    try {
      // The service limit reported is the one closest to exhaustion: fewest points left; on a tie, the longest wait.
      let item = this.concurrencyItem;
      let remaining = lease?.remaining ?? 0;
      let resetS = -1;
      if (rate !== undefined) {
        try {
          const res = await rate.consume(key, cost);
          // A request within the rate leaves the burst untouched: `r` is the rate's remainder (a lower bound).
          remaining = res.remainingPoints;
          resetS = Math.max(0, Math.ceil(res.msBeforeNext / 1000));
        } catch (refused) {
          if (!(refused instanceof RateLimiterRes)) throw refused;
          if (burst === undefined) return this.refuse('rate', key, this.rateItem, refused.msBeforeNext, policy, lease);
          try {
            const spare = await burst.consume(key, cost);
            // Served from the burst: what is left of it is all there is until the rate's window refills.
            remaining = spare.remainingPoints;
            resetS = Math.max(0, Math.ceil(refused.msBeforeNext / 1000));
          } catch (exhausted) {
            if (!(exhausted instanceof RateLimiterRes)) throw exhausted;
            // Either refill admits again: the rate's next window or the burst's.
            return this.refuse('rate and burst', key, this.rateItem, Math.min(refused.msBeforeNext, exhausted.msBeforeNext), policy, lease);
          }
        }
        item = this.rateItem;
      }
      for (let i = 0; i < 2; i++) {
        const calendar = i === 0 ? daily : monthly;
        const window = i === 0 ? day : month;
        if (calendar === undefined || window === undefined) continue;
        const untilEnd = secondsUntilEnd(window, now);
        try {
          const res = await calendar.counter.consume(key, cost, window);
          const left = res.remainingPoints;
          if (resetS === -1 || left < remaining || (left === remaining && untilEnd > resetS)) {
            item = calendar.item;
            remaining = left;
            resetS = untilEnd;
          }
        } catch (refused) {
          if (!(refused instanceof RateLimiterRes)) throw refused;
          return this.refuse(window.unit, key, calendar.item, untilEnd * 1000, policy, lease);
        }
      }
      const field = resetS === -1 ? `${item};r=${remaining}` : `${item};r=${remaining};t=${resetS}`;
      return new Admission(policy, field, lease);
    } catch (fault) {
      lease?.release();
      throw fault;
    }
  }

  /** The key counted under: the principal's own, or past max_keys the shared overflow bucket (limited like any key). */
  private admit(key: string, now: number, calendar: CalendarPeriod | undefined): string {
    const { keys } = this;
    if (keys === undefined || keys.admit(key, now, Math.max(now + this.lifetimeMs, calendar?.endsAt ?? 0))) return key;
    this.overflowed++;
    if (now - this.lastOverflowLog >= OVERFLOW_LOG_INTERVAL_MS) {
      this.deps.log.warn(
        { quota: this.name, max_keys: this.config.max_keys, overflowed: this.overflowed },
        'quota key cap reached: new principals share the overflow bucket',
      );
      this.lastOverflowLog = now;
      this.overflowed = 0;
    }
    return OVERFLOW_KEY;
  }

  /**
   * A 429 whose body is the catalogue's (identical for every principal, known or not, RL-08); the headers say which
   * policy refused and when to retry. `retryMs` undefined: a concurrency refusal, which has no window.
   */
  private refuse(what: string, key: string, item: string, retryMs: number | undefined, policy: string, lease: SlotLease | undefined): QuotaDecision {
    lease?.release();
    const retryAfter = retryMs === undefined ? CONCURRENCY_RETRY_S : Math.max(1, Math.ceil(retryMs / 1000));
    return {
      allowed: false,
      error: new GatewayError('rate_limited', {
        reason: `quota ${this.name}: ${what}${key === OVERFLOW_KEY ? ' (overflow bucket)' : ''}`,
        headers: {
          'retry-after': String(retryAfter),
          'ratelimit-policy': policy,
          ratelimit: retryMs === undefined ? `${item};r=0` : `${item};r=0;t=${retryAfter}`,
        },
      }),
    };
  }

  /** The RateLimit-Policy field: the same on every response, except that a month's `w` is that month's length. */
  private policy(month: CalendarPeriod | undefined): string {
    const monthStart = month?.startsAt ?? 0;
    if (monthStart === this.policyMonth) return this.policyField;
    const { config, name } = this;
    const items: string[] = [];
    if (config.points !== undefined && config.duration_s !== undefined) {
      const burst = config.burst !== undefined ? `;gatehouse-burst=${config.burst};gatehouse-burst-w=${burstDurationS(config)}` : '';
      items.push(`${this.rateItem};q=${config.points};w=${config.duration_s}${burst}`);
    }
    if (config.per_day !== undefined) items.push(`${this.dailyItem};q=${config.per_day};w=86400`);
    if (config.per_month !== undefined && month !== undefined) items.push(`${this.monthlyItem};q=${config.per_month};w=${month.lengthS}`);
    // draft-ietf-httpapi-ratelimit-headers §3.1.2 registers the quota unit "concurrent-requests"; it has no window.
    if (config.concurrent !== undefined) items.push(`"${name}.concurrency";q=${config.concurrent};qu="concurrent-requests"`);
    this.policyField = items.join(', ');
    this.policyMonth = monthStart;
    return this.policyField;
  }
}

/** A quota as one route spends it. Made once per route at compile time. */
class RouteQuota implements QuotaPolicy {
  readonly name: string;
  constructor(
    private readonly quota: PrincipalQuota,
    private readonly cost: number,
    private readonly windows: Windows,
  ) {
    this.name = quota.name;
  }
  consume(request: AuthenticatedRequest): Promise<QuotaDecision> {
    return this.quota.consume(request, this.cost, this.windows);
  }
}

class CalendarWindow {
  private period: CalendarPeriod;
  constructor(
    readonly unit: CalendarUnit,
    /** Its name in the RateLimit fields. */
    readonly item: string,
    readonly points: number,
    readonly counter: CalendarCounter,
    now: number,
  ) {
    this.period = calendarPeriod(unit, now);
  }
  /** The period containing `now`, recomputed only when it ends (or the clock was stepped back before its start). */
  current(now: number): CalendarPeriod {
    if (now >= this.period.endsAt || now < this.period.startsAt) this.period = calendarPeriod(this.unit, now);
    return this.period;
  }
}

/** An allowed decision, and its own lease when the quota caps concurrency: one object per admitted request. */
class Admission implements QuotaLease {
  readonly allowed = true;
  readonly lease: QuotaLease | undefined;
  constructor(
    readonly rateLimitPolicy: string,
    readonly rateLimit: string,
    private readonly slot: SlotLease | undefined,
  ) {
    this.lease = slot === undefined ? undefined : this;
  }
  /** Frees the slot the first time; every later call does nothing. */
  release(): void {
    this.slot?.release();
  }
}
