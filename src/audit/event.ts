// The audit event model: one record per request decision (allow or the first refusal), and the AuditSink contract.
// Records name the principal and the credential's fingerprint, never the credential itself.

export type DecisionStage = 'edge' | 'pre-auth-quota' | 'intake' | 'authn' | 'authz' | 'quota' | 'handler' | 'issuer';

export interface AuditEvent {
  readonly request_id: string;
  /** The W3C trace id (a trusted proxy's traceparent, or made by the gateway and sent upstream); null below the request level. */
  readonly trace_id: string | null;
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
  /** The code the client received: the problem body's `code`, or the `error` of an RFC 6749 body (OAuth endpoints). */
  readonly code: string | null;
  readonly reason: string | null;
  readonly status: number | null;
  readonly subject: string | null;
  readonly auth_method: string | null;
  readonly cert_thumbprint: string | null;
  /** The OAuth client: a bearer token's client_id, or the client an OAuth endpoint authenticated (or was presented). */
  readonly client_id: string | null;
  /** The access token's `jti`: the token presented, or the one issued, introspected or revoked. */
  readonly jti: string | null;
  /** The token's scopes (presented, or granted by the token endpoint); null when there are none. */
  readonly scopes: readonly string[] | null;
}

/** A decision as written in the audit chain (see audit/chain.ts for the encoding). */
export interface AuditRecord extends AuditEvent {
  /** Position in this instance's chain; 0 for a record dropped under fail-open (never written). */
  readonly seq: number;
  /** UTC, millisecond precision. Order is given by seq, never by this clock. */
  readonly ts: string;
  readonly type: 'decision';
  readonly instance: string;
  /** Identifies this process's run, so a restart is visible in the record stream. */
  readonly boot_id: string;
  /** The configuration that decided: the first 16 hex digits of its SHA-256 (gateway_start carries all of it). */
  readonly config: string | null;
  /** The previous record's hash, and this record's own. */
  readonly prev: string;
  readonly hash: string;
}

/** The longest raw_target a record keeps (characters). */
export const RAW_TARGET_MAX = 512;

/** The chain members a decision record gets around its event (see AuditRecord). */
export interface DecisionChainFields {
  readonly seq: number;
  readonly ts: string;
  readonly instance: string;
  readonly boot_id: string;
  readonly config: string | null;
  readonly prev: string;
}

/**
 * A decision record, its hash still to come: every key spelled out in one order, so every record has one object shape
 * (cheap to build and to serialize; a spread of the event into a wider object would leave V8's fast shapes).
 */
export function decisionRecordOf(chain: DecisionChainFields, event: AuditEvent): Omit<AuditRecord, 'hash'> {
  return {
    seq: chain.seq,
    ts: chain.ts,
    type: 'decision',
    instance: chain.instance,
    boot_id: chain.boot_id,
    config: chain.config,
    request_id: event.request_id,
    trace_id: event.trace_id,
    method: event.method,
    path: event.path,
    raw_target: event.raw_target.length > RAW_TARGET_MAX ? event.raw_target.slice(0, RAW_TARGET_MAX) : event.raw_target,
    route: event.route,
    protocol: event.protocol,
    client_ip: event.client_ip,
    peer_ip: event.peer_ip,
    decision: event.decision,
    stage: event.stage,
    code: event.code,
    reason: event.reason,
    status: event.status,
    subject: event.subject,
    auth_method: event.auth_method,
    cert_thumbprint: event.cert_thumbprint,
    client_id: event.client_id,
    jti: event.jti,
    scopes: event.scopes,
    prev: chain.prev,
  };
}

/** How an admitted request ended, linked to its allow by request id. */
export interface CompletionEvent {
  readonly request_id: string;
  readonly route: string;
  /** The status actually sent; null when the client left before any response. */
  readonly status: number | null;
  /** Forwarded requests: responded, failed, aborted or not sent (ForwardOutcome); null for built-in services. */
  readonly upstream: string | null;
  readonly upstream_status: number | null;
  /** Why the upstream failed (LOG-11: a refused connection, a TLS verify error, a timeout), as the connection said. */
  readonly upstream_error: string | null;
  /** The target (host:port) the request was last sent to; null when it was sent to none. */
  readonly upstream_target: string | null;
  /** Earlier attempts on other targets that failed before any byte reached them (`host:port CODE`); null when none. */
  readonly upstream_retried: readonly string[] | null;
  /** The code of a refusal the gateway sent after the allow (502, 503, 504, 413), if any. */
  readonly code: string | null;
  /**
   * Milliseconds from sending the request upstream (its first attempt) to the end of the upstream's answer or failure: the
   * upstream's share of duration_ms (the rest is the gateway's). null when nothing was sent (and for built-in services).
   */
  readonly upstream_ms: number | null;
  /** Request body bytes read (null when not counted: a built-in service), response body bytes sent. */
  readonly bytes_in: number | null;
  readonly bytes_out: number;
  readonly duration_ms: number;
}

