// HTTP/1.1 parsing, smuggling and request-edge limits (SECURITY-MATRIX E, HDR-01, HDR-07, TLS-08), sent as raw bytes over TLS.
// Every refusal asserts the status, the problem `code`, and that the recording upstream received nothing.
import { route } from '../support/routes.js';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';
import { codeOf, RawConnection, rawExchange } from './raw-client.js';

const BODY_LIMIT = 1024;
/** A framing refusal comes from llhttp (bad_request) or the edge (invalid_framing), depending on the Node version. */
const FRAMING = ['bad_request', 'invalid_framing'] as const;

/** An upstream that counts request body bytes as they arrive, so a request aborted mid-body is still measured. */
interface CountingUpstream {
  readonly url: string;
  /** Body bytes seen per request, in arrival order (updated while the body streams). */
  readonly received: number[];
  /** Requests whose body ended normally. */
  completed: number;
  close(): Promise<void>;
}

async function startCountingUpstream(): Promise<CountingUpstream> {
  const state: CountingUpstream = {
    url: '',
    received: [],
    completed: 0,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer((req, res) => {
    const index = state.received.push(0) - 1;
    req.on('data', (chunk: Buffer) => {
      state.received[index] = (state.received[index] ?? 0) + chunk.length;
    });
    req.on('end', () => {
      state.completed++;
      res.end('ok');
    });
    req.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return Object.assign(state, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
}

describe('HTTP/1.1 edge (raw bytes over TLS)', () => {
  let gw: TestGateway;
  let upstream: TestUpstream;
  let counting: CountingUpstream;

  beforeAll(async () => {
    upstream = await startUpstream();
    counting = await startCountingUpstream();
    gw = await startGateway((base) => ({
      ...base,
      server: { ...base.server, hosts: ['localhost', '127.0.0.1'] },
      limits: { max_headers: 20, max_header_bytes: 4096, max_uri_bytes: 512 },
      upstreams: { app: { url: upstream.url }, counter: { url: counting.url } },
      routes: [
        route('public', '/public', { methods: ['GET', 'POST', 'PUT'], to: 'app', body_limit_bytes: BODY_LIMIT }),
        route('secure', '/secure', { methods: ['GET', 'POST'], authn: ['mtls'], to: 'app' }),
        route('upload', '/upload', { methods: ['POST'], to: 'counter', body_limit_bytes: BODY_LIMIT }),
        route('echo', '/echo', { methods: ['POST'], body_limit_bytes: BODY_LIMIT }),
      ],
    }));
  });

  afterAll(async () => {
    await gw?.stop();
    await upstream?.close();
    await counting?.close();
  });

  const send = (bytes: string | Buffer, opts: { head?: boolean; timeoutMs?: number; closeWaitMs?: number } = {}) =>
    rawExchange(gw.port, gw.certs, bytes, { closeWaitMs: 0, ...opts });

  /** Sends `bytes` and asserts a refusal: status, problem code, HSTS, optional close, and an untouched upstream. */
  async function expectRefused(bytes: string | Buffer, status: number, code: string | readonly string[], opts: { closed?: boolean } = {}): Promise<void> {
    const before = upstream.requests.length;
    const countingBefore = counting.received.length;
    const result = await send(bytes, { closeWaitMs: opts.closed === true ? 1000 : 0 });
    expect(result.response?.status, result.text.slice(0, 200)).toBe(status);
    if (typeof code === 'string') expect(codeOf(result.response)).toBe(code);
    else expect(code).toContain(codeOf(result.response));
    expect(result.response?.headers['strict-transport-security']).toMatch(/max-age=63072000/);
    if (opts.closed === true) expect(result.closed).toBe(true);
    await sleep(30);
    expect(upstream.requests.length).toBe(before);
    expect(counting.received.length).toBe(countingBefore);
  }

  const GET = (target: string, headers = 'Host: localhost\r\n'): string => `GET ${target} HTTP/1.1\r\n${headers}\r\n`;

  it('sanity: a well-formed request is proxied (so the refusals below are the checks, not a broken route)', async () => {
    const before = upstream.requests.length;
    const result = await send(GET('/public/ok'));
    expect(result.response?.status).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    expect(upstream.requests.at(-1)?.url).toBe('/public/ok');
  });

  describe('H1-01 CL + TE', () => {
    it('H1-01 rejects Content-Length then Transfer-Encoding: chunked (CL.TE) with 400 and close', () =>
      expectRefused('POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'bad_request', {
        closed: true,
      }));
    it('H1-01 rejects Transfer-Encoding: chunked then Content-Length (TE.CL) with 400 and close', () =>
      expectRefused('POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n', 400, 'bad_request', {
        closed: true,
      }));
  });

  describe('H1-02 Content-Length variants', () => {
    const cases: [string, string][] = [
      ['duplicate equal', 'Content-Length: 5\r\nContent-Length: 5\r\n'],
      ['duplicate different', 'Content-Length: 5\r\nContent-Length: 6\r\n'],
      ['list "5, 5"', 'Content-Length: 5, 5\r\n'],
      ['"+5"', 'Content-Length: +5\r\n'],
      ['"-1"', 'Content-Length: -1\r\n'],
      ['"0x5"', 'Content-Length: 0x5\r\n'],
    ];
    for (const [name, header] of cases) {
      it(`H1-02 rejects Content-Length ${name} with 400 and close`, () =>
        expectRefused(`POST /public HTTP/1.1\r\nHost: localhost\r\n${header}\r\nhello`, 400, 'bad_request', { closed: true }));
    }
  });

  describe('H1-03 Transfer-Encoding other than exactly chunked', () => {
    // llhttp refuses some of these itself (400 bad_request), the gateway's edge the rest (400 invalid_framing); which layer
    // answers depends on the Node version's llhttp, so either stable code is accepted. Status, close and upstream are exact.
    const cases: [string, string][] = [
      ['xchunked', 'Transfer-Encoding: xchunked\r\n'],
      ['"chunked, identity"', 'Transfer-Encoding: chunked, identity\r\n'],
      ['"identity, chunked"', 'Transfer-Encoding: identity, chunked\r\n'],
      ['"gzip, chunked"', 'Transfer-Encoding: gzip, chunked\r\n'],
      ['"chunked, chunked"', 'Transfer-Encoding: chunked, chunked\r\n'],
      ['twice (chunked, chunked)', 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n'],
      ['twice (identity then chunked)', 'Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n'],
      ['with a trailing tab "chunked\\t"', 'Transfer-Encoding: chunked\t\r\n'],
      ['with a vertical tab "\\vchunked"', 'Transfer-Encoding: \x0bchunked\r\n'],
      ['"identity"', 'Transfer-Encoding: identity\r\n'],
    ];
    for (const [name, header] of cases) {
      it(`H1-03 rejects Transfer-Encoding: ${name} with 400 and close`, () =>
        expectRefused(`POST /public HTTP/1.1\r\nHost: localhost\r\n${header}\r\n0\r\n\r\n`, 400, FRAMING, { closed: true }));
    }

    it('H1-03 "Transfer-Encoding:\\tchunked" (leading tab = RFC 9112 OWS) is framed as chunked exactly as forwarded: the upstream sees one request', async () => {
      // llhttp strips leading OWS (SP / HTAB), so the gateway sees exactly `chunked`. It never forwards the client's
      // Transfer-Encoding and frames the upstream body itself, so there is no parser differential to exploit: the bytes after
      // the last chunk are a second request on the client connection, parsed and authorized by the gateway (401 here).
      const before = upstream.requests.length;
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write(
          'POST /public/tab HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' +
            'GET /secure/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n',
        );
        const first = await connection.response();
        const second = await connection.response();
        expect(first?.status).toBe(200);
        expect(second?.status).toBe(401);
        expect(codeOf(second)).toBe('unauthenticated');
      } finally {
        connection.destroy();
      }
      expect(upstream.requests.length).toBe(before + 1);
      const seen = upstream.requests.at(-1);
      expect(seen?.url).toBe('/public/tab');
      expect(seen?.body.toString()).toBe('hello');
    });
  });

  it('H1-04 rejects HTTP/1.0 with Transfer-Encoding with 400 and close', () =>
    expectRefused('POST /public HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, FRAMING, { closed: true }));

  describe('H1-05 obs-fold', () => {
    it('H1-05 rejects a header continued on a line starting with a space', () =>
      expectRefused('GET /public HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n c\r\n\r\n', 400, 'bad_request', { closed: true }));
    it('H1-05 rejects a header continued on a line starting with a tab', () =>
      expectRefused('GET /public HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n\tc\r\n\r\n', 400, 'bad_request', { closed: true }));
    it('H1-05 rejects an obs-folded Transfer-Encoding', () =>
      expectRefused('POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n', 400, 'bad_request', { closed: true }));
  });

  describe('H1-06 header syntax', () => {
    const cases: [string, string][] = [
      ['space before the colon', 'GET /public HTTP/1.1\r\nHost: localhost\r\nX-A : b\r\n\r\n'],
      ['space before the colon of Transfer-Encoding', 'POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n'],
      ['a bare CR inside the header block', 'GET /public HTTP/1.1\r\nHost: localhost\rX-A: b\r\n\r\n'],
      ['a bare CR inside a value', 'GET /public HTTP/1.1\r\nHost: localhost\r\nX-A: b\rX-User-Id: admin\r\n\r\n'],
      ['a NUL in a value', 'GET /public HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n'],
      ['a NUL in a name', 'GET /public HTTP/1.1\r\nHost: localhost\r\nX-\x00A: b\r\n\r\n'],
      ['"(" in a name', 'GET /public HTTP/1.1\r\nHost: localhost\r\nX(a): b\r\n\r\n'],
      ['"@" in a name', 'GET /public HTTP/1.1\r\nHost: localhost\r\nX@a: b\r\n\r\n'],
      ['a non-ASCII byte in a name', 'GET /public HTTP/1.1\r\nHost: localhost\r\nX-\xe9: b\r\n\r\n'],
      ['bare LF line endings everywhere', 'GET /public HTTP/1.1\nHost: localhost\n\n'],
      ['a bare LF after the request line', 'GET /public HTTP/1.1\nHost: localhost\r\n\r\n'],
      ['a bare LF ending a header line', 'GET /public HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n'],
      ['a bare LF ending the header block', 'GET /public HTTP/1.1\r\nHost: localhost\r\n\n'],
    ];
    for (const [name, bytes] of cases) {
      it(`H1-06 rejects ${name} with 400 and close`, () => expectRefused(bytes, 400, 'bad_request', { closed: true }));
    }

    it('H1-06 a malformed request pipelined behind a valid one is never answered as if it were the first response', async () => {
      // The parser fails on the second request while the first is still being proxied. A raw 400 written at that moment
      // would be read by the client as the answer to the first (valid) request: the gateway must close instead.
      const slow = upstream.respond;
      upstream.respond = (req, res, body) => setTimeout(() => slow(req, res, body), 300);
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write('GET /public/first HTTP/1.1\r\nHost: localhost\r\n\r\nGARBAGE / HTTP/1.1\r\nHost: localhost\r\n\r\n');
        const first = await connection.response(2000);
        expect(first?.status ?? 0).not.toBe(400);
        expect(await connection.waitClosed(2000)).toBe(true);
      } finally {
        connection.destroy();
        await sleep(350);
        upstream.respond = slow;
      }
    });
  });

  describe('H1-07 chunked body syntax', () => {
    // The request head is valid, so a streaming gateway may already have begun forwarding it; what must never happen is the
    // upstream receiving a complete request (or a second one) from a malformed body.
    const chunked = (body: string): string => `POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n${body}`;
    const cases: [string, string][] = [
      ['a chunk size "5x"', chunked('5x\r\nhello\r\n0\r\n\r\n')],
      ['a negative chunk size', chunked('-5\r\nhello\r\n0\r\n\r\n')],
      ['a chunk size with a 0x prefix', chunked('0x5\r\nhello\r\n0\r\n\r\n')],
      ['an overflowing chunk size', chunked('fffffffffffffffff\r\nhello\r\n0\r\n\r\n')],
      ['a chunk extension ended by a bare LF', chunked('5;a=b\nhello\r\n0\r\n\r\n')],
      ['a 1 MB chunk extension', chunked(`5;a=${'x'.repeat(1_000_000)}\r\nhello\r\n0\r\n\r\n`)],
      ['chunk data without its CRLF', chunked('5\r\nhelloXX0\r\n\r\n')],
      ['a chunk size line ended by a bare LF', chunked('5\nhello\r\n0\r\n\r\n')],
      ['chunk data ended by a bare LF', chunked('5\r\nhello\n0\r\n\r\n')],
      ['a last chunk ended by bare LFs', chunked('5\r\nhello\r\n0\n\n')],
    ];
    for (const [name, bytes] of cases) {
      it(`H1-07 rejects ${name} with 400 and close; no complete request reaches the upstream`, async () => {
        const before = upstream.requests.length;
        const result = await send(bytes, { closeWaitMs: 1000 });
        expect(result.response?.status, result.text.slice(0, 200)).toBe(400);
        expect(codeOf(result.response)).toBe('bad_request');
        expect(result.closed).toBe(true);
        await sleep(50);
        expect(upstream.requests.length).toBe(before);
      });
    }
  });

  describe('H1-08 request line', () => {
    it("H1-08 rejects '#' in the target", () => expectRefused(GET('/public/a#b'), 400, 'invalid_target', { closed: true }));
    it("H1-08 rejects '\\' in the target", () => expectRefused(GET('/public\\a'), 400, 'invalid_target', { closed: true }));
    it('H1-08 rejects a raw non-ASCII byte in the target', () => expectRefused(GET('/public/caf\xe9'), 400, 'bad_request', { closed: true }));
    it('H1-08 rejects a lower-case method', () => expectRefused('get /public HTTP/1.1\r\nHost: localhost\r\n\r\n', 400, 'bad_request', { closed: true }));
    it('H1-08 rejects the asterisk-form "GET *"', () => expectRefused(GET('*'), 400, 'invalid_target', { closed: true }));
    it('H1-08 rejects the asterisk-form "OPTIONS *"', () =>
      expectRefused('OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n', 400, 'invalid_target', { closed: true }));
  });

  describe('H1-09 Host', () => {
    it('H1-09 rejects a missing Host with 400 invalid_host (a gateway answer: HSTS, problem body)', () =>
      expectRefused('GET /public HTTP/1.1\r\n\r\n', 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects a missing Host on HTTP/1.0 too', () => expectRefused('GET /public HTTP/1.0\r\n\r\n', 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects a duplicated Host', () =>
      expectRefused('GET /public HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n', 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects a duplicated identical Host', () =>
      expectRefused('GET /public HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n', 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects Host "a/b@c"', () => expectRefused(GET('/public', 'Host: a/b@c\r\n'), 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects Host "a b"', () => expectRefused(GET('/public', 'Host: a b\r\n'), 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects Host with userinfo "evil@localhost"', () =>
      expectRefused(GET('/public', 'Host: evil@localhost\r\n'), 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects Host with an out-of-range port', () => expectRefused(GET('/public', 'Host: localhost:99999\r\n'), 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects Host with an empty port', () => expectRefused(GET('/public', 'Host: localhost:\r\n'), 400, 'invalid_host', { closed: true }));
    it('H1-09 rejects an empty Host', () => expectRefused(GET('/public', 'Host: \r\n'), 400, 'invalid_host', { closed: true }));
    it('H1-09 answers a Host outside server.hosts with 421 misdirected_request', () =>
      expectRefused(GET('/public', 'Host: evil.example\r\n'), 421, 'misdirected_request'));
    it('H1-09 answers a Host outside server.hosts with a port with 421', () =>
      expectRefused(GET('/public', 'Host: evil.example:443\r\n'), 421, 'misdirected_request'));
    it('H1-09 accepts an allowed Host with a port and in upper case', async () => {
      const result = await send(GET('/public/host', 'Host: LOCALHOST:443\r\n'));
      expect(result.response?.status).toBe(200);
    });
  });

  describe('H1-10 absolute-form', () => {
    it('H1-10 rejects "GET https://evil.example/admin" (the gateway is not a forward proxy)', () =>
      expectRefused(GET('https://evil.example/admin'), 400, 'invalid_target', { closed: true }));
    it('H1-10 rejects absolute-form even when its authority is a served host', () =>
      expectRefused(GET('https://localhost/public'), 400, 'invalid_target', { closed: true }));
    it('H1-10 rejects authority-form outside CONNECT', () => expectRefused(GET('localhost:443'), 400, ['bad_request', 'invalid_target'], { closed: true }));
  });

  describe('H1-11 methods', () => {
    it('H1-11 refuses TRACE with 405', async () => {
      await expectRefused('TRACE /public HTTP/1.1\r\nHost: localhost\r\n\r\n', 405, 'method_not_allowed');
    });
    it('H1-11 refuses TRACK (unknown to llhttp: a parser 400) and never proxies it', () =>
      expectRefused('TRACK /public HTTP/1.1\r\nHost: localhost\r\n\r\n', 400, 'bad_request', { closed: true }));
    it('H1-11 answers CONNECT with a raw 405 and closes the socket', () =>
      expectRefused('CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n', 405, 'method_not_allowed', { closed: true }));
    it('H1-11 answers CONNECT to a served host with 405 too', () =>
      expectRefused('CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n', 405, 'method_not_allowed', { closed: true }));
    it('H1-11 answers PROPFIND with 501', () => expectRefused('PROPFIND /public HTTP/1.1\r\nHost: localhost\r\n\r\n', 501, 'not_implemented'));
  });

  describe('H1-12 Expect: 100-continue', () => {
    it('H1-12 Content-Length over the route limit → 413 without any 100 Continue', async () => {
      const before = upstream.requests.length;
      const result = await send(`POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${BODY_LIMIT * 5}\r\nExpect: 100-continue\r\n\r\n`, {
        closeWaitMs: 1000,
      });
      expect(result.response?.status).toBe(413);
      expect(codeOf(result.response)).toBe('payload_too_large');
      expect(result.text).not.toContain('100 Continue');
      expect(result.closed).toBe(true);
      expect(upstream.requests.length).toBe(before);
    });

    it('H1-12 a route requiring mTLS, no client certificate → 401 without any 100 Continue', async () => {
      const before = upstream.requests.length;
      const result = await send('POST /secure HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
      expect(result.response?.status).toBe(401);
      expect(codeOf(result.response)).toBe('unauthenticated');
      expect(result.text).not.toContain('100 Continue');
      expect(upstream.requests.length).toBe(before);
    });

    it('H1-12 an admitted proxied request gets 100 Continue, then its 200', async () => {
      const before = upstream.requests.length;
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write('POST /public/continue HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
        const interim = await connection.next();
        expect(interim?.status).toBe(100);
        connection.write('hello');
        const final = await connection.response();
        expect(final?.status).toBe(200);
      } finally {
        connection.destroy();
      }
      expect(upstream.requests.length).toBe(before + 1);
      expect(upstream.requests.at(-1)?.body.toString()).toBe('hello');
      expect(upstream.requests.at(-1)?.headers['expect']).toBeUndefined();
    });

    it("H1-12 TLS-07 an expectation other than 100-continue is handled by the gateway (HSTS, request id), not by Node's bare 417, and never forwarded", async () => {
      const before = upstream.requests.length;
      const result = await send('GET /public/expect HTTP/1.1\r\nHost: localhost\r\nExpect: something-else\r\n\r\n');
      expect(result.response?.headers['strict-transport-security']).toMatch(/max-age=63072000/);
      expect(result.response?.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      expect(result.response?.status).toBe(200);
      expect(upstream.requests.length).toBe(before + 1);
      expect(upstream.requests.at(-1)?.headers['expect']).toBeUndefined();
    });

    it('H1-12 an admitted request to a built-in service (echo) gets 100 Continue, then its 200', async () => {
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write('POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
        const interim = await connection.next(2000);
        expect(interim?.status).toBe(100);
        connection.write('hello');
        expect((await connection.response())?.status).toBe(200);
      } finally {
        connection.destroy();
      }
    });
  });

  describe('H1-15 body limits', () => {
    it('H1-15 Content-Length over the route limit → 413 before any body byte is sent, connection closed', async () => {
      const before = upstream.requests.length;
      const connection = await RawConnection.open(gw.port, gw.certs);
      try {
        connection.write(`POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${BODY_LIMIT + 1}\r\n\r\n`);
        const response = await connection.response();
        expect(response?.status).toBe(413);
        expect(codeOf(response)).toBe('payload_too_large');
        expect(await connection.waitClosed(1000)).toBe(true);
      } finally {
        connection.destroy();
      }
      expect(upstream.requests.length).toBe(before);
    });

    it('H1-15 Content-Length exactly at the route limit is admitted', async () => {
      const body = 'x'.repeat(BODY_LIMIT);
      const result = await send(`POST /public/limit HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${BODY_LIMIT}\r\n\r\n${body}`);
      expect(result.response?.status).toBe(200);
      expect(upstream.requests.at(-1)?.body.length).toBe(BODY_LIMIT);
    });

    it('H1-15 a chunked body crossing the limit → 413 (or close) and the upstream never receives more than the limit', async () => {
      const start = counting.received.length;
      const completed = counting.completed;
      const connection = await RawConnection.open(gw.port, gw.certs);
      const chunk = (n: number): string => `${n.toString(16)}\r\n${'y'.repeat(n)}\r\n`;
      try {
        connection.write(`POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(400)}${chunk(400)}`);
        // Wait until the upstream has the first 800 bytes: the body really streams, so the bound below is not vacuous.
        for (let i = 0; i < 100 && (counting.received[start] ?? 0) < 800; i++) await sleep(20);
        expect(counting.received[start]).toBe(800);
        connection.write(`${chunk(400)}${chunk(400)}${chunk(400)}0\r\n\r\n`);
        const response = await connection.response();
        if (response !== undefined) {
          expect(response.status).toBe(413);
          expect(codeOf(response)).toBe('payload_too_large');
        }
        expect(await connection.waitClosed(2000)).toBe(true);
      } finally {
        connection.destroy();
      }
      await sleep(50);
      expect(counting.received.length).toBe(start + 1);
      expect(counting.received[start]).toBeLessThanOrEqual(BODY_LIMIT);
      expect(counting.completed).toBe(completed);
    });
  });

  it('H1-16 a gzip request body is forwarded opaque: the upstream gets the exact compressed bytes, the limit counts compressed bytes', async () => {
    // Decision: the gateway never inflates request bodies (no decompression bomb surface); the body limit applies to the bytes
    // on the wire and Content-Encoding passes through for the upstream to handle with its own bounds.
    const compressed = gzipSync(Buffer.alloc(512 * 1024));
    expect(compressed.length).toBeLessThan(BODY_LIMIT);
    const before = upstream.requests.length;
    const head = `POST /public/gz HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Encoding: gzip\r\nContent-Length: ${compressed.length}\r\n\r\n`;
    const result = await send(Buffer.concat([Buffer.from(head, 'latin1'), compressed]));
    expect(result.response?.status).toBe(200);
    expect(upstream.requests.length).toBe(before + 1);
    const seen = upstream.requests.at(-1);
    expect(seen?.headers['content-encoding']).toBe('gzip');
    expect(seen?.body.equals(compressed)).toBe(true);
  });

  describe('HDR-01 underscores in header names', () => {
    it('HDR-01 rejects X_User_Id with 400 invalid_header', () =>
      expectRefused('GET /public HTTP/1.1\r\nHost: localhost\r\nX_User_Id: admin\r\n\r\n', 400, 'invalid_header'));
    it('HDR-01 rejects any header name with "_" (x_forwarded_for)', () =>
      expectRefused('GET /public HTTP/1.1\r\nHost: localhost\r\nx_forwarded_for: 10.0.0.1\r\n\r\n', 400, 'invalid_header'));
  });

  describe('HDR-07 / TLS-08 upgrades', () => {
    it('HDR-07 TLS-08 refuses Upgrade: h2c with HTTP2-Settings (h2c smuggling) with 400 upgrade_refused', () =>
      expectRefused(
        'GET /public HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
        400,
        'upgrade_refused',
      ));
    it('HDR-07 TLS-08 refuses Upgrade: h2c without HTTP2-Settings', () =>
      expectRefused('GET /public HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n', 400, 'upgrade_refused'));
    it('HDR-07 TLS-08 refuses an HTTP2-Settings header on its own', () =>
      expectRefused('GET /public HTTP/1.1\r\nHost: localhost\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n', 400, 'upgrade_refused'));

    it('HDR-07 Upgrade: websocket on a normal route is not honoured and the upstream never sees Upgrade/Connection: upgrade', async () => {
      const before = upstream.requests.length;
      const result = await send(
        'GET /public/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      expect(result.response?.status).toBe(200);
      expect(result.response?.headers['upgrade']).toBeUndefined();
      expect(upstream.requests.length).toBe(before + 1);
      const seen = upstream.requests.at(-1);
      expect(seen?.headers['upgrade']).toBeUndefined();
      expect(String(seen?.headers['connection'] ?? '')).not.toMatch(/upgrade/i);
    });
  });

  describe('header and target size limits', () => {
    it('H1-18 more headers than limits.max_headers → 431 headers_too_large', () => {
      const headers = Array.from({ length: 25 }, (_, i) => `X-H${i}: v\r\n`).join('');
      return expectRefused(`GET /public HTTP/1.1\r\nHost: localhost\r\n${headers}\r\n`, 431, 'headers_too_large', { closed: true });
    });
    it('H1-18 exactly limits.max_headers headers is admitted', async () => {
      const headers = Array.from({ length: 19 }, (_, i) => `X-H${i}: v\r\n`).join('');
      const result = await send(`GET /public/count HTTP/1.1\r\nHost: localhost\r\n${headers}\r\n`);
      expect(result.response?.status).toBe(200);
    });
    it('H1-18 one header larger than limits.max_header_bytes → 431 headers_too_large', () =>
      expectRefused(`GET /public HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(5000)}\r\n\r\n`, 431, 'headers_too_large', { closed: true }));
    it('H1-18 header bytes over limits.max_header_bytes spread over several headers → 431', () => {
      const headers = Array.from({ length: 10 }, (_, i) => `X-H${i}: ${'b'.repeat(450)}\r\n`).join('');
      return expectRefused(`GET /public HTTP/1.1\r\nHost: localhost\r\n${headers}\r\n`, 431, 'headers_too_large', { closed: true });
    });
    it("H1-18 headers past the parser's own limit: 431 from the listener, and the audit record says 431 headers_too_large", async () => {
      const result = await send(`GET /public HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`, { closeWaitMs: 1000 });
      expect(result.response?.status).toBe(431);
      const id = result.response?.headers['x-request-id'];
      const record = (await gw.auditRecords()).find((r) => r.request_id === id);
      // What is recorded is what was sent (issue #8 Part A): not `bad_request` with no status.
      expect(record).toMatchObject({ decision: 'deny', stage: 'edge', code: 'headers_too_large', status: 431, reason: 'HPE_HEADER_OVERFLOW', protocol: 'h1' });
    });
    it('H1-18 a target longer than limits.max_uri_bytes → 414 uri_too_long', () =>
      expectRefused(GET(`/public/${'a'.repeat(600)}`), 414, 'uri_too_long', { closed: true }));
  });
});
