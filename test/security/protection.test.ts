// Connection and request protection (SECURITY-MATRIX H1-17, H1-18, RL-01, RL-02, HDR-04, LOG-01): timeouts that close slow
// clients, connection caps, pre-auth and per-principal quotas, the client address a limiter and the audit trust, and one audit
// record per request carrying the request id the client saw. Short timeouts in config keep every wait bounded and small.
import { route } from '../support/routes.js';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { request, type Dispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/event.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { problemCode, startGateway, startUpstream, tlsOptions, type TestCertificates, type TestGateway, type TestUpstream } from '../support/harness.js';
import { codeOf, RawConnection, rawExchange } from './raw-client.js';
import { eventually } from '../support/eventually.js';

type Limits = NonNullable<ConfigInput['limits']>;

/** A gateway with /public (anyone), /secure (mTLS only) and /metered (mTLS or anonymous, per-principal quota), all proxied. */
function startProtected(upstream: TestUpstream, limits: Limits, extra: Partial<ConfigInput> = {}): Promise<TestGateway> {
  return startGateway((base) => ({
    ...base,
    limits,
    upstreams: { app: { url: upstream.url } },
    quotas: { metered: { points: 2, duration_s: 60 } },
    routes: [
      route('public', '/public', { methods: ['GET', 'POST'], to: 'app' }),
      route('secure', '/secure', { methods: ['GET', 'POST'], authn: ['mtls'], to: 'app' }),
      route('metered', '/metered', { authn: ['mtls', 'none'], to: 'app', quota: 'metered' }),
    ],
    ...extra,
  }));
}

interface Answer {
  readonly status: number;
  readonly code: string | undefined;
  readonly requestId: string;
  readonly retryAfter: string | undefined;
}

async function get(gw: TestGateway, path: string, opts: { dispatcher?: Dispatcher; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await request(`${gw.origin}${path}`, {
    dispatcher: opts.dispatcher ?? gw.agent(),
    ...(opts.headers !== undefined ? { headers: opts.headers } : {}),
  });
  const body = await res.body.text();
  const retryAfter = res.headers['retry-after'];
  return {
    status: res.statusCode,
    code: problemCode(body),
    requestId: String(res.headers['x-request-id']),
    retryAfter: retryAfter === undefined ? undefined : String(retryAfter),
  };
}

/** Opens a TLS connection and reports whether the handshake completed or the server dropped it first. */
function tryConnect(port: number, certs: TestCertificates): Promise<{ outcome: 'connected' | 'refused' | 'timeout'; socket: TLSSocket }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ port, ...tlsOptions(certs) });
    socket.on('error', () => undefined);
    const timer = setTimeout(() => resolve({ outcome: 'timeout', socket }), 3000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      resolve({ outcome: 'connected', socket });
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ outcome: 'refused', socket });
    });
  });
}

async function expectUsable(connection: RawConnection): Promise<void> {
  connection.write('GET /public/alive HTTP/1.1\r\nHost: localhost\r\n\r\n');
  expect((await connection.response())?.status).toBe(200);
}

/** Retries until a new connection is admitted (the server notices closed sockets asynchronously). */
async function eventuallyConnects(port: number, certs: TestCertificates): Promise<void> {
  await eventually(
    async () => {
      const attempt = await tryConnect(port, certs);
      attempt.socket.destroy();
      return attempt.outcome === 'connected';
    },
    2000,
    'a new connection admitted',
    100,
  );
}

function recordsFor(records: readonly AuditRecord[], requestId: string): AuditRecord[] {
  return records.filter((r) => r.request_id === requestId);
}

