// The audit event model: one record per request decision (allow or the first refusal), and the AuditSink contract.
// Records name the principal and the credential's fingerprint, never the credential itself.
import type { ErrorCode, GatewayError } from '../errors/catalogue.js';
import type { RequestContext } from '../pipeline/stage.js';
import { redactTarget } from './redact.js';

export type DecisionStage = 'edge' | 'pre-auth-quota' | 'authn' | 'authz' | 'quota' | 'handler' | 'issuer';

export interface AuditEvent {
  readonly request_id: string;
  readonly method: string;
  /** Canonical path when the target parsed; else null. */
  readonly path: string | null;
  /** The target as received, JSON-escaped by serialization and cut to 512 characters. */
  readonly raw_target: string;
  readonly route: string | null;
  readonly protocol: 'h1' | 'h2';
  readonly client_ip: string;
  readonly peer_ip: string;
  readonly decision: 'allow' | 'deny';
  readonly stage: DecisionStage;
  readonly code: ErrorCode | null;
  readonly reason: string | null;
  readonly status: number | null;
  readonly subject: string | null;
  readonly auth_method: string | null;
  readonly cert_thumbprint: string | null;
}

export interface AuditRecord extends AuditEvent {
  readonly seq: number;
  /** UTC, millisecond precision. Order is given by seq, never by this clock. */
  readonly ts: string;
  /** Identifies this process's run, so a restart is visible in the record stream. */
  readonly boot_id: string;
}

export interface AuditSink {
  /** Queues the record; throws AuditUnavailableError when it cannot be durably queued (callers fail closed). */
  append(event: AuditEvent): AuditRecord;
  /** Resolves when every appended record has reached the operating system. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export class AuditUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditUnavailableError';
  }
}

/** Who a decision is about: a principal's identity, or a client the issuer authenticated (or tried to). */
export interface AuditActor {
  readonly subject: string | null;
  readonly authMethod: string | null;
  readonly certThumbprint: string | null;
}

/** The record of one decision on a request that passed the edge; the target is kept with credential values redacted. */
export function requestDecision(
  request: RequestContext,
  decision: 'allow' | 'deny',
  stage: DecisionStage,
  error: GatewayError | undefined,
  actor: AuditActor | undefined,
): AuditEvent {
  return {
    request_id: request.id,
    method: request.method,
    path: request.path,
    raw_target: request.query === '' ? request.rawPath : redactTarget(`${request.rawPath}?${request.query}`),
    route: request.route.id,
    protocol: request.connection.protocol,
    client_ip: request.connection.clientAddress,
    peer_ip: request.connection.peerAddress,
    decision,
    stage,
    code: error?.code ?? null,
    reason: error?.reason ?? null,
    status: error?.status ?? null,
    subject: actor?.subject ?? null,
    auth_method: actor?.authMethod ?? null,
    cert_thumbprint: actor?.certThumbprint ?? null,
  };
}

