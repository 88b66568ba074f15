// The one builder of decision records, whatever decided (edge, listener, stage, OAuth endpoint, fault): the pipeline turns
// what it knows of a request and its outcome into the record the audit log writes (audit/event.ts is that record's shape).
import type { AuditEvent, DecisionStage } from '../audit/event.js';
import { redactTarget } from '../audit/redact.js';
import { oauthErrorCode, type GatewayError } from '../errors/catalogue.js';
import type { PresentedCredential, RequestContext } from './stage.js';

/** Who a decision is about: a principal's identity, or a client the issuer authenticated (or tried to). */
export interface AuditActor {
  readonly subject: string | null;
  readonly authMethod: string | null;
  readonly certThumbprint: string | null;
  readonly clientId: string | null;
  readonly tokenId: string | null;
  readonly scopes: readonly string[] | null;
}

/** The actor of a principal, or of what a refused credential verifiably said (PresentedCredential). */
export function actorOf(credential: PresentedCredential | undefined): AuditActor | undefined {
  if (credential === undefined) return undefined;
  return {
    subject: credential.subject ?? null,
    authMethod: credential.method ?? null,
    certThumbprint: credential.certificateThumbprint ?? null,
    clientId: credential.clientId ?? null,
    tokenId: credential.tokenId ?? null,
    scopes: credential.scopes === undefined || credential.scopes.size === 0 ? null : [...credential.scopes],
  };
}

/** What a decision is about: as much of the request as was known when it was decided. */
export interface DecisionAbout {
  readonly requestId: string;
  readonly method: string;
  readonly path: string | null;
  /** The target as received; credential values in its query are redacted here. */
  readonly rawTarget: string;
  readonly route: string | null;
  readonly protocol: 'h1' | 'h2';
  readonly clientAddress: string;
  readonly peerAddress: string;
  /** The W3C trace id the request belongs to; null for a refusal below the request level. */
  readonly traceId: string | null;
}

/** What the client was answered: the code it received (problem `code` or OAuth `error`), the reason and the status. */
export interface DecisionOutcome {
  readonly code: string;
  readonly reason: string;
  readonly status: number | null;
}

/**
 * The one builder of decision records, whatever decided (edge, listener, stage, OAuth endpoint, fault): every key spelled
 * out in one order, credential values in the target redacted.
 */
export function decisionRecord(
  about: DecisionAbout,
  decision: 'allow' | 'deny',
  stage: DecisionStage,
  outcome: DecisionOutcome | undefined,
  actor: AuditActor | undefined,
): AuditEvent {
  return {
    request_id: about.requestId,
    trace_id: about.traceId,
    method: about.method,
    path: about.path,
    raw_target: redactTarget(about.rawTarget),
    route: about.route,
    protocol: about.protocol,
    client_ip: about.clientAddress,
    peer_ip: about.peerAddress,
    decision,
    stage,
    code: outcome?.code ?? null,
    reason: outcome?.reason ?? null,
    status: outcome?.status ?? null,
    subject: actor?.subject ?? null,
    auth_method: actor?.authMethod ?? null,
    cert_thumbprint: actor?.certThumbprint ?? null,
    client_id: actor?.clientId ?? null,
    jti: actor?.tokenId ?? null,
    scopes: actor?.scopes ?? null,
  };
}

/** The outcome a refusal sent: its catalogue code, or (an RFC 6749 §5.2 body) the OAuth `error` the client received. */
export function refusalOutcome(error: GatewayError, oauth = false): DecisionOutcome {
  return { code: oauth ? oauthErrorCode(error.code) : error.code, reason: error.reason, status: error.status };
}

/** What a request that passed the edge is, for its records. */
export function aboutRequest(request: RequestContext): DecisionAbout {
  return {
    requestId: request.id,
    method: request.method,
    path: request.path,
    rawTarget: request.query === '' ? request.rawPath : `${request.rawPath}?${request.query}`,
    route: request.route.id,
    protocol: request.connection.protocol,
    clientAddress: request.connection.clientAddress,
    peerAddress: request.connection.peerAddress,
    traceId: request.trace.traceId,
  };
}

/** The record of one decision on a request that passed the edge. */
export function requestDecision(
  request: RequestContext,
  decision: 'allow' | 'deny',
  stage: DecisionStage,
  error: GatewayError | undefined,
  actor: AuditActor | undefined,
  /** The answer was an RFC 6749 §5.2 body: the code on record is its `error`, as the client received it. */
  oauth = false,
): AuditEvent {
  return decisionRecord(aboutRequest(request), decision, stage, error === undefined ? undefined : refusalOutcome(error, oauth), actor);
}
