// The admin listener's routes: pipeline routes like any other (edge checks, authentication, authorization, audit record),
// served by a listener of their own. An admin is a client certificate with a configured admin identity, or an access token
// of this gateway's issuer carrying the scope gatehouse:admin; /metrics may also be read by configured scraper identities.
import { ADMIN_SCOPE, type AdminConfig } from '../config/admin.js';
import { GatewayError } from '../errors/catalogue.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import {
  type AuthenticatedRequest,
  type Authenticator,
  type Authorizer,
  type AuthzDecision,
  type Route,
  type Service,
  type ServiceResult,
  TextBody,
} from '../pipeline/stage.js';
import { allowedMethods } from '../server/router.js';
import { isTrusted, trustedProxyList } from '../server/ingress.js';
import { AnonymousAuthenticator } from '../authn/anonymous.js';
import type { BlockList } from 'node:net';
import { API_BODY_LIMIT } from './api.js';
import { CLIENTS_PATH, ClientsApi, type ClientsApiParts } from './clients-api.js';
import { AUDIT_PATH, AuditApi, type AuditApiParts } from './audit-api.js';
import { CA_PATH, CaApi, CERTIFICATES_PATH, CertificatesApi, type CertificatesApiParts, KEYS_PATH, KeysApi, type KeysApiParts } from './credentials-api.js';
import { ADMIN_OPENAPI } from './openapi.js';
import type { CertificateStore, ClientStore, SigningKeyStore } from '../store/contract.js';

const CHALLENGE = 'Bearer realm="gatehouse-admin"';

/**
 * Who may call an admin route: the admin identities (certificates), tokens with the admin scope, `readers`, and — without
 * a credential — callers from `networks` (the metrics scraper's, when configured).
 */
export class AdminPolicy implements Authorizer {
  private readonly subjects: ReadonlySet<string>;

  constructor(
    admins: readonly string[],
    readers: readonly string[] = [],
    private readonly networks: BlockList | undefined = undefined,
  ) {
    this.subjects = new Set([...admins, ...readers]);
  }

  authorize(request: AuthenticatedRequest): AuthzDecision {
    const { principal } = request;
    if (principal.method === 'anonymous') {
      // The socket's address: nobody forwards for an operator (the admin listener trusts no proxy).
      const address = request.connection.peerAddress;
      if (this.networks !== undefined && isTrusted(this.networks, address)) return { allowed: true };
      return {
        allowed: false,
        error: new GatewayError('unauthenticated', { reason: 'admin route requires a credential', headers: { 'www-authenticate': CHALLENGE } }),
      };
    }
    if (principal.method === 'mtls' && this.subjects.has(principal.subject)) return { allowed: true };
    if ((principal.method === 'bearer' || principal.method === 'dpop') && principal.scopes.has(ADMIN_SCOPE)) return { allowed: true };
    return { allowed: false, error: new GatewayError('forbidden', { reason: 'not an administrator' }) };
  }
}

/** GET /metrics: the Prometheus text exposition of this gateway's registry. */
export class MetricsService implements Service {
  readonly kind = 'service';

  constructor(private readonly metrics: GatewayMetrics) {}

  async serve(): Promise<ServiceResult> {
    return { outcome: 'answered', answer: { status: 200, body: new TextBody(await this.metrics.text(), this.metrics.contentType) } };
  }
}

/** GET /openapi.json: the admin API's OpenAPI 3.1 document. */
export class OpenApiService implements Service {
  readonly kind = 'service';

  async serve(): Promise<ServiceResult> {
    return { outcome: 'answered', answer: { status: 200, body: ADMIN_OPENAPI, headers: { 'cache-control': 'no-cache' } } };
  }
}

/** What the admin API's resources work on: the issuer's store and operations, the audit log. */
export interface AdminApiParts extends ClientsApiParts, Omit<AuditApiParts, 'store'> {
  readonly store: ClientStore & SigningKeyStore & CertificateStore;
  readonly revokeSigningKey: KeysApiParts['revoke'];
  readonly rotateSigningKeys: KeysApiParts['rotate'];
  readonly initClientCa: CertificatesApiParts['initClientCa'];
  readonly issueCertificate: CertificatesApiParts['issueCertificate'];
}

export interface AdminRouteParts {
  readonly config: DeepReadonly<AdminConfig>;
  readonly metrics: GatewayMetrics;
  /** Certificates (when the listener asks for them), then the issuer's bearer tokens (when there is an issuer), then none. */
  readonly authenticators: readonly Authenticator[];
  /** The admin API, when the gateway has an issuer (whose store it manages). */
  readonly api: AdminApiParts | undefined;
}

export function compileAdminRoutes(parts: AdminRouteParts): Route[] {
  const admins = new AdminPolicy(parts.config.subjects);
  const metricsNetworks = trustedProxyList(parts.config.metrics_networks);
  const route = (
    id: string,
    pathPrefix: string,
    methodList: readonly string[],
    handler: Service,
    bodyLimitBytes = 0,
    authorizer: Authorizer = admins,
  ): Route => {
    const methods = allowedMethods(methodList);
    return {
      id,
      pathPrefix,
      host: undefined,
      methods,
      allowHeader: [...methods].join(', '),
      bodyLimitBytes,
      authenticators: parts.authenticators,
      challenge: CHALLENGE,
      authorizer,
      quota: undefined,
      handler,
      intake: undefined,
      oauth: false,
    };
  };
  return [
    // Scrapers (metrics_subjects, metrics_networks) read the metrics and nothing else.
    {
      ...route(
        'admin-metrics',
        '/metrics',
        ['GET'],
        new MetricsService(parts.metrics),
        0,
        new AdminPolicy(parts.config.subjects, parts.config.metrics_subjects, metricsNetworks),
      ),
      // A caller without a credential reaches the policy (which admits it only from metrics_networks) instead of a 401.
      ...(metricsNetworks !== undefined ? { authenticators: [...parts.authenticators, new AnonymousAuthenticator()] } : {}),
    },
    ...(parts.api !== undefined
      ? [
          route('admin-openapi', '/openapi.json', ['GET'], new OpenApiService()),
          route('admin-clients', CLIENTS_PATH, ['GET', 'POST', 'PATCH', 'DELETE'], new ClientsApi(parts.api), API_BODY_LIMIT),
          route(
            'admin-keys',
            KEYS_PATH,
            ['GET', 'POST'],
            new KeysApi({ ...parts.api, revoke: parts.api.revokeSigningKey, rotate: parts.api.rotateSigningKeys }),
            API_BODY_LIMIT,
          ),
          route('admin-certificates', CERTIFICATES_PATH, ['GET', 'POST'], new CertificatesApi(parts.api), API_BODY_LIMIT),
          route('admin-ca', CA_PATH, ['GET', 'POST'], new CaApi(parts.api), API_BODY_LIMIT),
          route('admin-audit', AUDIT_PATH, ['GET', 'POST'], new AuditApi(parts.api), API_BODY_LIMIT),
        ]
      : []),
  ];
}
