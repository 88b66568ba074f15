// The composition root: builds every part of one gateway from a frozen Config and explicit dependencies.
// No module-level state, so tests (and one process) can run several gateways side by side.
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { AuditSink, OperationalEvent } from './audit/event.js';
import { hash, X509Certificate } from 'node:crypto';
import { hostname } from 'node:os';
import { defaultInstanceId } from './audit/chain.js';
import { auditKeyFile, loadOrCreateAuditKey, readAuditPublicKey } from './audit/audit-key.js';
import { checkpointExportFor } from './audit/export.js';
import { AuditLog } from './audit/log.js';
import { retentionOf } from './audit/retention.js';
import type { DeepReadonly } from './lib/deep-freeze.js';
import { makeDirectory } from './lib/make-directory.js';
import { cliModule } from './lib/package-root.js';
import { describeRedisUrl, RedisConnection } from './lib/redis.js';
import type { RedisConfig } from './config/redis.js';
import { openKeyEncryptionKey } from './issuer/master-key.js';
import type { Config } from './config/schema.js';
import { ConfigError } from './config/load.js';
import { Pipeline } from './pipeline/pipeline.js';
import type { AuthenticatedRequest } from './pipeline/stage.js';
import { MemoryLimiterBackend, RedisLimiterBackend, type LimiterBackend } from './quota/backend.js';
import { ClusterLimiterBackend, type LimiterChannel } from './quota/cluster.js';
import type { PrincipalQuota } from './quota/principal.js';
import { memoryLimiter, PreAuthQuota } from './quota/rate.js';
import { readTlsMaterial } from './tls/context.js';
import { ConnectionGuard } from './server/connection-guard.js';
import { edgeLimits } from './server/edge.js';
import { Ingress, trustedProxyList } from './server/ingress.js';
import { Listener } from './server/listener.js';
import { Issuer } from './issuer/issuer.js';
import { restartOnlyChanges } from './config/reload.js';
import { Routing, type RoutingChange } from './routing.js';
import { AdminListener } from './admin/listener.js';
import { GatewayMetrics } from './observability/metrics.js';
import { devCertificatePaths, initDevCertificates } from './tls/ca.js';

export interface GatewayDeps {
  readonly log: Logger;
  /** Defaults to the hash-chained audit log in config.audit.dir. */
  readonly audit?: AuditSink;
  /** GATEHOUSE_MASTER_KEY, read by the CLI; without it the issuer uses data_dir/master.key. */
  readonly masterKey?: string | undefined;
  /** Wall clock in epoch milliseconds for the route quotas' calendar windows and key lifetimes (tests inject one). */
  readonly now?: () => number;
  /** This process is one worker of `serve --workers N`: its own audit chain; limits counted with the other workers. */
  readonly worker?: WorkerRole;
}

export interface WorkerRole {
  /** 1..count; a replacement keeps the number (and so the chain) of the worker it replaces. */
  readonly number: number;
  readonly count: number;
  /** To the primary, which counts the limits of every worker when no Redis is configured. */
  readonly channel: LimiterChannel;
  /** The session-ticket keys every worker uses (the primary rotates them: setTicketKeys). */
  readonly ticketKeys: Buffer;
}

/** How long a worker waits for the primary to count a request before the limiter's outage policy decides. */
const PRIMARY_TIMEOUT_MS = 1000;

/** A worker's audit chain: the instance name and its number (`edge-1-w2`), so `audit verify` sees one chain per worker. */
export function workerInstance(instance: string, worker: number): string {
  const suffix = `-w${worker}`;
  return `${instance.slice(0, 64 - suffix.length)}${suffix}`;
}

