import { route } from '../support/routes.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { rawHttp1, startGateway, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';

describe('gateway basics', () => {
  let gw: TestGateway;
  let upstream: TestUpstream;
  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway((base) => ({
      ...base,
      upstreams: { app: { url: upstream.url } },
      routes: [...(base.routes ?? []), route('api', '/api', { methods: ['GET', 'POST'], to: 'app' })],
    }));
  });
  afterAll(async () => {
    await gw.stop();
    await upstream.close();
  });

  it('proxies a GET to the upstream with gateway headers', async () => {
    const res = await request(`${gw.origin}/api/x?y=1`, { dispatcher: gw.agent(), headers: { 'x-user-id': 'admin' } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['strict-transport-security']).toMatch(/max-age=63072000/);
    expect(res.headers['server']).toBeUndefined();
    await res.body.text();
    const seen = upstream.requests.at(-1);
    expect(seen?.url).toBe('/api/x?y=1');
    expect(seen?.headers['x-user-id']).toBeUndefined();
    expect(seen?.headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('answers raw HTTP/1.1 with TE+CL with 400', async () => {
    const res = await rawHttp1(
      gw.port,
      gw.certs,
      'POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    );
    expect(res.status).toBe(400);
    expect(res.closed).toBe(true);
  });
});
