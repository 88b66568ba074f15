// The workers' limits counted by the primary (quota/cluster.ts), over an in-process channel that carries each message as
// JSON on a later turn, as the cluster's IPC does, and that can stall or close: two workers share every kind of limiter;
// an unanswered call follows the outage policy (degrade: the worker's share; deny: LimiterUnavailable); a slot granted after
// the worker stopped waiting is handed back; a worker that is gone frees its slots. The real IPC: test/cli/workers.test.ts.
import { RateLimiterRes } from 'rate-limiter-flexible';
import { describe, expect, it } from 'vitest';
import { LimiterUnavailable } from '../../src/quota/backend.js';
import { calendarPeriod } from '../../src/quota/calendar.js';
import { ClusterLimiterBackend, ClusterLimiterHost, type LimiterChannel, type LimiterMessage } from '../../src/quota/cluster.js';

/** Both ends of one worker's channel. `stalled` holds messages to the worker back (a primary that does not answer). */
function pipe(): { worker: LimiterChannel; primary: LimiterChannel; stalled: boolean; held: string[]; close(): void; flush(): void } {
  const listeners = { worker: [] as Array<(m: unknown) => void>, primary: [] as Array<(m: unknown) => void> };
  const closers: Array<() => void> = [];
  let open = true;
  const deliver = (to: 'worker' | 'primary', text: string): void => {
    setImmediate(() => {
      for (const listener of listeners[to]) listener(JSON.parse(text));
    });
  };
  const channel = {
    stalled: false,
    held: [] as string[],
    worker: {
      send: (message: LimiterMessage) => {
        if (open) deliver('primary', JSON.stringify(message));
        return open;
      },
      onMessage: (listener: (m: unknown) => void) => listeners.worker.push(listener),
      onClose: (listener: () => void) => closers.push(listener),
    },
    primary: {
      send: (message: LimiterMessage) => {
        if (!open) return false;
        if (channel.stalled) channel.held.push(JSON.stringify(message));
        else deliver('worker', JSON.stringify(message));
        return true;
      },
      onMessage: (listener: (m: unknown) => void) => listeners.primary.push(listener),
      onClose: (listener: () => void) => closers.push(listener),
    },
    close: () => {
      open = false;
      for (const closer of closers) closer();
    },
    /** Lets the held answers through (late). */
    flush: () => {
      for (const text of channel.held.splice(0)) deliver('worker', text);
    },
  };
  return channel;
}

/** A host and `n` workers on it, each with its backend. */
function cluster(n: number, timeoutMs = 200) {
  const host = new ClusterLimiterHost();
  const workers = Array.from({ length: n }, () => {
    const channel = pipe();
    const forget = host.serve(channel.primary);
    return { channel, forget, backend: new ClusterLimiterBackend(channel.worker, { workers: n, timeoutMs }) };
  });
  return { host, workers };
}

const outcome = (promise: Promise<unknown>): Promise<string> =>
  promise.then(
    () => 'ok',
    (error: unknown) => (error instanceof RateLimiterRes ? 'limited' : error instanceof LimiterUnavailable ? 'unavailable' : `error ${String(error)}`),
  );

