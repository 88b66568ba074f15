// The admin listener: a TLS listener of its own (admin.host:admin.port, loopback by default) with the gateway's
// certificates, serving only the admin routes through the same pipeline as the public listener — edge checks,
// authentication, authorization and an audit record for every admin request — so nothing on it is answered around them.
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { MtlsAuthenticator } from '../authn/mtls.js';
import type { Config } from '../config/schema.js';
import type { Issuer } from '../issuer/issuer.js';
import type { GatewayMetrics } from '../observability/metrics.js';
import type { Pipeline } from '../pipeline/pipeline.js';
import type { Authenticator } from '../pipeline/stage.js';
import { memoryLimiter } from '../quota/rate.js';
import { ConnectionGuard } from '../server/connection-guard.js';
import { edgeLimits } from '../server/edge.js';
import { Ingress } from '../server/ingress.js';
import { Listener } from '../server/listener.js';
import { Router } from '../server/router.js';
import type { TlsMaterial } from '../tls/context.js';
import { type AdminApiParts, compileAdminRoutes } from './routes.js';

/** Operators and a scraper or two: the admin listener never needs the public one's connection budget. */
const MAX_ADMIN_CONNECTIONS = 64;

export interface AdminListenerParts {
  readonly config: Config;
  readonly tlsMaterial: TlsMaterial;
  readonly pipeline: Pipeline;
  readonly metrics: GatewayMetrics;
  readonly issuer: Issuer | undefined;
  readonly log: Logger;
  readonly isReady: () => boolean;
  /** The store's client CA, when tls.store_client_ca is set and it exists. */
  readonly storeClientCa: string | undefined;
  /** The admin API: when the gateway has an issuer. */
  readonly api: AdminApiParts | undefined;
}

export class AdminListener {
  private readonly listener: Listener;
  private readonly config: Config;

  constructor(parts: AdminListenerParts) {
    const { config } = parts;
    this.config = config;
    const admin = config.admin;
    if (admin === undefined) throw new Error('AdminListener needs config.admin');
    const { pipeline, log, issuer } = parts;
    const certificates = config.tls.client_ca !== undefined || config.tls.store_client_ca;
    const authenticators: Authenticator[] = [
      ...(certificates ? [issuer?.mtls ?? new MtlsAuthenticator()] : []),
      ...(issuer !== undefined ? [issuer.bearer] : []),
    ];
    const router = new Router(compileAdminRoutes({ config: admin, metrics: parts.metrics, authenticators, api: parts.api }));
    let listener: Listener | undefined;
    const ingress = new Ingress({
      router,
      pipeline,
      limits: edgeLimits(config),
      // Nobody forwards for an operator: the socket address is the client's.
      trustedProxies: undefined,
      requestTimeoutMs: config.limits.request_timeout_ms,
      ipv6PrefixLength: config.limits.ipv6_prefix_length,
      accessLog: config.log.access,
      log,
      isDraining: () => listener?.isDraining ?? false,
      isReady: parts.isReady,
    });
    const guard = new ConnectionGuard(
      { maxConnections: MAX_ADMIN_CONNECTIONS, maxPerIp: MAX_ADMIN_CONNECTIONS, ipv6PrefixLength: config.limits.ipv6_prefix_length },
      memoryLimiter(config.limits.new_connections_per_ip, 'admin-newconn'),
    );
    listener = new Listener(
      config,
      parts.tlsMaterial,
      guard,
      ingress,
      log,
      {
        onParseError: (code, peer, requestId, answer, protocol) => pipeline.recordConnectionRefusal({ parserCode: code, peer, requestId, answer, protocol }),
        onHandshake: (version, protocol) => parts.metrics.handshake('admin', version, protocol),
        onHandshakeFailure: (code) => parts.metrics.handshakeFailed('admin', code),
      },
      undefined,
      parts.storeClientCa,
    );
    this.listener = listener;
    parts.metrics.countConnections('admin', () => guard.liveConnections);
  }

  listen(): Promise<AddressInfo> {
    const admin = this.config.admin;
    if (admin === undefined) throw new Error('AdminListener needs config.admin');
    return this.listener.listen({ host: admin.host, port: admin.port });
  }

  trustStoreClientCa(certPem: string): void {
    this.listener.trustStoreClientCa(certPem);
  }

  reloadCertificates(): void {
    this.listener.reloadCertificates();
  }

  drain(timeoutMs: number): Promise<void> {
    return this.listener.drain(timeoutMs);
  }
}
