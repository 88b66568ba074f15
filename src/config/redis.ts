// The `redis` section: where every limiter counts (the pre-auth budget and the route quotas) when several instances must
// count together. Absent (and no GATEHOUSE_REDIS_URL): each instance counts in its own memory.
import { z } from 'zod';
import { durationMs, positiveInt } from './fields.js';

/** redis:// or rediss:// (TLS) URLs (a password may be in it; it is never printed). */
export const REDIS_URL = /^rediss?:\/\/[^\s]+$/;

export const redisSchema = z.strictObject({
  /** The server's URL (GATEHOUSE_REDIS_URL overrides it). */
  url: z.string().regex(REDIS_URL, 'must be a redis:// or rediss:// URL'),
  /** PEM file: the CA the server's certificate must chain to (rediss://). Relative to the config file. */
  ca: z.string().min(1).optional(),
  /** Bounds connecting and every limiter command: a slow Redis costs a request at most this long. */
  timeout_ms: durationMs(10_000).default(250),
  /** Prefix of every key the gateway writes: gateways sharing it share their limits. */
  key_prefix: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits, "_", ".", ":" and "-", at most 64')
    .default('gatehouse'),
  /**
   * How many instances share the limits. While Redis cannot be reached, each one enforces its share (a limit divided by
   * this, rounded up) from its own memory, so together they still admit about the limit.
   */
  instances: positiveInt(1000).default(1),
});
export type RedisConfig = z.infer<typeof redisSchema>;
