// The forwarder's hold on upstream capacity (issue #22 item 4): taken before the allow is recorded, given back however the
// forward ends — also when it fails before undici has the request, or the queue bound would shrink with every such fault.
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { AuthenticatedRequest, HttpExchange } from '../../src/pipeline/stage.js';
import { upstreamSchema } from '../../src/config/routes.js';
import { ProxyHandler } from '../../src/proxy/forward.js';
import { Upstream } from '../../src/proxy/upstream.js';

describe('upstream capacity tickets', () => {
  // Nothing listens on port 1; no request is ever sent in these tests.
  const upstream = new Upstream(
    'app',
    upstreamSchema.parse({
      url: 'http://127.0.0.1:1',
      health: false,
      connections: 1,
      max_queued: 0,
      connect_timeout_ms: 1000,
      headers_timeout_ms: 1000,
      body_timeout_ms: 1000,
    }),
    pino({ level: 'silent' }),
  );
  afterAll(() => upstream.destroy());
  const options = { stripPrefix: false, forwardAuthorization: false, preserveHost: false, identityPrefix: 'x-authenticated-' };

  it('admit holds capacity up to connections + max_queued, and a released ticket gives it back once', () => {
    const handler = new ProxyHandler(upstream, options, () => '127.0.0.1', pino({ level: 'silent' }));
    const first = handler.admit();
    expect(first.admitted).toBe(true);
    expect(handler.admit()).toMatchObject({ admitted: false, error: { code: 'service_unavailable' } });
    if (!first.admitted) return;
    first.ticket.release();
    first.ticket.release();
    expect(upstream.inFlight).toBe(0);
  });

  it('a forward that throws before undici has the request gives its ticket back', () => {
    const handler = new ProxyHandler(
      upstream,
      options,
      () => {
        throw new Error('forwarded-for failed');
      },
      pino({ level: 'silent' }),
    );
    const admission = handler.admit();
    if (!admission.admitted) throw new Error('not admitted');
    const request = {
      path: '/x',
      query: '',
      authority: 'localhost',
      route: { pathPrefix: '/', quota: undefined },
      principal: { method: 'anonymous' },
    } as unknown as AuthenticatedRequest;
    const exchange = { req: { headers: {} } } as unknown as HttpExchange;
    expect(() => handler.forward(request, exchange, admission.ticket)).toThrow('forwarded-for failed');
    expect(upstream.inFlight).toBe(0);
    expect(handler.admit().admitted).toBe(true);
  });
});
