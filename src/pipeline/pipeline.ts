// THE order of the request pipeline, and the only place that knows it:
// pre-auth quota (per IP) → authenticate → authorize → quota (per principal) → audit(allow) → handler.
// Each stage returns a tagged result; any refusal is audited once and answered from the error catalogue.
// A throw anywhere denies (never allows), is logged with the request id, and the client sees a generic 5xx.
import type { Logger } from 'pino';
import {
  actorOf,
  AuditUnavailableError,
  decisionRecord,
  refusalOutcome,
  requestDecision,
  type AuditEvent,
  type AuditSink,
  type DecisionAbout,
  type DecisionOutcome,
  type DecisionStage,
} from '../audit/event.js';
import { GatewayError, type ErrorCode } from '../errors/catalogue.js';
import { abortResponse, sendProblem, type HttpExchange } from '../server/exchange.js';
import type { PreAuthQuota } from '../quota/rate.js';
import type { AuthenticatedRequest, AuthnResult, ClientConnection, PresentedCredential, Principal, RequestContext } from './stage.js';

export interface PipelineDeps {
  readonly preAuthQuota: PreAuthQuota;
  readonly audit: AuditSink;
  readonly log: Logger;
}

/** What the edge knew about a request it refused before the pipeline ran. */
export interface EdgeRefusal {
  readonly method: string;
  readonly rawTarget: string;
  readonly path: string | undefined;
  readonly routeId: string | undefined;
  readonly connection: ClientConnection;
}

/** A refusal below the request level: what the listener saw and what it answered (undefined: the socket was destroyed). */
export interface ConnectionRefusal {
  readonly parserCode: string;
  readonly peer: string;
  readonly requestId: string;
  readonly answer: { readonly status: number; readonly code: ErrorCode } | undefined;
  readonly protocol: 'h1' | 'h2';
}

export class Pipeline {
  constructor(private readonly deps: PipelineDeps) {}

