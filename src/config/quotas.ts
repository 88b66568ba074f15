// The `quotas` section: one named route quota (rate with an optional burst, concurrency, calendar windows) and its checks.
import { z } from 'zod';
import { positiveInt } from './fields.js';

/** Longest burst refill window: RateLimiterMemory keeps a record with a timer, and Node timers stop at 2^31 - 1 ms (~24.8 days). */
export const MAX_BURST_DURATION_S = 864_000;

/**
 * A route quota: any combination of a rate (with an optional burst), a concurrency cap and calendar windows, at least one.
 * The plain `{points, duration_s, block_s}` of earlier versions is a quota with a rate only.
 */
export const quotaSchema = z
  .strictObject({
    /** Rate: `points` per `duration_s` seconds, a fixed window that starts at a key's first request. */
    points: positiveInt(10_000_000).optional(),
    duration_s: positiveInt(86_400).optional(),
    /** Seconds a key stays refused once it exceeds the rate (0 = until the window ends). */
    block_s: z.int().min(0).max(86_400).optional(),
    /** Extra points a key may spend once the rate is used up, refilled every `burst_duration_s` (default 10 × duration_s). */
    burst: positiveInt(10_000_000).optional(),
    burst_duration_s: positiveInt(MAX_BURST_DURATION_S).optional(),
    /** Requests of one key in flight at once; the slot is freed when the request ends, however it ends. */
    concurrent: positiveInt(1_000_000).optional(),
    /** Points per UTC calendar day (the window ends at 00:00 UTC). */
    per_day: positiveInt(1_000_000_000).optional(),
    /** Points per UTC calendar month (the window ends at 00:00 UTC on the 1st). */
    per_month: positiveInt(1_000_000_000_000).optional(),
    /** Distinct keys with state at once; past it new keys share one overflow bucket with this quota's limits (RL-08). */
    max_keys: positiveInt(10_000_000).default(100_000),
  })
  .superRefine((quota, ctx) => {
    const rate = quota.points !== undefined && quota.duration_s !== undefined;
    if (
      quota.points === undefined &&
      quota.duration_s === undefined &&
      quota.concurrent === undefined &&
      quota.per_day === undefined &&
      quota.per_month === undefined
    ) {
      ctx.addIssue({ code: 'custom', path: [], message: 'a quota needs at least one limit: a rate (points and duration_s), concurrent, per_day or per_month' });
    }
    if ((quota.points === undefined) !== (quota.duration_s === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [quota.points === undefined ? 'points' : 'duration_s'],
        message: 'points and duration_s go together: a rate is points per duration_s',
      });
    }
    if (quota.block_s !== undefined && !rate)
      ctx.addIssue({ code: 'custom', path: ['block_s'], message: 'block_s applies to a rate: set points and duration_s' });
    if (quota.burst !== undefined && !rate)
      ctx.addIssue({ code: 'custom', path: ['burst'], message: 'burst is spent above a rate: set points and duration_s' });
    if (quota.burst_duration_s !== undefined && quota.burst === undefined)
      ctx.addIssue({ code: 'custom', path: ['burst_duration_s'], message: 'burst_duration_s needs burst' });
    if (quota.burst_duration_s !== undefined && quota.duration_s !== undefined && quota.burst_duration_s <= quota.duration_s) {
      ctx.addIssue({
        code: 'custom',
        path: ['burst_duration_s'],
        message: 'must be longer than duration_s: burst points refill over a longer window than the rate',
      });
    }
    if (quota.per_day !== undefined && quota.per_month !== undefined && quota.per_month < quota.per_day) {
      ctx.addIssue({ code: 'custom', path: ['per_month'], message: 'must be at least per_day: a month holds every one of its days' });
    }
  });
export type QuotaConfig = z.infer<typeof quotaSchema>;

/** The burst refill window of a quota with a burst: as configured, else ten rate windows. */
export function burstDurationS(quota: Pick<QuotaConfig, 'duration_s' | 'burst_duration_s'>): number {
  return quota.burst_duration_s ?? Math.min(MAX_BURST_DURATION_S, 10 * (quota.duration_s ?? 1));
}
