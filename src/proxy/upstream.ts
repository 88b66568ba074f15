// An upstream: its targets, each with its own connections, the balancer that picks one per request, and the active health
// checks that ask every target, on their own connection, whether it serves.
import { readFileSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
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
  /** Each target's own connection for its checks; made when a target first appears, closed when it goes. */
  private readonly clients = new Map<Target<Pool>, Client>();
  private readonly running = new Set<Target<Pool>>();

  constructor(
    private readonly upstream: string,
    private readonly balancer: Balancer<Pool>,
    private readonly config: DeepReadonly<HealthConfig>,
    private readonly client: (origin: string, serverName: string | undefined) => Client,
    private readonly now: () => number,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => this.checkAll(), config.interval_ms);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  destroy(): Promise<void> {
    return Promise.all([...this.clients.values()].map((client) => client.destroy())).then(() => undefined);
  }

  private checkAll(): void {
    const targets = new Set(this.balancer.targets);
    for (const [target, client] of this.clients) {
      if (targets.has(target)) continue;
      this.clients.delete(target);
      client.close().catch(() => undefined);
    }
    for (const target of targets) this.check(target);
  }

  private check(target: Target<Pool>): void {
    if (this.running.has(target)) return;
    let client = this.clients.get(target);
    if (client === undefined) {
      client = this.client(target.origin, target.serverName);
      this.clients.set(target, client);
    }
    this.running.add(target);
    const { path, timeout_ms: timeout, expect_status: expected } = this.config;
    client
      .request({
        path,
        method: 'GET',
        headers: { host: target.hostHeader, 'user-agent': HEALTH_CHECK_AGENT },
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

/** Every address a host name resolves to (getaddrinfo: /etc/hosts, then DNS). */
export type Resolver = (hostname: string) => Promise<string[]>;

const systemResolver: Resolver = (hostname) => lookup(hostname, { all: true }).then((found) => found.map((entry) => entry.address));

/** A configured target given by host name: each address it resolves to is a target of its own. */
interface NamedTarget {
  readonly protocol: string;
  readonly hostname: string;
  readonly port: string;
  readonly weight: number;
  /** `svc.internal:8080`: the Host header its addresses get. */
  readonly authority: string;
}

export class Upstream {
  readonly name: string;
  readonly balancer: Balancer<Pool>;
  /** '' or `/api/v2`: every request's canonical path is sent under it. */
  readonly basePath: string;
  readonly health: PassiveHealth;
  readonly retries: RetryBudget;
  /** Requests admitted and not yet finished (running on a connection or waiting for one), all targets together. */
  inFlight = 0;

  private readonly checks: HealthChecks | undefined;
  private readonly fixed: readonly Target<Pool>[];
  private readonly named: readonly NamedTarget[];
  private readonly ca: Buffer | undefined;
  private refresher: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    name: string,
    private readonly config: DeepReadonly<UpstreamConfig>,
    private readonly log: Logger,
    /** Epoch ms, for ejections (tests step it). */
    readonly now: () => number = Date.now,
    private readonly resolve: Resolver = systemResolver,
  ) {
    this.name = name;
    this.basePath = config.base_path;
    this.health = {
      consecutiveFailures: config.passive_health.consecutive_failures,
      failureRate: config.passive_health.failure_rate,
      windowMs: config.passive_health.window_ms,
      minRequests: config.passive_health.min_requests,
      ejectionMs: config.passive_health.ejection_ms,
      maxEjectionMs: config.passive_health.max_ejection_ms,
    };
    this.retries = new RetryBudget(config.retry_budget.ratio, config.retry_budget.burst);
    this.ca = config.ca !== undefined ? readFileSync(config.ca) : undefined;
    const fixed: Target<Pool>[] = [];
    const named: NamedTarget[] = [];
    for (const { origin, weight } of config.targets) {
      const url = new URL(origin);
      if (isIP(url.hostname.replace(/^\[(.*)\]$/, '$1')) !== 0) fixed.push(this.target(origin, weight, url.host));
      else named.push({ protocol: url.protocol, hostname: url.hostname, port: url.port, weight, authority: url.host });
    }
    this.fixed = fixed;
    this.named = named;
    this.balancer = new Balancer(fixed, config.balance, now, config.health === false ? 0 : config.health.interval_ms);
    this.checks =
      config.health === false
        ? undefined
        : new HealthChecks(
            name,
            this.balancer,
            config.health,
            (origin, serverName) => new Client(origin, poolOptions(origin, config, this.ca, serverName)),
            now,
            log,
          );
  }

  /** The most that may be in flight: every connection of every target busy plus the configured queue. */
  get capacity(): number {
    return this.balancer.targets.length * this.config.connections + this.config.max_queued;
  }

  /** Resolves the targets given by host name, then again every dns_refresh_ms. Nothing to do without any. */
  async start(): Promise<void> {
    if (this.named.length === 0) return;
    await this.refresh();
    this.refresher = setInterval(() => void this.refresh(), this.config.dns_refresh_ms);
    this.refresher.unref();
  }

  /**
   * Each named target's addresses now. A name that cannot be resolved keeps the addresses it had (a DNS hiccup takes no
   * target away); an address that is gone leaves, its requests in flight finishing on its connections.
   */
  async refresh(): Promise<void> {
    const current = new Map(this.balancer.targets.map((target) => [target.origin, target]));
    const next: Target<Pool>[] = [...this.fixed];
    for (const named of this.named) {
      let addresses: string[];
      try {
        addresses = [...new Set(await this.resolve(named.hostname))];
      } catch (error) {
        this.log.warn(
          { upstream: this.name, host: named.hostname, err: (error as NodeJS.ErrnoException).code ?? String(error) },
          'upstream host name not resolved; keeping its addresses',
        );
        next.push(...this.balancer.targets.filter((target) => target.hostHeader === named.authority && !this.fixed.includes(target)));
        continue;
      }
      for (const address of addresses) {
        const origin = `${named.protocol}//${isIP(address) === 6 ? `[${address}]` : address}${named.port === '' ? '' : `:${named.port}`}`;
        next.push(current.get(origin) ?? this.target(origin, named.weight, named.authority, named.hostname));
      }
    }
    if (this.stopped) return;
    const kept = new Set(next);
    for (const target of this.balancer.targets) {
      if (kept.has(target)) continue;
      this.log.info({ upstream: this.name, target: target.authority }, 'upstream target no longer resolved: draining it');
      target.pool.close().catch(() => undefined);
    }
    for (const target of next) if (!current.has(target.origin)) this.log.info({ upstream: this.name, target: target.authority }, 'upstream target added');
    this.balancer.targets = next;
  }

  /**
   * Taken out of service (a reload removed or changed it): no more health checks or DNS refreshes; its requests in flight,
   * queued ones too, finish on their connections, which then close. Bounded by the upstream's timeouts.
   */
  retire(): Promise<void> {
    return this.halt((pool) => pool.close());
  }

  /** Closes every connection at once, aborting whatever is still in flight (shutdown, after the client connections are gone). */
  destroy(): Promise<void> {
    return this.halt((pool) => pool.destroy());
  }

  /** Stops the health checks and DNS refreshes, then ends every target's pool as `end` says. */
  private halt(end: (pool: Pool) => Promise<void>): Promise<void> {
    this.stopped = true;
    clearInterval(this.refresher);
    this.checks?.stop();
    return Promise.all([...this.balancer.targets.map((target) => end(target.pool)), this.checks?.destroy()]).then(() => undefined);
  }

  private target(origin: string, weight: number, hostHeader: string, serverName?: string): Target<Pool> {
    const pool = new Pool(origin, { ...poolOptions(origin, this.config, this.ca, serverName), connections: this.config.connections });
    return new Target(origin, new URL(origin).host, weight, pool, hostHeader, serverName);
  }
}

/** How the gateway connects to one target: the upstream's timeouts and bounds, and its TLS rules. */
function poolOptions(origin: string, config: DeepReadonly<UpstreamConfig>, ca: Buffer | undefined, serverName?: string): Client.Options {
  const url = new URL(origin);
  // An address resolved from a host name is checked against that name (SNI and the certificate), not the address.
  const bareHost = serverName ?? url.hostname.replace(/^\[(.*)\]$/, '$1');
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
