import { MemoryLimiterBackend } from '../../src/quota/backend.js';
import { route } from '../support/routes.js';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { readRecords } from '../../src/audit/read.js';
import { RoutePolicy } from '../../src/authz/policy.js';
import { Pipeline, type DecisionObserver } from '../../src/pipeline/pipeline.js';
import type { Authenticator, Handler } from '../../src/pipeline/stage.js';
import { PreAuthQuota } from '../../src/quota/rate.js';
import { checkRequest } from '../../src/server/edge.js';
import type { HttpExchange } from '../../src/pipeline/stage.js';
import type { Route } from '../../src/pipeline/stage.js';
import { Router } from '../../src/server/router.js';
import { EchoService } from '../../src/services/echo.js';
import { problemCode, startGateway, testAuditLog } from '../support/harness.js';

/** Runs the real pipeline behind a plain HTTP server, with one route whose stages the test chooses. */
async function pipelineServer(stages: { authenticator: Authenticator | Authenticator[]; handler: Handler; observers?: DecisionObserver[] }) {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-pipeline-'));
  const audit = testAuditLog(dir);
  const lines: string[] = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write: (c: Buffer, _e, cb) => {
        lines.push(c.toString());
        cb();
      },
    }),
  );
  const pipeline = new Pipeline({
    preAuthQuota: new PreAuthQuota({ points: 1000, duration_s: 60, block_s: 0 }, new MemoryLimiterBackend()),
    audit,
    log,
    ...(stages.observers !== undefined ? { observers: stages.observers } : {}),
  });
  const route: Route = {
    id: 'r',
    pathPrefix: '/r',
    host: undefined,
    challenge: undefined,
    intake: undefined,
    oauth: false,
    methods: new Set(['GET', 'HEAD']),
    allowHeader: 'GET, HEAD',
    bodyLimitBytes: 1024,
    authenticators: Array.isArray(stages.authenticator) ? stages.authenticator : [stages.authenticator],
    authorizer: new RoutePolicy({ allow: 'anyone' }),
    quota: undefined,
    handler: stages.handler,
  };
  const router = new Router([route]);
  const limits = { maxHeaders: 100, maxHeaderBytes: 16384, maxUriBytes: 8192, allowedHosts: new Set<string>() };
  const server = createServer((req, res) => {
    const exchange: HttpExchange = { req, res, requestId: 'req-1', protocol: 'h1', isHead: false, closeAfterResponse: () => false };
    const connection = { peerAddress: '127.0.0.1', clientAddress: '127.0.0.1', limitKey: '127.0.0.1', protocol: 'h1' as const, peerCertificate: undefined };
    const edge = checkRequest(req, 'req-1', { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', flags: '00', state: undefined }, connection, router, limits, 0);
    if (!edge.ok || !('context' in edge)) throw new Error('unexpected edge refusal or probe');
    void pipeline.run(edge.context, exchange);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/r`;
  return {
    url,
    lines,
    records: async () => {
      await audit.flush();
      return readRecords(dir).filter((r) => r.type === 'decision');
    },
    close: async () => {
      server.close();
      await audit.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('pipeline fault handling (AZ-13, LOG-12)', () => {
  it('an authenticator that throws denies with a generic 500: no stack, the request id, a log line and a deny record', async () => {
    const server = await pipelineServer({
      authenticator: {
        id: 'broken',
        authenticate: () => {
          throw new Error('secret-internal-detail at /etc/gatehouse/keys');
        },
      },
      handler: new EchoService(),
    });
    try {
      const res = await request(server.url);
      const body = await res.body.text();
      expect(res.statusCode).toBe(500);
      expect(problemCode(body)).toBe('internal_error');
      expect(body).toContain('req-1');
      expect(body).not.toContain('secret-internal-detail');
      expect(body).not.toMatch(/at .*\.(js|ts):\d+/);
      expect(server.lines.join('')).toContain('secret-internal-detail');
      expect(server.lines.join('')).toContain('req-1');
      const records = await server.records();
      expect(records).toHaveLength(1);
      expect(records[0]).toMatchObject({ decision: 'deny', stage: 'authn', code: 'internal_error' });
    } finally {
      await server.close();
    }
  });

  it('an authenticator that rejects never falls through to the next one, which would have admitted the request', async () => {
    const { GatewayError } = await import('../../src/errors/catalogue.js');
    let asked = 0;
    const server = await pipelineServer({
      authenticator: [
        { id: 'rejecting', authenticate: () => ({ outcome: 'rejected', error: new GatewayError('invalid_credential') }) },
        {
          id: 'admitting',
          authenticate: () => {
            asked++;
            return { outcome: 'authenticated', principal: { subject: 'anyone', method: 'anonymous', scopes: new Set() } };
          },
        },
      ],
      handler: new EchoService(),
    });
    try {
      const res = await request(server.url);
      expect(res.statusCode).toBe(401);
      expect(problemCode(await res.body.text())).toBe('invalid_credential');
      expect(asked).toBe(0);
      expect((await server.records()).map((r) => [r['decision'], r['stage']])).toEqual([['deny', 'authn']]);
    } finally {
      await server.close();
    }
  });

  it('a service that throws is recorded as a deny (its answer was never recorded) and answers a generic 500', async () => {
    const { AnonymousAuthenticator } = await import('../../src/authn/anonymous.js');
    const server = await pipelineServer({
      authenticator: new AnonymousAuthenticator(),
      handler: {
        kind: 'service',
        serve: async () => {
          throw new TypeError('service internals');
        },
      },
    });
    try {
      const res = await request(server.url);
      const body = await res.body.text();
      expect(res.statusCode).toBe(500);
      expect(body).not.toContain('service internals');
      const records = await server.records();
      expect(records.map((r) => [r['decision'], r['stage'], r['code'], r['status']])).toEqual([['deny', 'handler', 'internal_error', 500]]);
    } finally {
      await server.close();
    }
  });

  it('a handler that throws after the allow answers 500 and never leaks the error', async () => {
    const { AnonymousAuthenticator } = await import('../../src/authn/anonymous.js');
    const server = await pipelineServer({
      authenticator: new AnonymousAuthenticator(),
      handler: {
        kind: 'forwarder',
        admit: () => ({ admitted: true, ticket: { release: () => undefined } }),
        forward: async () => {
          throw new TypeError('cannot read property of undefined (handler internals)');
        },
      },
    });
    try {
      const res = await request(server.url);
      const body = await res.body.text();
      expect(res.statusCode).toBe(500);
      expect(body).not.toContain('handler internals');
      const records = await server.records();
      expect(records.map((r) => r['decision'])).toEqual(['allow']);
    } finally {
      await server.close();
    }
  });
});

describe('decision observers', () => {
  it('each sees every decision once it is on record, with its seq; one that throws changes no answer', async () => {
    const { GatewayError } = await import('../../src/errors/catalogue.js');
    const seen: Array<[number, string, string]> = [];
    const server = await pipelineServer({
      // Anyone without an Authorization header; a request with one is rejected.
      authenticator: {
        id: 'toggle',
        authenticate: (r) =>
          r.authorization === undefined
            ? { outcome: 'authenticated', principal: { subject: 'anonymous', method: 'anonymous', scopes: new Set() } }
            : { outcome: 'rejected', error: new GatewayError('invalid_credential') },
      },
      handler: new EchoService(),
      observers: [
        {
          onDecision: () => {
            throw new Error('observer broke');
          },
        },
        { onDecision: (record) => seen.push([record.seq, record.decision, record.request_id]) },
      ],
    });
    try {
      const ok = await request(server.url);
      expect(ok.statusCode).toBe(200);
      await ok.body.dump();
      const refused = await request(server.url, { headers: { authorization: 'Basic eA==' } });
      expect(refused.statusCode).toBe(401);
      await refused.body.dump();
      const records = await server.records();
      expect(seen).toEqual(records.map((r) => [r['seq'], r['decision'], r['request_id']]));
      expect(seen.map((s) => s[1])).toEqual(['allow', 'deny']);
      expect(server.lines.join('')).toContain('decision observer failed');
    } finally {
      await server.close();
    }
  });
});

describe('LOG-07 audit log failure: allows fail closed, refusals still enforced', () => {
  it('answers 503 for admitted requests and fails readiness once the audit directory is gone, keeps refusing the rest, and recovers', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-auditgone-'));
    const audit = testAuditLog(join(dir, 'audit'));
    const gw = await startGateway(
      (base) => ({
        ...base,
        routes: [...(base.routes ?? []), route('mtls', '/mtls', { authn: ['mtls'] })],
      }),
      { audit },
    );
    try {
      const agent = gw.agent();
      await (await request(`${gw.origin}/public/a`, { dispatcher: agent })).body.dump();
      // The directory vanishes (an unmounted volume, an operator's rm -r): the next batch cannot go anywhere.
      rmSync(join(dir, 'audit'), { recursive: true, force: true });
      const first = await request(`${gw.origin}/public/b`, { dispatcher: agent });
      expect(first.statusCode).toBe(503);
      await first.body.dump();
      const allowed = await request(`${gw.origin}/public/c`, { dispatcher: agent });
      expect(allowed.statusCode).toBe(503);
      expect(problemCode(await allowed.body.text())).toBe('service_unavailable');
      const ready = await request(`${gw.origin}/readyz`, { dispatcher: agent });
      expect(ready.statusCode).toBe(503);
      await ready.body.dump();
      const unauthenticated = await request(`${gw.origin}/mtls/x`, { dispatcher: agent });
      expect(unauthenticated.statusCode).toBe(401);
      await unauthenticated.body.dump();
      const unknown = await request(`${gw.origin}/nowhere`, { dispatcher: agent });
      expect(unknown.statusCode).toBe(404);
      await unknown.body.dump();
      // The directory is back: within the recovery interval the log writes again, and says what it lost.
      mkdirSync(join(dir, 'audit'), { mode: 0o700 });
      let status = 503;
      for (let i = 0; i < 50 && status !== 200; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        const res = await request(`${gw.origin}/public/d`, { dispatcher: agent });
        status = res.statusCode;
        await res.body.dump();
      }
      expect(status).toBe(200);
      await audit.flush();
      const records = readRecords(join(dir, 'audit'));
      expect(records[0]).toMatchObject({ type: 'segment_start', reason: 'recovered' });
      expect(records.some((r) => r.type === 'decision' && r['decision'] === 'allow')).toBe(true);
    } finally {
      await gw.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
