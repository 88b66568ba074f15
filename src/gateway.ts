// The composition root: builds every part of one gateway from a frozen Config and explicit dependencies.
// No module-level state, so tests (and one process) can run several gateways side by side.
import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { AuditSink } from './audit/event.js';
import { JsonLinesAuditSink } from './audit/jsonl-sink.js';
import { AnonymousAuthenticator } from './authn/anonymous.js';
import { MtlsAuthenticator } from './authn/mtls.js';
import { RoutePolicy } from './authz/policy.js';
import type { Config, RouteConfig } from './config/schema.js';
import { ConfigError } from './config/load.js';
import type { DeepReadonly } from './lib/deep-freeze.js';
import { Pipeline } from './pipeline/pipeline.js';
import type { Authenticator, AuthenticatedRequest, Handler, QuotaPolicy } from './pipeline/stage.js';
import { ProxyHandler, Upstream } from './proxy/forward.js';
import { memoryLimiter, PreAuthQuota, PrincipalQuota } from './quota/rate.js';
import { ConnectionGuard } from './server/connection-guard.js';
import { edgeLimits } from './server/edge.js';
import { Ingress, trustedProxyList } from './server/ingress.js';
import { Listener } from './server/listener.js';
import { allowedMethods, Router, type Route } from './server/router.js';
import { EchoService } from './services/echo.js';
import { Issuer } from './issuer/issuer.js';
import { devCertificatePaths, initDevCertificates } from './tls/ca.js';

export interface GatewayDeps {
  readonly log: Logger;
  /** Defaults to the JSON-lines sink in config.audit.dir. */
  readonly audit?: AuditSink;
  /** GATEHOUSE_MASTER_KEY, read by the CLI; without it the issuer uses data_dir/master.key. */
  readonly masterKey?: string | undefined;
}

const BEARER_CHALLENGE = 'Bearer realm="gatehouse"';

/** Shared between the gateway and its ingress: set once stop() begins. */
interface Lifecycle {
  stopping: boolean;
}

export class Gateway {
  private constructor(
    readonly config: Config,
    readonly audit: AuditSink,
    private readonly listener: Listener,
    private readonly upstreams: readonly Upstream[],
    private readonly log: Logger,
    /** The authorization server, when `issuer` is configured. */
    readonly issuer: Issuer | undefined,
    private readonly lifecycle: Lifecycle,
  ) {}

  static async create(config: Config, deps: GatewayDeps): Promise<Gateway> {
    const { log } = deps;
    if (config.tls.dev_certificates) await ensureDevCertificates(config, log);

    const audit = deps.audit ?? new JsonLinesAuditSink({ dir: config.audit.dir });
    const issuer = config.issuer === undefined ? undefined : await Issuer.open(config, config.issuer, { log, audit, masterKey: deps.masterKey });
    const lifecycle: Lifecycle = { stopping: false };
    try {
      const trusted = trustedProxyList(config.server.trusted_proxies);
      const upstreams = new Map(Object.entries(config.upstreams).map(([name, upstream]) => [name, new Upstream(name, upstream)]));
      const quotas = new Map<string, QuotaPolicy>(Object.entries(config.quotas).map(([name, rate]) => [name, new PrincipalQuota(name, rate)]));
      const authenticators: Readonly<Partial<Record<RouteConfig['authn'][number], Authenticator>>> = {
        none: new AnonymousAuthenticator(),
        mtls: new MtlsAuthenticator(),
        ...(issuer !== undefined ? { bearer: issuer.bearer } : {}),
      };
      const authenticator = (id: RouteConfig['authn'][number]): Authenticator => {
        const found = authenticators[id];
        if (found === undefined) throw new ConfigError('config', [`authenticator "${id}" is not available`]);
        return found;
      };
      const echo = new EchoService();
      const forwardedFor = (request: AuthenticatedRequest, received: string | string[] | undefined): string => {
        const { peerAddress, clientAddress } = request.connection;
        // A chain is only passed on from a trusted proxy; otherwise the gateway vouches for the socket address alone.
        if (trusted === undefined || clientAddress === peerAddress || received === undefined) return clientAddress;
        return `${Array.isArray(received) ? received.join(', ') : received}, ${peerAddress}`;
      };

      const buildHandler = (route: DeepReadonly<RouteConfig>): Handler => {
        if ('service' in route.handler) return echo;
        const { proxy } = route.handler;
        const upstream = upstreams.get(proxy.upstream);
        if (upstream === undefined) throw new ConfigError('config', [`unknown upstream ${proxy.upstream}`]);
        return new ProxyHandler(
          upstream,
          {
            stripPrefix: proxy.strip_prefix,
            forwardAuthorization: proxy.forward_authorization,
            preserveHost: proxy.preserve_host,
            identityPrefix: config.identity_headers.prefix,
          },
          forwardedFor,
          log,
        );
      };

      const routes: Route[] = config.routes.map((route) => {
        const methods = allowedMethods(route.match.methods);
        return {
          id: route.id,
          pathPrefix: route.match.path_prefix,
          host: route.match.host,
          methods,
          allowHeader: [...methods].join(', '),
          bodyLimitBytes: route.body_limit_bytes ?? config.limits.default_body_limit_bytes,
          authenticators: route.authn.map(authenticator),
          challenge: route.authn.includes('bearer') ? BEARER_CHALLENGE : undefined,
          authorizer: new RoutePolicy(route.authz, {
            ...(issuer !== undefined && route.authn.includes('bearer') ? { audience: routeAudience(route, issuer) } : {}),
            challenge: route.authn.includes('bearer') ? BEARER_CHALLENGE : undefined,
          }),
          quota: route.quota === undefined ? undefined : quotas.get(route.quota),
          handler: buildHandler(route),
          selfAudited: false,
        };
      });

      for (const endpoint of issuer?.endpoints ?? []) {
        const methods = allowedMethods(endpoint.methods);
        routes.push({
          id: endpoint.id,
          pathPrefix: endpoint.path,
          host: undefined,
          methods,
          allowHeader: [...methods].join(', '),
          bodyLimitBytes: endpoint.bodyLimitBytes,
          // The endpoints authenticate clients themselves (RFC 6749 §2.3), after their own limits; the pipeline's part is the
          // pre-auth budget and the audit record.
          authenticators: [authenticators.none ?? new AnonymousAuthenticator()],
          challenge: undefined,
          authorizer: new RoutePolicy({ allow: 'anyone' }),
          quota: undefined,
          handler: endpoint.handler,
          selfAudited: endpoint.selfAudited,
        });
      }

      const pipeline = new Pipeline({ preAuthQuota: new PreAuthQuota(config.limits.pre_auth_per_ip), audit, log });
      let listener: Listener | undefined;
      const ingress = new Ingress({
        router: new Router(routes),
        pipeline,
        limits: edgeLimits(config),
        trustedProxies: trusted,
        requestTimeoutMs: config.limits.request_timeout_ms,
        ipv6PrefixLength: config.limits.ipv6_prefix_length,
        accessLog: config.log.access,
        log,
        isDraining: () => listener?.isDraining ?? false,
        isReady: () => !lifecycle.stopping,
      });
      const guard = new ConnectionGuard(
        { maxConnections: config.limits.max_connections, maxPerIp: config.limits.max_connections_per_ip, ipv6PrefixLength: config.limits.ipv6_prefix_length },
        memoryLimiter(config.limits.new_connections_per_ip, 'newconn'),
      );
      listener = new Listener(config, guard, ingress, log, {
        onParseError: (code, peer, requestId, answer, protocol) => {
          log.info({ code, peer, request_id: requestId, status: answer?.status ?? null }, 'refused malformed or forbidden HTTP input');
          pipeline.recordConnectionRefusal({ parserCode: code, peer, requestId, answer, protocol });
        },
      });
      return new Gateway(config, audit, listener, [...upstreams.values()], log, issuer, lifecycle);
    } catch (error) {
      // Nothing was bound yet; the store must not stay open behind a failed start.
      await issuer?.close();
      throw error;
    }
  }

