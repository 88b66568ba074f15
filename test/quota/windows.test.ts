// The quota building blocks alone: UTC calendar periods (RL quota windows end at 00:00 UTC / the 1st), the in-memory
// calendar counter (no timers, a new store per period) and the bounded key table behind max_keys (RL-08).
import { describe, expect, it } from 'vitest';
import { RateLimiterRes } from 'rate-limiter-flexible';
import { calendarPeriod, MemoryCalendarCounter, secondsUntilEnd } from '../../src/quota/calendar.js';
import { KeyTable } from '../../src/quota/keys.js';

describe('calendar periods (UTC)', () => {
  it('a day runs from 00:00 UTC to the next 00:00 UTC, whatever the time of day', () => {
    const period = calendarPeriod('day', Date.UTC(2026, 11, 5, 23, 59, 59, 999));
    expect(period).toEqual({ unit: 'day', id: '2026-12-05', startsAt: Date.UTC(2026, 11, 5), endsAt: Date.UTC(2026, 11, 6), lengthS: 86_400 });
    expect(calendarPeriod('day', Date.UTC(2026, 11, 6)).id).toBe('2026-12-06');
    // Year end: 31 December ends at 1 January 00:00 UTC.
    expect(calendarPeriod('day', Date.UTC(2026, 11, 31, 12)).endsAt).toBe(Date.UTC(2027, 0, 1));
  });

  it('a month ends at 00:00 UTC on the 1st of the next one, and its length is its own (28 to 31 days)', () => {
    expect(calendarPeriod('month', Date.UTC(2026, 11, 31, 23, 59, 59))).toEqual({
      unit: 'month',
      id: '2026-12',
      startsAt: Date.UTC(2026, 11, 1),
      endsAt: Date.UTC(2027, 0, 1),
      lengthS: 31 * 86_400,
    });
    expect(calendarPeriod('month', Date.UTC(2027, 1, 14)).lengthS).toBe(28 * 86_400);
    expect(calendarPeriod('month', Date.UTC(2028, 1, 29)).lengthS).toBe(29 * 86_400); // leap year
    expect(calendarPeriod('month', Date.UTC(2027, 3, 1)).id).toBe('2027-04');
  });

  it('seconds until the end round up and are never 0', () => {
    const day = calendarPeriod('day', Date.UTC(2026, 11, 5, 23, 59, 58));
    expect(secondsUntilEnd(day, Date.UTC(2026, 11, 5, 23, 59, 58))).toBe(2);
    expect(secondsUntilEnd(day, Date.UTC(2026, 11, 5, 23, 59, 59, 1))).toBe(1);
    expect(secondsUntilEnd(day, Date.UTC(2026, 11, 5))).toBe(86_400);
  });
});

describe('in-memory calendar counter', () => {
  it('counts a month of points without a timer (a 31-day RateLimiterMemory duration would fire after 1 ms) and starts over in the next period', async () => {
    const counter = new MemoryCalendarCounter({ keyPrefix: 't', points: 2 });
    const december = calendarPeriod('month', Date.UTC(2026, 11, 1));
    expect((await counter.consume('k', 1, december)).remainingPoints).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await counter.consume('k', 1, december)).remainingPoints).toBe(0);
    await expect(counter.consume('k', 1, december)).rejects.toBeInstanceOf(RateLimiterRes);
    const january = calendarPeriod('month', Date.UTC(2027, 0, 1));
    expect((await counter.consume('k', 1, january)).remainingPoints).toBe(1);
    // A clock stepped back into the earlier period does not reopen it.
    expect((await counter.consume('k', 1, december)).remainingPoints).toBe(0);
  });
});

describe('key table (max_keys)', () => {
  it('admits up to max keys, refuses a new one while all are live, and makes room once the oldest expired', () => {
    const table = new KeyTable(2);
    expect(table.admit('a', 0, 100)).toBe(true);
    expect(table.admit('b', 10, 110)).toBe(true);
    expect(table.admit('c', 20, 120)).toBe(false);
    // A known key is always admitted, and moves to the back (a later expiry).
    expect(table.admit('a', 50, 150)).toBe(true);
    // b expires first now: at 111 it is gone, a is not.
    expect(table.admit('c', 111, 211)).toBe(true);
    expect(table.size).toBe(2);
    expect(table.admit('b', 112, 212)).toBe(false);
    expect(table.admit('b', 151, 251)).toBe(true);
    expect(table.size).toBe(2);
  });

  it('stays at its cap under a flood of distinct keys', () => {
    const table = new KeyTable(1000);
    let admitted = 0;
    for (let i = 0; i < 100_000; i++) if (table.admit(`k${i}`, i, i + 1_000_000)) admitted++;
    expect(admitted).toBe(1000);
    expect(table.size).toBe(1000);
  });
});
