import { route } from '../support/routes.js';
import { connect } from 'node:http2';
import { describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { startGateway, startUpstream } from '../support/harness.js';

describe('REL-01 graceful shutdown', () => {
  it('finishes in-flight HTTP/1.1 and HTTP/2 requests, marks them to close, turns readiness to 503 and refuses new connections', async () => {
    const upstream = await startUpstream();
    const release: (() => void)[] = [];
    upstream.respond = (_req, res) => {
      release.push(() => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('done');
      });
    };
    const gw = await startGateway((base) => ({
      ...base,
      upstreams: { app: { url: upstream.url } },
      routes: [...(base.routes ?? []), route('slow', '/slow', { to: 'app' })],
      shutdown: { drain_timeout_ms: 5000 },
    }));
    const agent = gw.agent();
    const h1 = request(`${gw.origin}/slow/a`, { dispatcher: agent });
    const session = connect(gw.origin, { ca: gw.certs.ca, servername: 'localhost' });
    session.on('error', () => undefined);
    let goaway = false;
    session.on('goaway', () => {
      goaway = true;
    });
    const stream = session.request({ ':path': '/slow/b', ':method': 'GET', ':authority': 'localhost' });
    const h2Done = new Promise<{ status: number; body: string }>((resolve, reject) => {
      let status = 0;
      let body = '';
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => (body += c));
      stream.on('end', () => resolve({ status, body }));
      stream.on('error', reject);
    });
    while (upstream.requests.length < 2) await new Promise((r) => setTimeout(r, 10));

    // An idle keep-alive connection opened before the drain is closed, not left dangling.
    const idleAgent = gw.agent();
    const warm = await request(`${gw.origin}/readyz`, { dispatcher: idleAgent });
    expect(warm.statusCode).toBe(200);
    await warm.body.dump();

    const stopping = gw.gateway.stop();
    expect(gw.gateway.draining).toBe(true);
    // New connections are refused once draining started.
    await expect(request(`${gw.origin}/healthz`, { dispatcher: new Agent({ connect: { ca: gw.certs.ca, servername: 'localhost' } }) })).rejects.toThrow();

    for (const go of release) go();
    const first = await h1;
    expect(first.statusCode).toBe(200);
    expect(first.headers['connection']).toBe('close');
    expect(await first.body.text()).toBe('done');
    expect(await h2Done).toEqual({ status: 200, body: 'done' });
    expect(goaway).toBe(true);
    await stopping;
    session.destroy();
    await upstream.close();
  });

  it('force-closes requests that outlive the drain timeout', async () => {
    const upstream = await startUpstream();
    upstream.respond = () => undefined; // never answers
    const gw = await startGateway((base) => ({
      ...base,
      upstreams: { app: { url: upstream.url } },
      routes: [route('hang', '/hang', { to: 'app' })],
      shutdown: { drain_timeout_ms: 300 },
    }));
    const pending = request(`${gw.origin}/hang`, { dispatcher: gw.agent() });
    const outcome = pending.then(
      () => 'answered',
      () => 'aborted',
    );
    while (upstream.requests.length < 1) await new Promise((r) => setTimeout(r, 10));
    await gw.gateway.stop();
    expect(await outcome).toBe('aborted');
    await upstream.close();
  });

  it('readiness grace: /readyz turns 503 at once while requests and new connections are still served, then the listener closes', async () => {
    const gw = await startGateway((base) => ({ ...base, shutdown: { readiness_grace_ms: 1500, drain_timeout_ms: 2000 } }));
    const get = async (path: string): Promise<number> => {
      const agent = new Agent({ connect: { ca: gw.certs.ca, servername: 'localhost' } });
      try {
        const res = await request(`${gw.origin}${path}`, { dispatcher: agent });
        await res.body.dump();
        return res.statusCode;
      } finally {
        await agent.close();
      }
    };
    expect(await get('/readyz')).toBe(200);
    const stopped = gw.gateway.stop();
    // During the grace: not ready, but serving — on a brand-new connection too.
    expect(await get('/readyz')).toBe(503);
    expect(await get('/healthz')).toBe(200);
    expect(await get('/public/during-grace')).toBe(200);
    await stopped;
    await expect(get('/healthz')).rejects.toThrow();
    await gw.stop();
  });
});
