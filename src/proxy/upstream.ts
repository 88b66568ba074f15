// An upstream: its targets, each with its own connections, the balancer that picks one per request, and the active health
// checks that ask every target, on their own connection, whether it serves.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { Client, Pool } from 'undici';
import type { UpstreamConfig } from '../config/routes.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import { Balancer, RetryBudget, Target, type PassiveHealth } from './targets.js';

type HealthConfig = Exclude<UpstreamConfig['health'], false>;

/** Every interval, one GET of the health path per target (never two at once for one target), each bounded by its timeout. */
class HealthChecks {
  private readonly timer: NodeJS.Timeout;
  private readonly clients = new Map<Target<Pool>, Client>();
  private readonly running = new Set<Target<Pool>>();

  constructor(
    private readonly upstream: string,
    private readonly targets: readonly Target<Pool>[],
    private readonly config: DeepReadonly<HealthConfig>,
    client: (origin: string) => Client,
    private readonly now: () => number,
    private readonly log: Logger,
  ) {
    for (const target of targets) this.clients.set(target, client(target.origin));
    this.timer = setInterval(() => {
      for (const target of this.targets) this.check(target);
    }, config.interval_ms);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  destroy(): Promise<void> {
    return Promise.all([...this.clients.values()].map((client) => client.destroy())).then(() => undefined);
  }

  private check(target: Target<Pool>): void {
    const client = this.clients.get(target);
    if (client === undefined || this.running.has(target)) return;
    this.running.add(target);
    const { path, timeout_ms: timeout, expect_status: expected } = this.config;
    client
      .request({
        path,
        method: 'GET',
        headers: { host: target.authority, 'user-agent': HEALTH_CHECK_AGENT },
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: AbortSignal.timeout(timeout),
      })
      .then(async (response) => {
        await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        return expected === undefined ? response.statusCode < 500 : expected.includes(response.statusCode);
      })
      .catch(() => false)
      .then((ok) => {
        this.running.delete(target);
        const change = target.checked(ok, { healthyAfter: this.config.healthy_after, unhealthyAfter: this.config.unhealthy_after }, this.now());
        if (change === 'healthy')
          this.log.info({ upstream: this.upstream, target: target.authority }, 'upstream target passes its health checks: back in service');
        if (change === 'unhealthy')
          this.log.warn({ upstream: this.upstream, target: target.authority }, 'upstream target fails its health checks: out of service');
      });
  }
}

/** The User-Agent of the gateway's health checks: an upstream can tell them from requests. */
export const HEALTH_CHECK_AGENT = 'gatehouse-health-check';

export class Upstream {
  readonly name: string;
  readonly balancer: Balancer<Pool>;
  /** '' or `/api/v2`: every request's canonical path is sent under it. */
  readonly basePath: string;
  readonly health: PassiveHealth;
  readonly retries: RetryBudget;
  /** Requests admitted and not yet finished (running on a connection or waiting for one), all targets together. */
  inFlight = 0;
  /** The most that may be in flight: every connection of every target busy plus the configured queue. */
  readonly capacity: number;

  private readonly checks: HealthChecks | undefined;

  constructor(
    name: string,
    config: DeepReadonly<UpstreamConfig>,
    log: Logger,
    /** Epoch ms, for ejections (tests step it). */
    readonly now: () => number = Date.now,
  ) {
    this.name = name;
    this.basePath = config.base_path;
    this.capacity = config.targets.length * config.connections + config.max_queued;
    this.health = {
      consecutiveFailures: config.passive_health.consecutive_failures,
      failureRate: config.passive_health.failure_rate,
      windowMs: config.passive_health.window_ms,
      minRequests: config.passive_health.min_requests,
      ejectionMs: config.passive_health.ejection_ms,
      maxEjectionMs: config.passive_health.max_ejection_ms,
    };
    this.retries = new RetryBudget(config.retry_budget.ratio, config.retry_budget.burst);
    const ca = config.ca !== undefined ? readFileSync(config.ca) : undefined;
    const targets = config.targets.map(
      ({ origin, weight }) =>
        new Target(origin, new URL(origin).host, weight, new Pool(origin, { ...poolOptions(origin, config, ca), connections: config.connections })),
    );
    this.balancer = new Balancer(targets, config.balance, now, config.health === false ? 0 : config.health.interval_ms);
    this.checks =
      config.health === false
        ? undefined
        : new HealthChecks(name, targets, config.health, (origin) => new Client(origin, poolOptions(origin, config, ca)), now, log);
  }

  destroy(): Promise<void> {
    this.checks?.stop();
    return Promise.all([...this.balancer.targets.map((target) => target.pool.destroy()), this.checks?.destroy()]).then(() => undefined);
  }
}

/** How the gateway connects to one target: the upstream's timeouts and bounds, and its TLS rules. */
function poolOptions(origin: string, config: DeepReadonly<UpstreamConfig>, ca: Buffer | undefined): Client.Options {
  const url = new URL(origin);
  const bareHost = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return {
    connectTimeout: config.connect_timeout_ms,
    headersTimeout: config.headers_timeout_ms,
    bodyTimeout: config.body_timeout_ms,
    keepAliveTimeout: 4_000,
    // Responses are streamed, never buffered whole; a header block from the upstream is bounded like the client's.
    maxHeaderSize: 16_384,
    pipelining: 1,
    ...(url.protocol === 'https:'
      ? {
          connect: {
            // The upstream is verified against its pinned CA only (TLS-15); there is no switch to turn this off.
            // Without a pinned CA nothing is trusted: an empty list keeps Node from loading the system root store.
            rejectUnauthorized: true,
            ca: ca ?? [],
            // SNI carries host names only (RFC 6066 §3); for an IP literal the certificate is checked against its IP SAN.
            ...(isIP(bareHost) === 0 ? { servername: bareHost } : {}),
            minVersion: 'TLSv1.2' as const,
          },
        }
      : {}),
  };
}
