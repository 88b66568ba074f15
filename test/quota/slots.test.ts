// Concurrency slots as leases in Redis (real Redis, a key prefix of this run's own): shared between instances, renewed
// while held (they outlive many lease periods), and a lapsed lease (an instance that died) frees its slot.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisConnection } from '../../src/lib/redis.js';
import { RedisSlots, type SlotLease } from '../../src/quota/slots.js';

const REDIS_URL = process.env['GATEHOUSE_TEST_REDIS_URL'] || undefined;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

if (REDIS_URL === undefined) {
  describe.skip('concurrency leases in Redis: SKIPPED (set GATEHOUSE_TEST_REDIS_URL=redis://127.0.0.1:6379)', () => {
    it('needs a Redis server', () => undefined);
  });
} else {
  describe('concurrency leases in Redis', () => {
    const prefix = `gh-test-slots-${randomBytes(6).toString('hex')}`;
    let redis: RedisConnection;
    const instance = (max: number, leaseMs = 300): RedisSlots => new RedisSlots(redis, prefix, max, undefined, () => new Error('unavailable'), leaseMs);

    beforeAll(async () => {
      redis = new RedisConnection({ url: REDIS_URL, timeoutMs: 1000 });
      expect(await redis.waitReady(5000)).toBe(true);
    });
    afterAll(async () => {
      const keys = await redis.client.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.client.del(...keys);
      await redis.close();
    });

    it("two instances share a key's slots; held leases are renewed past many lease periods; a release frees one for the other", async () => {
      const a = instance(2);
      const b = instance(2);
      const held = [(await a.acquire('k1')) as SlotLease, (await a.acquire('k1')) as SlotLease];
      expect(held.map((lease) => lease?.remaining)).toEqual([1, 0]);
      expect(await b.acquire('k1')).toBeUndefined();
      // Five lease periods: without renewal the leases would have lapsed and B would get a slot.
      await sleep(1500);
      expect(await b.acquire('k1')).toBeUndefined();
      expect(a.held).toBe(2);
      held[0]?.release();
      held[0]?.release();
      expect(a.held).toBe(1);
      const taken = await b.acquire('k1');
      expect(taken?.remaining).toBe(0);
      taken?.release();
      held[1]?.release();
      expect(await redis.client.zcard(`${prefix}:k1`)).toBe(0);
    });

    it('a lease nobody renews (its instance died) lapses, and its slot is taken again', async () => {
      // A lease of a vanished instance: in the set, expired a moment ago by Redis's clock.
      const [seconds] = await redis.client.time();
      await redis.client.zadd(`${prefix}:k2`, Number(seconds) * 1000 - 1000, 'ghost');
      const lease = await instance(1).acquire('k2');
      expect(lease?.remaining).toBe(0);
      expect(await redis.client.zscore(`${prefix}:k2`, 'ghost')).toBeNull();
      lease?.release();
      // Every key the slots write expires.
      const fresh = await instance(1, 5000).acquire('k3');
      expect(await redis.client.pttl(`${prefix}:k3`)).toBeGreaterThan(0);
      fresh?.release();
    });
  });
}
