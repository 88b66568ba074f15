// Issue #10 item 6: a target given by host name. Every address it resolves to is a target of its own, resolved again every
// dns_refresh_ms: an address that appears gets traffic, one that goes drains, a name that fails to resolve keeps the
// addresses it had. Real servers on 127.0.0.1 and ::1; the resolver is the one injected seam (getaddrinfo here knows
// only 127.0.0.1 for localhost), and a real gateway resolves `localhost` itself.
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import { upstreamSchema } from '../../src/config/routes.js';
import { Upstream } from '../../src/proxy/upstream.js';
import { eventually } from '../support/eventually.js';
import { startGateway, startUpstream, type TestUpstream } from '../support/harness.js';
import { route } from '../support/routes.js';

/** One server per address, all on one port; each answers with its address and the Host it got. */
async function servers(addresses: readonly string[]): Promise<{ port: number; servers: Server[] }> {
  const first = createServer((req, res) => res.end(JSON.stringify({ at: addresses[0], host: req.headers.host })));
  first.listen(0, addresses[0]);
  await once(first, 'listening');
  const { port } = first.address() as AddressInfo;
  const rest = await Promise.all(
    addresses.slice(1).map(async (address) => {
      const server = createServer((req, res) => res.end(JSON.stringify({ at: address, host: req.headers.host })));
      server.listen(port, address);
      await once(server, 'listening');
      return server;
    }),
  );
  return { port, servers: [first, ...rest] };
}

describe('a target given by host name', () => {
  let port: number;
  let running: Server[];
  let answer: string[] | Error = ['127.0.0.1'];
  let upstream: Upstream;

  beforeAll(async () => {
    ({ port, servers: running } = await servers(['127.0.0.1', '::1']));
    const config = upstreamSchema.parse({ url: `http://svc.test:${port}`, health: false });
    upstream = new Upstream('svc', config, pino({ level: 'silent' }), Date.now, async (host) => {
      expect(host).toBe('svc.test');
      if (answer instanceof Error) throw answer;
      return answer;
    });
    await upstream.start();
  });

  afterAll(async () => {
    await upstream.destroy();
    for (const server of running) server.close();
  });

  /** Sends `n` requests the way the proxy does: a picked target's pool, with its Host header. */
  const send = async (n: number): Promise<Array<{ at: string; host: string }>> => {
    const out: Array<{ at: string; host: string }> = [];
    for (let i = 0; i < n; i++) {
      const target = upstream.balancer.pick(undefined);
      if (target === undefined) throw new Error('no target');
      const response = await target.pool.request({ path: '/', method: 'GET', headers: { host: target.hostHeader } });
      out.push((await response.body.json()) as { at: string; host: string });
    }
    return out;
  };

  it('each address it resolves to is a target; the Host sent is the name', async () => {
    expect(upstream.balancer.targets.map((target) => target.authority)).toEqual([`127.0.0.1:${port}`]);
    expect(await send(2)).toEqual([
      { at: '127.0.0.1', host: `svc.test:${port}` },
      { at: '127.0.0.1', host: `svc.test:${port}` },
    ]);
    answer = ['127.0.0.1', '::1'];
    await upstream.refresh();
    expect(upstream.balancer.targets.map((target) => target.authority)).toEqual([`127.0.0.1:${port}`, `[::1]:${port}`]);
    expect(new Set((await send(4)).map((r) => r.at))).toEqual(new Set(['127.0.0.1', '::1']));
  });

  it('a name that fails to resolve keeps its addresses; an address that goes is no longer picked', async () => {
    const before = upstream.balancer.targets;
    answer = Object.assign(new Error('getaddrinfo EAI_AGAIN svc.test'), { code: 'EAI_AGAIN' });
    await upstream.refresh();
    expect(upstream.balancer.targets).toEqual(before);
    answer = ['::1'];
    await upstream.refresh();
    expect(upstream.balancer.targets.map((target) => target.authority)).toEqual([`[::1]:${port}`]);
    // The target object of an address that stays is the same one (its health and balancing state go on).
    expect(upstream.balancer.targets[0]).toBe(before[1]);
    expect((await send(3)).map((r) => r.at)).toEqual(['::1', '::1', '::1']);
    // Capacity follows the targets.
    expect(upstream.capacity).toBe(64 + 1024);
  });
});

describe('a gateway whose upstream is given by host name', () => {
  let app: TestUpstream;

  beforeAll(async () => {
    app = await startUpstream();
  });
  afterAll(() => app.close());

  it('resolves it before the first request and sends the name as Host, to requests and to health checks', async () => {
    const gw = await startGateway((base) => ({
      ...base,
      upstreams: { named: { url: `http://localhost:${app.port}`, health: { path: '/healthz', interval_ms: 100, timeout_ms: 50 } } },
      routes: [...base.routes, route('named', '/named', { to: 'named' })],
    }));
    try {
      const response = await request(`${gw.origin}/named/x`, { dispatcher: gw.agent() });
      await response.body.dump();
      expect(response.statusCode).toBe(200);
      expect(app.requests.at(-1)?.headers.host).toBe(`localhost:${app.port}`);
      await gw.gateway.audit.flush();
      const completion = readRecords(join(gw.dataDir, 'audit')).find((record) => record.type === 'completion') as Record<string, unknown> | undefined;
      expect(completion?.['upstream_target']).toBe(`127.0.0.1:${app.port}`);
      // Its health checks go to the address too, and name the host as well.
      await eventually(() => app.healthChecks.length > 0, 5000, 'a health check');
      expect(app.healthChecks[0]?.headers.host).toBe(`localhost:${app.port}`);
    } finally {
      await gw.stop();
    }
  });
});
