// Prometheus metrics: an observer on the pipeline's seam (told of every decision and completion once it is on record) and
// the process's own metrics, in one registry per gateway (never prom-client's global one), read by the admin listener's
// /metrics. Labels are bounded by construction: route ids, stages, decisions and catalogue codes — never a path, subject,
// address or token, so a flood of random requests adds counts, not series.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AuditRecord, AuditState, CompletionEvent } from '../audit/event.js';
import type { DecisionObserver } from '../pipeline/pipeline.js';

/** The route label of a request no route matched (edge refusals, 404s). */
const NO_ROUTE = '';
/** The token endpoint's route id (issuer/issuer.ts): its allows are tokens issued. */
const TOKEN_ROUTE = 'oauth-token';
/** The endpoints where a client authenticates itself (issuer/issuer.ts). */
const CLIENT_AUTH_ROUTES: ReadonlySet<string> = new Set([TOKEN_ROUTE, 'oauth-introspect', 'oauth-revoke']);
/** What a Node or OpenSSL error code looks like; anything else is not put in a label. */
const ERROR_CODE = /^[A-Z][A-Z0-9_]{1,63}$/;
/** Request durations, seconds: from a cached token check (sub-millisecond) to a slow upstream. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class GatewayMetrics implements DecisionObserver {
  readonly registry = new Registry();
  private readonly requests: Counter<'route' | 'decision' | 'stage' | 'code'>;
  private readonly duration: Histogram<'route'>;
  private readonly upstreamDuration: Histogram<'route'>;
  private readonly gatewayDuration: Histogram<'route'>;
  private readonly upstream: Counter<'route' | 'outcome'>;
  private readonly upstreamFailures: Counter<'route' | 'code'>;
  private readonly tokens: Counter;
  private readonly clientAuthFailures: Counter<'route'>;
  private readonly clientAuthBlocks: Counter<'route'>;
  private readonly reloads: Counter<'outcome'>;
  private readonly handshakes: Counter<'listener' | 'version' | 'protocol'>;
  private readonly handshakeFailures: Counter<'listener' | 'reason'>;
  /** What the open-connections gauge reads at each scrape, per listener. */
  private readonly connectionCounts = new Map<string, () => number>();

  constructor() {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'gatehouse_requests_total',
      help: 'Requests decided, by route, decision (allow or deny), the stage that decided and the code the client received.',
      labelNames: ['route', 'decision', 'stage', 'code'],
      registers,
    });
    this.duration = new Histogram({
      name: 'gatehouse_request_duration_seconds',
      help: 'Time from the request to the end of its answer, of admitted requests, by route.',
      labelNames: ['route'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.upstreamDuration = new Histogram({
      name: 'gatehouse_upstream_duration_seconds',
      help: "Forwarded requests: time from sending the request upstream to the end of the upstream's answer (or failure), by route.",
      labelNames: ['route'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.gatewayDuration = new Histogram({
      name: 'gatehouse_gateway_added_duration_seconds',
      help: "Forwarded requests: what the gateway added to the upstream's time (checks, audit, proxying), by route.",
      labelNames: ['route'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.upstream = new Counter({
      name: 'gatehouse_upstream_requests_total',
      help: 'Forwarded requests by how they ended: responded, failed (the upstream failed), aborted (the client left) or not sent.',
      labelNames: ['route', 'outcome'],
      registers,
    });
    this.upstreamFailures = new Counter({
      name: 'gatehouse_upstream_failures_total',
      help: "Admitted requests the gateway answered in the upstream's place, by route and code (upstream_unavailable, upstream_timeout, no_healthy_upstream, ...).",
      labelNames: ['route', 'code'],
      registers,
    });
    this.tokens = new Counter({
      name: 'gatehouse_tokens_issued_total',
      help: 'Access tokens issued by the token endpoint (refusals are gatehouse_requests_total{route="oauth-token",decision="deny"} by code).',
      registers,
    });
    this.clientAuthFailures = new Counter({
      name: 'gatehouse_client_auth_failures_total',
      help: 'Client authentications that failed at the OAuth endpoints (invalid_client), by route.',
      labelNames: ['route'],
      registers,
    });
    this.clientAuthBlocks = new Counter({
      name: 'gatehouse_client_auth_blocks_total',
      help: 'Client authentication attempts refused unchecked by the brute-force limits (slow_down), by route.',
      labelNames: ['route'],
      registers,
    });
    this.reloads = new Counter({
      name: 'gatehouse_config_reloads_total',
      help: 'Configuration reloads (SIGHUP, gatehouse reload), by outcome: reloaded, or refused (the configuration in force stays).',
      labelNames: ['outcome'],
      registers,
    });
    this.handshakes = new Counter({
      name: 'gatehouse_tls_handshakes_total',
      help: 'TLS handshakes completed, by listener (public, admin), protocol version and application protocol (ALPN).',
      labelNames: ['listener', 'version', 'protocol'],
      registers,
    });
    this.handshakeFailures = new Counter({
      name: 'gatehouse_tls_handshake_failures_total',
      help: 'TLS handshakes that failed, by listener and the reason Node reported (an OpenSSL error code, or other).',
      labelNames: ['listener', 'reason'],
      registers,
    });
    const counts = this.connectionCounts;
    new Gauge({
      name: 'gatehouse_open_connections',
      help: 'Client connections open now, by listener.',
      labelNames: ['listener'],
      registers,
      collect() {
        for (const [listener, count] of counts) this.set({ listener }, count());
      },
    });
    collectDefaultMetrics({ register: this.registry });
  }

  /** The audit chain's state, read at each scrape. */
  watchAudit(state: () => AuditState): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, read: (s: AuditState) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(state()));
        },
      });
    };
    gauge('gatehouse_audit_chain_seq', "Sequence number of the last record of this gateway's audit chain.", (s) => s.seq);
    gauge('gatehouse_audit_dropped_records', 'Audit records dropped since start (audit.on_failure: fail-open only).', (s) => s.dropped);
    gauge('gatehouse_audit_queued_bytes', 'Audit record bytes waiting for the disk.', (s) => s.queuedBytes);
    gauge(
      'gatehouse_audit_checkpoint_seq',
      'Sequence number the newest signed checkpoint of this run covers (0 before the first): the records after it await a signature.',
      (s) => s.checkpointSeq,
    );
  }

  /**
   * `gatehouse_certificate_expiry_timestamp_seconds{certificate}`: when each certificate read at the scrape stops being
   * valid (the server certificate, the store's client CA), so an alert can fire weeks before.
   */
  watchCertificates(read: () => Iterable<readonly [string, number]>): void {
    new Gauge({
      name: 'gatehouse_certificate_expiry_timestamp_seconds',
      help: 'When a certificate the gateway uses expires (notAfter), Unix seconds: the server certificate, the client CA.',
      labelNames: ['certificate'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [certificate, notAfterMs] of read()) this.set({ certificate }, Math.floor(notAfterMs / 1000));
      },
    });
  }

  /**
   * The key that signs tokens now: `gatehouse_signing_key_created_timestamp_seconds` (a signing key does not expire while it
   * signs; its age is what a rotation policy alerts on) and `gatehouse_signing_key_retirement_timestamp_seconds` (when a
   * scheduled rotation stops it; 0 when none is scheduled). Both are 0 while no key signs.
   */
  watchSigningKey(read: () => { readonly createdAt: number; readonly retiresAt: number | null } | undefined): void {
    const registers = [this.registry];
    new Gauge({
      name: 'gatehouse_signing_key_created_timestamp_seconds',
      help: 'When the key that signs access tokens now was created, Unix seconds (0 while no key signs).',
      registers,
      collect() {
        this.reset();
        const times = read();
        if (times !== undefined) this.set(Math.floor(times.createdAt / 1000));
      },
    });
    new Gauge({
      name: 'gatehouse_signing_key_retirement_timestamp_seconds',
      help: 'When the key that signs now stops signing (a rotation scheduled it), Unix seconds; 0 when no rotation is scheduled.',
      registers,
      collect() {
        this.reset();
        const retiresAt = read()?.retiresAt;
        if (retiresAt !== undefined && retiresAt !== null) this.set(Math.floor(retiresAt / 1000));
      },
    });
  }

  /** `gatehouse_store_up{store}`: 1 while the credential store or the shared limiter store answers, 0 while it does not. */
  watchStores(read: () => Iterable<readonly [string, boolean]>): void {
    new Gauge({
      name: 'gatehouse_store_up',
      help: 'Whether a store answers: the credential store (credentials), the shared limiter store (limiters, Redis).',
      labelNames: ['store'],
      registers: [this.registry],
      collect() {
        for (const [store, up] of read()) this.set({ store }, up ? 1 : 0);
      },
    });
  }

  /**
   * `gatehouse_upstream_in_flight{upstream}` and `gatehouse_upstream_capacity{upstream}`: the requests each upstream holds
   * now (sent, or waiting for a pooled connection) and how many it may hold before the gateway refuses with 503.
   */
  watchUpstreams(read: () => Iterable<{ readonly name: string; readonly inFlight: number; readonly capacity: number }>): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, value: (upstream: { inFlight: number; capacity: number }) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['upstream'],
        registers,
        collect() {
          // Upstreams come and go with reloads: only the ones in force are reported.
          this.reset();
          for (const upstream of read()) this.set({ upstream: upstream.name }, value(upstream));
        },
      });
    };
    gauge('gatehouse_upstream_in_flight', 'Requests an upstream holds now: sent, or queued for a pooled connection.', (u) => u.inFlight);
    gauge('gatehouse_upstream_capacity', 'Requests an upstream may hold before further ones are refused (503 + Retry-After).', (u) => u.capacity);
  }

  reload(outcome: 'reloaded' | 'refused'): void {
    this.reloads.inc({ outcome });
  }

  /** The open-connections gauge of `listener` reads `count` at each scrape. */
  countConnections(listener: 'public' | 'admin', count: () => number): void {
    this.connectionCounts.set(listener, count);
  }

  handshake(listener: 'public' | 'admin', version: string, protocol: string): void {
    // Both come from a fixed set (OpenSSL's version names, the ALPN protocols the listener offers).
    this.handshakes.inc({ listener, version, protocol });
  }

  handshakeFailed(listener: 'public' | 'admin', code: string | undefined): void {
    // Error codes are constants of Node and OpenSSL; anything else (or absent) is one label value.
    this.handshakeFailures.inc({ listener, reason: code !== undefined && ERROR_CODE.test(code) ? code : 'other' });
  }

  // About a microsecond per request for both (prom-client hashes the label set on every update): under 1 % of the
  // gateway's CPU per proxied request (bench/).
  onDecision(record: AuditRecord): void {
    this.requests.inc({ route: record.route ?? NO_ROUTE, decision: record.decision, stage: record.stage, code: record.code ?? '' });
    if (record.route === TOKEN_ROUTE && record.decision === 'allow') this.tokens.inc();
    else if (record.decision === 'deny' && record.stage === 'issuer' && record.route !== null && CLIENT_AUTH_ROUTES.has(record.route)) {
      if (record.code === 'invalid_client') this.clientAuthFailures.inc({ route: record.route });
      else if (record.code === 'slow_down') this.clientAuthBlocks.inc({ route: record.route });
    }
  }

  onComplete(event: CompletionEvent): void {
    this.duration.observe({ route: event.route }, event.duration_ms / 1000);
    if (event.upstream_ms !== null) {
      this.upstreamDuration.observe({ route: event.route }, event.upstream_ms / 1000);
      this.gatewayDuration.observe({ route: event.route }, Math.max(0, event.duration_ms - event.upstream_ms) / 1000);
    }
    if (event.code !== null) this.upstreamFailures.inc({ route: event.route, code: event.code });
    if (event.upstream !== null) this.upstream.inc({ route: event.route, outcome: event.upstream });
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
