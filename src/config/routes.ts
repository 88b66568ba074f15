// The `upstreams` and `routes` sections: an upstream (its targets, balancing, passive health and pool bounds), and one route (match, authenticators,
// authorization, quota, handler) with the checks that need only the route itself.
import { z } from 'zod';
import { SCOPE_TOKEN } from '../lib/oauth-syntax.js';
import { durationMs, hostName, HTTP_METHODS, positiveInt, resourceUri } from './fields.js';

/** The characters a base path segment may hold: RFC 3986 pchar without percent-encoding (so no encoded `/`, `\\` or NUL). */
const BASE_PATH = /^(\/[A-Za-z0-9._~!$&'()*+,;=:@-]+)*\/?$/;

/**
 * A target: scheme, host, port and an optional base path whose text is already canonical (nothing in it is normalized away:
 * no dot segments, no `//`, no percent-encoding), without query, fragment or credentials.
 */
const targetUrl = z.url({ protocol: /^https?$/ }).refine((u) => {
  const parsed = new URL(u);
  if (parsed.search !== '' || parsed.hash !== '' || parsed.username !== '' || parsed.password !== '') return false;
  // The path as written must be the path as parsed: nothing normalized away (`.`, `..`, `\\`, a stray `?` or `#`).
  const afterScheme = u.slice(u.indexOf('//') + 2);
  const slash = afterScheme.indexOf('/');
  if ((slash === -1 ? '/' : afterScheme.slice(slash)) !== parsed.pathname) return false;
  return BASE_PATH.test(parsed.pathname) && !parsed.pathname.split('/').some((segment) => segment === '.' || segment === '..');
}, 'must be scheme, host, port and an optional base path in canonical form (no dot segments, "//" or %-escapes), without query, fragment or credentials');

/** The path every request to the upstream is sent under: '' or `/api/v2` (no trailing slash). */
function basePath(url: string): string {
  return new URL(url).pathname.replace(/\/$/, '');
}

const upstreamInput = z.strictObject({
  /** One target (an origin, optionally with a base path). Exactly one of `url` and `targets`. */
  url: targetUrl.optional(),
  /** Several instances of one service, each with a relative weight; every one has the same scheme and base path. */
  targets: z
    .array(z.strictObject({ url: targetUrl, weight: z.int().min(1).max(1000).default(1) }))
    .min(1)
    .max(64)
    .optional(),
  /**
   * Which target gets a request: `round_robin` (weighted, smooth), `least_outstanding` (fewest requests in flight per
   * weight) or `principal_hash` (the same authenticated principal to the same target while the set of healthy targets
   * stays the same; anonymous requests go round robin). A client-supplied header never chooses.
   */
  balance: z.enum(['round_robin', 'least_outstanding', 'principal_hash']).default('round_robin'),
  /** Passive health: a target failing this many requests in a row (no connection, timeout, 502/503/504) is taken out for a while. */
  passive_health: z
    .strictObject({
      consecutive_failures: positiveInt(1000).default(5),
      /**
       * The circuit breaker: a target that failed this share of its requests within window_ms (at least min_requests of
       * them) is taken out like one that failed consecutive_failures in a row. 1 = only all of them.
       */
      failure_rate: z.number().gt(0).max(1).default(0.5),
      window_ms: z.int().min(1000).max(600_000).default(10_000),
      min_requests: positiveInt(1_000_000).default(20),
      /** The first ejection; each following one without a success in between lasts twice as long, up to max_ejection_ms. */
      ejection_ms: durationMs(600_000).default(10_000),
      max_ejection_ms: durationMs(3_600_000).default(300_000),
    })
    .prefault({}),
  /**
   * Retries on another target (only of requests without a body: one whose target could not be connected to, or an
   * idempotent one that got no response headers in time) spend a token; every request earns `ratio` of one, up to
   * `burst` saved. So retries stay a fraction of the traffic and cannot multiply an outage.
   */
  retry_budget: z
    .strictObject({
      ratio: z.number().min(0).max(1).default(0.2),
      burst: z.int().min(0).max(10_000).default(10),
    })
    .prefault({}),
  /**
   * Active health: every interval each target is asked for `path`; `unhealthy_after` failed checks in a row take it out,
   * `healthy_after` good ones put it back (also out of a passive ejection). `false` turns it off.
   */
  health: z
    .union([
      z.literal(false),
      z.strictObject({
        path: z
          .string()
          .regex(BASE_PATH, 'must be a canonical absolute path')
          .refine((p) => p.startsWith('/') && !p.split('/').some((s) => s === '.' || s === '..'), 'must be a canonical absolute path')
          .default('/'),
        interval_ms: z.int().min(100).max(3_600_000).default(10_000),
        timeout_ms: durationMs(60_000).default(2_000),
        healthy_after: positiveInt(100).default(2),
        unhealthy_after: positiveInt(100).default(3),
        /** Statuses that count as healthy; absent = any answer below 500 (the target is up and serving). */
        expect_status: z.array(z.int().min(100).max(599)).min(1).max(100).optional(),
      }),
    ])
    .prefault({}),
  /** How often targets given by host name are resolved again; each address is a target of its own. */
  dns_refresh_ms: z.int().min(1000).max(86_400_000).default(30_000),
  /** CA bundle pinned for an https upstream; the system store is not used. */
  ca: z.string().min(1).optional(),
  /** Connections per target. */
  connections: positiveInt(10_000).default(64),
  /**
   * Requests of the whole upstream that may wait for a free connection; beyond (targets × connections) + this, requests
   * are refused at once with 503 + Retry-After instead of piling up in memory behind slow targets.
   */
  max_queued: z.int().min(0).max(1_000_000).default(1024),
  connect_timeout_ms: durationMs(60_000).default(5_000),
  headers_timeout_ms: durationMs(600_000).default(30_000),
  body_timeout_ms: durationMs(3_600_000).default(30_000),
});

export const upstreamSchema = upstreamInput
  .superRefine((upstream, ctx) => {
    const urls = upstream.targets?.map((target) => target.url) ?? (upstream.url !== undefined ? [upstream.url] : []);
    if ((upstream.url === undefined) === (upstream.targets === undefined)) {
      ctx.addIssue({ code: 'custom', path: [], message: 'give exactly one of `url` and `targets`' });
      return;
    }
    // A target that is not a valid URL is reported on its own; the checks across targets need every one valid.
    if (urls.length === 0 || !urls.every((url) => typeof url === 'string' && URL.canParse(url))) return;
    const first = urls[0] as string;
    urls.forEach((url, index) => {
      const path = upstream.targets !== undefined ? ['targets', index, 'url'] : ['url'];
      if (new URL(url).protocol !== new URL(first).protocol || basePath(url) !== basePath(first)) {
        ctx.addIssue({ code: 'custom', path, message: 'every target of an upstream has the same scheme and base path' });
      }
      if (urls.findIndex((other) => new URL(other).origin === new URL(url).origin) !== index) {
        ctx.addIssue({ code: 'custom', path, message: 'the same origin twice' });
      }
    });
    // Upstream certificates are verified against a pinned CA only; without one no https upstream could ever connect.
    if (new URL(first).protocol === 'https:' && upstream.ca === undefined) {
      ctx.addIssue({ code: 'custom', path: ['ca'], message: 'an https upstream needs a pinned CA bundle' });
    }
    if (upstream.health !== false && upstream.health.timeout_ms >= upstream.health.interval_ms) {
      ctx.addIssue({ code: 'custom', path: ['health', 'timeout_ms'], message: 'must be shorter than interval_ms' });
    }
    if (upstream.passive_health.max_ejection_ms < upstream.passive_health.ejection_ms) {
      ctx.addIssue({ code: 'custom', path: ['passive_health', 'max_ejection_ms'], message: 'must be at least ejection_ms' });
    }
  })
  .transform(({ url, targets, ...rest }) => {
    const list = targets ?? [{ url: url as string, weight: 1 }];
    return {
      ...rest,
      /** Each target's origin and weight. */
      targets: list.map((target) => ({ origin: new URL(target.url).origin, weight: target.weight })),
      /** '' or `/api/v2`: joined before every request's canonical path. */
      base_path: basePath((list[0] as { url: string }).url),
    };
  });
export type UpstreamConfig = z.infer<typeof upstreamSchema>;

const routeId = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, 'must be 1-64 of a-z 0-9 _ . - starting alphanumeric');
const pathPrefix = z
  .string()
  .regex(/^\/([A-Za-z0-9._~!$&'()*+,;=:@-]+\/?)*$/, 'must be a canonical path prefix starting with /')
  .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), 'must not contain dot segments');

const authenticatorId = z.enum(['none', 'mtls', 'bearer', 'dpop']);

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
  /**
   * Only sender-constrained tokens: DPoP-bound (RFC 9449) or certificate-bound (RFC 8705) on the certificate of this
   * connection. A plain bearer token, which works for whoever holds it, is refused.
   */
  require_sender_constraint: z.boolean().default(false),
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
