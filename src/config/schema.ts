// The one configuration schema, assembled from its sections (one file each), and the checks that span sections: a route's
// quota, upstream and issuer endpoints must exist or stay free. Every key, bound and default lives in these files; the
// Config type is inferred from them. Unknown keys are errors (a typo must never silently fall back to a weaker default).
import { z } from 'zod';
import { prefixMatches } from '../lib/path-prefix.js';
import { adminSchema } from './admin.js';
import { auditSchema } from './audit.js';
import { durationMs } from './fields.js';
import { limitsSchema, serverSchema, tlsSchema } from './edge.js';
import { ISSUER_PATHS, issuerSchema } from './issuer.js';
import { quotaSchema } from './quotas.js';
import { redisSchema } from './redis.js';
import { routeSchema, upstreamSchema } from './routes.js';
import { storeSchema } from './store.js';

const sectionsSchema = z.strictObject({
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
  audit: auditSchema.prefault({}),
  /** The OAuth 2 authorization server (token, JWKS, metadata, introspection, revocation). Absent = off. */
  issuer: issuerSchema.optional(),
  /** Where clients, signing keys and revocations live (used by the issuer and the `clients`/`keys` commands). */
  store: storeSchema.prefault({}),
  /** Where the limiters count when instances share their limits. Absent = each instance in its own memory. */
  redis: redisSchema.optional(),
  /** The admin listener (Prometheus metrics). Absent = off. */
  admin: adminSchema.optional(),
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
});

export const configSchema = sectionsSchema.superRefine(checkAcrossSections);

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.infer<typeof configSchema>;

/** What no single section can check: references between sections, and route matches that collide. */
function checkAcrossSections(config: z.infer<typeof sectionsSchema>, ctx: z.RefinementCtx): void {
  if (config.admin !== undefined) {
    const certificates = config.admin.subjects.length + config.admin.metrics_subjects.length > 0;
    if (certificates && config.tls.client_ca === undefined && !config.tls.store_client_ca) {
      ctx.addIssue({ code: 'custom', path: ['admin', 'subjects'], message: 'admin certificate subjects need tls.client_ca or tls.store_client_ca' });
    }
    if (config.admin.subjects.length === 0 && config.issuer === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['admin', 'subjects'],
        message: 'nobody could administer: name admin subjects, or configure issuer (tokens with scope gatehouse:admin)',
      });
    }
    if (config.server.workers !== 1) {
      ctx.addIssue({ code: 'custom', path: ['admin'], message: 'the admin listener runs with one worker only (server.workers: 1)' });
    }
    if (config.admin.port !== 0 && config.admin.port === config.server.port && config.admin.host === config.server.host) {
      ctx.addIssue({ code: 'custom', path: ['admin', 'port'], message: 'the admin listener needs a port of its own' });
    }
  }
  if (config.tls.store_client_ca && config.issuer === undefined) {
    ctx.addIssue({ code: 'custom', path: ['tls', 'store_client_ca'], message: 'needs issuer (the client CA is kept in its credential store)' });
  }
  const ids = new Set<string>();
  config.routes.forEach((route, index) => {
    if (ids.has(route.id)) ctx.addIssue({ code: 'custom', path: ['routes', index, 'id'], message: `duplicate route id "${route.id}"` });
    ids.add(route.id);
    if (route.quota !== undefined && !(route.quota in config.quotas)) {
      ctx.addIssue({ code: 'custom', path: ['routes', index, 'quota'], message: `unknown quota "${route.quota}"` });
    }
    if (route.quota_outage !== undefined && route.quota === undefined) {
      ctx.addIssue({ code: 'custom', path: ['routes', index, 'quota_outage'], message: 'quota_outage needs quota' });
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
    if (route.authn.includes('mtls') && config.tls.client_ca === undefined && !config.tls.store_client_ca) {
      ctx.addIssue({ code: 'custom', path: ['routes', index, 'authn'], message: '"mtls" needs tls.client_ca or tls.store_client_ca' });
    }
    for (const kind of ['bearer', 'dpop'] as const) {
      if (route.authn.includes(kind) && config.issuer === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['routes', index, 'authn'],
          message: `"${kind}" verifies tokens of this gateway's own issuer: configure \`issuer\``,
        });
      }
    }
    const tokens = route.authn.includes('bearer') || route.authn.includes('dpop');
    if (route.authz.require_sender_constraint && !tokens) {
      ctx.addIssue({
        code: 'custom',
        path: ['routes', index, 'authz', 'require_sender_constraint'],
        message: 'applies to access tokens: add "bearer" or "dpop" to authn',
      });
    }
    if ((route.authz.scopes !== undefined || route.authz.audience !== undefined) && !tokens) {
      ctx.addIssue({
        code: 'custom',
        path: ['routes', index, 'authz'],
        message: 'scopes and audience apply to access tokens: add "bearer" or "dpop" to authn',
      });
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
  // A worker's chain is the instance name plus `-w<n>`: the whole name must still fit the 64 characters of one.
  if (config.server.workers !== 1 && config.audit.instance !== undefined && config.audit.instance.length > 60) {
    ctx.addIssue({ code: 'custom', path: ['audit', 'instance'], message: 'at most 60 characters with server.workers (each worker adds "-w<n>")' });
  }
  const matchKeys = new Set<string>();
  config.routes.forEach((route, index) => {
    const key = `${route.match.host ?? '*'} ${route.match.path_prefix}`;
    if (matchKeys.has(key)) {
      ctx.addIssue({ code: 'custom', path: ['routes', index, 'match'], message: `another route already matches ${key}` });
    }
    matchKeys.add(key);
  });
}
