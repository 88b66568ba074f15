// The hand-written serializers of the two per-request records must give exactly the bytes JSON.stringify gives for the
// same record (the verifier and query parse them; the chain hashes them): any strings (quotes, backslashes, control
// characters, non-ASCII, lone surrogates), nulls, numbers of every kind, scopes or none.
import fc from 'fast-check';
import { describe, it } from 'vitest';
import { encodeCompletion, encodeDecision, type CompletionRecord } from '../../src/audit/encode.js';
import type { AuditRecord } from '../../src/audit/event.js';

const anyText = fc.oneof(
  fc.string(),
  fc.string({ unit: 'grapheme' }),
  fc.string({ unit: 'binary' }),
  fc.constantFrom('"', '\\', '\u0000', '\u2028', '\ud800', '/a"b\\c'),
);
const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | null> => fc.option(arb, { nil: null });
const anyNumber = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -0, 0));

const decision: fc.Arbitrary<Omit<AuditRecord, 'hash'>> = fc.record({
  seq: fc.nat(),
  ts: anyText,
  type: fc.constant('decision' as const),
  instance: anyText,
  boot_id: anyText,
  config: maybe(anyText),
  request_id: anyText,
  trace_id: maybe(anyText),
  method: anyText,
  path: maybe(anyText),
  raw_target: anyText,
  route: maybe(anyText),
  protocol: fc.constantFrom('h1' as const, 'h2' as const),
  client_ip: anyText,
  peer_ip: anyText,
  decision: fc.constantFrom('allow' as const, 'deny' as const),
  stage: fc.constantFrom('edge' as const, 'authn' as const, 'handler' as const),
  code: maybe(anyText),
  reason: maybe(anyText),
  status: maybe(anyNumber),
  subject: maybe(anyText),
  auth_method: maybe(anyText),
  cert_thumbprint: maybe(anyText),
  client_id: maybe(anyText),
  jti: maybe(anyText),
  scopes: maybe(fc.array(anyText, { maxLength: 4 })),
  prev: anyText,
});

const completion: fc.Arbitrary<CompletionRecord> = fc.record({
  seq: fc.nat(),
  ts: anyText,
  type: fc.constant('completion' as const),
  instance: anyText,
  boot_id: anyText,
  request_id: anyText,
  route: anyText,
  status: maybe(anyNumber),
  upstream: maybe(anyText),
  upstream_status: maybe(anyNumber),
  upstream_error: maybe(anyText),
  upstream_target: maybe(anyText),
  upstream_retried: maybe(fc.array(anyText, { maxLength: 3 })),
  code: maybe(anyText),
  upstream_ms: maybe(anyNumber),
  bytes_in: maybe(anyNumber),
  bytes_out: anyNumber,
  duration_ms: anyNumber,
  prev: anyText,
});

describe('audit record encoding', () => {
  it('a decision record is exactly JSON.stringify of it', () => {
    fc.assert(
      fc.property(decision, (record) => encodeDecision(record) === JSON.stringify(record)),
      { numRuns: 2000 },
    );
  });

  it('a completion record is exactly JSON.stringify of it', () => {
    fc.assert(
      fc.property(completion, (record) => encodeCompletion(record) === JSON.stringify(record)),
      { numRuns: 2000 },
    );
  });
});
