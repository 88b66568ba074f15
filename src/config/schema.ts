// The one configuration schema: every key, bound and default lives here; the Config type is inferred from it.
// Unknown keys are errors (a typo must never silently fall back to a weaker default).
import { isIP } from 'node:net';
import { z } from 'zod';
import { isResourceUri, SCOPE_TOKEN } from '../lib/oauth-syntax.js';
import { prefixMatches } from '../lib/path-prefix.js';

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

const positiveInt = (max: number) => z.int().min(1).max(max);
/** A duration in milliseconds: the same bounds as any positive integer, named for what it means. */
const durationMs = positiveInt;

const rateSchema = z.strictObject({
  /** Requests allowed per window. */
  points: positiveInt(10_000_000),
  /** Window length in seconds. */
  duration_s: positiveInt(86_400),
  /** Seconds a key stays blocked once it exceeds the window (0 = until the window ends). */
  block_s: z.int().min(0).max(86_400).default(0),
});
export type RateConfig = z.infer<typeof rateSchema>;

/** Longest burst refill window: RateLimiterMemory keeps a record with a timer, and Node timers stop at 2^31 - 1 ms (~24.8 days). */
export const MAX_BURST_DURATION_S = 864_000;

/**
 * A route quota: any combination of a rate (with an optional burst), a concurrency cap and calendar windows, at least one.
 * The plain `{points, duration_s, block_s}` of earlier versions is a quota with a rate only.
 */
const quotaSchema = z
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

const cidr = z.string().refine(
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

const hostName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9.-]+$|^\[[0-9a-f:.]+\]$/, 'must be a lower-case host name, IPv4 address or [IPv6] literal');

const serverSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: z.int().min(0).max(65_535).default(8443),
  /** Host names (without port) this gateway answers for; empty = any syntactically valid Host. Others get 421. */
  hosts: z.array(hostName).default([]),
  /** Peers whose X-Forwarded-For is believed (a load balancer in front). Empty = trust nobody. */
  trusted_proxies: z.array(cidr).default([]),
});

const tlsSchema = z.strictObject({
  cert: z.string().min(1),
  key: z.string().min(1),
  /** CA bundle that client certificates must chain to; enables (optional) client certificate requests. */
  client_ca: z.string().min(1).optional(),
  /** Create a development CA, server and client certificate when the files are missing (never for production). */
  dev_certificates: z.boolean().default(false),
  /** How often session ticket keys are replaced, seconds. */
  ticket_key_rotation_s: z.int().min(60).max(86_400).default(3600),
});

const http2Schema = z.strictObject({
  max_concurrent_streams: positiveInt(1000).default(100),
  initial_window_size: positiveInt(2 ** 31 - 1).default(65_535),
  max_session_memory_mb: positiveInt(1024).default(10),
  max_header_list_pairs: z.int().min(8).max(1024).default(128),
  max_session_invalid_frames: z.int().min(0).max(100_000).default(1000),
  max_session_rejected_streams: z.int().min(0).max(100_000).default(100),
  max_outstanding_pings: positiveInt(1000).default(10),
  max_settings: positiveInt(1000).default(32),
});

const limitsSchema = z.strictObject({
  max_connections: positiveInt(1_000_000).default(10_000),
  max_connections_per_ip: positiveInt(1_000_000).default(256),
  /** Per-IP limits key IPv6 clients on this prefix (a client usually holds a whole /64). */
  ipv6_prefix_length: z.int().min(32).max(128).default(64),
  /** New TCP connections per IP (a full TLS handshake costs as much as ~30 keep-alive requests). */
  new_connections_per_ip: rateSchema.prefault({ points: 200, duration_s: 10 }),
  handshake_timeout_ms: durationMs(120_000).default(10_000),
  headers_timeout_ms: durationMs(120_000).default(10_000),
  request_timeout_ms: durationMs(3_600_000).default(30_000),
  keep_alive_timeout_ms: durationMs(600_000).default(5_000),
  /** An HTTP/2 session with no frames for this long is closed. */
  idle_timeout_ms: durationMs(3_600_000).default(60_000),
  max_requests_per_socket: z.int().min(0).max(10_000_000).default(10_000),
  max_header_bytes: z.int().min(1024).max(65_536).default(16_384),
  max_headers: z.int().min(8).max(1000).default(100),
  max_uri_bytes: z.int().min(256).max(65_536).default(8_192),
  default_body_limit_bytes: z
    .int()
    .min(0)
    .max(2 ** 40)
    .default(1_048_576),
  /** Per-IP budget checked before any credential work (crypto, argon2). */
  pre_auth_per_ip: rateSchema.prefault({ points: 1000, duration_s: 10 }),
  http2: http2Schema.prefault({}),
});

