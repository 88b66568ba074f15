// THE order of the request pipeline, and the only place that knows it, and its one exit:
// pre-auth quota (per IP) → [body intake] → authenticate → authorize → quota (per principal) → handler.
// Every outcome — edge refusal, connection-level refusal, stage refusal, a service's answer, a fault, a probe — arrives
// here as a value; the pipeline alone builds its decision record, records it (audit log, then observers) and writes the
// answer through server/exchange.ts. A throw anywhere denies (never allows), is logged with the request id, and the
// client sees a generic 5xx.
import type { Logger } from 'pino';
import { AuditUnavailableError, type AuditEvent, type AuditRecord, type AuditSink, type CompletionEvent, type DecisionStage } from '../audit/event.js';
import { aboutRequest, actorOf, decisionRecord, refusalOutcome, requestDecision, type DecisionAbout, type DecisionOutcome } from './decision.js';
import { GatewayError, type ErrorCode } from '../errors/catalogue.js';
import { abortResponse, clientGone, inviteBody, requestBody, sendAnswer, sendProblem } from '../server/exchange.js';
import type {
  Answer,
  AuthenticatedRequest,
  AuthnResult,
  ClientConnection,
  ClientGone,
  ForwardOutcome,
  ForwardTicket,
  HttpExchange,
  PreAuthBudget,
  Principal,
  QuotaLease,
  Refusal,
  RequestContext,
} from './stage.js';

export interface PipelineDeps {
  readonly preAuthQuota: PreAuthBudget;
  readonly audit: AuditSink;
  readonly observers?: readonly DecisionObserver[];
  readonly log: Logger;
}

/** A health probe that passed the edge checks. */
export interface ProbeRequest {
  readonly kind: 'liveness' | 'readiness';
  readonly method: string;
  readonly path: string;
  readonly connection: ClientConnection;
  readonly traceId: string;
}

/** What the edge knew about a request it refused before the pipeline ran. */
export interface EdgeRefusal {
  readonly method: string;
  readonly rawTarget: string;
  readonly path: string | undefined;
  readonly routeId: string | undefined;
  readonly connection: ClientConnection;
  readonly traceId: string;
}

/** A refusal below the request level: what the listener saw and what it answered (undefined: the socket was destroyed). */
export interface ConnectionRefusal {
  readonly parserCode: string;
  readonly peer: string;
  readonly requestId: string;
  readonly answer: { readonly status: number; readonly code: ErrorCode } | undefined;
  readonly protocol: 'h1' | 'h2';
}

/**
 * Told of every decision once it is on record (metrics, the console's live feed). Observers run on the hot path: they must
 * be cheap and must not throw; a throw is logged and never changes the answer. The audit log is not one of them: it is the
 * one consumer whose failure decides (the request fails closed), so it has its own slot in PipelineDeps.
 */
export interface DecisionObserver {
  onDecision(record: AuditRecord): void;
  /** How an admitted request ended, after its answer went out. */
  onComplete?(event: CompletionEvent): void;
}

export class Pipeline {
  private readonly observers: readonly DecisionObserver[];

  constructor(private readonly deps: PipelineDeps) {
    this.observers = deps.observers ?? [];
  }

