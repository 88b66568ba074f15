import { symlinkSync, mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { request } from 'undici';
import { JsonLinesAuditSink } from '../../src/audit/jsonl-sink.js';
import { RoutePolicy } from '../../src/authz/policy.js';
import { Pipeline } from '../../src/pipeline/pipeline.js';
import type { Authenticator, Handler } from '../../src/pipeline/stage.js';
import { PreAuthQuota } from '../../src/quota/rate.js';
import { checkRequest } from '../../src/server/edge.js';
import type { HttpExchange } from '../../src/server/exchange.js';
import type { Route } from '../../src/pipeline/stage.js';
import { Router } from '../../src/server/router.js';
import { EchoService } from '../../src/services/echo.js';
import { problemCode, startGateway } from '../support/harness.js';

/** Runs the real pipeline behind a plain HTTP server, with one route whose stages the test chooses. */
async function pipelineServer(stages: { authenticator: Authenticator; handler: Handler }) {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-pipeline-'));
  const audit = new JsonLinesAuditSink({ dir });
  const lines: string[] = [];
  const log = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }));
  const pipeline = new Pipeline({ preAuthQuota: new PreAuthQuota({ points: 1000, duration_s: 60, block_s: 0 }), audit, log });
  const route: Route = {
    id: 'r',
    pathPrefix: '/r',
    host: undefined,
    challenge: undefined,
    selfAudited: false,
    methods: new Set(['GET', 'HEAD']),
    allowHeader: 'GET, HEAD',
    bodyLimitBytes: 1024,
    authenticators: [stages.authenticator],
    authorizer: new RoutePolicy({ allow: 'anyone' }),
    quota: undefined,
    handler: stages.handler,
  };
  const router = new Router([route]);
  const limits = { maxHeaders: 100, maxHeaderBytes: 16384, maxUriBytes: 8192, allowedHosts: new Set<string>() };
  const server = createServer((req, res) => {
    const exchange: HttpExchange = { req, res, requestId: 'req-1', protocol: 'h1', isHead: false, closeAfterResponse: () => false };
    const connection = { peerAddress: '127.0.0.1', clientAddress: '127.0.0.1', limitKey: '127.0.0.1', protocol: 'h1' as const, peerCertificate: undefined };
    const edge = checkRequest(req, 'req-1', connection, router, limits, 0);
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
      const { readFileSync } = await import('node:fs');
      return readFileSync(audit.file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
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

  it('an authenticator that rejects never falls through to the next one', async () => {
    const { GatewayError } = await import('../../src/errors/catalogue.js');
    const server = await pipelineServer({
      authenticator: { id: 'rejecting', authenticate: () => ({ outcome: 'rejected', error: new GatewayError('invalid_credential') }) },
      handler: new EchoService(),
    });
    try {
      const res = await request(server.url);
      expect(res.statusCode).toBe(401);
      expect(problemCode(await res.body.text())).toBe('invalid_credential');
    } finally {
      await server.close();
    }
  });

  it('a handler that throws after the allow answers 500 and never leaks the error', async () => {
    const { AnonymousAuthenticator } = await import('../../src/authn/anonymous.js');
    const server = await pipelineServer({
      authenticator: new AnonymousAuthenticator(),
      handler: {
        handle: async () => {
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

describe('LOG-07 audit sink failure: allows fail closed, refusals still enforced', () => {
  it('answers 503 for admitted requests once the audit file cannot be written, and keeps refusing the rest', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-auditfull-'));
    mkdirSync(dir, { recursive: true });
    // /dev/full accepts the open and fails every write with ENOSPC: a full disk.
    symlinkSync('/dev/full', join(dir, 'audit.jsonl'));
    const audit = new JsonLinesAuditSink({ dir });
    const gw = await startGateway(
      (base) => ({
        ...base,
        routes: [
          ...(base.routes ?? []),
          { id: 'mtls', match: { path_prefix: '/mtls', methods: ['GET'] }, authn: ['mtls'], authz: { allow: 'authenticated' }, handler: { service: 'echo' } },
        ],
      }),
      { audit },
    );
    try {
      const agent = gw.agent();
      // The first append is queued; the write error surfaces asynchronously.
      await (await request(`${gw.origin}/public/a`, { dispatcher: agent })).body.dump();
      await expect(audit.flush()).rejects.toThrow();
      const allowed = await request(`${gw.origin}/public/b`, { dispatcher: agent });
      expect(allowed.statusCode).toBe(503);
      expect(problemCode(await allowed.body.text())).toBe('service_unavailable');
      const unauthenticated = await request(`${gw.origin}/mtls/x`, { dispatcher: agent });
      expect(unauthenticated.statusCode).toBe(401);
      await unauthenticated.body.dump();
      const unknown = await request(`${gw.origin}/nowhere`, { dispatcher: agent });
      expect(unknown.statusCode).toBe(404);
      await unknown.body.dump();
      expect(gw.logs.join('')).toMatch(/audit/);
    } finally {
      await gw.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
