// The `admin` section: the admin listener (Prometheus /metrics, later the console and the admin API), separate from the
// public one. Absent = off. Every admin endpoint needs an admin credential: a client certificate whose identity is one of
// `subjects`, or an access token of this gateway's issuer carrying the scope `gatehouse:admin`.
import { z } from 'zod';
import { cidr } from './fields.js';

/** The scope an access token must carry to be an admin credential. */
export const ADMIN_SCOPE = 'gatehouse:admin';

export const adminSchema = z.strictObject({
  /** Loopback by default: the admin listener is for operators and scrapers, not for the clients of the gateway. */
  host: z.string().min(1).default('127.0.0.1'),
  /** Its own port (0 = any free port; `serve --admin-port` overrides it). */
  port: z.int().min(0).max(65_535).default(8444),
  /** Client-certificate identities (URI or DNS SAN, as the mtls authenticator reads them) of the administrators. */
  subjects: z.array(z.string().min(1)).default([]),
  /** Further certificate identities that may read /metrics only (a Prometheus scraper). */
  metrics_subjects: z.array(z.string().min(1)).default([]),
  /**
   * Addresses (CIDR or single) that may read /metrics without a credential: a scraper on a network the operator trusts.
   * Nothing else on the admin listener is opened by it. Empty = none.
   */
  metrics_networks: z.array(cidr).default([]),
});
export type AdminConfig = z.infer<typeof adminSchema>;