  async run(received: RequestContext, exchange: HttpExchange): Promise<void> {
    let request = received;
    let stage: DecisionStage = 'pre-auth-quota';
    let principal: Principal | undefined;
    // What the route quota holds for this request (a concurrency slot), released in the `finally` below, exactly once,
    // however the request ends: answered, refused later, client gone, upstream failure or timeout, a throw (RL-03).
    let lease: QuotaLease | undefined;
    // Upstream capacity held for an admitted request until the forwarder takes it over (the allow's write can fail first).
    let ticket: ForwardTicket | undefined;
    try {
      const preAuth = await this.deps.preAuthQuota.consume(request.connection.limitKey);
      if (!preAuth.allowed) return this.refuse(request, exchange, stage, { outcome: 'refused', error: preAuth.error });

      const { route } = request;
      if (route.intake !== undefined) {
        // The credential is in the body (OAuth client authentication): the body is invited and read first, within the
        // route's limit; a refused form never reaches authentication.
        stage = 'intake';
        if (request.hasBody) inviteBody(exchange);
        const intake = await route.intake.read(request, requestBody(exchange));
        if (intake.outcome !== 'read') return this.refuse(request, exchange, stage, intake);
        request = { ...request, form: intake.form };
      }

      stage = 'authn';
      // Authenticators answer synchronously unless they need I/O; only then is there an await (a hot-path saving).
      let authn = authenticate(request);
      if (authn instanceof Promise) authn = await authn;
      if (authn.outcome !== 'authenticated') {
        if (authn.outcome === 'rejected')
          return this.refuse(request, exchange, stage, {
            outcome: 'refused',
            error: authn.error,
            ...(authn.presented !== undefined ? { credential: authn.presented } : {}),
          });
        return this.refuse(request, exchange, stage, { outcome: 'refused', error: noCredential(request) });
      }
      principal = authn.principal;
      const authenticated: AuthenticatedRequest = { ...request, principal };

      stage = 'authz';
      const decision = route.authorizer.authorize(authenticated);
      if (!decision.allowed) return this.refuse(request, exchange, stage, { outcome: 'refused', error: decision.error, credential: principal });

      stage = 'quota';
      if (route.quota !== undefined) {
        const quota = await route.quota.consume(authenticated);
        if (!quota.allowed) return this.refuse(request, exchange, stage, { outcome: 'refused', error: quota.error, credential: principal });
        lease = quota.lease;
        // Set before any handler writes: every answer to this request carries them, the upstream's included (whose own
        // RateLimit fields the proxy drops on limited routes, so they can neither be forged nor doubled).
        if (quota.rateLimitPolicy !== undefined) exchange.res.setHeader('ratelimit-policy', quota.rateLimitPolicy);
        if (quota.rateLimit !== undefined) exchange.res.setHeader('ratelimit', quota.rateLimit);
      }

      stage = 'handler';
      // The body is invited only now that the request is admitted: no `100 Continue` for refused requests (H1-12).
      if (request.hasBody && route.intake === undefined) inviteBody(exchange);
      const { handler } = route;
      if (handler.kind === 'forwarder') {
        // Capacity first: a full upstream queue is a refusal on record, not an allow answered 503.
        const admission = handler.admit(authenticated);
        if (!admission.admitted) return this.refuse(request, exchange, stage, { outcome: 'refused', error: admission.error, credential: principal });
        ticket = admission.ticket;
        // The allow is written (handed to the OS: group commit) before the protected service sees anything; if it cannot
        // be, nothing is admitted. So a crash cannot lose the record of a request an upstream saw.
        this.record(requestDecision(request, 'allow', stage, undefined, actorOf(principal)));
        await this.deps.audit.flush();
        const taken = ticket;
        ticket = undefined;
        const outcome = await handler.forward(authenticated, exchange, taken);
        this.complete(request, exchange, outcome, outcome.bytesIn, outcome.bytesOut);
        return;
      }
      // A service's answer is a value: recorded (allow, or the service's refusal) before a byte of it is written, so no
      // token leaves the gateway unrecorded.
      const result = await handler.serve(authenticated, requestBody(exchange));
      if (result.outcome !== 'answered')
        return this.refuse(request, exchange, stage, result.outcome === 'refused' ? { credential: principal, ...result } : result);
      this.record(requestDecision(request, 'allow', route.oauth ? 'issuer' : stage, undefined, actorOf(result.credential ?? principal)));
      await this.deps.audit.flush();
      // A response already started here can only be the body deadline's 408: the answer is not written over it.
      const sent = !clientGone(exchange) && !exchange.res.headersSent ? sendAnswer(exchange, result.answer) : 0;
      this.complete(request, exchange, undefined, request.contentLength ?? null, sent);
    } catch (fault) {
      this.fail(request, exchange, stage, fault, principal);
    } finally {
      lease?.release();
      ticket?.release();
    }
  }

  /** Audits and answers a refusal made at the edge (framing, target, host, route), before any stage ran. */
  async refuseAtEdge(refusal: EdgeRefusal, exchange: HttpExchange, edgeError: GatewayError, close: boolean): Promise<void> {
    // Edge refusals spend the same per-IP pre-auth budget: a flood of malformed or unroutable requests is throttled
    // like any other, and cannot probe routes or grow the audit log faster than admitted traffic could.
    let error = edgeError;
    try {
      const preAuth = await this.deps.preAuthQuota.consume(refusal.connection.limitKey);
      if (!preAuth.allowed) error = preAuth.error;
    } catch (fault) {
      this.deps.log.error({ request_id: exchange.requestId, err: describe(fault) }, 'pre-auth quota failed for an edge refusal');
    }
    const about: DecisionAbout = {
      requestId: exchange.requestId,
      method: refusal.method,
      path: refusal.path ?? null,
      rawTarget: refusal.rawTarget,
      route: refusal.routeId ?? null,
      protocol: refusal.connection.protocol,
      clientAddress: refusal.connection.clientAddress,
      peerAddress: refusal.connection.peerAddress,
      traceId: refusal.traceId,
    };
    this.recordRefusal(decisionRecord(about, 'deny', error === edgeError ? 'edge' : 'pre-auth-quota', refusalOutcome(error), undefined), exchange.requestId);
    sendProblem(exchange, error, { close });
  }

