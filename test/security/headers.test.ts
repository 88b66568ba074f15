// Proxy header hygiene (SECURITY-MATRIX G: HDR-01..HDR-08, OA-18 header part): what the gateway lets cross it in each
// direction, checked on the real bytes the recording upstream and the client receive.
import { route, type RouteInput, type RouteOptions } from '../support/routes.js';
import { once } from 'node:events';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, request } from 'undici';
import { certificateThumbprintSha256 } from '../../src/lib/thumbprint.js';
import {
  h2Request,
  h2Session,
  problemCode,
  rawHttp1,
  startGateway,
  startUpstream,
  type RecordedRequest,
  type TestGateway,
  type TestUpstream,
} from '../support/harness.js';

const CLIENT_SUBJECT = 'spiffe://gatehouse.local/dev-client';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** How often a header name occurs in the raw header list the upstream received (case-insensitive). */
function rawCount(seen: RecordedRequest, name: string): number {
  let n = 0;
  for (let i = 0; i < seen.rawHeaders.length; i += 2) if ((seen.rawHeaders[i] ?? '').toLowerCase() === name) n++;
  return n;
}

interface ParsedResponse {
  readonly status: number;
  /** Header lines in wire order, names lower-cased, values as sent. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: string;
}

/** Splits one raw HTTP/1.1 response into status, header lines and (de-chunked) body. */
function parseResponse(text: string): ParsedResponse {
  const end = text.indexOf('\r\n\r\n');
  const head = end === -1 ? text : text.slice(0, end);
  let body = end === -1 ? '' : text.slice(end + 4);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers = lines.map((line) => {
    const colon = line.indexOf(':');
    return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const;
  });
  if (headers.some(([n, v]) => n === 'transfer-encoding' && v.toLowerCase() === 'chunked')) {
    let out = '';
    let rest = body;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n');
      if (lineEnd === -1) break;
      const size = parseInt(rest.slice(0, lineEnd), 16);
      if (!Number.isFinite(size) || size === 0) break;
      out += rest.slice(lineEnd + 2, lineEnd + 2 + size);
      rest = rest.slice(lineEnd + 2 + size + 2);
    }
    body = out;
  }
  return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0), headers, body };
}

function headerValues(res: ParsedResponse, name: string): string[] {
  return res.headers.filter(([n]) => n === name).map(([, v]) => v);
}

/** One HTTP/1.1 request as exact bytes; `Connection: close` is added unless the caller sends its own Connection header. */
function rawRequest(method: string, target: string, lines: readonly string[], body = ''): string {
  const hasConnection = lines.some((l) => /^connection:/i.test(l));
  const all = [`${method} ${target} HTTP/1.1`, ...lines, ...(hasConnection ? [] : ['Connection: close'])];
  return `${all.join('\r\n')}\r\n\r\n${body}`;
}

/** Spoofed identity headers in mixed case, as an attacker would send them (HDR-01). */
const SPOOFED_IDENTITY = [
  'X-User-Id: admin',
  'x-CLIENT-id: root-client',
  'X-SCOPES: admin:all',
  'X-Authenticated-Subject: spiffe://gatehouse.local/admin',
  'X-AUTHENTICATED-METHOD: mtls',
  'x-Authenticated-Cert-Thumbprint: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
  'X-Authenticated-Scopes: admin',
  'X-Forwarded-User: admin',
  'X-Remote-User: admin',
];
const IDENTITY_NAMES = ['x-user-id', 'x-client-id', 'x-scopes', 'x-forwarded-user', 'x-remote-user'];

/** Client-Cert style headers a TLS-terminating proxy would set (RFC 9440); from a client they are forgeries (OA-18). */
const SPOOFED_CERT_HEADERS = [
  'Client-Cert: :MIIBszCCAVmgAwIBAgIUAAAAAAAAAAAAAAAAAAAAAAAAAAAwCgYIKoZIzj0EAwI=:',
  'Client-Cert-Chain: :MIIBszCCAVmgAwIBAgIU=:',
  'X-Client-Cert: -----BEGIN%20CERTIFICATE-----',
  'X-SSL-Client-Cert: -----BEGIN%20CERTIFICATE-----',
  'X-SSL-Client-DN: CN=admin',
  'X-SSL-Client-Verify: SUCCESS',
];
const CERT_HEADER_NAMES = ['client-cert', 'client-cert-chain', 'x-client-cert', 'x-ssl-client-cert', 'x-ssl-client-dn', 'x-ssl-client-verify'];

