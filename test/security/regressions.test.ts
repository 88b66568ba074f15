// Regression tests for defects found in review: each would fail if its fix were reverted.
import { route } from '../support/routes.js';
import { constants as h2c } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { h2Session, problemCode, rawHttp1, startGateway, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';

describe('review regressions', () => {
  let gw: TestGateway;
  let upstream: TestUpstream;
  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway((base) => ({
      ...base,
      limits: { request_timeout_ms: 800, pre_auth_per_ip: { points: 1000, duration_s: 60 } },
      upstreams: { app: { url: upstream.url, connections: 1 } },
      routes: [...(base.routes ?? []), route('app', '/app', { methods: ['GET', 'POST'], to: 'app' })],
    }));
  });
  afterAll(async () => {
    await gw.stop();
    await upstream.close();
  });

  it('HDR-01 HDR-04 every X-Forwarded-* and X-Auth-Request-* header from the client is stripped, not just a known list', async () => {
    const res = await rawHttp1(
      gw.port,
      gw.certs,
      'GET /app/fwd HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Client-Cert: By=spiffe://evil\r\nX-Forwarded-Email: admin@example.com\r\n' +
        'X-Forwarded-Groups: admins\r\nX-Forwarded-Preferred-Username: root\r\nX-Forwarded-Access-Token: t\r\nX-Auth-Request-User: admin\r\nConnection: close\r\n\r\n',
    );
    expect(res.status).toBe(200);
    const seen = upstream.requests.at(-1)!.headers;
    for (const name of [
      'x-forwarded-client-cert',
      'x-forwarded-email',
      'x-forwarded-groups',
      'x-forwarded-preferred-username',
      'x-forwarded-access-token',
      'x-auth-request-user',
    ]) {
      expect(seen[name], name).toBeUndefined();
    }
    expect(seen['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('H1-15 an edge refusal of a request with an unread body closes the HTTP/1.1 connection (no stray 408 later)', async () => {
    const res = await rawHttp1(gw.port, gw.certs, 'POST /nowhere HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nabc', { waitMs: 2500 });
    expect(res.status).toBe(404);
    expect(res.closed).toBe(true);
    // Exactly one response on the connection: no unsolicited second status line (e.g. a 408 after the deadline).
    expect(res.text.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
  });

  it('H1-17 RL-03 an HTTP/2 body that stalls past the deadline gets 408 and frees the upstream connection at once', async () => {
    upstream.respond = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
    };
    const session = await h2Session(gw.port, gw.certs);
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/app/stall', 'content-length': '10' }, { endStream: false });
      stream.write('x');
      const status = await new Promise<number>((resolve) => stream.on('response', (h) => resolve(Number(h[':status']))));
      expect(status).toBe(408);
      await new Promise<void>((resolve) => stream.on('close', () => resolve()));
      expect([h2c.NGHTTP2_NO_ERROR, h2c.NGHTTP2_CANCEL]).toContain(stream.rstCode);
      // The single pooled upstream connection is free again: a GET goes straight through.
      const next = await request(`${gw.origin}/app/after-stall`, { dispatcher: gw.agent(), headersTimeout: 3000 });
      expect(next.statusCode).toBe(200);
      await next.body.dump();
    } finally {
      session.destroy();
    }
  });

  it('RL-03 a request queued behind a busy upstream connection is dropped when its client leaves, never sent', async () => {
    const release: (() => void)[] = [];
    upstream.respond = (_req, res) => {
      release.push(() => res.end('late'));
    };
    const agent = gw.agent();
    const first = request(`${gw.origin}/app/holder`, { dispatcher: agent });
    while (!upstream.requests.some((r) => r.url === '/app/holder')) await new Promise((r) => setTimeout(r, 10));
    const abandoned = new AbortController();
    const second = request(`${gw.origin}/app/abandoned`, { dispatcher: gw.agent(), signal: abandoned.signal }).catch(() => 'aborted');
    await new Promise((r) => setTimeout(r, 200));
    abandoned.abort();
    expect(await second).toBe('aborted');
    await new Promise((r) => setTimeout(r, 100));
    upstream.respond = (_req, res) => res.end('ok');
    for (const go of release) go();
    await (await first).body.dump();
    await new Promise((r) => setTimeout(r, 200));
    expect(upstream.requests.some((r) => r.url === '/app/abandoned')).toBe(false);
  });
});

describe('RL-01 edge refusals spend the pre-auth budget', () => {
  it('unroutable requests from one client are throttled like any other and answered 429', async () => {
    const gw = await startGateway((base) => ({ ...base, limits: { pre_auth_per_ip: { points: 3, duration_s: 60 } } }));
    try {
      const agent = gw.agent();
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) {
        const res = await request(`${gw.origin}/nowhere/${i}`, { dispatcher: agent });
        statuses.push(res.statusCode);
        if (res.statusCode === 429) expect(problemCode(await res.body.text())).toBe('rate_limited');
        else await res.body.dump();
      }
      expect(statuses).toEqual([404, 404, 404, 429, 429]);
    } finally {
      await gw.stop();
    }
  });
});