  /**
   * Answers a health probe that passed the edge checks. The answers (200, or 503 while draining) are not decisions about
   * access and are not recorded (a load balancer asks every few seconds); a probe with another method is refused like
   * any request and recorded.
   */
  answerProbe(probe: ProbeRequest, exchange: HttpExchange, ready: boolean): void {
    if (probe.method !== 'GET' && probe.method !== 'HEAD') {
      // An edge refusal like a route's 405, with the same pre-auth budget.
      const error = new GatewayError('method_not_allowed', { reason: 'probe answers GET and HEAD', headers: { allow: 'GET, HEAD' } });
      void this.refuseAtEdge(
        { method: probe.method, rawTarget: probe.path, path: probe.path, routeId: undefined, connection: probe.connection, traceId: probe.traceId },
        exchange,
        error,
        false,
      );
      return;
    }
    if (probe.kind === 'readiness' && !ready) sendAnswer(exchange, { status: 503, body: { status: 'draining' }, headers: { 'retry-after': '1' } });
    else sendAnswer(exchange, PROBE_OK);
  }

  /** Audits a connection-level refusal (HTTP/1.1 parser reject, CONNECT) that never became a request, as it was answered. */
  recordConnectionRefusal(refusal: ConnectionRefusal): void {
    const { parserCode, peer, requestId, answer, protocol } = refusal;
    const about: DecisionAbout = {
      requestId,
      method: parserCode === 'CONNECT' ? 'CONNECT' : '',
      path: null,
      rawTarget: '',
      route: null,
      protocol,
      clientAddress: peer,
      peerAddress: peer,
      // Below the request level: no request, no trace.
      traceId: null,
    };
    // What the client was sent; a connection destroyed unanswered has no status, and the parser's code is the reason.
    const outcome: DecisionOutcome = { code: answer?.code ?? 'bad_request', reason: parserCode, status: answer?.status ?? null };
    this.recordRefusal(decisionRecord(about, 'deny', 'edge', outcome, undefined), requestId);
  }

  /** The one way a decision is recorded: the audit log first (a throw fails the request closed), then the observers. */
  private record(event: AuditEvent): void {
    const record = this.deps.audit.append(event);
    for (const observer of this.observers) {
      try {
        observer.onDecision(record);
      } catch (fault) {
        this.deps.log.error({ request_id: record.request_id, err: describe(fault) }, 'decision observer failed');
      }
    }
  }

  /** How an admitted request ended (Part B of the audit): status sent, bytes, latency, upstream outcome. */
  private complete(
    request: RequestContext,
    exchange: HttpExchange,
    /** A forwarded request's outcome; undefined for a built-in service. */
    forwarded: ForwardOutcome | undefined,
    bytesIn: number | null,
    bytesOut: number,
  ): void {
    const event: CompletionEvent = {
      request_id: request.id,
      route: request.route.id,
      status: exchange.res.headersSent ? exchange.res.statusCode : null,
      upstream: forwarded?.upstream ?? null,
      upstream_status: forwarded?.upstreamStatus ?? null,
      upstream_error: forwarded?.error ?? null,
      upstream_target: forwarded?.target ?? null,
      upstream_retried: forwarded === undefined || forwarded.retried.length === 0 ? null : forwarded.retried,
      code: forwarded?.code ?? null,
      upstream_ms: forwarded?.upstreamMs ?? null,
      bytes_in: bytesIn,
      bytes_out: bytesOut,
      duration_ms: Math.round((performance.now() - request.startedAt) * 100) / 100,
    };
    this.deps.audit.complete(event);
    for (const observer of this.observers) {
      try {
        observer.onComplete?.(event);
      } catch (fault) {
        this.deps.log.error({ request_id: request.id, err: describe(fault) }, 'completion observer failed');
      }
    }
  }