const upstreamSchema = z.strictObject({
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

const resourceUri = z.string().refine(isResourceUri, 'must be an absolute URI without a fragment, e.g. https://api.example.com');

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

const routeSchema = z
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

const issuerUrl = z.url({ protocol: /^https$/ }).refine((value) => {
  const parsed = new URL(value);
  // RFC 8414 §2: https, no query or fragment; compared byte for byte with `iss`, so it is kept exactly as written. No path
  // either: the endpoints and the metadata document live at this listener's root.
  return !value.includes('?') && !value.includes('#') && parsed.username === '' && parsed.password === '' && parsed.pathname === '/';
}, 'must be an https origin (scheme, host, optional port) without path, query, fragment or credentials');

const issuerSchema = z.strictObject({
  /** The `iss` of every token and the metadata's `issuer`, byte for byte. Default: https://localhost:<listener port>. */
  issuer: issuerUrl.optional(),
  /** The `aud` of tokens requested without `resource` by clients registered without audiences, and of bearer routes without `authz.audience`. Default: the issuer. */
  default_audience: resourceUri.optional(),
  /** Algorithm of newly generated signing keys (first start and `gatehouse keys rotate`). */
  signing_alg: z.enum(['EdDSA', 'ES256']).default('EdDSA'),
  /** Lifetime of issued access tokens. */
  access_token_ttl_s: z.int().min(30).max(3600).default(600),
  /** How long a rotated-in key is published in the JWKS before it signs (verifiers' JWKS caches see it first). */
  key_activation_delay_s: z.int().min(0).max(86_400).default(600),
  /** Leeway for exp / nbf / iat when verifying bearer tokens. */
  clock_tolerance_s: z.int().min(0).max(300).default(30),
  /** Longest bearer token accepted; checked before any decoding or crypto. */
  max_token_bytes: z.int().min(512).max(16_384).default(8192),
  /** Verified-token cache entries (each holds the claims of one token until it expires). */
  verified_token_cache: positiveInt(10_000_000).default(50_000),
  /** How often the gateway re-reads signing keys, revocations and client states written by other processes (CLI, peers). */
  refresh_interval_ms: durationMs(600_000).default(5_000),
  /** Guarding the argon2 work of client authentication (token, introspection and revocation endpoints). */
  client_auth: z
    .strictObject({
      /** Client-authentication attempts per IP, checked before any argon2 work. */
      per_ip: rateSchema.prefault({ points: 30, duration_s: 60 }),
      /** Consecutive failures for one (client id, IP) before that pair is blocked for `failure_block_s`; a success resets. */
      max_consecutive_failures: positiveInt(1000).default(10),
      failure_block_s: positiveInt(86_400).default(3600),
      /** Failures per IP per day before that IP is blocked for a day (slow brute force, spraying over many ids). */
      max_daily_failures_per_ip: positiveInt(100_000).default(100),
      /**
       * Failures for one client id per hour, from any addresses, before the id counts as under attack for an hour: then an
       * address it never authenticated from gets a single try (guessing from rotating IPs is held to one guess per address,
       * and the client itself is never locked out).
       */
      max_hourly_failures_per_client: positiveInt(100_000).default(100),
      /** argon2 verifications running at once (each holds a libuv thread and ~19 MiB); the rest wait in a bounded queue. */
      max_concurrent_hashes: positiveInt(16).default(2),
      max_queued_hashes: z.int().min(0).max(10_000).default(64),
    })
    .prefault({}),
});
export type IssuerConfig = z.infer<typeof issuerSchema>;
/** The issuer settings of a config without an `issuer` section: what the admin commands assume then. */
export const ISSUER_DEFAULTS: Readonly<IssuerConfig> = Object.freeze(issuerSchema.parse({}));

/** postgres:// or postgresql:// URLs (the password may be in it; it is never printed). */
export const POSTGRES_URL = /^postgres(ql)?:\/\/[^\s]+$/;

const storeSchema = z
  .strictObject({
    /** Default: `postgres` when store.postgres is set, else `sqlite`. */
    backend: z.enum(['sqlite', 'postgres']).optional(),
    /** SQLite database file; relative to data_dir. */
    path: z.string().min(1).default('gatehouse.db'),
    /** PostgreSQL: the server's URL (GATEHOUSE_DATABASE_URL overrides it). Several gateways can share it. */
    postgres: z.string().regex(POSTGRES_URL, 'must be a postgres:// URL').optional(),
    /** The schema holding Gatehouse's tables; created with them when missing. */
    postgres_schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'lower-case letters, digits and _, at most 63')
      .default('gatehouse'),
    /** PEM file: the CA the server's certificate must chain to; TLS is then required. Relative to the config file. */
    postgres_ca: z.string().min(1).optional(),
    postgres_pool_max: z.int().min(1).max(100).default(10),
    /** Bounds connecting and every statement: a store that hangs answers "unavailable" instead of holding requests. */
    postgres_timeout_ms: durationMs(60_000).default(5000),
  })
  .superRefine((store, ctx) => {
    if (store.backend === 'postgres' && store.postgres === undefined)
      ctx.addIssue({ code: 'custom', path: ['postgres'], message: 'required with backend postgres' });
    if (store.backend === 'sqlite' && store.postgres !== undefined)
      ctx.addIssue({ code: 'custom', path: ['backend'], message: 'sqlite, but store.postgres is set' });
  })
  .transform((store) => ({ ...store, backend: store.backend ?? (store.postgres !== undefined ? ('postgres' as const) : ('sqlite' as const)) }));

/** Paths of the issuer's built-in endpoints; no route may claim them. */
export const ISSUER_PATHS = {
  token: '/oauth2/token',
  introspect: '/oauth2/introspect',
  revoke: '/oauth2/revoke',
  metadata: '/.well-known/oauth-authorization-server',
  jwks: '/.well-known/jwks.json',
} as const;

export const configSchema = z
  .strictObject({
    server: serverSchema.prefault({}),
    tls: tlsSchema,
    limits: limitsSchema.prefault({}),
    quotas: z.record(z.string().regex(/^[a-z0-9_-]{1,64}$/), quotaSchema).default({}),
    upstreams: z.record(z.string().regex(/^[a-z0-9_-]{1,64}$/), upstreamSchema).default({}),
    routes: z.array(routeSchema).min(1),
    identity_headers: z
      .strictObject({
        /** Prefix of the headers the gateway sets for the upstream; client-sent headers with it are always removed. */
        prefix: z
          .string()
          .regex(/^x-[a-z0-9-]+-$/, 'must be lower-case, start with x- and end with -')
          .default('x-authenticated-'),
      })
      .prefault({}),
    audit: z
      .strictObject({
        dir: z.string().min(1).default('audit'),
        /**
         * The chain this gateway writes, named in its segment files. Default: the host name. Each gateway writing into
         * one directory needs its own (a second one with the same id refuses to start).
         */
        instance: z
          .string()
          .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'letters, digits, "_" and "-", at most 64, starting with a letter or digit')
          .optional(),
        /**
         * When written records are forced to disk: `always` (before the request they admit goes on: survives power loss),
         * `interval` (every fsync_interval_ms: a process crash loses nothing, a power loss at most that interval), `off`
         * (the OS decides: a process crash loses nothing).
         */
        fsync: z.enum(['always', 'interval', 'off']).default('interval'),
        fsync_interval_ms: durationMs(60_000).default(1000),
        /**
         * When records cannot be written: `fail-closed` answers admitted requests 503 and fails readiness (refusals are
         * still enforced); `fail-open` serves on, counting and alerting the records it drops.
         */
        on_failure: z.enum(['fail-closed', 'fail-open']).default('fail-closed'),
        segment_max_bytes: z
          .int()
          .min(4096)
          .max(1024 ** 3)
          .default(64 * 1024 * 1024),
        segment_max_age_s: z
          .int()
          .min(1)
          .max(31 * 86_400)
          .default(86_400),
        /** Records waiting for the disk beyond this are refused (fail-closed) or dropped (fail-open). */
        max_buffered_bytes: z
          .int()
          .min(65_536)
          .max(1024 ** 3)
          .default(8 * 1024 * 1024),
        /**
         * LOG-08: per window, the first `after` refusals of one source (client address, claimed subject, code, route) are
         * recorded one by one; the rest are counted exactly into one refusals_aggregated record when the window ends. Past
         * `max_sources` sources in a window, newcomers share one bucket per code and route. A window therefore writes at
         * most max_sources × after individual refusals. Allows are never aggregated.
         */
        aggregate_refusals: z
          .strictObject({
            after: z.int().min(1).max(1_000_000_000).default(20),
            window_s: z.int().min(1).max(3600).default(10),
            max_sources: z.int().min(1).max(1_000_000).default(500),
          })
          .prefault({}),
        /** A checkpoint signed with the audit key after this many records, or this many seconds, whichever comes first. */
        checkpoint_every_records: z.int().min(1).max(10_000_000).default(1000),
        checkpoint_interval_s: z.int().min(1).max(86_400).default(60),
        /**
         * A directory outside `dir` (another volume, a mount shipped elsewhere) that receives each checkpoint as it is
         * written, for `audit verify --checkpoints`. Relative to data_dir.
         */
        checkpoint_export_dir: z.string().min(1).optional(),
        /**
         * An HTTPS collector that receives each checkpoint (POST, application/x-ndjson, retried with backoff until it
         * answers 2xx), its certificate checked against checkpoint_export_ca only (the system roots are not trusted).
         */
        checkpoint_export_url: z
          .url({ protocol: /^https$/, error: 'must be an https:// URL' })
          .refine((value) => {
            const url = new URL(value);
            return url.username === '' && url.password === '';
          }, 'must not carry a user name or password (use checkpoint_export_client_cert for mTLS)')
          .optional(),
        /** PEM file: the CA the collector's certificate must chain to. Relative to the config file. */
        checkpoint_export_ca: z.string().min(1).optional(),
        /** PEM certificate and key the gateway presents to the collector (mTLS); both or neither. */
        checkpoint_export_client_cert: z.string().min(1).optional(),
        checkpoint_export_client_key: z.string().min(1).optional(),
        /**
         * Retention: closed segments of a chain whose records are all older than max_age_days, or the oldest while the
         * chain is over max_total_bytes, are removed after a signed segments_pruned record names them (verify accepts
         * it; a hand deletion is still a missing segment). Absent: the log is kept forever.
         */
        retention: z
          .strictObject({
            max_age_days: z.int().min(1).max(36_500).optional(),
            max_total_bytes: z
              .int()
              .min(1024 * 1024)
              .optional(),
          })
          .optional(),
      })
      .superRefine((audit, ctx) => {
        if (audit.checkpoint_export_url !== undefined && audit.checkpoint_export_ca === undefined) {
          ctx.addIssue({
            code: 'custom',
            path: ['checkpoint_export_ca'],
            message: "required with checkpoint_export_url: the CA that signs the collector's certificate",
          });
        }
        if (
          audit.checkpoint_export_url === undefined &&
          (audit.checkpoint_export_ca ?? audit.checkpoint_export_client_cert ?? audit.checkpoint_export_client_key) !== undefined
        ) {
          ctx.addIssue({
            code: 'custom',
            path: ['checkpoint_export_url'],
            message: 'checkpoint_export_ca and the client certificate need checkpoint_export_url',
          });
        }
        if ((audit.checkpoint_export_client_cert === undefined) !== (audit.checkpoint_export_client_key === undefined)) {
          ctx.addIssue({
            code: 'custom',
            path: ['checkpoint_export_client_key'],
            message: 'checkpoint_export_client_cert and checkpoint_export_client_key go together',
          });
        }
      })
      .prefault({}),
    /** The OAuth 2 authorization server (token, JWKS, metadata, introspection, revocation). Absent = off. */
    issuer: issuerSchema.optional(),
    /** Where clients, signing keys and revocations live (used by the issuer and the `clients`/`keys` commands). */
    store: storeSchema.prefault({}),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug']).default('info'),
        /** One line per request with status and latency. */
        access: z.boolean().default(true),
      })
      .prefault({}),
    shutdown: z
      .strictObject({
        /**
         * On SIGTERM, /readyz answers 503 for this long while everything else is still served, so a load balancer stops
         * sending new traffic before the listener closes (e.g. 5000 behind Kubernetes). 0 = close at once.
         */
        readiness_grace_ms: z.int().min(0).max(120_000).default(0),
        drain_timeout_ms: durationMs(600_000).default(10_000),
      })
      .prefault({}),
    /** Directory for runtime state (audit log, later stores); relative to the config file. */
    data_dir: z.string().min(1).default('data'),
  })
  .superRefine((config, ctx) => {
    const ids = new Set<string>();
    config.routes.forEach((route, index) => {
      if (ids.has(route.id)) ctx.addIssue({ code: 'custom', path: ['routes', index, 'id'], message: `duplicate route id "${route.id}"` });
      ids.add(route.id);
      if (route.quota !== undefined && !(route.quota in config.quotas)) {
        ctx.addIssue({ code: 'custom', path: ['routes', index, 'quota'], message: `unknown quota "${route.quota}"` });
      }
      if (route.quota_cost !== undefined) {
        const quota = route.quota === undefined ? undefined : config.quotas[route.quota];
        if (route.quota === undefined) {
          ctx.addIssue({ code: 'custom', path: ['routes', index, 'quota_cost'], message: 'quota_cost needs quota' });
        } else if (quota !== undefined) {
          const windows = [
            ['points', quota.points],
            ['per_day', quota.per_day],
            ['per_month', quota.per_month],
          ] as const;
          if (windows.every(([, points]) => points === undefined)) {
            ctx.addIssue({
              code: 'custom',
              path: ['routes', index, 'quota_cost'],
              message: `quota_cost is spent on rate and calendar windows, and quota "${route.quota}" has none (only concurrent)`,
            });
          }
          for (const [key, points] of windows) {
            if (points !== undefined && route.quota_cost > points) {
              ctx.addIssue({
                code: 'custom',
                path: ['routes', index, 'quota_cost'],
                message: `${route.quota_cost} exceeds ${key} ${points} of quota "${route.quota}": no request of this route could ever be admitted`,
              });
            }
          }
        }
      }
      if ('proxy' in route.handler && !(route.handler.proxy.upstream in config.upstreams)) {
        ctx.addIssue({
          code: 'custom',
          path: ['routes', index, 'handler', 'proxy', 'upstream'],
          message: `unknown upstream "${route.handler.proxy.upstream}"`,
        });
      }
      if (route.authn.includes('mtls') && config.tls.client_ca === undefined) {
        ctx.addIssue({ code: 'custom', path: ['routes', index, 'authn'], message: '"mtls" needs tls.client_ca' });
      }
      if (route.authn.includes('bearer') && config.issuer === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['routes', index, 'authn'],
          message: '"bearer" verifies tokens of this gateway\'s own issuer: configure `issuer`',
        });
      }
      if ((route.authz.scopes !== undefined || route.authz.audience !== undefined) && !route.authn.includes('bearer')) {
        ctx.addIssue({ code: 'custom', path: ['routes', index, 'authz'], message: 'scopes and audience apply to bearer tokens: add "bearer" to authn' });
      }
      if (route.authz.scopes !== undefined && route.authz.allow === 'anyone') {
        ctx.addIssue({ code: 'custom', path: ['routes', index, 'authz', 'scopes'], message: 'a route open to anyone cannot require scopes' });
      }
      if (config.issuer !== undefined) {
        for (const path of Object.values(ISSUER_PATHS)) {
          // A shorter prefix (`/`, `/oauth2`) is fine: the router prefers the issuer's longer one. The same path is not.
          if (prefixMatches(path, route.match.path_prefix)) {
            ctx.addIssue({ code: 'custom', path: ['routes', index, 'match', 'path_prefix'], message: `takes the issuer endpoint ${path}` });
            break;
          }
        }
      }
    });
    for (const [name, upstream] of Object.entries(config.upstreams)) {
      // Upstream certificates are verified against a pinned CA only; without one no https upstream could ever connect.
      if (upstream.url.startsWith('https:') && upstream.ca === undefined) {
        ctx.addIssue({ code: 'custom', path: ['upstreams', name, 'ca'], message: 'an https upstream needs a pinned CA bundle' });
      }
    }
    const matchKeys = new Set<string>();
    config.routes.forEach((route, index) => {
      const key = `${route.match.host ?? '*'} ${route.match.path_prefix}`;
      if (matchKeys.has(key)) {
        ctx.addIssue({ code: 'custom', path: ['routes', index, 'match'], message: `another route already matches ${key}` });
      }
      matchKeys.add(key);
    });
  });

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.infer<typeof configSchema>;
