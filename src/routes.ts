// Route compilation: the one place where configured routes and the issuer's built-in endpoints become the pipeline's
// Route data (authenticators, policy, quota, handler), each through the same steps. Runs once, when a gateway is built.
import type { Logger } from 'pino';
import { AnonymousAuthenticator } from './authn/anonymous.js';
import { dpopChallenge } from './lib/dpop-syntax.js';
import { MtlsAuthenticator } from './authn/mtls.js';
import { RoutePolicy } from './authz/policy.js';
import { ConfigError } from './config/load.js';
import type { Config } from './config/schema.js';
import type { RouteConfig } from './config/routes.js';
import type { Issuer } from './issuer/issuer.js';
import type { DeepReadonly } from './lib/deep-freeze.js';
import type { AuthenticatedRequest, Authenticator, Handler, QuotaPolicy, Route } from './pipeline/stage.js';
import { ProxyHandler } from './proxy/forward.js';
import type { Upstream } from './proxy/upstream.js';
import type { PrincipalQuota } from './quota/principal.js';
import { allowedMethods } from './server/router.js';
import { EchoService } from './services/echo.js';

const BEARER_CHALLENGE = 'Bearer realm="gatehouse"';

/** The parts a route can be built from: every one made once per gateway and shared by the routes that use it. */
export interface RouteParts {
  readonly config: Config;
  readonly upstreams: ReadonlyMap<string, Upstream>;
  readonly quotas: ReadonlyMap<string, PrincipalQuota>;
  readonly issuer: Issuer | undefined;
  /** The X-Forwarded-For value an upstream receives for a request (vouched chain or the client address). */
  readonly forwardedFor: (request: AuthenticatedRequest, received: string | string[] | undefined) => string;
  readonly log: Logger;
}

/** What every route is made of, whichever source it comes from: the Route, with its methods as listed. */
type RouteSpec = Omit<Route, 'methods' | 'allowHeader'> & { readonly methods: readonly string[] };

function route(spec: RouteSpec): Route {
  const methods = allowedMethods(spec.methods);
  return { ...spec, methods, allowHeader: [...methods].join(', ') };
}

/** The configured routes, then the issuer's endpoints. Throws ConfigError for a reference the config cannot resolve. */
export function compileRoutes(parts: RouteParts): Route[] {
  const { config, issuer } = parts;
  const anonymous = new AnonymousAuthenticator();
  const authenticators: Readonly<Partial<Record<RouteConfig['authn'][number], Authenticator>>> = {
    none: anonymous,
    mtls: issuer?.mtls ?? new MtlsAuthenticator(),
    ...(issuer !== undefined ? { bearer: issuer.bearer, dpop: issuer.dpop } : {}),
  };
  const authenticator = (id: RouteConfig['authn'][number]): Authenticator => {
    const found = authenticators[id];
    if (found === undefined) throw new ConfigError('config', [`authenticator "${id}" is not available`]);
    return found;
  };
  const echo = new EchoService();
  const handlerOf = (configured: DeepReadonly<RouteConfig>): Handler => {
    if ('service' in configured.handler) return echo;
    const { proxy } = configured.handler;
    const upstream = parts.upstreams.get(proxy.upstream);
    if (upstream === undefined) throw new ConfigError('config', [`unknown upstream ${proxy.upstream}`]);
    return new ProxyHandler(
      upstream,
      {
        stripPrefix: proxy.strip_prefix,
        forwardAuthorization: proxy.forward_authorization,
        preserveHost: proxy.preserve_host,
        identityPrefix: config.identity_headers.prefix,
      },
      parts.forwardedFor,
      parts.log,
    );
  };

  const routes = config.routes.map((configured) => {
    const bearer = configured.authn.includes('bearer');
    const dpop = configured.authn.includes('dpop');
    // RFC 9110 §11.6.1: one challenge per scheme the route accepts, in one field.
    const challenges = [...(bearer ? [BEARER_CHALLENGE] : []), ...(dpop ? [dpopChallenge()] : [])];
    const challenge = challenges.length > 0 ? challenges.join(', ') : undefined;
    return route({
      id: configured.id,
      pathPrefix: configured.match.path_prefix,
      host: configured.match.host,
      methods: configured.match.methods,
      bodyLimitBytes: configured.body_limit_bytes ?? config.limits.default_body_limit_bytes,
      authenticators: configured.authn.map(authenticator),
      challenge,
      authorizer: new RoutePolicy(configured.authz, {
        ...(issuer !== undefined && (bearer || dpop) ? { audience: routeAudience(configured, issuer) } : {}),
        challenge,
      }),
      quota: quotaOf(configured, parts.quotas),
      handler: handlerOf(configured),
      intake: undefined,
      oauth: false,
    });
  });

  for (const endpoint of issuer?.endpoints ?? []) {
    routes.push(
      route({
        id: endpoint.id,
        pathPrefix: endpoint.path,
        host: undefined,
        methods: endpoint.methods,
        bodyLimitBytes: endpoint.bodyLimitBytes,
        // The OAuth endpoints read their form first and authenticate the client from it (RFC 6749 §2.3); any client that
        // authenticated may call them (what it may obtain is the endpoint's decision). Metadata and JWKS are public.
        authenticators: [endpoint.oauth?.authenticator ?? endpoint.authenticator ?? anonymous],
        challenge: undefined,
        authorizer: new RoutePolicy({ allow: endpoint.oauth !== undefined || endpoint.authenticator !== undefined ? 'authenticated' : 'anyone' }),
        quota: undefined,
        handler: endpoint.handler,
        intake: endpoint.oauth?.intake,
        oauth: endpoint.oauth !== undefined,
      }),
    );
  }
  return routes;
}

function quotaOf(configured: DeepReadonly<RouteConfig>, quotas: ReadonlyMap<string, PrincipalQuota>): QuotaPolicy | undefined {
  if (configured.quota === undefined) return undefined;
  const quota = quotas.get(configured.quota);
  if (quota === undefined) throw new ConfigError('config', [`unknown quota ${configured.quota}`]);
  return quota.forRoute(configured.quota_cost ?? 1, configured.quota_outage ?? 'degrade');
}

function routeAudience(configured: DeepReadonly<RouteConfig>, issuer: Issuer): () => string {
  const audience = configured.authz.audience;
  return audience !== undefined ? () => audience : () => issuer.defaultAudience;
}