interface RawUpstream {
  readonly url: string;
  /** Requests (head only) received so far. */
  readonly heads: string[];
  close(): Promise<void>;
}

/**
 * An upstream that answers every GET with exact response bytes, so headers Node would normalise (Connection, Keep-Alive,
 * Transfer-Encoding) arrive at the gateway as written.
 */
async function startRawUpstream(response: string): Promise<RawUpstream> {
  const heads: string[] = [];
  const sockets = new Set<Socket>();
  const server: NetServer = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      for (let end = buffered.indexOf('\r\n\r\n'); end !== -1; end = buffered.indexOf('\r\n\r\n')) {
        heads.push(buffered.slice(0, end));
        buffered = buffered.slice(end + 4);
        socket.write(response);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    heads,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const HOP_BY_HOP_RESPONSE =
  'HTTP/1.1 200 OK\r\n' +
  'Content-Type: text/plain\r\n' +
  'Connection: x-internal\r\n' +
  'X-Internal: 1\r\n' +
  'Keep-Alive: timeout=99, max=7\r\n' +
  'Proxy-Authenticate: Basic realm="internal"\r\n' +
  'Transfer-Encoding: chunked\r\n' +
  'X-Visible: yes\r\n' +
  '\r\n' +
  '5\r\nhello\r\n0\r\n\r\n';

const proxyRoute = (id: string, prefix: string, upstream: string, proxy: RouteOptions['proxy'] = {}): RouteInput =>
  route(id, prefix, { methods: ['GET', 'POST'], to: upstream, proxy });

describe('proxy header hygiene', () => {
  let gw: TestGateway;
  let trustingGw: TestGateway;
  let limitedGw: TestGateway;
  let upstream: TestUpstream;
  let raw: RawUpstream;

  beforeAll(async () => {
    upstream = await startUpstream();
    raw = await startRawUpstream(HOP_BY_HOP_RESPONSE);
    gw = await startGateway((base) => ({
      ...base,
      upstreams: { app: { url: upstream.url }, raw: { url: raw.url } },
      routes: [
        ...base.routes,
        proxyRoute('api', '/api', 'app'),
        proxyRoute('withauth', '/withauth', 'app', { forward_authorization: true }),
        proxyRoute('rawresp', '/rawresp', 'raw'),
        route('secure', '/secure', { methods: ['GET', 'POST'], authn: ['mtls'], to: 'app' }),
      ],
    }));
    // Same routes behind a gateway that trusts 127.0.0.1 as a load balancer: the positive control for HDR-04.
    trustingGw = await startGateway((base) => ({
      ...base,
      server: { ...base.server, trusted_proxies: ['127.0.0.1'] },
      upstreams: { app: { url: upstream.url } },
      routes: [...base.routes, proxyRoute('api', '/api', 'app')],
    }));
    // A tight per-IP pre-auth budget, to show that rotating X-Forwarded-For values do not buy a fresh one.
    limitedGw = await startGateway((base) => ({
      ...base,
      limits: { pre_auth_per_ip: { points: 3, duration_s: 60 } },
      upstreams: { app: { url: upstream.url } },
      routes: [...base.routes, proxyRoute('api', '/api', 'app')],
    }));
  });

  afterAll(async () => {
    await gw?.stop();
    await trustingGw?.stop();
    await limitedGw?.stop();
    await upstream?.close();
    await raw?.close();
  });

  const lastSeen = (): RecordedRequest => {
    const seen = upstream.requests.at(-1);
    if (seen === undefined) throw new Error('the upstream received no request');
    return seen;
  };

  describe('HDR-01 client identity headers', () => {
    it('HDR-01 strips mixed-case identity headers and sets no x-authenticated-* on an anonymous route', async () => {
      const before = upstream.requests.length;
      const res = await rawHttp1(gw.port, gw.certs, rawRequest('GET', '/api/hdr01', ['Host: localhost', ...SPOOFED_IDENTITY]));
      expect(res.status).toBe(200);
      expect(upstream.requests.length).toBe(before + 1);
      const seen = lastSeen();
      expect(seen.url).toBe('/api/hdr01');
      for (const name of IDENTITY_NAMES) expect(seen.headers[name], name).toBeUndefined();
      expect(Object.keys(seen.headers).filter((n) => n.startsWith('x-authenticated-'))).toEqual([]);
      expect(seen.rawHeaders.filter((_, i) => i % 2 === 0).some((n) => /^x-authenticated-/i.test(n))).toBe(false);
    });

    it('HDR-01 on an mTLS route the upstream gets identity headers from the verified certificate only', async () => {
      const certs = gw.certs;
      const res = await rawHttp1(gw.port, certs, rawRequest('GET', '/secure/hdr01', ['Host: localhost', ...SPOOFED_IDENTITY]), {
        tls: { cert: certs.client.certPem, key: certs.client.keyPem },
      });
      expect(res.status).toBe(200);
      const seen = lastSeen();
      expect(seen.url).toBe('/secure/hdr01');
      expect(seen.headers['x-authenticated-subject']).toBe(CLIENT_SUBJECT);
      expect(seen.headers['x-authenticated-method']).toBe('mtls');
      expect(seen.headers['x-authenticated-cert-thumbprint']).toBe(certificateThumbprintSha256(certs.client.certPem));
      // An mTLS principal has no scopes: the client's X-Authenticated-Scopes must not survive in its place.
      expect(seen.headers['x-authenticated-scopes']).toBeUndefined();
      for (const name of ['x-authenticated-subject', 'x-authenticated-method', 'x-authenticated-cert-thumbprint']) {
        expect(rawCount(seen, name), name).toBe(1);
      }
      for (const name of IDENTITY_NAMES) expect(seen.headers[name], name).toBeUndefined();
    });

    it('HDR-01 over HTTP/2 on an mTLS route: spoofed identity replaced by the certificate identity', async () => {
      const certs = gw.certs;
      const session = await h2Session(gw.port, certs, { cert: certs.client.certPem, key: certs.client.keyPem });
      try {
        const res = await h2Request(session, {
          ':method': 'GET',
          ':path': '/secure/hdr01-h2',
          'x-authenticated-subject': 'spiffe://gatehouse.local/admin',
          'x-authenticated-method': 'password',
          'x-user-id': 'admin',
          'x-scopes': 'admin:all',
        });
        expect(res.status).toBe(200);
      } finally {
        session.close();
      }
      const seen = lastSeen();
      expect(seen.url).toBe('/secure/hdr01-h2');
      expect(seen.headers['x-authenticated-subject']).toBe(CLIENT_SUBJECT);
      expect(seen.headers['x-authenticated-method']).toBe('mtls');
      expect(seen.headers['x-user-id']).toBeUndefined();
      expect(seen.headers['x-scopes']).toBeUndefined();
    });

    it('HDR-01 spoofed identity without a certificate on an mTLS route → 401, upstream receives nothing', async () => {
      const before = upstream.requests.length;
      const res = await rawHttp1(gw.port, gw.certs, rawRequest('GET', '/secure/hdr01', ['Host: localhost', ...SPOOFED_IDENTITY]));
      expect(res.status).toBe(401);
      expect(problemCode(res.text)).toBe('unauthenticated');
      expect(upstream.requests.length).toBe(before);
    });

    it('HDR-01 X_User_Id (underscore in the name) → 400 invalid_header, upstream receives nothing', async () => {
      const before = upstream.requests.length;
      const res = await rawHttp1(gw.port, gw.certs, rawRequest('GET', '/api/hdr01', ['Host: localhost', 'X_User_Id: admin']));
      expect(res.status).toBe(400);
      expect(problemCode(res.text)).toBe('invalid_header');
      expect(upstream.requests.length).toBe(before);
    });
  });

  describe('HDR-03 hop-by-hop headers', () => {
    it('HDR-03 request: hop-by-hop and Connection-named headers are not forwarded', async () => {
      const res = await rawHttp1(
        gw.port,
        gw.certs,
        rawRequest('GET', '/api/hdr03', [
          'Host: localhost',
          'Connection: close, X-Secret',
          'Connection: X-Other',
          'Keep-Alive: timeout=99, max=7',
          'Proxy-Connection: keep-alive',
          'TE: trailers',
          'Trailer: X-Checksum',
          'Upgrade: websocket',
          'Proxy-Authorization: Basic Zm9vOmJhcg==',
          'X-Secret: s3cret',
          'X-Other: 1',
          'X-Kept: yes',
        ]),
      );
      expect(res.status).toBe(200);
      const seen = lastSeen();
      expect(seen.url).toBe('/api/hdr03');
      for (const name of ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'x-secret', 'x-other']) {
        expect(seen.headers[name], name).toBeUndefined();
      }
      // The upstream connection's own Connection header (undici's keep-alive) is the only one allowed.
      expect(seen.headers['connection'] ?? 'keep-alive').toBe('keep-alive');
      // Positive control: an end-to-end header is forwarded.
      expect(seen.headers['x-kept']).toBe('yes');
    });

    it('HDR-03 response over HTTP/1.1: upstream hop-by-hop and Connection-named headers do not reach the client', async () => {
      const res = await rawHttp1(gw.port, gw.certs, rawRequest('GET', '/rawresp/x', ['Host: localhost']));
      const parsed = parseResponse(res.text);
      expect(parsed.status).toBe(200);
      expect(parsed.body).toBe('hello');
      expect(headerValues(parsed, 'x-visible')).toEqual(['yes']);
      expect(headerValues(parsed, 'x-internal')).toEqual([]);
      expect(headerValues(parsed, 'proxy-authenticate')).toEqual([]);
      expect(headerValues(parsed, 'connection').join(',').toLowerCase()).not.toContain('x-internal');
      // Node may add its own Keep-Alive for the client connection; the upstream's must not be relayed.
      expect(headerValues(parsed, 'keep-alive').join(',')).not.toContain('max=7');
      expect(headerValues(parsed, 'transfer-encoding').length).toBeLessThanOrEqual(1);
      expect(headerValues(parsed, 'strict-transport-security').length).toBe(1);
    });

    it('HDR-03 response over HTTP/2: no connection-specific header is relayed and the response is valid', async () => {
      const session = await h2Session(gw.port, gw.certs);
      try {
        const res = await h2Request(session, { ':method': 'GET', ':path': '/rawresp/h2' });
        expect(res.status).toBe(200);
        expect(res.body).toBe('hello');
        expect(res.headers['x-visible']).toBe('yes');
        for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'proxy-authenticate', 'x-internal']) {
          expect(res.headers[name], name).toBeUndefined();
        }
      } finally {
        session.close();
      }
    });
  });

  describe('HDR-04 client-origin headers', () => {
    it('HDR-04 spoofed X-Forwarded-For/Forwarded/X-Real-IP/True-Client-IP from an untrusted peer are replaced', async () => {
      for (const spoofed of ['203.0.113.9', '198.51.100.1, 10.0.0.1', '::1']) {
        const res = await rawHttp1(
          gw.port,
          gw.certs,
          rawRequest('GET', '/api/hdr04', [
            'Host: gw.example.test:8443',
            `X-Forwarded-For: ${spoofed}`,
            `Forwarded: for="${spoofed}";proto=http;host=evil.example`,
            `X-Real-IP: ${spoofed}`,
            `True-Client-IP: ${spoofed}`,
            `X-Client-IP: ${spoofed}`,
            'X-Forwarded-Proto: http',
            'X-Forwarded-Host: evil.example',
            'X-Forwarded-Port: 80',
          ]),
        );
        expect(res.status).toBe(200);
        const seen = lastSeen();
        expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
        expect(rawCount(seen, 'x-forwarded-for')).toBe(1);
        for (const name of ['forwarded', 'x-real-ip', 'true-client-ip', 'x-client-ip', 'x-forwarded-port']) {
          expect(seen.headers[name], name).toBeUndefined();
        }
        expect(seen.headers['x-forwarded-proto']).toBe('https');
        expect(rawCount(seen, 'x-forwarded-proto')).toBe(1);
        expect(seen.headers['x-forwarded-host']).toBe('gw.example.test:8443');
        expect(rawCount(seen, 'x-forwarded-host')).toBe(1);

        // The audit names the socket address, not the claimed one.
        const requestId = /\r\nx-request-id: ([^\r]+)/i.exec(res.text)?.[1];
        expect(requestId).toMatch(UUID);
        const record = (await gw.auditRecords()).find((r) => r.request_id === requestId);
        expect(record?.client_ip).toBe('127.0.0.1');
        expect(record?.peer_ip).toBe('127.0.0.1');
      }
    });

    it('HDR-04 rotating X-Forwarded-For values do not evade the per-IP limit: the socket address is the key', async () => {
      const before = upstream.requests.length;
      const statuses: number[] = [];
      let refusal = '';
      for (let i = 1; i <= 5; i++) {
        const res = await request(`${limitedGw.origin}/api/hdr04-limit-${i}`, {
          dispatcher: limitedGw.agent(),
          headers: { 'x-forwarded-for': `198.51.100.${i}`, 'x-real-ip': `198.51.100.${i}`, forwarded: `for=198.51.100.${i}` },
        });
        statuses.push(res.statusCode);
        const text = await res.body.text();
        if (res.statusCode === 429) refusal = text;
      }
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      expect(problemCode(refusal)).toBe('rate_limited');
      expect(upstream.requests.length).toBe(before + 3);
    });

    it('HDR-04 control: behind a trusted proxy the chain is kept and extended; Forwarded/X-Real-IP are still dropped', async () => {
      const res = await request(`${trustingGw.origin}/api/hdr04-trusted`, {
        dispatcher: trustingGw.agent(),
        headers: { 'x-forwarded-for': '203.0.113.7', forwarded: 'for=203.0.113.7', 'x-real-ip': '203.0.113.7' },
      });
      expect(res.statusCode).toBe(200);
      const requestId = res.headers['x-request-id'];
      await res.body.text();
      const seen = lastSeen();
      expect(seen.url).toBe('/api/hdr04-trusted');
      expect(seen.headers['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
      expect(seen.headers['forwarded']).toBeUndefined();
      expect(seen.headers['x-real-ip']).toBeUndefined();
      const record = (await trustingGw.auditRecords()).find((r) => r.request_id === requestId);
      expect(record?.client_ip).toBe('203.0.113.7');
      expect(record?.peer_ip).toBe('127.0.0.1');
    });
  });

  describe('HDR-05 URL and method overrides', () => {
    it('HDR-05 X-Original-URL, X-Rewrite-URL, X-Forwarded-Host, method overrides are stripped; the real path and method are used', async () => {
      const res = await rawHttp1(
        gw.port,
        gw.certs,
        rawRequest('GET', '/api/hdr05?_method=DELETE', [
          'Host: localhost',
          'X-Original-URL: /secure/admin',
          'X-Rewrite-URL: /secure/admin',
          'X-Original-URI: /secure/admin',
          'X-Forwarded-Host: evil.example',
          'X-Forwarded-Prefix: /secure',
          'X-Forwarded-Proto: http',
          'X-HTTP-Method-Override: DELETE',
          'X-HTTP-Method: DELETE',
          'X-Method-Override: DELETE',
        ]),
      );
      expect(res.status).toBe(200);
      const seen = lastSeen();
      expect(seen.method).toBe('GET');
      expect(seen.url).toBe('/api/hdr05?_method=DELETE');
      for (const name of [
        'x-original-url',
        'x-rewrite-url',
        'x-original-uri',
        'x-forwarded-prefix',
        'x-http-method-override',
        'x-http-method',
        'x-method-override',
      ]) {
        expect(seen.headers[name], name).toBeUndefined();
      }
      expect(seen.headers['x-forwarded-host']).toBe('localhost');
      expect(seen.headers['x-forwarded-proto']).toBe('https');
    });

    it('HDR-05 X-Original-URL naming a public path does not open a protected route (401, upstream receives nothing)', async () => {
      const before = upstream.requests.length;
      const res = await rawHttp1(gw.port, gw.certs, rawRequest('GET', '/secure/admin', ['Host: localhost', 'X-Original-URL: /api/x', 'X-Rewrite-URL: /api/x']));
      expect(res.status).toBe(401);
      expect(problemCode(res.text)).toBe('unauthenticated');
      expect(upstream.requests.length).toBe(before);
    });
  });

  describe('HDR-06 credentials', () => {
    it('HDR-06 Authorization and Proxy-Authorization are not forwarded by default', async () => {
      const res = await request(`${gw.origin}/api/hdr06`, {
        dispatcher: gw.agent(),
        headers: { authorization: 'Bearer client-token-123', 'proxy-authorization': 'Basic Zm9vOmJhcg==' },
      });
      expect(res.statusCode).toBe(200);
      await res.body.text();
      const seen = lastSeen();
      expect(seen.url).toBe('/api/hdr06');
      expect(seen.headers['authorization']).toBeUndefined();
      expect(seen.headers['proxy-authorization']).toBeUndefined();
    });

    it('HDR-06 forward_authorization: true forwards Authorization, never Proxy-Authorization', async () => {
      const res = await request(`${gw.origin}/withauth/hdr06`, {
        dispatcher: gw.agent(),
        headers: { authorization: 'Bearer client-token-123', 'proxy-authorization': 'Basic Zm9vOmJhcg==' },
      });
      expect(res.statusCode).toBe(200);
      await res.body.text();
      const seen = lastSeen();
      expect(seen.url).toBe('/withauth/hdr06');
      expect(seen.headers['authorization']).toBe('Bearer client-token-123');
      expect(rawCount(seen, 'authorization')).toBe(1);
      expect(seen.headers['proxy-authorization']).toBeUndefined();
    });
  });

  describe('HDR-08 upstream response headers', () => {
    it('HDR-08 Server, X-Powered-By and other fingerprints are removed', async () => {
      const saved = upstream.respond;
      upstream.respond = (_req, res) => {
        res.writeHead(200, {
          'content-type': 'text/plain',
          server: 'Apache/2.4.1 (Unix)',
          'x-powered-by': 'PHP/5.4.0',
          'x-aspnet-version': '4.0.30319',
          'x-app': 'kept',
        });
        res.end('ok');
      };
      try {
        const res = await request(`${gw.origin}/api/hdr08`, { dispatcher: gw.agent() });
        expect(res.statusCode).toBe(200);
        expect(await res.body.text()).toBe('ok');
        expect(res.headers['server']).toBeUndefined();
        expect(res.headers['x-powered-by']).toBeUndefined();
        expect(res.headers['x-aspnet-version']).toBeUndefined();
        expect(res.headers['x-app']).toBe('kept');
      } finally {
        upstream.respond = saved;
      }
    });

    it('HDR-08 upstream Connection: close does not close the client connection (next request reuses it)', async () => {
      const saved = upstream.respond;
      upstream.respond = (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
        res.end('closing upstream');
      };
      const client = new Client(gw.origin, { connect: { ca: gw.certs.ca, servername: 'localhost' }, pipelining: 1 });
      let connects = 0;
      client.on('connect', () => connects++);
      try {
        const first = await client.request({ path: '/api/hdr08-close-1', method: 'GET' });
        expect(first.statusCode).toBe(200);
        expect(first.headers['connection']).not.toBe('close');
        expect(await first.body.text()).toBe('closing upstream');
        const second = await client.request({ path: '/api/hdr08-close-2', method: 'GET' });
        expect(second.statusCode).toBe(200);
        expect(await second.body.text()).toBe('closing upstream');
        expect(connects).toBe(1);
        expect(lastSeen().url).toBe('/api/hdr08-close-2');
      } finally {
        upstream.respond = saved;
        await client.close();
      }
    });
  });

  describe('OA-18 client certificate headers', () => {
    it('OA-18 Client-Cert / X-Client-Cert / X-SSL-Client-Cert from the client are stripped on a public route', async () => {
      const res = await rawHttp1(gw.port, gw.certs, rawRequest('GET', '/api/oa18', ['Host: localhost', ...SPOOFED_CERT_HEADERS]));
      expect(res.status).toBe(200);
      const seen = lastSeen();
      expect(seen.url).toBe('/api/oa18');
      for (const name of CERT_HEADER_NAMES) expect(seen.headers[name], name).toBeUndefined();
    });

    it('OA-18 on an mTLS route a forged Client-Cert header neither reaches the upstream nor changes the thumbprint', async () => {
      const certs = gw.certs;
      const res = await rawHttp1(gw.port, certs, rawRequest('GET', '/secure/oa18', ['Host: localhost', ...SPOOFED_CERT_HEADERS]), {
        tls: { cert: certs.client.certPem, key: certs.client.keyPem },
      });
      expect(res.status).toBe(200);
      const seen = lastSeen();
      expect(seen.url).toBe('/secure/oa18');
      for (const name of CERT_HEADER_NAMES) expect(seen.headers[name], name).toBeUndefined();
      expect(seen.headers['x-authenticated-cert-thumbprint']).toBe(certificateThumbprintSha256(certs.client.certPem));
    });
  });

  describe('request id', () => {
    it("X-Request-Id: the client's value is replaced by the gateway's id, which the response carries too", async () => {
      const saved = upstream.respond;
      upstream.respond = (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-request-id': 'upstream-made-id' });
        res.end('ok');
      };
      try {
        const res = await rawHttp1(gw.port, gw.certs, rawRequest('GET', '/api/reqid', ['Host: localhost', 'X-Request-Id: attacker-chosen-id']));
        const parsed = parseResponse(res.text);
        expect(parsed.status).toBe(200);
        const ids = headerValues(parsed, 'x-request-id');
        expect(ids.length).toBe(1);
        const id = ids[0] ?? '';
        expect(id).toMatch(UUID);
        const seen = lastSeen();
        expect(seen.url).toBe('/api/reqid');
        expect(seen.headers['x-request-id']).toBe(id);
        expect(rawCount(seen, 'x-request-id')).toBe(1);
      } finally {
        upstream.respond = saved;
      }
    });
  });
});