/** The admin listener could not bind: its address, so the message names it rather than the public listener's. */
export class AdminListenError extends Error {
  constructor(
    readonly host: string,
    readonly port: number,
    readonly code: string | undefined,
    cause: unknown,
  ) {
    super(`admin listener: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'AdminListenError';
  }
}

/** Shared between the gateway and its ingress: set once stop() begins. */
interface Lifecycle {
  stopping: boolean;
}

/** What a Gateway is made of (create() builds and checks it all first). */
interface GatewayParts {
  readonly config: Config;
  readonly audit: AuditSink;
  readonly listener: Listener;
  readonly ingress: Ingress;
  readonly routing: Routing;
  readonly log: Logger;
  readonly issuer: Issuer | undefined;
  readonly lifecycle: Lifecycle;
  readonly redis: RedisConnection | undefined;
  readonly worker: number | undefined;
  readonly admin: AdminListener | undefined;
  readonly metrics: GatewayMetrics | undefined;
}

export class Gateway {
  /** Reloads run one after the other: each builds on the table the one before put in force. */
  private reloads: Promise<unknown> = Promise.resolve();

  private current: Config;
  readonly audit: AuditSink;
  private readonly listener: Listener;
  private readonly ingress: Ingress;
  private readonly routing: Routing;
  private readonly log: Logger;
  /** The authorization server, when `issuer` is configured. */
  readonly issuer: Issuer | undefined;
  private readonly lifecycle: Lifecycle;
  /** The shared limiter store, when `redis` is configured. */
  private readonly redis: RedisConnection | undefined;
  /** The worker number under `serve --workers N`. */
  private readonly worker: number | undefined;
  /** The admin listener and the metrics it serves, when `admin` is configured. */
  private readonly admin: AdminListener | undefined;
  private readonly metrics: GatewayMetrics | undefined;

  private constructor(parts: GatewayParts) {
    this.current = parts.config;
    this.audit = parts.audit;
    this.listener = parts.listener;
    this.ingress = parts.ingress;
    this.routing = parts.routing;
    this.log = parts.log;
    this.issuer = parts.issuer;
    this.lifecycle = parts.lifecycle;
    this.redis = parts.redis;
    this.worker = parts.worker;
    this.admin = parts.admin;
    this.metrics = parts.metrics;
  }

  /** The configuration in force (the last reload's, or the one the gateway started with). */
  get config(): Config {
    return this.current;
  }

  /** The route quotas in force, by name (their in-flight and key counts are observable). */
  get quotas(): ReadonlyMap<string, PrincipalQuota> {
    return this.routing.quotas;
  }

  static async create(config: Config, deps: GatewayDeps): Promise<Gateway> {
    const { log } = deps;
    if (config.tls.dev_certificates) await ensureDevCertificates(config, log);
    // Every TLS file is read and checked before anything is opened or created: a bad one ends the start with its name, no
    // side effect. The listener is built from what was read here.
    const tlsMaterial = readTlsMaterial(config.tls);

    // The shared limiter store first (client authentication counts in it too); what it reports waits for the audit log.
    const limiterStore = new LimiterStoreReport(log);
    const redis = config.redis === undefined ? undefined : await connectRedis(config.redis, limiterStore);
    // Several workers count together: in Redis when it is configured (each worker one share of an instance's), else in
    // the primary's memory.
    const { worker } = deps;
    const workers = worker?.count ?? 1;
    let limiters: LimiterBackend;
    if (redis !== undefined && config.redis !== undefined) {
      const { key_prefix: keyPrefix, instances, timeout_ms: timeoutMs } = config.redis;
      limiters = new RedisLimiterBackend(redis, { keyPrefix, shares: instances * workers, timeoutMs });
    } else if (worker !== undefined) {
      limiters = new ClusterLimiterBackend(worker.channel, {
        workers,
        timeoutMs: PRIMARY_TIMEOUT_MS,
        onPrimaryState: (answering, silentMs) => (answering ? limiterStore.primaryBack(silentMs) : limiterStore.primarySilent(PRIMARY_TIMEOUT_MS)),
      });
    } else limiters = new MemoryLimiterBackend();
    // The issuer opens next: it decides whether a missing master key file may be created (a store with signing keys
    // sealed under another key must not get a new one); the audit key is then sealed under the same master key.
    let issuer: Issuer | undefined;
    let audit: AuditSink;
    try {
      issuer = config.issuer === undefined ? undefined : await Issuer.open(config, config.issuer, { log, masterKey: deps.masterKey, limiters });
      audit = deps.audit ?? openAuditLog(config, log, deps.masterKey, worker?.number);
    } catch (error) {
      await issuer?.close();
      await redis?.close();
      throw error;
    }
    limiterStore.attach(audit);
    const lifecycle: Lifecycle = { stopping: false };
    let routing: Routing | undefined;
    try {
      const trusted = trustedProxyList(config.server.trusted_proxies);
      const forwardedFor = (request: AuthenticatedRequest, received: string | string[] | undefined): string => {
        const { peerAddress, clientAddress } = request.connection;
        // A chain is only passed on from a trusted proxy; otherwise the gateway vouches for the socket address alone.
        if (trusted === undefined || clientAddress === peerAddress || received === undefined) return clientAddress;
        return `${Array.isArray(received) ? received.join(', ') : received}, ${peerAddress}`;
      };
      // Route quotas and the pre-auth budget count in the limiter backend: this process's memory, or Redis.
      routing = await Routing.create(config, { issuer, quotas: { backend: limiters, log, now: deps.now ?? Date.now }, forwardedFor, log });

      // Metrics are collected only for an admin listener to serve them: without one they would cost and show nothing.
      const metrics = config.admin === undefined ? undefined : new GatewayMetrics();
      const pipeline = new Pipeline({
        preAuthQuota: new PreAuthQuota(config.limits.pre_auth_per_ip, limiters),
        audit,
        log,
        ...(metrics !== undefined ? { observers: [metrics] } : {}),
      });
      let listener: Listener | undefined;
      const ingress = new Ingress({
        router: routing.router,
        pipeline,
        limits: edgeLimits(config),
        trustedProxies: trusted,
        requestTimeoutMs: config.limits.request_timeout_ms,
        ipv6PrefixLength: config.limits.ipv6_prefix_length,
        accessLog: config.log.access,
        log,
        isDraining: () => listener?.isDraining ?? false,
        // Under fail-closed, a gateway that cannot record admits nothing: a load balancer should send traffic elsewhere.
        isReady: () => !lifecycle.stopping && audit.ready,
      });
      const guard = new ConnectionGuard(
        { maxConnections: config.limits.max_connections, maxPerIp: config.limits.max_connections_per_ip, ipv6PrefixLength: config.limits.ipv6_prefix_length },
        memoryLimiter(config.limits.new_connections_per_ip, 'newconn'),
      );
      // The store's client CA, for both listeners, when they trust it and it exists yet (later: followClientCa).
      const storeClientCa = config.tls.store_client_ca ? issuer?.clientCaCertificate : undefined;
      listener = new Listener(
        config,
        tlsMaterial,
        guard,
        ingress,
        log,
        {
          onParseError: (code, peer, requestId, answer, protocol) => {
            log.info({ code, peer, request_id: requestId, status: answer?.status ?? null }, 'refused malformed or forbidden HTTP input');
            pipeline.recordConnectionRefusal({ parserCode: code, peer, requestId, answer, protocol });
          },
          ...(metrics !== undefined
            ? {
                onHandshake: (version: string, protocol: string) => metrics.handshake('public', version, protocol),
                onHandshakeFailure: (code: string | undefined) => metrics.handshakeFailed('public', code),
              }
            : {}),
        },
        worker?.ticketKeys,
        storeClientCa,
      );
      metrics?.countConnections('public', () => guard.liveConnections);
      if (metrics !== undefined) {
        const { state } = audit;
        if (state !== undefined) metrics.watchAudit(() => state.call(audit));
        const served = listener;
        metrics.watchCertificates(function* () {
          yield ['server', served.certificateNotAfter] as const;
          const clientCa = issuer?.clientCaCertificate;
          if (clientCa !== undefined) yield ['client_ca', Date.parse(new X509Certificate(clientCa).validTo)] as const;
        });
        const routed = routing;
        metrics.watchUpstreams(function* () {
          for (const [name, upstream] of routed.upstreams) yield { name, inFlight: upstream.inFlight, capacity: upstream.capacity };
        });
        if (issuer !== undefined) {
          const signing = issuer;
          metrics.watchSigningKey(() => signing.signerTimes);
        }
        metrics.watchStores(function* () {
          if (issuer !== undefined) yield ['credentials', issuer.storeAvailable] as const;
          if (redis !== undefined) yield ['limiters', limiterStore.available] as const;
        });
      }
      const admin =
        metrics === undefined
          ? undefined
          : new AdminListener({
              config,
              tlsMaterial,
              pipeline,
              metrics,
              issuer,
              log,
              isReady: () => !lifecycle.stopping && audit.ready,
              storeClientCa,
              api:
                issuer === undefined || config.issuer === undefined
                  ? undefined
                  : {
                      store: issuer.credentials,
                      audit,
                      issuerTokenTtlS: config.issuer.access_token_ttl_s,
                      revokeSigningKey: (kid) => issuer.revokeSigningKey(kid),
                      rotateSigningKeys: (opts) => issuer.rotateSigningKeys(opts),
                      initClientCa: (commonName) => issuer.initClientCa(commonName),
                      issueCertificate: (client, opts) => issuer.issueClientCertificate(client, opts),
                      changed: () => issuer.refresh(),
                      now: Date.now,
                      auditDir: config.audit.dir,
                      cli: cliModule(),
                      publicKeyPem: () => auditPublicKeyPem(config),
                      cadence: { everyRecords: config.audit.checkpoint_every_records, intervalS: config.audit.checkpoint_interval_s },
                    },
            });
      if (config.tls.store_client_ca) {
        const bound = listener;
        issuer?.followClientCa((certPem) => {
          bound.trustStoreClientCa(certPem);
          admin?.trustStoreClientCa(certPem);
        });
        if (storeClientCa === undefined)
          log.warn('tls.store_client_ca: the store has no client CA yet (gatehouse ca init); no client certificate verifies until it does');
      }
      return new Gateway({ config, audit, listener, ingress, routing, log, issuer, lifecycle, redis, worker: worker?.number, admin, metrics });
    } catch (error) {
      // Nothing was bound yet; the store and the audit chain (its lock) must not stay open behind a failed start.
      await routing?.destroy();
      await redis?.close();
      await issuer?.close();
      if (deps.audit === undefined) await audit.close();
      throw error;
    }
  }

  #adminAddress: AddressInfo | undefined;

  /** Where the admin listener is bound, once start() bound it (admin.port 0 becomes the real port). */
  get adminAddress(): AddressInfo | undefined {
    return this.#adminAddress;
  }

  async start(): Promise<AddressInfo> {
    const address = await this.listener.listen();
    if (this.admin !== undefined) {
      try {
        this.#adminAddress = await this.admin.listen();
      } catch (error) {
        // Nothing was served yet: the public listener does not stay bound behind a failed start.
        await this.listener.drain(0);
        const at = this.config.admin;
        throw new AdminListenError(at?.host ?? '', at?.port ?? 0, (error as NodeJS.ErrnoException).code, error);
      }
      this.log.info({ host: this.#adminAddress.address, port: this.#adminAddress.port }, 'admin listener');
    }
    this.issuer?.reportTo((event) => {
      const { type, ...fields } = event;
      this.audit.event(type, fields);
      if (type === 'signing_key_changed') this.log.info(fields, 'the key signing access tokens changed');
    });
    // Synchronously after the bind, before any connection is handled: the default issuer names the real port.
    this.issuer?.started(address.port);
    // Which configuration decided the records of this boot: its hash, on record before the first request.
    this.audit.event('gateway_start', {
      host: address.address,
      port: address.port,
      pid: process.pid,
      config_sha256: configHash(this.config),
      signing_kid: this.issuer?.currentSigningKid() ?? null,
      admin_port: this.#adminAddress?.port ?? null,
      ...(this.worker !== undefined ? { worker: this.worker } : {}),
    });
    // A worker's line is not the gateway's: the primary says `gatehouse listening` once every worker is.
    this.log.info({ host: address.address, port: address.port }, this.worker === undefined ? 'gatehouse listening' : 'worker listening');
    return address;
  }

  reloadCertificates(): void {
    this.listener.reloadCertificates();
    this.admin?.reloadCertificates();
    this.audit.event('certificates_reloaded', { cert: this.config.tls.cert });
    this.log.info('TLS certificates reloaded');
  }

  /**
   * Puts a new configuration's routes, upstreams, route quotas and identity headers in force without dropping a
   * connection or a request (config/reload.ts says what a reload may change, routing.ts how it is applied). `read` gives
   * the new configuration; when it throws, or the new one changes what only a restart can, or cannot be built, the
   * configuration in force stays whole. Either way the outcome is logged and recorded (`config_reloaded`,
   * `config_reload_refused`). Reloads run one after the other. Resolves with what changed, undefined when refused.
   */
  reload(read: () => Config): Promise<RoutingChange | undefined> {
    const reload = this.reloads.then(async () => {
      try {
        // A stopping gateway builds nothing more: what it would open, its shutdown would not close.
        if (this.lifecycle.stopping) throw new ConfigError('reload', ['the gateway is stopping']);
        const next = read();
        const restart = restartOnlyChanges(this.current, next);
        if (restart.length > 0)
          throw new ConfigError(
            'reload',
            restart.map((setting) => `${setting}: changed, but takes effect only after a restart`),
          );
        const change = await this.routing.reload(next);
        this.ingress.useRouter(this.routing.router);
        this.current = next;
        const hash = configHash(next);
        this.audit.setConfigVersion(hash.slice(0, 16));
        const names = (list: readonly string[]): string | null => (list.length > 0 ? list.join(',') : null);
        const fields = {
          config_sha256: hash,
          routes: change.routes,
          upstreams_added: names(change.upstreamsAdded),
          upstreams_changed: names(change.upstreamsChanged),
          upstreams_removed: names(change.upstreamsRemoved),
          quotas_changed: names(change.quotasChanged),
        };
        this.audit.event('config_reloaded', fields);
        this.metrics?.reload('reloaded');
        this.log.info(fields, 'configuration reloaded');
        return change;
      } catch (error) {
        // Whatever went wrong, a reload never takes the gateway down: the table in force was not touched.
        const problems = error instanceof ConfigError ? error.problems : [(error as Error).message];
        this.audit.event('config_reload_refused', { problems: problems.join('; ') });
        this.metrics?.reload('refused');
        this.log.error({ problems }, 'configuration not reloaded; the configuration in force stays');
        return undefined;
      }
    });
    this.reloads = reload.catch(() => undefined);
    return reload;
  }

  /** New session-ticket keys from the primary of the workers (it rotates them for all). */
  setTicketKeys(keys: Buffer): void {
    this.listener.setTicketKeys(keys);
  }

  get draining(): boolean {
    return this.listener.isDraining;
  }

  /** After a failed start (nothing was served): closes the upstream pools, the issuer and the audit sink (its chain lock). */
  async abandon(): Promise<void> {
    await this.routing.destroy();
    await this.redis?.close();
    await this.issuer?.close();
    await this.audit.close();
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
    await Promise.all([this.listener.drain(this.config.shutdown.drain_timeout_ms), this.admin?.drain(this.config.shutdown.drain_timeout_ms)]);
    // A reload begun before the stop finishes first (later ones are refused), so whatever it opened is closed below.
    await this.reloads;
    // Every client connection is gone now, so any upstream request still open has nobody to answer: abort, don't wait.
    await this.routing.destroy();
    await this.redis?.close();
    await this.issuer?.close();
    this.audit.event('gateway_stop', { pid: process.pid });
    await this.audit.close();
  }
}

/**
 * What the shared limiter store reports (outage, recovery) goes to the audit chain and the log. It may happen before the
 * audit log is open (Redis is connected first): a few such events wait for it.
 */
class LimiterStoreReport {
  private sink: AuditSink | undefined;
  private readonly waiting: Array<readonly [OperationalEvent, Record<string, string | number>]> = [];

  constructor(private readonly log: Logger) {}

  attach(sink: AuditSink): void {
    this.sink = sink;
    for (const [type, fields] of this.waiting.splice(0)) sink.event(type, fields);
  }

  /** False from an outage's report until its recovery's. */
  available = true;

  down(where: string, error: string): void {
    this.available = false;
    this.record('limiter_store_unavailable', { redis: where, error });
    this.log.error(
      { redis: where, err: error },
      "shared limiter store (Redis) unreachable: quota_outage degrade counts this instance's share in memory, deny answers 503",
    );
  }

  up(where: string, downMs: number): void {
    this.available = true;
    this.record('limiter_store_recovered', { redis: where, unavailable_ms: downMs });
    this.log.info({ redis: where, down_ms: downMs }, 'shared limiter store (Redis) reachable again: limits are counted across instances');
  }

  /** A worker's calls to its primary (which counts the workers' limits) went unanswered: the outage policies decide. */
  primarySilent(timeoutMs: number): void {
    this.record('limiter_store_unavailable', { primary: 'cluster primary', error: `no answer within ${timeoutMs} ms` });
    this.log.warn(
      { timeout_ms: timeoutMs },
      "the primary did not answer a limiter call in time: quota_outage degrade counts this worker's share in memory, deny answers 503",
    );
  }

  primaryBack(silentMs: number): void {
    this.record('limiter_store_recovered', { primary: 'cluster primary', unavailable_ms: silentMs });
    this.log.info({ silent_ms: silentMs }, 'the primary answers limiter calls again: limits are counted across workers');
  }

  private record(type: OperationalEvent, fields: Record<string, string | number>): void {
    if (this.sink !== undefined) this.sink.event(type, fields);
    else if (this.waiting.length < 16) this.waiting.push([type, fields]);
  }
}

/**
 * The shared limiter store: connected (for at most a second or the command timeout, whichever is longer) before the first
 * request, so instances started together count together from their first request. A gateway starts without it all the
 * same — its limiters then follow their outage policies.
 */
async function connectRedis(settings: DeepReadonly<RedisConfig>, report: LimiterStoreReport): Promise<RedisConnection> {
  let ca: string | undefined;
  if (settings.ca !== undefined) {
    try {
      ca = readFileSync(settings.ca, 'utf8');
    } catch (error) {
      throw new ConfigError('config', [`redis.ca: cannot read ${settings.ca} (${(error as NodeJS.ErrnoException).code ?? 'unknown error'})`]);
    }
  }
  const where = describeRedisUrl(settings.url);
  // The first connection is no recovery; one made after the wait below gave up is.
  let starting = true;
  const redis = new RedisConnection({ url: settings.url, ca, timeoutMs: settings.timeout_ms }, (state) => {
    if (state.up && !starting) report.up(where, state.downMs);
    else if (!state.up) report.down(where, state.error);
  });
  const ready = await redis.waitReady(Math.max(1000, settings.timeout_ms));
  starting = false;
  if (!ready) report.down(where, 'not reachable at start');
  return redis;
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
    throw new ConfigError(
      'config',
      mismatched.map(([key, , wanted]) => `${key}: with tls.dev_certificates the file must be ${basename(wanted)} beside tls.cert`),
    );
  }
  if (existsSync(paths.serverCert) && existsSync(paths.serverKey) && (config.tls.client_ca === undefined || existsSync(paths.caCert))) return;
  const { created } = await initDevCertificates(paths.dir);
  if (created) log.warn({ dir: paths.dir }, 'created development certificates (tls.dev_certificates is on; never use them in production)');
}

/** SHA-256 of the validated configuration (paths resolved), as the audit names it. */
function configHash(config: Config): string {
  return hash('sha256', JSON.stringify(config), 'hex');
}

/** The audit key's public half, when the key file exists (a gateway given another audit sink may have none). */
function auditPublicKeyPem(config: Config): string | undefined {
  try {
    return readAuditPublicKey(auditKeyFile(config)).pem;
  } catch {
    return undefined;
  }
}

function openAuditLog(config: Config, log: Logger, masterKey: string | undefined, worker: number | undefined): AuditLog {
  const settings = config.audit;
  makeDirectory(config.data_dir, 0o700);
  const signer = loadOrCreateAuditKey(auditKeyFile(config), openKeyEncryptionKey(config, masterKey));
  const named = settings.instance ?? defaultInstanceId(hostname());
  const instance = worker === undefined ? named : workerInstance(named, worker);
  const exportTo = checkpointExportFor(settings, instance, log);
  return new AuditLog({
    dir: settings.dir,
    instance,
    configVersion: configHash(config).slice(0, 16),
    fsync: settings.fsync,
    fsyncIntervalMs: settings.fsync_interval_ms,
    onFailure: settings.on_failure,
    segmentMaxBytes: settings.segment_max_bytes,
    segmentMaxAgeMs: settings.segment_max_age_s * 1000,
    maxBufferedBytes: settings.max_buffered_bytes,
    aggregateRefusals: {
      after: settings.aggregate_refusals.after,
      windowMs: settings.aggregate_refusals.window_s * 1000,
      maxSources: settings.aggregate_refusals.max_sources,
    },
    ...(settings.retention !== undefined ? { retention: retentionOf(settings.retention) } : {}),
    log,
    checkpoints: {
      signer,
      everyRecords: settings.checkpoint_every_records,
      intervalMs: settings.checkpoint_interval_s * 1000,
      ...(exportTo !== undefined ? { exportTo } : {}),
    },
  });
}
