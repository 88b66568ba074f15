// Issue #10 item 7 and the configuration reload it needs: a reload puts new routes, upstreams and quotas in force without
// dropping a connection or a request. A target the reload removes finishes the requests it has in flight (the client gets
// the whole answer), then its connections close; new requests go to the targets in force. What only a restart can
// change, and a configuration that cannot be built, are refused whole and recorded; the table in force is untouched.
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { eventually } from '../support/eventually.js';
import { startGateway, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';
import { route } from '../support/routes.js';

let gw: TestGateway | undefined;
const upstreams: TestUpstream[] = [];

afterEach(async () => {
  await gw?.stop();
  gw = undefined;
  await Promise.all(upstreams.splice(0).map((upstream) => upstream.close()));
});

async function upstream(): Promise<TestUpstream> {
  const started = await startUpstream();
  upstreams.push(started);
  return started;
}

/** Operational records (gateway_start, config_reloaded, ...) of the gateway's chain, flushed first. */
async function events(gateway: TestGateway, type: string): Promise<Array<Record<string, unknown>>> {
  await gateway.gateway.audit.flush();
  return readRecords(join(gateway.dataDir, 'audit')).filter((record) => record.type === type) as unknown as Array<Record<string, unknown>>;
}

async function get(gateway: TestGateway, path: string): Promise<{ status: number; body: string }> {
  const response = await request(`${gateway.origin}${path}`, { dispatcher: gateway.agent() });
  return { status: response.statusCode, body: await response.body.text() };
}

const withRoutes =
  (...routes: ConfigInput['routes']) =>
  (base: ConfigInput): ConfigInput => ({ ...base, routes: [...base.routes, ...routes] });

describe('configuration reload', () => {
  it('a route added is served at once and one removed is gone; records after it name the new configuration', async () => {
    gw = await startGateway(withRoutes(route('old', '/old')));
    expect((await get(gw, '/old/x')).status).toBe(200);
    expect((await get(gw, '/new/x')).status).toBe(404);

    const change = await gw.reload(withRoutes(route('new', '/new')));
    expect(change).toEqual({ routes: 2, upstreamsAdded: [], upstreamsChanged: [], upstreamsRemoved: [], quotasChanged: [] });
    expect((await get(gw, '/new/x')).status).toBe(200);
    expect((await get(gw, '/old/x')).status).toBe(404);

    const [reloaded] = await events(gw, 'config_reloaded');
    const hash = createHash('sha256').update(JSON.stringify(gw.gateway.config)).digest('hex');
    expect(reloaded).toMatchObject({ config_sha256: hash, routes: 2, upstreams_added: null, upstreams_removed: null });
    const decisions = await gw.auditRecords();
    const before = decisions.find((record) => record.path === '/old/x');
    const after = decisions.find((record) => record.path === '/new/x' && record.decision === 'allow');
    expect(before?.config).not.toBe(hash.slice(0, 16));
    expect(after?.config).toBe(hash.slice(0, 16));
  });

  it('a target removed by a reload finishes its request in flight, gets no new one, and its connection closes', async () => {
    const [leaving, staying] = [await upstream(), await upstream()];
    // The leaving target holds its first request until the test lets it answer.
    let answer: (() => void) | undefined;
    const held = new Promise<void>((resolve) => {
      answer = resolve;
    });
    let leavingSocket: Socket | undefined;
    leaving.respond = (req, res) => {
      leavingSocket = req.socket;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first half, ');
      void held.then(() => res.end('second half'));
    };
    const config =
      (...urls: string[]) =>
      (base: ConfigInput): ConfigInput => ({
        ...base,
        upstreams: { app: { targets: urls.map((url) => ({ url })) } },
        routes: [...base.routes, route('app', '/app', { to: 'app' })],
      });
    gw = await startGateway(config(leaving.url));
    const inFlight = request(`${gw.origin}/app/slow`, { dispatcher: gw.agent() });
    await eventually(() => leaving.requests.length === 1, 5000, 'the request reached the leaving target');

    const change = await gw.reload(config(staying.url));
    expect(change?.upstreamsChanged).toEqual(['app']);
    // New requests go to the target in force while the old one still works on its request.
    for (let i = 0; i < 3; i++) expect((await get(gw, '/app/next')).status).toBe(200);
    expect(staying.requests.map((r) => r.url)).toEqual(['/app/next', '/app/next', '/app/next']);
    expect(leaving.requests).toHaveLength(1);
    expect(leavingSocket?.destroyed).toBe(false);

    answer?.();
    const response = await inFlight;
    expect(response.statusCode).toBe(200);
    expect(await response.body.text()).toBe('first half, second half');
    // Drained: the gateway closes the retired target's connection once its last request is done.
    await eventually(() => leavingSocket?.destroyed === true, 5000, "the retired target's connection closed");
    expect(leaving.requests).toHaveLength(1);
    // Its completion record names the retired target: the request was not sent anywhere else.
    const completions = (await events(gw, 'completion')).filter((record) => record['upstream_target'] === `127.0.0.1:${leaving.port}`);
    expect(completions).toEqual([expect.objectContaining({ status: 200, upstream_retried: null })]);
    const [reloaded] = await events(gw, 'config_reloaded');
    expect(reloaded).toMatchObject({ upstreams_changed: 'app' });
  });

  it('an upstream and a quota whose settings did not change carry over: the same connection, the same counters', async () => {
    const app = await upstream();
    const sockets = new Set<Socket>();
    app.respond = (req, res) => {
      sockets.add(req.socket);
      res.end('ok');
    };
    const config =
      (extra: ConfigInput['routes']) =>
      (base: ConfigInput): ConfigInput => ({
        ...base,
        quotas: { three: { points: 3, duration_s: 60 } },
        upstreams: { app: { url: app.url } },
        routes: [...base.routes, route('app', '/app', { to: 'app', quota: 'three' }), ...extra],
      });
    gw = await startGateway(config([]));
    expect((await get(gw, '/app/1')).status).toBe(200);
    expect((await get(gw, '/app/2')).status).toBe(200);
    const change = await gw.reload(config([route('more', '/more')]));
    expect(change).toMatchObject({ upstreamsChanged: [], quotasChanged: [] });
    expect((await get(gw, '/app/3')).status).toBe(200);
    expect((await get(gw, '/app/4')).status).toBe(429);
    expect(sockets.size).toBe(1);
  });

  it('a quota whose settings changed counts with its new limit', async () => {
    const config =
      (points: number) =>
      (base: ConfigInput): ConfigInput => ({
        ...base,
        quotas: { q: { points, duration_s: 60 } },
        routes: [...base.routes, route('limited', '/limited', { quota: 'q' })],
      });
    gw = await startGateway(config(1));
    expect((await get(gw, '/limited/a')).status).toBe(200);
    expect((await get(gw, '/limited/b')).status).toBe(429);
    expect(await gw.reload(config(5))).toMatchObject({ quotasChanged: ['q'] });
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await get(gw, '/limited/c')).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
  });

  it('a change only a restart can make is refused whole, named, and recorded; the routes in force stay', async () => {
    gw = await startGateway(withRoutes(route('old', '/old')));
    const change = await gw.reload((base) => ({
      ...base,
      limits: { max_connections: 7 },
      tls: { ...base.tls, ticket_key_rotation_s: 600 },
      routes: [route('new', '/new')],
    }));
    expect(change).toBeUndefined();
    expect((await get(gw, '/old/x')).status).toBe(200);
    expect((await get(gw, '/new/x')).status).toBe(404);
    const [refused] = await events(gw, 'config_reload_refused');
    expect(refused?.['problems']).toBe(
      'tls.ticket_key_rotation_s: changed, but takes effect only after a restart; limits.max_connections: changed, but takes effect only after a restart',
    );
    expect(await events(gw, 'config_reloaded')).toEqual([]);
    expect(gw.logs.some((line) => line.includes('configuration not reloaded'))).toBe(true);
  });

  it('a configuration that cannot be read or built is refused; the next good one is applied', async () => {
    gw = await startGateway(withRoutes(route('old', '/old')));
    expect(await gw.reload(withRoutes(route('broken', '/broken', { to: 'nowhere' })))).toBeUndefined();
    expect(
      await gw.reload((base) => ({
        ...base,
        upstreams: { tls: { url: 'https://127.0.0.1:1', ca: join(gw?.dataDir ?? '', 'no-such-ca.pem') } },
        routes: [...base.routes, route('tls', '/tls', { to: 'tls' })],
      })),
    ).toBeUndefined();
    expect(await gw.gateway.reload(() => JSON.parse('{') as never)).toBeUndefined();
    expect((await get(gw, '/old/x')).status).toBe(200);
    const refused = await events(gw, 'config_reload_refused');
    expect(refused.map((record) => record['problems'])).toEqual([
      expect.stringContaining('nowhere'),
      expect.stringMatching(/upstreams\.tls\.ca: cannot read .*no-such-ca\.pem \(ENOENT\)/),
      expect.stringContaining('JSON'),
    ]);
    expect(await gw.reload(withRoutes(route('new', '/new')))).toBeDefined();
    expect((await get(gw, '/new/x')).status).toBe(200);
  });

  it('a reload asked for once the gateway is stopping is refused', async () => {
    const stopped = await startGateway();
    const stopping = stopped.gateway.stop();
    const refused = stopped.gateway.reload(() => stopped.gateway.config);
    await stopping;
    expect(await refused).toBeUndefined();
    expect(stopped.logs.some((line) => line.includes('the gateway is stopping'))).toBe(true);
    rmSync(stopped.dataDir, { recursive: true, force: true });
  });

  it('reloads asked for together are applied one after the other, the last one in force', async () => {
    gw = await startGateway();
    const results = await Promise.all([gw.reload(withRoutes(route('a', '/a'))), gw.reload(withRoutes(route('b', '/b')))]);
    expect(results.map((change) => change?.routes)).toEqual([2, 2]);
    expect((await get(gw, '/b/x')).status).toBe(200);
    expect((await get(gw, '/a/x')).status).toBe(404);
    expect(await events(gw, 'config_reloaded')).toHaveLength(2);
  });
});
