// A token request whose body stalls past limits.request_timeout_ms is answered 408 by the body deadline; its decision
// record says so (status 408, request_timeout), not "client gone" with no status: what is recorded is what was sent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawHttp1, type TestGateway } from '../support/harness.js';
import { startIssuerGateway, withIssuer } from '../support/issuer.js';

describe('the body deadline on an OAuth endpoint', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) => withIssuer({ ...base, limits: { request_timeout_ms: 500 } }));
  });
  afterAll(() => gw.stop());

  it('a stalled token request body: 408 sent, and recorded as sent', async () => {
    const res = await rawHttp1(
      gw.port,
      gw.certs,
      'POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=cli',
      { waitMs: 1500 },
    );
    expect(res.status).toBe(408);
    const requestId = /x-request-id: ([0-9a-f-]+)/i.exec(res.text)?.[1];
    const record = (await gw.auditRecords()).find((r) => r.request_id === requestId);
    expect(record).toMatchObject({ decision: 'deny', stage: 'issuer', status: 408, code: 'request_timeout', reason: 'request body deadline passed' });
  });
});
