// Authorization and path canonicalization through a real gateway (SECURITY-MATRIX H: AZ-01, AZ-03..AZ-08, AZ-10, AZ-11):
// the canonical path is decided once at the edge, authorized, and is exactly what the upstream receives.
import { route } from '../support/routes.js';
import fc from 'fast-check';
import type { IncomingHttpHeaders } from 'node:http';
import type { Agent, Dispatcher } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalizePath } from '../../src/server/request-target.js';
import { problemCode, startGateway, startUpstream, type RecordedRequest, type TestGateway, type TestUpstream } from '../support/harness.js';

interface Answer {
  readonly status: number;
  readonly code: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly requestId: string;
  readonly body: string;
}

describe('path canonicalization and authorization through the gateway', () => {
  let gw: TestGateway;
  let upstream: TestUpstream;
  let anonymous: Agent;
  let client: Agent;

  beforeAll(async () => {
    upstream = await startUpstream();
    gw = await startGateway((base) => ({
      ...base,
      upstreams: { app: { url: upstream.url } },
      routes: [
        route('public', '/public', { methods: ['GET', 'POST'], to: 'app' }),
        route('admin', '/admin', { methods: ['GET', 'POST'], authn: ['mtls'], to: 'app' }),
      ],
    }));
    anonymous = gw.agent();
    client = gw.agent({ cert: gw.certs.client });
  });

  afterAll(async () => {
    await gw?.stop();
    await upstream?.close();
  });

  /** Sends `path` byte for byte (undici does not normalize a `path` option, unlike a URL string). */
  async function call(
    path: string,
    opts: { method?: Dispatcher.HttpMethod; agent?: Agent; headers?: Record<string, string>; body?: string } = {},
  ): Promise<Answer> {
    const res = await (opts.agent ?? anonymous).request({
      origin: gw.origin,
      path,
      method: opts.method ?? 'GET',
      ...(opts.headers !== undefined ? { headers: opts.headers } : {}),
      ...(opts.body !== undefined ? { body: opts.body } : {}),
    });
    const body = await res.body.text();
    return { status: res.statusCode, code: problemCode(body), headers: res.headers, requestId: String(res.headers['x-request-id']), body };
  }

  /** The upstream's record of the request the gateway forwarded under `requestId`, if any. */
  function forwarded(requestId: string): RecordedRequest | undefined {
    return upstream.requests.find((r) => r.headers['x-request-id'] === requestId);
  }

  async function expectRefused(path: string, status: number, code: string, opts: Parameters<typeof call>[1] = {}): Promise<Answer> {
    const before = upstream.requests.length;
    const answer = await call(path, opts);
    expect(answer.status, `${path}: ${answer.body}`).toBe(status);
    expect(answer.code).toBe(code);
    expect(upstream.requests.length).toBe(before);
    return answer;
  }

  async function expectForwarded(path: string, upstreamUrl: string, opts: Parameters<typeof call>[1] = {}): Promise<RecordedRequest> {
    const answer = await call(path, opts);
    expect(answer.status, `${path}: ${answer.body}`).toBe(200);
    const seen = forwarded(answer.requestId);
    expect(seen?.url).toBe(upstreamUrl);
    return seen as RecordedRequest;
  }

  describe('AZ-01 deny by default', () => {
    it('AZ-01 an unmatched route → 404 not_found with zero upstream calls', async () => {
      await expectRefused('/nothing-here', 404, 'not_found');
      await expectRefused('/', 404, 'not_found');
      await expectRefused('/publicx', 404, 'not_found');
      await expectRefused('/adminx', 404, 'not_found', { agent: client });
    });

    it('AZ-01 a known route with an unlisted method → 405 with Allow, zero upstream calls', async () => {
      const answer = await expectRefused('/public/x', 405, 'method_not_allowed', { method: 'DELETE' });
      const allow = String(answer.headers['allow']).split(/,\s*/).sort();
      expect(allow).toEqual(['GET', 'HEAD', 'POST']);
      await expectRefused('/admin/x', 405, 'method_not_allowed', { method: 'PUT', agent: client });
    });

    it('AZ-01 AZ-11 OPTIONS (a preflight) is not a method of the admin route and authorizes nothing', async () => {
      const answer = await expectRefused('/admin/x', 405, 'method_not_allowed', {
        method: 'OPTIONS',
        headers: { 'access-control-request-method': 'POST', origin: 'https://evil.example' },
      });
      expect(answer.headers['access-control-allow-origin']).toBeUndefined();
    });

    it('sanity: /admin without a certificate → 401, with one → 200 and forwarded', async () => {
      await expectRefused('/admin/x', 401, 'unauthenticated');
      await expectForwarded('/admin/x', '/admin/x', { agent: client });
    });
  });

  describe('AZ-03 dot segments are removed before authz and the canonical path is forwarded', () => {
    const spellings = [
      '/public/../admin',
      '/%2e%2e/admin',
      '/public/.%2e/admin',
      '/public/%2E%2e/admin',
      '/./admin',
      '/public/./../admin/',
      '//admin',
      '/public/x/../../admin',
    ];
    for (const path of spellings) {
      it(`AZ-03 ${path} is the admin route: 401 without a certificate, nothing forwarded`, () => expectRefused(path, 401, 'unauthenticated'));
      it(`AZ-03 ${path} with a certificate is forwarded as its canonical path`, () => {
        const canonical = canonicalizePath(path);
        if (!canonical.ok) throw new Error(`unexpected rejection of ${path}`);
        expect(canonical.path.startsWith('/admin')).toBe(true);
        return expectForwarded(path, canonical.path, { agent: client });
      });
    }

    it('AZ-03 /public/./a/../b//c arrives upstream as /public/b/c', () => expectForwarded('/public/./a/../b//c', '/public/b/c'));
    it('AZ-03 ".." above the root stays at the root: /../../public/x arrives as /public/x', () => expectForwarded('/../../public/x', '/public/x'));
    it('AZ-03 a dot segment with path parameters (/public/..;/admin) is refused, not passed on for a servlet container to resolve', () =>
      expectRefused('/public/..;/admin', 400, 'invalid_target', { agent: client }));
  });

  describe('AZ-04 encoded separators', () => {
    for (const path of ['/public/..%2fadmin', '/public/..%2Fadmin', '/public%2Fadmin', '/public/..%5Cadmin', '/public/..%5cadmin', '/admin%2fx']) {
      it(`AZ-04 ${path} → 400 invalid_target (even with a certificate)`, () => expectRefused(path, 400, 'invalid_target', { agent: client }));
    }
  });

  describe('AZ-05 double encoding is decoded once only', () => {
    it('AZ-05 /public/%252e%252e/admin stays on the public route and is forwarded literally', () =>
      expectForwarded('/public/%252e%252e/admin', '/public/%252e%252e/admin'));
    it('AZ-05 /public/%25252f is forwarded literally', () => expectForwarded('/public/%25252f', '/public/%25252f'));
    it('AZ-05 /%252e%252e/admin is not the admin route (404)', () => expectRefused('/%252e%252e/admin', 404, 'not_found', { agent: client }));
  });

  describe('AZ-06 encoded unreserved characters', () => {
    it('AZ-06 /%61dmin is the admin route: 401 without a certificate', () => expectRefused('/%61dmin', 401, 'unauthenticated'));
    it('AZ-06 /%61%64%6D%69%6e/x without a certificate → 401', () => expectRefused('/%61%64%6D%69%6e/x', 401, 'unauthenticated'));
    it('AZ-06 /%61dmin/x with a certificate arrives upstream as /admin/x', () => expectForwarded('/%61dmin/x', '/admin/x', { agent: client }));
    it('AZ-06 other escapes keep upper-case hex: /public/a%3ab%c3%a9 arrives as /public/a%3Ab%C3%A9', () =>
      expectForwarded('/public/a%3ab%c3%a9', '/public/a%3Ab%C3%A9'));
  });

  describe('AZ-07 backslashes', () => {
    for (const path of ['/public\\..\\admin', '/public/..\\admin', '/admin\\x']) {
      it(`AZ-07 ${JSON.stringify(path)} → 400 invalid_target`, () => expectRefused(path, 400, 'invalid_target', { agent: client }));
    }
  });

  describe('AZ-08 case (route matching is documented as case-sensitive)', () => {
    for (const path of ['/ADMIN', '/Admin/x', '/aDmin', '/%41dmin', '/PUBLIC']) {
      it(`AZ-08 ${path} → 404 not_found, never the admin or public route`, () => expectRefused(path, 404, 'not_found', { agent: client }));
    }
  });

  describe('AZ-10 query and fragment never influence matching', () => {
    it('AZ-10 /public?x=/../admin stays public and the query is forwarded byte for byte', async () => {
      const seen = await expectForwarded('/public?x=/../admin', '/public?x=/../admin');
      expect(seen.headers['x-authenticated-subject']).toBeUndefined();
    });
    it('AZ-10 /admin?x=/../public stays admin: 401 without a certificate', () => expectRefused('/admin?x=/../public', 401, 'unauthenticated'));
    it('AZ-10 /public?/../../admin stays public', () => expectForwarded('/public?/../../admin', '/public?/../../admin'));
    it('AZ-10 a fragment in the target is refused, never used to hide a path', () => expectRefused('/public#/../admin', 400, 'invalid_target'));
  });

  describe('AZ-11 HEAD and method overrides', () => {
    it('AZ-11 HEAD on a GET route is allowed and forwarded as HEAD', async () => {
      const answer = await call('/public/h', { method: 'HEAD' });
      expect(answer.status).toBe(200);
      expect(answer.body).toBe('');
      expect(forwarded(answer.requestId)?.method).toBe('HEAD');
    });
    it("AZ-11 HEAD gets GET's authorization: /admin without a certificate → 401, nothing forwarded", async () => {
      const before = upstream.requests.length;
      const answer = await call('/admin/h', { method: 'HEAD' });
      expect(answer.status).toBe(401);
      expect(upstream.requests.length).toBe(before);
    });
    it('AZ-11 HEAD on /admin with a certificate → 200', async () => {
      const answer = await call('/admin/h', { method: 'HEAD', agent: client });
      expect(answer.status).toBe(200);
      expect(forwarded(answer.requestId)?.method).toBe('HEAD');
    });
    it('AZ-11 HDR-05 X-HTTP-Method-Override: DELETE is ignored and stripped', async () => {
      const seen = await expectForwarded('/public/o', '/public/o', {
        headers: { 'x-http-method-override': 'DELETE', 'x-http-method': 'DELETE', 'x-method-override': 'DELETE' },
      });
      expect(seen.method).toBe('GET');
      expect(seen.headers['x-http-method-override']).toBeUndefined();
      expect(seen.headers['x-http-method']).toBeUndefined();
      expect(seen.headers['x-method-override']).toBeUndefined();
    });
    it('AZ-11 a method override cannot turn a refused method into an allowed one', () =>
      expectRefused('/public/o', 405, 'method_not_allowed', { method: 'DELETE', headers: { 'x-http-method-override': 'GET' } }));
    it('AZ-11 POST with X-HTTP-Method-Override: DELETE reaches the upstream as a plain POST', async () => {
      const seen = await expectForwarded('/public/o', '/public/o', {
        method: 'POST',
        headers: { 'x-http-method-override': 'DELETE', 'content-type': 'text/plain' },
        body: 'x',
      });
      expect(seen.method).toBe('POST');
      expect(seen.headers['x-http-method-override']).toBeUndefined();
    });
  });

  it('REL-09 AZ-03 property: the decision for a path equals the decision for canonicalizePath(path), and 200s forward the canonical path', async () => {
    const segment = fc.constantFrom('public', 'admin', '.', '..', '%2e', '%2E%2e', '%61dmin', '', 'x');
    await fc.assert(
      fc.asyncProperty(fc.array(segment, { minLength: 1, maxLength: 6 }), async (segments) => {
        const path = `/${segments.join('/')}`;
        const canonical = canonicalizePath(path);
        const raw = await call(path);
        if (!canonical.ok) {
          expect(raw.status).toBe(400);
          return;
        }
        const viaCanonical = await call(canonical.path);
        expect(raw.status, `${path} vs ${canonical.path}`).toBe(viaCanonical.status);
        expect(raw.code).toBe(viaCanonical.code);
        // The independent oracle: without a certificate only /public is reachable and /admin asks for one.
        const expected = /^\/public(\/|$)/.test(canonical.path) ? 200 : /^\/admin(\/|$)/.test(canonical.path) ? 401 : 404;
        expect(raw.status, path).toBe(expected);
        if (raw.status === 200) expect(forwarded(raw.requestId)?.url).toBe(canonical.path);
      }),
      { numRuns: 60 },
    );
  });
});