  /** A refusal is enforced whether or not it could be recorded; a failure to record it is an alert. */
  private recordRefusal(event: AuditEvent, requestId: string): void {
    try {
      this.record(event);
    } catch (fault) {
      this.deps.log.error({ request_id: requestId, err: describe(fault) }, 'audit append failed for a refusal');
    }
  }

  /** Records a refusal after the edge and answers it (or, when the client left, records that nothing was answered). */
  private refuse(request: RequestContext, exchange: HttpExchange, stage: DecisionStage, refusal: Refusal | ClientGone): void {
    const { route } = request;
    // Past the pre-auth budget, an OAuth endpoint's refusals are RFC 6749 §5.2 bodies, recorded under stage `issuer`.
    const oauth = route.oauth && stage !== 'pre-auth-quota';
    const recordedStage = oauth ? 'issuer' : stage;
    if (refusal.outcome === 'gone') {
      // The body deadline answered (a 408 problem, on every route) while the body was being read: that is what was sent.
      const outcome: DecisionOutcome =
        exchange.bodyDeadlinePassed === true
          ? { code: 'request_timeout', reason: 'request body deadline passed', status: exchange.res.headersSent ? exchange.res.statusCode : null }
          : { code: 'bad_request', reason: refusal.reason, status: null };
      this.recordRefusal(decisionRecord(aboutRequest(request), 'deny', recordedStage, outcome, undefined), request.id);
      return;
    }
    const { error, credential } = refusal;
    this.recordRefusal(requestDecision(request, 'deny', recordedStage, error, actorOf(credential), oauth), request.id);
    if (clientGone(exchange)) return;
    // An unread request body poisons an HTTP/1.1 connection for the next request, so close it. Stages leave the body
    // unread unless an intake read it; an intake or a service that refuses says whether it read it.
    const unread = refusal.unreadBody ?? request.form === undefined;
    sendProblem(exchange, error, { close: unread && request.hasBody, oauth });
  }

  private fail(request: RequestContext, exchange: HttpExchange, stage: DecisionStage, fault: unknown, principal: Principal | undefined): void {
    const unavailable = fault instanceof AuditUnavailableError;
    const error = new GatewayError(unavailable ? 'service_unavailable' : 'internal_error', { reason: unavailable ? 'audit unavailable' : `fault in ${stage}` });
    this.deps.log.error({ request_id: request.id, route: request.route.id, stage, err: describe(fault) }, 'request failed closed');
    // Faults before the handler, and in a service (whose answer was not recorded yet), are decisions (deny); a fault in a
    // forwarder comes after its allow was recorded.
    if (!(stage === 'handler' && !unavailable && request.route.handler.kind === 'forwarder')) {
      try {
        this.record(requestDecision(request, 'deny', stage, error, actorOf(principal)));
      } catch {
        // Already failing closed; the log line above is the alert.
      }
    }
    if (exchange.res.headersSent) abortResponse(exchange);
    else if (!clientGone(exchange)) sendProblem(exchange, error, { close: true });
  }
}

const PROBE_OK: Answer = Object.freeze({ status: 200, body: Object.freeze({ status: 'ok' }) });

const NO_CREDENTIAL: AuthnResult = Object.freeze({ outcome: 'not-applicable' });

/** RFC 6750 §3.1: with no credential at all, the challenge carries no error code. */
function noCredential(request: RequestContext): GatewayError {
  const { challenge } = request.route;
  return new GatewayError('unauthenticated', { reason: 'no credential', ...(challenge !== undefined ? { headers: { 'www-authenticate': challenge } } : {}) });
}

/** "not-applicable" moves to the next authenticator; "rejected" stops here and never falls through. */
function authenticate(request: RequestContext, from = 0): AuthnResult | Promise<AuthnResult> {
  const authenticators = request.route.authenticators;
  for (let i = from; i < authenticators.length; i++) {
    const authenticator = authenticators[i];
    if (authenticator === undefined) break;
    const result = authenticator.authenticate(request);
    if (result instanceof Promise) {
      return result.then((settled) => (settled.outcome === 'not-applicable' ? authenticate(request, i + 1) : settled));
    }
    if (result.outcome !== 'not-applicable') return result;
  }
  return NO_CREDENTIAL;
}

/** Error details for operators' logs: name, message and stack, never request data. */
function describe(fault: unknown): { name: string; message: string; stack?: string } {
  if (fault instanceof Error) return { name: fault.name, message: fault.message, ...(fault.stack !== undefined ? { stack: fault.stack } : {}) };
  return { name: 'NonError', message: String(fault) };
}
