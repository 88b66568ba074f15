// The `upstreams` and `routes` sections: one upstream origin with its pool bounds, and one route (match, authenticators,
// authorization, quota, handler) with the checks that need only the route itself.
import { z } from 'zod';
import { SCOPE_TOKEN } from '../lib/oauth-syntax.js';
import { durationMs, hostName, HTTP_METHODS, positiveInt, resourceUri } from './fields.js';

export const upstreamSchema = z.strictObject({
  url: z.url({ protocol: /^https?$/ }).refine((u) => {
    const parsed = new URL(u);
    return parsed.pathname === '/' && parsed.search === '' && parsed.hash === '' && parsed.username === '' && parsed.password === '';
  }, 'must be an origin only (scheme, host, port) without path, query or credentials'),
  /** CA bundle pinned for an https upstream; the system store is not used. */
  ca: z.string().min(1).optional(),
  connections: positiveInt(10_000).default(64),
  /**
   * Requests that may wait for a free upstream connection; beyond connections + this, requests are refused at once with
   * 503 + Retry-After instead of piling up in memory behind a slow upstream.
   */
  max_queued: z.int().min(0).max(1_000_000).default(1024),
  connect_timeout_ms: durationMs(60_000).default(5_000),
  headers_timeout_ms: durationMs(600_000).default(30_000),
  body_timeout_ms: durationMs(3_600_000).default(30_000),
});
export type UpstreamConfig = z.infer<typeof upstreamSchema>;

const routeId = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, 'must be 1-64 of a-z 0-9 _ . - starting alphanumeric');
const pathPrefix = z
  .string()
  .regex(/^\/([A-Za-z0-9._~!$&'()*+,;=:@-]+\/?)*$/, 'must be a canonical path prefix starting with /')
  .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), 'must not contain dot segments');

const authenticatorId = z.enum(['none', 'mtls', 'bearer']);

const scopeToken = z.string().max(128).regex(SCOPE_TOKEN, 'must be an RFC 6749 scope token (printable ASCII, no space, " or \\)');
const scopeList = z.array(scopeToken).min(1).max(64);

const authzSchema = z.strictObject({
  /** `authenticated`: a verified credential is required. `anyone`: the route is public. */
  allow: z.enum(['authenticated', 'anyone']),
  /** Optional exact allow-list of principal subjects. */
  subjects: z.array(z.string().min(1)).min(1).optional(),
  /** Bearer tokens must list this audience in `aud` (default: issuer.default_audience). */
  audience: resourceUri.optional(),
  /** Scopes a bearer token must carry: every one (`all_of`) or at least one (`any_of`). */
  scopes: z.union([z.strictObject({ all_of: scopeList }), z.strictObject({ any_of: scopeList })]).optional(),
});
export type AuthzConfig = z.infer<typeof authzSchema>;

const handlerSchema = z.union([
  z.strictObject({
    proxy: z.strictObject({
      upstream: z.string().min(1),
      /** Remove the matched route prefix before forwarding (`/api/x` → `/x`). */
      strip_prefix: z.boolean().default(false),
      /** Forward the client's Authorization header (off: the upstream trusts the gateway's identity headers). */
      forward_authorization: z.boolean().default(false),
      /** Send the client's Host to the upstream instead of the upstream's own authority. */
      preserve_host: z.boolean().default(false),
    }),
  }),
  z.strictObject({ service: z.enum(['echo']) }),
]);

export const routeSchema = z
  .strictObject({
    id: routeId,
    match: z.strictObject({
      path_prefix: pathPrefix,
      methods: z.array(z.enum(HTTP_METHODS)).min(1),
      host: hostName.optional(),
    }),
    authn: z.array(authenticatorId).min(1),
    authz: authzSchema,
    /** Name of a quota in `quotas`, applied per principal after authorization. */
    quota: z.string().min(1).optional(),
    /** Points a request of this route spends on every window of its quota (default 1). */
    quota_cost: positiveInt(1_000_000).optional(),
    /**
     * While the shared limiter store (Redis) cannot be reached: `degrade` counts this instance's share of the quota in
     * memory (the default; no request fails because of the outage), `deny` refuses with 503 and Retry-After.
     */
    quota_outage: z.enum(['degrade', 'deny']).optional(),
    body_limit_bytes: z
      .int()
      .min(0)
      .max(2 ** 40)
      .optional(),
    handler: handlerSchema,
  })
  .superRefine((route, ctx) => {
    const noneAt = route.authn.indexOf('none');
    if (noneAt !== -1 && noneAt !== route.authn.length - 1) {
      ctx.addIssue({ code: 'custom', path: ['authn'], message: '"none" admits anyone, so it must be the last authenticator' });
    }
    if (new Set(route.authn).size !== route.authn.length) {
      ctx.addIssue({ code: 'custom', path: ['authn'], message: 'authenticators must not repeat' });
    }
    if (route.authz.allow === 'authenticated' && route.authn.length === 1 && route.authn[0] === 'none') {
      ctx.addIssue({ code: 'custom', path: ['authz', 'allow'], message: 'requires a credential but the route only has the "none" authenticator' });
    }
  });
export type RouteConfig = z.infer<typeof routeSchema>;
