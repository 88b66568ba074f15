// Calendar windows of route quotas (per_day, per_month): the UTC day or month containing an instant, and the counter of
// points per key within one such period. The arithmetic is pure, so it is tested alone; the counter is the seam a shared
// (Redis) backend replaces with keys named by the period and expiring at its end.
import { RateLimiterMemory, type RateLimiterRes } from 'rate-limiter-flexible';

export type CalendarUnit = 'day' | 'month';

/** One UTC calendar day or month: [startsAt, endsAt) in epoch milliseconds. */
export interface CalendarPeriod {
  readonly unit: CalendarUnit;
  /** `2026-12-05` or `2026-12`: part of a shared backend's key, so each period starts from zero. */
  readonly id: string;
  readonly startsAt: number;
  readonly endsAt: number;
  /** The period's length in whole seconds (a month's varies): the `w` its RateLimit-Policy item advertises. */
  readonly lengthS: number;
}

/** The UTC day (ends 00:00 UTC) or month (ends 00:00 UTC on the 1st of the next month) containing `now`. */
export function calendarPeriod(unit: CalendarUnit, now: number): CalendarPeriod {
  const at = new Date(now);
  const year = at.getUTCFullYear();
  const month = at.getUTCMonth();
  const startsAt = unit === 'day' ? Date.UTC(year, month, at.getUTCDate()) : Date.UTC(year, month, 1);
  const endsAt = unit === 'day' ? Date.UTC(year, month, at.getUTCDate() + 1) : Date.UTC(year, month + 1, 1);
  return { unit, id: new Date(startsAt).toISOString().slice(0, unit === 'day' ? 10 : 7), startsAt, endsAt, lengthS: (endsAt - startsAt) / 1000 };
}

/** Whole seconds from `now` to the period's end, at least 1 (a Retry-After, a RateLimit `t`). */
export function secondsUntilEnd(period: CalendarPeriod, now: number): number {
  return Math.max(1, Math.ceil((period.endsAt - now) / 1000));
}

export interface CalendarSpec {
  readonly keyPrefix: string;
  readonly points: number;
}

/**
 * Points per key within one calendar period. Resolves with the key's state, rejects with a RateLimiterRes when the
 * period's points are exceeded (like rate-limiter-flexible's consume); `msBeforeNext` is not meaningful, the caller knows
 * the period's end.
 */
export interface CalendarCounter {
  consume(key: string, points: number, period: CalendarPeriod): Promise<RateLimiterRes>;
}

/**
 * In this process's memory. RateLimiterMemory expires each record with its own setTimeout, and Node runs a timer longer
 * than 2^31 - 1 ms (~24.8 days) after 1 ms: a month-long duration would leave every key unlimited. Calendar periods end
 * for every key at the same instant, so this counter keeps records that never expire (duration 0: no timers at all) and
 * drops the whole store when the next period begins.
 */
export class MemoryCalendarCounter implements CalendarCounter {
  private limiter: RateLimiterMemory | undefined;
  private startsAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly spec: CalendarSpec) {}

  consume(key: string, points: number, period: CalendarPeriod): Promise<RateLimiterRes> {
    // Only forward: a clock stepped back across midnight must not hand out a fresh period.
    if (this.limiter === undefined || period.startsAt > this.startsAt) {
      this.limiter = new RateLimiterMemory({ keyPrefix: this.spec.keyPrefix, points: this.spec.points, duration: 0 });
      this.startsAt = period.startsAt;
    }
    return this.limiter.consume(key, points);
  }
}
