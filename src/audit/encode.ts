// The two records every admitted request writes (its decision and its completion), serialized by hand: the same bytes as
// JSON.stringify of the same object, in a third of the time — the generic serializer was the largest part of the audit
// log's cost per request (issue #22 item 11). Everything else in the chain still goes through JSON.stringify.
import type { AuditRecord, CompletionEvent } from './event.js';

/** Printable ASCII except `"` and `\`: a string JSON.stringify would only put quotes around. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A string member's JSON, as JSON.stringify writes it (escaping only when a character needs it). */
function text(value: string | null): string {
  if (value === null) return 'null';
  return PLAIN.test(value) ? `"${value}"` : JSON.stringify(value);
}

/** A number member's JSON, as JSON.stringify writes it (a non-finite number is null). */
function num(value: number | null): string {
  return value !== null && Number.isFinite(value) ? String(value) : 'null';
}

function list(values: readonly string[] | null): string {
  if (values === null) return 'null';
  if (values.length === 0) return '[]';
  return `[${values.map(text).join(',')}]`;
}

/** A decision record without its hash: exactly JSON.stringify(record), its members in the writer's order. */
export function encodeDecision(r: Omit<AuditRecord, 'hash'>): string {
  return (
    `{"seq":${num(r.seq)},"ts":${text(r.ts)},"type":"decision","instance":${text(r.instance)},"boot_id":${text(r.boot_id)},"config":${text(r.config)}` +
    `,"request_id":${text(r.request_id)},"trace_id":${text(r.trace_id)},"method":${text(r.method)},"path":${text(r.path)},"raw_target":${text(r.raw_target)},"route":${text(r.route)}` +
    `,"protocol":${text(r.protocol)},"client_ip":${text(r.client_ip)},"peer_ip":${text(r.peer_ip)},"decision":${text(r.decision)},"stage":${text(r.stage)}` +
    `,"code":${text(r.code)},"reason":${text(r.reason)},"status":${num(r.status)},"subject":${text(r.subject)},"auth_method":${text(r.auth_method)}` +
    `,"cert_thumbprint":${text(r.cert_thumbprint)},"client_id":${text(r.client_id)},"jti":${text(r.jti)},"scopes":${list(r.scopes)},"prev":${text(r.prev)}}`
  );
}

/** The chain members of a completion record, with the event's. */
export interface CompletionRecord extends CompletionEvent {
  readonly seq: number;
  readonly ts: string;
  readonly type: 'completion';
  readonly instance: string;
  readonly boot_id: string;
  readonly prev: string;
}

/** A completion record without its hash: exactly JSON.stringify(record), its members in the writer's order. */
export function encodeCompletion(r: CompletionRecord): string {
  return (
    `{"seq":${num(r.seq)},"ts":${text(r.ts)},"type":"completion","instance":${text(r.instance)},"boot_id":${text(r.boot_id)}` +
    `,"request_id":${text(r.request_id)},"route":${text(r.route)},"status":${num(r.status)},"upstream":${text(r.upstream)}` +
    `,"upstream_status":${num(r.upstream_status)},"upstream_error":${text(r.upstream_error)},"upstream_target":${text(r.upstream_target)}` +
    `,"upstream_retried":${list(r.upstream_retried)},"code":${text(r.code)},"upstream_ms":${num(r.upstream_ms)}` +
    `,"bytes_in":${num(r.bytes_in)},"bytes_out":${num(r.bytes_out)},"duration_ms":${num(r.duration_ms)},"prev":${text(r.prev)}}`
  );
}