  async run(request: RequestContext, exchange: HttpExchange): Promise<void> {
    let stage: DecisionStage = 'pre-auth-quota';
    let principal: Principal | undefined;
    try {
      const preAuth = await this.deps.preAuthQuota.consume(request.connection.limitKey);
      if (!preAuth.allowed) return this.refuse(request, exchange, stage, preAuth.error, undefined);

      stage = 'authn';
      // Authenticators answer synchronously unless they need I/O; only then is there an await (a hot-path saving).
      let authn = authenticate(request);
      if (authn instanceof Promise) authn = await authn;
      if (authn.outcome !== 'authenticated') {
        if (authn.outcome === 'rejected') return this.refuse(request, exchange, stage, authn.error, authn.presented);
        return this.refuse(request, exchange, stage, noCredential(request), undefined);
      }
      principal = authn.principal;
      const authenticated: AuthenticatedRequest = { ...request, principal };

      stage = 'authz';
      const decision = request.route.authorizer.authorize(authenticated);
      if (!decision.allowed) return this.refuse(request, exchange, stage, decision.error, principal);

      stage = 'quota';
      if (request.route.quota !== undefined) {
        const quota = await request.route.quota.consume(authenticated);
        if (!quota.allowed) return this.refuse(request, exchange, stage, quota.error, principal);
      }

      // The allow is on record before the protected service sees anything; if it cannot be recorded, nothing is admitted.
      stage = 'handler';
      if (!request.route.selfAudited) this.deps.audit.append(auditEvent(request, 'allow', stage, undefined, principal));
      // The body is invited only now that the request is admitted: no `100 Continue` for refused requests (H1-12).
      if (request.hasBody && expectsContinue(exchange)) exchange.res.writeContinue();
      await request.route.handler.handle(authenticated, exchange);
    } catch (fault) {
      this.fail(request, exchange, stage, fault, principal);
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
    try {
      const about: DecisionAbout = {
        requestId: exchange.requestId,
        method: refusal.method,
        path: refusal.path ?? null,
        rawTarget: refusal.rawTarget,
        route: refusal.routeId ?? null,
        protocol: refusal.connection.protocol,
        clientAddress: refusal.connection.clientAddress,
        peerAddress: refusal.connection.peerAddress,
      };
      this.deps.audit.append(decisionRecord(about, 'deny', error === edgeError ? 'edge' : 'pre-auth-quota', refusalOutcome(error), undefined));
    } catch (fault) {
      // A refusal is enforced whether or not it could be recorded; the failure itself is an alert.
      this.deps.log.error({ request_id: exchange.requestId, err: describe(fault) }, 'audit append failed for an edge refusal');
    }
    sendProblem(exchange, error, { close });
  }

  /** Audits a connection-level refusal (HTTP/1.1 parser reject, CONNECT) that never became a request, as it was answered. */
  recordConnectionRefusal(refusal: ConnectionRefusal): void {
    const { parserCode, peer, requestId, answer, protocol } = refusal;
    try {
      const about: DecisionAbout = {
        requestId,
        method: parserCode === 'CONNECT' ? 'CONNECT' : '',
        path: null,
        rawTarget: '',
        route: null,
        protocol,
        clientAddress: peer,
        peerAddress: peer,
      };
      // What the client was sent; a connection destroyed unanswered has no status, and the parser's code is the reason.
      const outcome: DecisionOutcome = { code: answer?.code ?? 'bad_request', reason: parserCode, status: answer?.status ?? null };
      this.deps.audit.append(decisionRecord(about, 'deny', 'edge', outcome, undefined));
    } catch (fault) {
      this.deps.log.error({ err: describe(fault) }, 'audit append failed for a connection refusal');
    }
  }

  private refuse(
    request: RequestContext,
    exchange: HttpExchange,
    stage: DecisionStage,
    error: GatewayError,
    principal: PresentedCredential | undefined,
  ): void {
    try {
      this.deps.audit.append(auditEvent(request, 'deny', stage, error, principal));
    } catch (fault) {
      this.deps.log.error({ request_id: request.id, err: describe(fault) }, 'audit append failed for a refusal');
    }
    // An unread request body poisons an HTTP/1.1 connection for the next request, so close it.
    sendProblem(exchange, error, { close: request.hasBody });
  }

  private fail(request: RequestContext, exchange: HttpExchange, stage: DecisionStage, fault: unknown, principal: Principal | undefined): void {
    const unavailable = fault instanceof AuditUnavailableError;
    const error = new GatewayError(unavailable ? 'service_unavailable' : 'internal_error', { reason: unavailable ? 'audit unavailable' : `fault in ${stage}` });
    this.deps.log.error({ request_id: request.id, route: request.route.id, stage, err: describe(fault) }, 'request failed closed');
    if (!(stage === 'handler' && !unavailable && !request.route.selfAudited)) {
      // Faults before the handler are decisions (deny); a fault inside the handler was already recorded as an allow,
      // unless the handler records its own decisions and failed before it could.
      try {
        this.deps.audit.append(auditEvent(request, 'deny', stage, error, principal));
      } catch {
        // Already failing closed; the log line above is the alert.
      }
    }
    if (exchange.res.headersSent) abortResponse(exchange);
    else sendProblem(exchange, error, { close: true });
  }
}

function expectsContinue(exchange: HttpExchange): boolean {
  const expect = exchange.req.headers.expect;
  return expect !== undefined && expect.toLowerCase() === '100-continue';
}

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

/** `credential`: the principal, or what a refused credential verifiably said about its holder. */
function auditEvent(
  request: RequestContext,
  decision: 'allow' | 'deny',
  stage: DecisionStage,
  error: GatewayError | undefined,
  credential: PresentedCredential | undefined,
): AuditEvent {
  return requestDecision(request, decision, stage, error, actorOf(credential));
}

/** Error details for operators' logs: name, message and stack, never request data. */
function describe(fault: unknown): { name: string; message: string; stack?: string } {
  if (fault instanceof Error) return { name: fault.name, message: fault.message, ...(fault.stack !== undefined ? { stack: fault.stack } : {}) };
  return { name: 'NonError', message: String(fault) };
}
