import { route } from '../support/routes.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { problemCode, rawHttp1, startGateway, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';

describe('JWT-26 one credential per request', () => {
  let gw: TestGateway;
  let upstream: TestUpstream;
  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway((base) => ({
      ...base,
      upstreams: { app: { url: upstream.url } },
      routes: [route('app', '/app', { to: 'app', proxy: { forward_authorization: true } })],
    }));
  });
  afterAll(async () => {
    await gw.stop();
    await upstream.close();
  });

  it('JWT-26 two Authorization headers on HTTP/1.1 → 400 invalid_header, nothing forwarded (Node would keep only the first)', async () => {
    const before = upstream.requests.length;
    const res = await rawHttp1(gw.port, gw.certs, 'GET /app/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n', {
      waitMs: 500,
    });
    expect(res.status).toBe(400);
    expect(problemCode(res.text)).toBe('invalid_header');
    expect(upstream.requests.length).toBe(before);
  });

  it('one Authorization header is forwarded where the route allows it', async () => {
    const res = await rawHttp1(gw.port, gw.certs, 'GET /app/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer a\r\nConnection: close\r\n\r\n');
    expect(res.status).toBe(200);
    expect(upstream.requests.at(-1)?.headers.authorization).toBe('Bearer a');
  });
});
