// Field schemas that several configuration sections share: bounded integers and durations, a rate, addresses, host
// names, resource URIs and HTTP methods.
import { isIP } from 'node:net';
import { z } from 'zod';
import { isResourceUri } from '../lib/oauth-syntax.js';

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

export const positiveInt = (max: number) => z.int().min(1).max(max);
/** A duration in milliseconds: the same bounds as any positive integer, named for what it means. */
export const durationMs = positiveInt;

export const rateSchema = z.strictObject({
  /** Requests allowed per window. */
  points: positiveInt(10_000_000),
  /** Window length in seconds. */
  duration_s: positiveInt(86_400),
  /** Seconds a key stays blocked once it exceeds the window (0 = until the window ends). */
  block_s: z.int().min(0).max(86_400).default(0),
});
export type RateConfig = z.infer<typeof rateSchema>;

export const cidr = z.string().refine(
  (value) => {
    const [address, bits, extra] = value.split('/');
    if (extra !== undefined || address === undefined) return false;
    const family = isIP(address);
    if (family === 0) return false;
    if (bits === undefined) return true;
    if (!/^\d{1,3}$/.test(bits)) return false;
    return Number(bits) <= (family === 4 ? 32 : 128);
  },
  { message: 'must be an IP address or CIDR block, e.g. 10.0.0.0/8 or ::1' },
);

export const hostName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9.-]+$|^\[[0-9a-f:.]+\]$/, 'must be a lower-case host name, IPv4 address or [IPv6] literal');

export const resourceUri = z.string().refine(isResourceUri, 'must be an absolute URI without a fragment, e.g. https://api.example.com');