describe('protection', () => {
  let upstream: TestUpstream;
  beforeAll(async () => {
    upstream = await startUpstream();
  });
  afterAll(async () => {
    await upstream?.close();
  });

  describe('H1-17 timeouts', () => {
    let gw: TestGateway;
    beforeAll(async () => {
      gw = await startProtected(upstream, {
        handshake_timeout_ms: 1000,
        headers_timeout_ms: 1000,
        request_timeout_ms: 1500,
        keep_alive_timeout_ms: 1000,
        max_requests_per_socket: 2,
      });
    });
    afterAll(async () => {
      await gw?.stop();
    });

    it('H1-17 slowloris: a partial header line and then nothing → the socket is closed (headers_timeout_ms 1000)', async () => {
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write('GET /public/slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: a');
        expect(await connection.waitClosed(5000)).toBe(true);
        // Either a 408 was written before the close, or nothing at all; never another status.
        const status = /^HTTP\/1\.1 (\d{3})/.exec(connection.text)?.[1];
        expect([undefined, '408']).toContain(status);
      } finally {
        connection.destroy();
      }
    });

    it('H1-17 a TLS connection that never sends a request byte is closed at the headers deadline', async () => {
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        expect(await connection.waitClosed(5000)).toBe(true);
        expect([undefined, '408']).toContain(/^HTTP\/1\.1 (\d{3})/.exec(connection.text)?.[1]);
      } finally {
        connection.destroy();
      }
    });

    it('H1-17 slowloris: headers trickled one byte at a time are closed at the headers deadline too', async () => {
      const connection = await RawConnection.open(gw.port, gw.certs);
      const head = 'GET /public/slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n';
      try {
        for (let i = 0; i < head.length - 4 && !connection.closed; i++) {
          connection.write(head[i] ?? '');
          await sleep(150);
        }
        expect(connection.closed).toBe(true);
      } finally {
        connection.destroy();
      }
    });

    it('H1-17 slow body: a POST sending 1 byte / 500 ms is ended (408 or close) at request_timeout_ms; no complete request reaches the upstream', async () => {
      const before = upstream.requests.length;
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write('POST /public/slow-body HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\n');
        for (let i = 0; i < 16 && !connection.closed; i++) {
          connection.write('a');
          await sleep(500);
        }
        expect(await connection.waitClosed(1000)).toBe(true);
        const status = /^HTTP\/1\.1 (\d{3})/.exec(connection.text)?.[1];
        expect([undefined, '408']).toContain(status);
        if (status === '408') expect(connection.text).toContain('request_timeout');
      } finally {
        connection.destroy();
      }
      expect(upstream.requests.length).toBe(before);
    });

    it('H1-18 an idle keep-alive connection is closed after keep_alive_timeout_ms', async () => {
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write('GET /public/ka HTTP/1.1\r\nHost: localhost\r\n\r\n');
        const response = await connection.response();
        expect(response?.status).toBe(200);
        expect(response?.headers['connection']).not.toBe('close');
        expect(await connection.waitClosed(4000)).toBe(true);
      } finally {
        connection.destroy();
      }
    });

    it('H1-18 max_requests_per_socket: the last allowed response says Connection: close and the socket closes', async () => {
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write('GET /public/r1 HTTP/1.1\r\nHost: localhost\r\n\r\n');
        const first = await connection.response();
        expect(first?.status).toBe(200);
        expect(first?.headers['connection']).not.toBe('close');
        connection.write('GET /public/r2 HTTP/1.1\r\nHost: localhost\r\n\r\n');
        const second = await connection.response();
        expect(second?.status).toBe(200);
        expect(second?.headers['connection']).toBe('close');
        expect(await connection.waitClosed(2000)).toBe(true);
      } finally {
        connection.destroy();
      }
    });

    it('H1-18 handshake timeout: a TCP connection that never sends a ClientHello is closed (handshake_timeout_ms 1000)', async () => {
      const socket = netConnect(gw.port, '127.0.0.1');
      socket.on('error', () => undefined);
      try {
        const closed = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 5000);
          socket.once('close', () => {
            clearTimeout(timer);
            resolve(true);
          });
        });
        expect(closed).toBe(true);
      } finally {
        socket.destroy();
      }
    });
  });

  describe('H1-18 connection caps', () => {
    it('H1-18 max_connections_per_ip 3: the 4th concurrent connection is dropped before the handshake completes; the 3 stay usable', async () => {
      const gw = await startProtected(upstream, { max_connections_per_ip: 3 });
      const open: RawConnection[] = [];
      try {
        for (let i = 0; i < 3; i++) open.push(await RawConnection.open(gw.port, gw.certs));
        const fourth = await tryConnect(gw.port, gw.certs);
        fourth.socket.destroy();
        expect(fourth.outcome).toBe('refused');
        for (const connection of open) await expectUsable(connection);
        // A cap on live connections, not a rate: once one closes, a new one is admitted.
        open.pop()?.destroy();
        await eventuallyConnects(gw.port, gw.certs);
      } finally {
        for (const connection of open) connection.destroy();
        await gw.stop();
      }
    });

    it('H1-18 max_connections 2 (global): the 3rd concurrent connection is dropped; the 2 stay usable', async () => {
      const gw = await startProtected(upstream, { max_connections: 2 });
      const open: RawConnection[] = [];
      try {
        for (let i = 0; i < 2; i++) open.push(await RawConnection.open(gw.port, gw.certs));
        const third = await tryConnect(gw.port, gw.certs);
        third.socket.destroy();
        expect(third.outcome).toBe('refused');
        for (const connection of open) await expectUsable(connection);
        open.pop()?.destroy();
        await eventuallyConnects(gw.port, gw.certs);
      } finally {
        for (const connection of open) connection.destroy();
        await gw.stop();
      }
    });

    it('H1-18 new_connections_per_ip {points: 3, duration_s: 60}: the 4th new connection is closed even after the first 3 were closed', async () => {
      const gw = await startProtected(upstream, { new_connections_per_ip: { points: 3, duration_s: 60 } });
      try {
        for (let i = 0; i < 3; i++) {
          const connection = await RawConnection.open(gw.port, gw.certs);
          await expectUsable(connection);
          connection.destroy();
        }
        await sleep(100);
        const fourth = await tryConnect(gw.port, gw.certs);
        fourth.socket.destroy();
        expect(fourth.outcome).toBe('refused');
      } finally {
        await gw.stop();
      }
    });
  });

  describe('RL-01 pre-auth per-IP quota', () => {
    let gw: TestGateway;
    beforeAll(async () => {
      gw = await startProtected(upstream, { pre_auth_per_ip: { points: 3, duration_s: 60 } });
    });
    afterAll(async () => {
      await gw?.stop();
    });

    it('RL-01 the 4th request → 429 rate_limited with Retry-After ≥ 1, upstream not called, refused before authn', async () => {
      const before = upstream.requests.length;
      const agent = gw.agent();
      for (let i = 0; i < 3; i++) expect((await get(gw, `/public/${i}`, { dispatcher: agent })).status).toBe(200);
      expect(upstream.requests.length).toBe(before + 3);

      const limited = await get(gw, '/public/3', { dispatcher: agent });
      expect(limited.status).toBe(429);
      expect(limited.code).toBe('rate_limited');
      expect(Number(limited.retryAfter)).toBeGreaterThanOrEqual(1);
      // The pre-auth budget is spent before any credential is looked at: an mTLS route answers 429, not 401.
      const beforeAuthn = await get(gw, '/secure/x', { dispatcher: agent });
      expect(beforeAuthn.status).toBe(429);
      expect(upstream.requests.length).toBe(before + 3);

      const records = await gw.auditRecords();
      const [record] = recordsFor(records, limited.requestId);
      expect(recordsFor(records, limited.requestId)).toHaveLength(1);
      expect(record?.stage).toBe('pre-auth-quota');
      expect(record?.code).toBe('rate_limited');
      expect(recordsFor(records, beforeAuthn.requestId)[0]?.stage).toBe('pre-auth-quota');
    });
  });

  describe('HDR-04 client address', () => {
    it('HDR-04 with trusted_proxies empty, rotating X-Forwarded-For / Forwarded / X-Real-IP do not evade the pre-auth limiter; audit and upstream see the socket address', async () => {
      const gw = await startProtected(upstream, { pre_auth_per_ip: { points: 3, duration_s: 60 } });
      try {
        const agent = gw.agent();
        const answers: Answer[] = [];
        for (let i = 1; i <= 4; i++) {
          answers.push(
            await get(gw, `/public/xff${i}`, {
              dispatcher: agent,
              headers: { 'x-forwarded-for': `198.51.100.${i}`, forwarded: `for=198.51.100.${i}`, 'x-real-ip': `198.51.100.${i}` },
            }),
          );
        }
        expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 429]);
        const records = await gw.auditRecords();
        for (const answer of answers) {
          const found = recordsFor(records, answer.requestId);
          expect(found).toHaveLength(1);
          expect(found[0]?.client_ip).toBe('127.0.0.1');
        }
        const seen = upstream.requests.find((r) => r.headers['x-request-id'] === answers[0]?.requestId);
        expect(seen?.headers['x-forwarded-for']).toBe('127.0.0.1');
        expect(seen?.headers['forwarded']).toBeUndefined();
        expect(seen?.headers['x-real-ip']).toBeUndefined();
      } finally {
        await gw.stop();
      }
    });

    it("HDR-04 with trusted_proxies ['127.0.0.1'], X-Forwarded-For: 203.0.113.7 is the client: audit client_ip 203.0.113.7, upstream gets '203.0.113.7, 127.0.0.1'", async () => {
      const gw = await startProtected(upstream, {}, { server: { host: '127.0.0.1', port: 0, trusted_proxies: ['127.0.0.1'] } });
      try {
        const answer = await get(gw, '/public/trusted', { headers: { 'x-forwarded-for': '203.0.113.7' } });
        expect(answer.status).toBe(200);
        const [record] = recordsFor(await gw.auditRecords(), answer.requestId);
        expect(record?.client_ip).toBe('203.0.113.7');
        expect(record?.peer_ip).toBe('127.0.0.1');
        const seen = upstream.requests.find((r) => r.headers['x-request-id'] === answer.requestId);
        expect(seen?.headers['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');

        // A value that is not an address is not believed: the client is the trusted peer itself.
        const bogus = await get(gw, '/public/bogus', { headers: { 'x-forwarded-for': 'not-an-ip' } });
        expect(recordsFor(await gw.auditRecords(), bogus.requestId)[0]?.client_ip).toBe('127.0.0.1');
      } finally {
        await gw.stop();
      }
    });
  });

  describe('RL-02 route quota per principal', () => {
    let gw: TestGateway;
    beforeAll(async () => {
      gw = await startProtected(upstream, {});
    });
    afterAll(async () => {
      await gw?.stop();
    });

    it('RL-02 two different mTLS clients each get their own budget; anonymous callers are keyed by IP', async () => {
      const before = upstream.requests.length;
      const clientA = gw.agent({ cert: gw.certs.client });
      const clientB = gw.agent({ cert: gw.certs.dnsClient });
      const anonymous = gw.agent();
      const statuses = async (dispatcher: Dispatcher): Promise<Answer[]> => {
        const out: Answer[] = [];
        for (let i = 0; i < 3; i++) out.push(await get(gw, '/metered/x', { dispatcher }));
        return out;
      };
      const a = await statuses(clientA);
      const b = await statuses(clientB);
      const anon = await statuses(anonymous);
      expect(a.map((x) => x.status)).toEqual([200, 200, 429]);
      expect(b.map((x) => x.status)).toEqual([200, 200, 429]);
      expect(anon.map((x) => x.status)).toEqual([200, 200, 429]);
      expect(a[2]?.code).toBe('rate_limited');
      expect(Number(a[2]?.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(upstream.requests.length).toBe(before + 6);

      const records = await gw.auditRecords();
      const limitedA = recordsFor(records, a[2]?.requestId ?? '')[0];
      expect(limitedA?.stage).toBe('quota');
      expect(limitedA?.subject).toBe('spiffe://gatehouse.local/dev-client');
      expect(recordsFor(records, b[2]?.requestId ?? '')[0]?.subject).toBe('svc.internal.example');
      expect(recordsFor(records, anon[2]?.requestId ?? '')[0]?.auth_method).toBe('anonymous');
    });
  });

  describe('LOG-01 one audit record per request, found by the x-request-id the client saw', () => {
    let gw: TestGateway;
    beforeAll(async () => {
      gw = await startProtected(upstream, {});
    });
    afterAll(async () => {
      await gw?.stop();
    });

    it('LOG-01 an allowed request: exactly one allow record; the upstream got the same request id', async () => {
      const answer = await get(gw, '/public/log?q=1');
      expect(answer.status).toBe(200);
      const found = recordsFor(await gw.auditRecords(), answer.requestId);
      expect(found).toHaveLength(1);
      expect(found[0]).toMatchObject({
        decision: 'allow',
        method: 'GET',
        path: '/public/log',
        raw_target: '/public/log?q=1',
        route: 'public',
        client_ip: '127.0.0.1',
      });
      expect(upstream.requests.find((r) => r.headers['x-request-id'] === answer.requestId)).toBeDefined();
    });

    it('LOG-01 a request refused at the edge (404, 400 invalid_target): exactly one deny record each, stage edge', async () => {
      const notFound = await get(gw, '/nowhere');
      expect(notFound.status).toBe(404);
      // The agent's request() sends `path` byte for byte (a URL string would be normalized first).
      const badTarget = await gw.agent().request({ origin: gw.origin, path: '/public/..%2fsecure', method: 'GET' });
      await badTarget.body.text();
      expect(badTarget.statusCode).toBe(400);
      const records = await gw.auditRecords();
      for (const [id, code] of [
        [notFound.requestId, 'not_found'],
        [String(badTarget.headers['x-request-id']), 'invalid_target'],
      ] as const) {
        const found = recordsFor(records, id);
        expect(found).toHaveLength(1);
        expect(found[0]).toMatchObject({ decision: 'deny', stage: 'edge', code });
      }
    });

    it('LOG-01 a request refused at authn (401): exactly one deny record, stage authn', async () => {
      const answer = await get(gw, '/secure/x');
      expect(answer.status).toBe(401);
      const found = recordsFor(await gw.auditRecords(), answer.requestId);
      expect(found).toHaveLength(1);
      expect(found[0]).toMatchObject({ decision: 'deny', stage: 'authn', code: 'unauthenticated', subject: null });
    });

    it('LOG-01 LOG-11 an HTTP/1.1 parser refusal (CL+TE) carries a request id that names exactly one audit record', async () => {
      const result = await rawExchange(
        gw.port,
        gw.certs,
        'POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      );
      expect(result.response?.status).toBe(400);
      expect(codeOf(result.response)).toBe('bad_request');
      const requestId = result.response?.headers['x-request-id'] ?? '';
      expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(JSON.parse(result.response?.body.toString() ?? '{}')).toMatchObject({ request_id: requestId });
      const found = recordsFor(await gw.auditRecords(), requestId);
      expect(found).toHaveLength(1);
      expect(found[0]).toMatchObject({ decision: 'deny', stage: 'edge' });
    });
  });
});
