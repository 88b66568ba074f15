// Issue #26 item 1: services read the request through the one body reader and cannot answer; what they return is what the
// pipeline records. A client that leaves in the middle of a body sent to the echo service is on record as gone (no
// status), never as an allow — the old echo drain took a closed connection for a complete body.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawHttp1, startGateway, type TestGateway } from '../support/harness.js';

describe('the one body reader', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway();
  });
  afterAll(() => gw.stop());

  it('a chunked body cut off by the client: echo records the request as gone (status null), not as an allow', async () => {
    const head = 'POST /public/cut-off HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n';
    // One chunk of a body that never ends: the socket is closed after 300 ms.
    const answer = await rawHttp1(gw.port, gw.certs, `${head}5\r\nhello\r\n`, { waitMs: 300 });
    expect(answer.status).toBe(0);
    let record: Awaited<ReturnType<TestGateway['auditRecords']>>[number] | undefined;
    for (let i = 0; i < 50 && record === undefined; i++) {
      record = (await gw.auditRecords()).find((r) => r.path === '/public/cut-off');
      if (record === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(record).toMatchObject({ decision: 'deny', stage: 'handler', code: 'bad_request', status: null });
  });

  it('the same body sent whole is answered 200 and recorded as an allow', async () => {
    const answer = await rawHttp1(
      gw.port,
      gw.certs,
      'POST /public/whole HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    );
    expect(answer.status).toBe(200);
    expect((await gw.auditRecords()).find((r) => r.path === '/public/whole')).toMatchObject({ decision: 'allow', stage: 'handler' });
  });
});
