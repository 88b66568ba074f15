// W3C Trace Context (traceparent, tracestate): a request's trace id is taken from a trusted proxy's traceparent, or made
// here, so an operator can follow one request from the edge through the audit record to the upstream's logs. A client
// that is not a trusted proxy cannot choose the trace id its requests are recorded under.
import { randomFillSync } from 'node:crypto';

export interface TraceContext {
  /** 32 lower-case hex digits, never all zeros. */
  readonly traceId: string;
  /** The trace flags of the traceparent received (`01` = sampled upstream of us), `00` for a trace made here. */
  readonly flags: string;
  /** A trusted proxy's tracestate, passed on unchanged; undefined otherwise. */
  readonly state: string | undefined;
}

/** Version 00 exactly: later versions and malformed values are not trusted, whoever sent them. */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);
/** W3C limits tracestate to 32 list members; a value longer than this is not one worth passing on. */
const MAX_TRACESTATE = 512;

/** Random bytes come from a pool refilled in one call: a per-request randomBytes() costs more than the ids are worth. */
const pool = Buffer.alloc(4096);
let offset = pool.length;

function randomHex(bytes: number): string {
  if (offset + bytes > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const hex = pool.toString('hex', offset, offset + bytes);
  offset += bytes;
  return hex;
}

/** A span id for the gateway's own hop (never all zeros). */
export function newSpanId(): string {
  const id = randomHex(8);
  return id === ZERO_SPAN ? newSpanId() : id;
}

/** The trace of a request: the trusted proxy's, when it sent a valid traceparent; otherwise a new one. */
export function traceOf(traceparent: string | string[] | undefined, tracestate: string | string[] | undefined, trusted: boolean): TraceContext {
  if (trusted && typeof traceparent === 'string') {
    const match = TRACEPARENT.exec(traceparent);
    const traceId = match?.[1];
    if (match !== null && traceId !== undefined && traceId !== ZERO_TRACE && match[2] !== ZERO_SPAN) {
      const state = typeof tracestate === 'string' && tracestate.length <= MAX_TRACESTATE ? tracestate : undefined;
      return { traceId, flags: match[3] ?? '00', state };
    }
  }
  const traceId = randomHex(16);
  return traceId === ZERO_TRACE ? traceOf(undefined, undefined, false) : { traceId, flags: '00', state: undefined };
}

/** The traceparent the upstream receives: this trace, with the gateway's hop as the parent. */
export function traceparentFor(trace: TraceContext, spanId: string): string {
  return `00-${trace.traceId}-${spanId}-${trace.flags}`;
}