  async start(): Promise<AddressInfo> {
    const address = await this.listener.listen();
    // Synchronously after the bind, before any connection is handled: the default issuer names the real port.
    this.issuer?.started(address.port);
    this.log.info({ host: address.address, port: address.port }, 'gatehouse listening');
    return address;
  }

  reloadCertificates(): void {
    this.listener.reloadCertificates();
    this.log.info('TLS certificates reloaded');
  }

  get draining(): boolean {
    return this.listener.isDraining;
  }

  /**
   * Turns readiness to 503 and keeps serving for shutdown.readiness_grace_ms (load balancers stop sending traffic), then
   * drains connections (bounded by shutdown.drain_timeout_ms) and closes upstream pools, the issuer and the audit sink.
   */
  async stop(): Promise<void> {
    this.lifecycle.stopping = true;
    const grace = this.config.shutdown.readiness_grace_ms;
    if (grace > 0) {
      this.log.info({ grace_ms: grace }, 'not ready; serving until the readiness grace ends');
      await new Promise((resolve) => setTimeout(resolve, grace));
    }
    await this.listener.drain(this.config.shutdown.drain_timeout_ms);
    // Every client connection is gone now, so any upstream request still open has nobody to answer: abort, don't wait.
    await Promise.all(this.upstreams.map((u) => u.destroy()));
    await this.issuer?.close();
    await this.audit.close();
  }
}

function routeAudience(route: DeepReadonly<RouteConfig>, issuer: Issuer): () => string {
  const configured = route.authz.audience;
  return configured !== undefined ? () => configured : () => issuer.defaultAudience;
}

/** Creates the development CA and certificates when `tls.dev_certificates` is on and the files are missing. */
async function ensureDevCertificates(config: Config, log: Logger): Promise<void> {
  const paths = devCertificatePaths(dirname(config.tls.cert));
  const expected = [
    ['tls.cert', config.tls.cert, paths.serverCert],
    ['tls.key', config.tls.key, paths.serverKey],
    ...(config.tls.client_ca !== undefined ? [['tls.client_ca', config.tls.client_ca, paths.caCert] as const] : []),
  ] as const;
  const mismatched = expected.filter(([, actual, wanted]) => actual !== wanted);
  if (mismatched.length > 0) {
    throw new ConfigError('config', mismatched.map(([key, , wanted]) => `${key}: with tls.dev_certificates the file must be ${basename(wanted)} beside tls.cert`));
  }
  if (existsSync(paths.serverCert) && existsSync(paths.serverKey) && (config.tls.client_ca === undefined || existsSync(paths.caCert))) return;
  const { created } = await initDevCertificates(paths.dir);
  if (created) log.warn({ dir: paths.dir }, 'created development certificates (tls.dev_certificates is on; never use them in production)');
}