describe('limits counted by the primary for every worker', () => {
  it('two workers share a rate window, a calendar counter and a failure counter', async () => {
    const { workers } = cluster(2);
    const [a, b] = workers.map((w) => w.backend) as [ClusterLimiterBackend, ClusterLimiterBackend];
    const windows = [a, b].map((backend) => backend.rate({ keyPrefix: 'r', points: 3, durationS: 60 }, 'deny'));
    const results = [];
    for (let i = 0; i < 4; i++) for (const window of windows) results.push(await outcome(window.consume('k')));
    expect(results).toEqual(['ok', 'ok', 'ok', 'limited', 'limited', 'limited', 'limited', 'limited']);
    // A different key counts on its own.
    expect(await outcome(windows[0]!.consume('other'))).toBe('ok');

    const period = calendarPeriod('day', Date.UTC(2026, 11, 7, 12));
    const days = [a, b].map((backend) => backend.calendar({ keyPrefix: 'd', points: 2 }, 'deny'));
    expect(await outcome(days[0]!.consume('k', 1, period))).toBe('ok');
    expect(await outcome(days[1]!.consume('k', 1, period))).toBe('ok');
    expect(await outcome(days[0]!.consume('k', 1, period))).toBe('limited');
    // The next day starts from zero.
    expect(await outcome(days[1]!.consume('k', 1, calendarPeriod('day', Date.UTC(2026, 11, 8, 1))))).toBe('ok');

    const counters = [a, b].map((backend) => backend.counter({ keyPrefix: 'c', points: 5, durationS: 60 }));
    await counters[0]!.consume('ip', 2);
    expect((await counters[1]!.get('ip'))?.consumedPoints).toBe(2);
    await counters[1]!.block('ip', 30);
    expect(await outcome(counters[0]!.consume('ip'))).toBe('limited');
    expect(await counters[0]!.delete('ip')).toBe(true);
    expect(await counters[1]!.get('ip')).toBeNull();
  });

  it('slots are shared; a worker that is gone frees the ones it held', async () => {
    const { host, workers } = cluster(2);
    const [a, b] = workers.map((w) => w.backend.slots({ keyPrefix: 's', max: 2 }, 'deny'));
    const first = await a!.acquire('k');
    expect(first?.remaining).toBe(1);
    expect((await b!.acquire('k'))?.remaining).toBe(0);
    expect(await a!.acquire('k')).toBeUndefined();
    first?.release();
    const again = await b!.acquire('k');
    expect(again).toBeDefined();
    expect(host.heldSlots).toBe(2);
    // Worker B dies holding two slots: the primary frees them.
    workers[1]!.forget();
    expect(host.heldSlots).toBe(0);
    expect((await a!.acquire('k'))?.remaining).toBe(1);
  });

  it('an unanswered call follows the outage policy: deny refuses, degrade counts this worker share in memory', async () => {
    const { workers } = cluster(2, 100);
    const [w] = workers;
    w!.channel.stalled = true;
    const deny = w!.backend.rate({ keyPrefix: 'deny', points: 10, durationS: 60 }, 'deny');
    expect(await outcome(deny.consume('k'))).toBe('unavailable');
    // degrade: points 10 over 2 workers = 5 for this one while the primary does not answer.
    const degrade = w!.backend.rate({ keyPrefix: 'degrade', points: 10, durationS: 60 }, 'degrade');
    const results = await Promise.all(Array.from({ length: 7 }, () => outcome(degrade.consume('k'))));
    expect(results.filter((r) => r === 'ok')).toHaveLength(5);
    expect(results.filter((r) => r === 'limited')).toHaveLength(2);
    const slots = w!.backend.slots({ keyPrefix: 'deny-slots', max: 2 }, 'deny');
    expect(await outcome(Promise.resolve(slots.acquire('k')))).toBe('unavailable');
  });

  it('reports the primary silent once when calls go unanswered, and back (with how long) when it answers again', async () => {
    const host = new ClusterLimiterHost();
    const channel = pipe();
    host.serve(channel.primary);
    const states: Array<[boolean, number]> = [];
    const backend = new ClusterLimiterBackend(channel.worker, { workers: 2, timeoutMs: 50, onPrimaryState: (answering, ms) => states.push([answering, ms]) });
    const window = backend.rate({ keyPrefix: 'state', points: 10, durationS: 60 }, 'degrade');
    expect(await outcome(window.consume('k'))).toBe('ok');
    expect(states).toEqual([]);
    channel.stalled = true;
    expect(await outcome(window.consume('k'))).toBe('ok');
    expect(await outcome(window.consume('k'))).toBe('ok');
    expect(states).toEqual([[false, 0]]);
    channel.stalled = false;
    channel.flush();
    await outcome(window.consume('k'));
    expect(states).toHaveLength(2);
    expect(states[1]?.[0]).toBe(true);
    expect(states[1]?.[1]).toBeGreaterThanOrEqual(50);
  });

  it('a slot granted after the worker stopped waiting is handed back to the primary', async () => {
    const { host, workers } = cluster(1, 100);
    const [w] = workers;
    const slots = w!.backend.slots({ keyPrefix: 'late', max: 1 }, 'degrade');
    w!.channel.stalled = true;
    // The primary grants it, the answer comes too late: the worker went on with its own share.
    const lease = await slots.acquire('k');
    expect(lease).toBeDefined();
    expect(host.heldSlots).toBe(1);
    w!.channel.stalled = false;
    w!.channel.flush();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(host.heldSlots).toBe(0);
    lease?.release();
  });

  it('a closed channel fails every call at once', async () => {
    const { workers } = cluster(1, 10_000);
    const [w] = workers;
    const window = w!.backend.rate({ keyPrefix: 'closed', points: 1, durationS: 60 }, 'deny');
    w!.channel.stalled = true;
    const pending = outcome(window.consume('k'));
    w!.channel.close();
    expect(await pending).toBe('unavailable');
    expect(await outcome(window.consume('k'))).toBe('unavailable');
  });
});