/** Events around the decisions (LOG-11): the gateway's life, its signing key, its store. */
export type OperationalEvent =
  | 'gateway_start'
  | 'gateway_stop'
  | 'certificates_reloaded'
  | 'config_reloaded'
  | 'config_reload_refused'
  | 'signing_key_changed'
  /** The renewal endpoint issued a client certificate (serial, client, identity, thumbprint, the one it renews). */
  | 'client_certificate_issued'
  | 'store_unavailable'
  | 'store_recovered'
  | 'limiter_store_unavailable'
  | 'limiter_store_recovered';

export interface AuditSink {
  /** Queues the record; throws AuditUnavailableError when it cannot be durably queued (callers fail closed). */
  append(event: AuditEvent): AuditRecord;
  /** An administrative change made through the admin API; throws AuditUnavailableError like append (the change is refused). */
  admin(change: AdminRecordFields): void;
  /**
   * Records how an admitted request ended. Never throws: the answer is already out; a completion that cannot be written
   * is counted with the other dropped records.
   */
  complete(event: CompletionEvent): void;
  /** An operational event (start with the config's hash, stop, reload, key and store changes). Never throws, like complete(). */
  event(type: OperationalEvent, fields: Readonly<Record<string, string | number | null>>): void;
  /** The configuration that decides from the next record on (its hash's first 16 hex digits): after a reload. */
  setConfigVersion(version: string): void;
  /** Resolves when every appended record has reached the operating system; rejects when they could not (fail-closed). */
  flush(): Promise<void>;
  /** False while the log cannot take records and the policy is to fail closed: readiness reports it. */
  readonly ready: boolean;
  /** Where the chain stands, for metrics: its last sequence number, records dropped (fail-open), bytes waiting for the disk. */
  state?(): AuditState;
  close(): Promise<void>;
}

export interface AuditState {
  readonly seq: number;
  readonly dropped: number;
  readonly queuedBytes: number;
  /** The seq the newest signed checkpoint covers (0 before the first): records after it are not yet under a signature. */
  readonly checkpointSeq: number;
}

export class AuditUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditUnavailableError';
  }
}

/** The audit log cannot start or go on: a chain another process holds, a directory or file it cannot use. */
export class AuditLogError extends Error {
  constructor(
    message: string,
    /** Another live process writes this chain (a CLI command waits for it; a gateway refuses to start). */
    readonly busy = false,
  ) {
    super(message);
    this.name = 'AuditLogError';
  }
}

export type AdminAction =
  | 'client.add'
  | 'client.update'
  | 'client.disable'
  | 'client.enable'
  | 'client.rotate_secret'
  | 'client.remove'
  | 'key.rotate'
  | 'key.revoke'
  /** `gatehouse ca init` and the client certificates issued and revoked under that CA (target: `client-ca`, the serial). */
  | 'ca.init'
  | 'certificate.issue'
  | 'certificate.revoke'
  /** `gatehouse store copy` (recorded only when it is given the target deployment's --config). */
  | 'store.copy';

/** Who made an administrative change: an operator running the CLI, or an admin calling the admin API. */
export type AdminActor = CommandActor | ApiActor;

/** Who ran the command: the operating-system account (and the account behind sudo, when there is one). */
export interface CommandActor {
  readonly os_user: string;
  readonly uid: number;
  readonly sudo_user: string | null;
  readonly host: string;
  readonly pid: number;
}

/** Who called the admin API: the credential that authenticated (never the credential itself) and the request it made. */
export interface ApiActor {
  readonly via: 'api';
  readonly subject: string;
  readonly auth_method: string;
  readonly cert_thumbprint: string | null;
  readonly client_id: string | null;
  readonly jti: string | null;
  /** The request whose decision record (allow) is in the same chain. */
  readonly request_id: string;
  readonly client_ip: string;
}

export interface AdminChange {
  readonly action: AdminAction;
  /** The client id, signing key id or certificate serial acted on. */
  readonly target: string;
  /** Field → { from, to }, or facts about the change (never secrets). */
  readonly changes: Readonly<Record<string, unknown>>;
}

/** The members an admin record carries between the chain fields and `prev`. */
export interface AdminRecordFields extends AdminChange {
  readonly actor: AdminActor;
}
