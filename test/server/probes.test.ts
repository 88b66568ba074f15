// The liveness and readiness probes pass the same edge checks as every request (issue #8 Part A): a malformed message is
// refused there too, with the same code and an audit record, instead of being answered 200.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { h2Request, h2Session, problemCode, rawHttp1, startGateway, type TestGateway } from '../support/harness.js';

let gw: TestGateway;
beforeAll(async () => {
  // A served-hosts list: probes come by IP address from load balancers and kubelets, so it does not apply to them.
  gw = await startGateway((base) => ({ ...base, server: { ...base.server, hosts: ['localhost'] } }));
});
afterAll(() => gw.stop());

const manyHeaders = Array.from({ length: 150 }, (_, i) => `X-H${i}: v\r\n`).join('');

describe('probes and the edge checks', () => {
  for (const probe of ['/healthz', '/readyz']) {
    it(`${probe}: a well-formed probe is 200, by name or by IP address`, async () => {
      for (const host of ['localhost', '127.0.0.1']) {
        const res = await rawHttp1(gw.port, gw.certs, `GET ${probe} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
        expect(res.status, host).toBe(200);
        expect(res.text).toContain('{"status":"ok"}');
      }
    });

    it(`${probe}: a duplicate Host, no Host, 150 headers, a header with "_" and TE+CL are refused as on every route`, async () => {
      const cases: Array<[string, number, string]> = [
        [`GET ${probe} HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n`, 400, 'invalid_host'],
        [`GET ${probe} HTTP/1.1\r\n\r\n`, 400, 'invalid_host'],
        [`GET ${probe} HTTP/1.1\r\nHost: localhost\r\n${manyHeaders}\r\n`, 431, 'headers_too_large'],
        [`GET ${probe} HTTP/1.1\r\nHost: localhost\r\nX_Forwarded: a\r\n\r\n`, 400, 'invalid_header'],
      ];
      for (const [bytes, status, code] of cases) {
        const probeReply = await rawHttp1(gw.port, gw.certs, bytes);
        const routeReply = await rawHttp1(gw.port, gw.certs, bytes.replace(probe, '/public/x'));
        expect(probeReply.status, code).toBe(status);
        expect(problemCode(probeReply.text), code).toBe(code);
        // The same answer a route gives.
        expect([routeReply.status, problemCode(routeReply.text)], code).toEqual([status, code]);
      }
      const smuggle = await rawHttp1(
        gw.port,
        gw.certs,
        `POST ${probe} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      );
      expect(smuggle.status).toBe(400);
      expect(smuggle.closed).toBe(true);
    });
  }

  it('a refused probe is on record like any edge refusal; an answered one is not', async () => {
    const refused = await rawHttp1(gw.port, gw.certs, 'GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n');
    const id = /x-request-id: ([0-9a-f-]+)/i.exec(refused.text)?.[1];
    const ok = await rawHttp1(gw.port, gw.certs, 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    const okId = /x-request-id: ([0-9a-f-]+)/i.exec(ok.text)?.[1];
    const records = await gw.auditRecords();
    expect(records.find((r) => r.request_id === id)).toMatchObject({ decision: 'deny', stage: 'edge', code: 'invalid_host', path: null });
    expect(records.find((r) => r.request_id === okId)).toBeUndefined();
  });

  it('a probe with another method is refused 405 (Allow: GET, HEAD) and on record; HEAD is answered', async () => {
    const refused = await rawHttp1(gw.port, gw.certs, 'DELETE /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    expect(refused.status).toBe(405);
    expect(problemCode(refused.text)).toBe('method_not_allowed');
    expect(refused.text).toMatch(/\r\nallow: GET, HEAD\r\n/i);
    const id = /x-request-id: ([0-9a-f-]+)/i.exec(refused.text)?.[1];
    const head = await rawHttp1(gw.port, gw.certs, 'HEAD /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    expect(head.status).toBe(200);
    const records = await gw.auditRecords();
    expect(records.find((r) => r.request_id === id)).toMatchObject({
      decision: 'deny',
      stage: 'edge',
      code: 'method_not_allowed',
      status: 405,
      method: 'DELETE',
      path: '/readyz',
    });
  });

  it('over HTTP/2: a probe is 200; a Host that differs from :authority is refused', async () => {
    const session = await h2Session(gw.port, gw.certs);
    try {
      expect((await h2Request(session, { ':method': 'GET', ':path': '/healthz', ':authority': 'localhost' })).status).toBe(200);
      const refused = await h2Request(session, { ':method': 'GET', ':path': '/readyz', ':authority': 'localhost', host: 'evil.example' });
      expect(refused.status).toBe(400);
      expect(problemCode(refused.body)).toBe('invalid_host');
    } finally {
      session.close();
    }
  });

  it('a probe target with a query, or spelled otherwise, is an ordinary (unrouted) request', async () => {
    for (const target of ['/healthz?x=1', '/healthz/', '//healthz', '/%68ealthz']) {
      const res = await rawHttp1(gw.port, gw.certs, `GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      expect(res.status, target).toBe(404);
    }
  });
});
