// Issue #10 (part): an upstream of several targets. The balancer alone: weighted round robin, least outstanding,
// rendezvous hashing on the principal, passive ejection with a doubling back-off. Then through a real gateway and real
// upstream servers on 127.0.0.1: the load spread by weight; a target that stops accepting is retried around (no 5xx
// for a GET), ejected, and reinstated once its ejection ends; every target down → 503 at once with Retry-After, on
// record with its own code; a POST is never sent twice; the base path joined safely; no upstream address leaks.
import { join } from 'node:path';
import { createServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import { Balancer, RetryBudget, Target, type PassiveHealth } from '../../src/proxy/targets.js';
import { eventually } from '../support/eventually.js';
import { closedPort, rawHttp1, startGateway, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';
import { route } from '../support/routes.js';

const HEALTH: PassiveHealth = { consecutiveFailures: 3, failureRate: 1, windowMs: 10_000, minRequests: 1000, ejectionMs: 1000, maxEjectionMs: 4000 };

function targets(...weights: number[]): Target<string>[] {
  return weights.map((weight, i) => new Target(`http://10.0.0.${i + 1}`, `10.0.0.${i + 1}`, weight, `pool ${i + 1}`));
}

/** A server that accepts connections, reads requests, and never answers. */
interface HangingServer {
  port: number;
  requests: number;
  close(): Promise<void>;
}

async function hangingServer(): Promise<HangingServer> {
  const sockets = new Set<Socket>();
  const state: HangingServer = { port: 0, requests: 0, close: () => Promise.resolve() };
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('data', (chunk: Buffer) => {
      state.requests += chunk.toString('latin1').split('\r\n\r\n').length - 1;
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  state.close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return state;
}

/** A server that reads each request whole, then resets the connection without answering. */
async function resettingServer(): Promise<HangingServer> {
  const state: HangingServer = { port: 0, requests: 0, close: () => Promise.resolve() };
  const server = createNetServer((socket) => {
    socket.on('error', () => undefined);
    let seen = '';
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      // A request whose body has arrived (this test's bodies end with "end").
      if (seen.includes('\r\n\r\n') && (seen.startsWith('GET') || seen.endsWith('end'))) {
        state.requests++;
        socket.resetAndDestroy();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  state.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return state;
}

function counts(picks: readonly (Target<string> | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const pick of picks) if (pick !== undefined) out[pick.authority] = (out[pick.authority] ?? 0) + 1;
  return out;
}

describe('balancing over the targets of one upstream', () => {
  it('weighted round robin gives each target its share, interleaved rather than in runs', () => {
    const balancer = new Balancer(targets(1, 2, 3), 'round_robin');
    const picks = Array.from({ length: 600 }, () => balancer.pick(undefined));
    expect(counts(picks)).toEqual({ '10.0.0.1': 100, '10.0.0.2': 200, '10.0.0.3': 300 });
    // Smooth: the heaviest target never gets more than its weight in a row.
    const sequence = picks.slice(0, 12).map((pick) => pick?.authority);
    expect(sequence.join(' ')).not.toContain(Array(4).fill('10.0.0.3').join(' '));
  });

  it('least outstanding picks the fewest requests in flight per weight', () => {
    const list = targets(1, 1, 2);
    const balancer = new Balancer(list, 'least_outstanding');
    const [a, b, c] = list as [Target<string>, Target<string>, Target<string>];
    a.inFlight = 3;
    b.inFlight = 1;
    c.inFlight = 3; // 1.5 per unit of weight
    expect(balancer.pick(undefined)).toBe(b);
    b.inFlight = 2;
    c.inFlight = 2; // 1 per unit
    expect(balancer.pick(undefined)).toBe(c);
  });

  it('principal hashing keeps a principal on its target; only the principals of a target that leaves move', () => {
    let now = 0;
    const list = targets(1, 1, 1, 1);
    const balancer = new Balancer(list, 'principal_hash', () => now);
    const principals = Array.from({ length: 400 }, (_, i) => `client-${i}`);
    const before = new Map(principals.map((p) => [p, balancer.pick(p)]));
    // Stable, and spread over all four.
    expect(principals.every((p) => balancer.pick(p) === before.get(p))).toBe(true);
    expect(Object.values(counts([...before.values()])).every((n) => n > 60)).toBe(true);
    // Target 2 is ejected: its principals move, nobody else's does.
    const gone = list[1] as Target<string>;
    gone.failed(now, { ...HEALTH, consecutiveFailures: 1 });
    for (const p of principals) {
      const after = balancer.pick(p);
      if (before.get(p) === gone) expect(after).not.toBe(gone);
      else expect(after).toBe(before.get(p));
    }
    now += 10_000;
    // Anonymous requests go round robin.
    expect(new Set(Array.from({ length: 8 }, () => balancer.pick(undefined))).size).toBe(4);
  });

  it('ejects after consecutive failures, for a back-off that doubles; one failure after an ejection ejects again; a success clears it', () => {
    let now = 0;
    const [t] = targets(1) as [Target<string>];
    const balancer = new Balancer([t], 'round_robin', () => now);
    expect(t.failed(now, HEALTH)).toBe(false);
    t.succeeded();
    expect([t.failed(now, HEALTH), t.failed(now, HEALTH), t.failed(now, HEALTH)]).toEqual([false, false, true]);
    expect(balancer.pick(undefined)).toBeUndefined();
    expect(balancer.untilFirstReturn()).toBe(1000);
    now = 1000;
    expect(balancer.pick(undefined)).toBe(t);
    // Back from its ejection, its first failure ejects it again, twice as long.
    expect(t.failed(now, HEALTH)).toBe(true);
    expect(t.ejectedUntil).toBe(3000);
    now = 3000;
    expect(t.failed(now, HEALTH)).toBe(true);
    expect(t.ejectedUntil).toBe(7000);
    now = 7000;
    expect(t.failed(now, HEALTH)).toBe(true);
    expect(t.ejectedUntil).toBe(7000 + 4000); // capped at maxEjectionMs
    now = 11_000;
    t.succeeded();
    expect([t.failed(now, HEALTH), t.failed(now, HEALTH)]).toEqual([false, false]);
  });
});

describe('the circuit breaker of one target', () => {
  const RATE: PassiveHealth = { ...HEALTH, consecutiveFailures: 100, failureRate: 0.5, minRequests: 10, windowMs: 10_000 };

  it('opens when the failure rate of its window reaches the threshold over enough requests, not before', () => {
    const [t] = targets(1) as [Target<string>];
    // 9 requests, 5 failed: over half, but fewer than min_requests.
    for (let i = 0; i < 4; i++) t.succeeded(i, RATE);
    for (let i = 0; i < 5; i++) expect(t.failed(100 + i, RATE)).toBe(false);
    // The tenth is a success: 5 of 10 failed, the rate reached at the next failure.
    t.succeeded(200, RATE);
    expect(t.failed(300, RATE)).toBe(true);
    expect(t.isAvailable(301)).toBe(false);
  });

  it('forgets outcomes older than its window', () => {
    const [t] = targets(1) as [Target<string>];
    for (let i = 0; i < 9; i++) expect(t.failed(i, RATE)).toBe(false);
    t.succeeded(10, RATE);
    // 20 s later the nine failures are out of the window: one failure among two requests is under the minimum.
    t.succeeded(20_000, RATE);
    expect(t.failed(20_001, RATE)).toBe(false);
  });

  it('half-open: back from an ejection it takes one request at a time until one succeeds', () => {
    let now = 0;
    const [t, other] = targets(1, 1) as [Target<string>, Target<string>];
    const balancer = new Balancer([t, other], 'round_robin', () => now);
    t.failed(now, { ...HEALTH, consecutiveFailures: 1 });
    now = 1000;
    // Its probe is in flight: no second request goes to it meanwhile.
    const picks = Array.from({ length: 4 }, () => {
      const pick = balancer.pick(undefined);
      if (pick !== undefined) pick.inFlight++;
      return pick;
    });
    expect(picks.filter((pick) => pick === t)).toHaveLength(1);
    t.inFlight = 0;
    t.succeeded(now, HEALTH);
    t.inFlight = 5;
    expect(t.isAvailable(now)).toBe(true);
  });
});

describe('the retry budget', () => {
  it('starts with its burst, earns a fraction of a retry per request, never saves more than the burst', () => {
    const budget = new RetryBudget(0.25, 2);
    expect([budget.take(), budget.take(), budget.take()]).toEqual([true, true, false]);
    for (let i = 0; i < 3; i++) budget.earn();
    expect(budget.take()).toBe(false);
    budget.earn();
    expect([budget.take(), budget.take()]).toEqual([true, false]);
    for (let i = 0; i < 100; i++) budget.earn();
    expect([budget.take(), budget.take(), budget.take()]).toEqual([true, true, false]);
    budget.refund();
    expect(budget.take()).toBe(true);
  });
});

describe('active health of one target', () => {
  const RULES = { healthyAfter: 2, unhealthyAfter: 3 };

  it('failed checks in a row take it out, passing ones put it back; a mixed run changes nothing', () => {
    const [t] = targets(1) as [Target<string>];
    expect([t.checked(false, RULES, 0), t.checked(false, RULES, 0), t.checked(true, RULES, 0), t.checked(false, RULES, 0)]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
    expect(t.isAvailable(0)).toBe(true);
    expect([t.checked(false, RULES, 0), t.checked(false, RULES, 0)]).toEqual([undefined, 'unhealthy']);
    expect(t.isAvailable(0)).toBe(false);
    expect([t.checked(true, RULES, 0), t.checked(true, RULES, 0)]).toEqual([undefined, 'healthy']);
    expect(t.isAvailable(0)).toBe(true);
  });

  it('passing checks end a passive ejection early; its next failure still ejects it at once', () => {
    const [t] = targets(1) as [Target<string>];
    const health = { ...HEALTH, consecutiveFailures: 1, ejectionMs: 60_000, maxEjectionMs: 60_000 };
    t.failed(0, health);
    expect(t.isAvailable(1000)).toBe(false);
    expect([t.checked(true, RULES, 1000), t.checked(true, RULES, 1000)]).toEqual([undefined, 'healthy']);
    expect(t.isAvailable(1000)).toBe(true);
    expect(t.failed(1000, { ...health, consecutiveFailures: 5 })).toBe(true);
  });
});

describe('an upstream of several targets, through the gateway', () => {
  const upstreams: TestUpstream[] = [];
  let gw: TestGateway;
  let dead: number;
  let deadToo: number;
  let revived: number;
  let hanging: HangingServer;
  let slow: HangingServer;
  let stormA: HangingServer;
  let stormB: HangingServer;
  let resetter: HangingServer;

  /** Which upstream saw each request, by its port. */
  const seen = (): number[] => upstreams.map((u) => u.requests.length);

  beforeAll(async () => {
    for (let i = 0; i < 6; i++) upstreams.push(await startUpstream());
    dead = await closedPort();
    deadToo = await closedPort();
    revived = await closedPort();
    hanging = await hangingServer();
    slow = await hangingServer();
    stormA = await hangingServer();
    stormB = await hangingServer();
    resetter = await resettingServer();
    const [a, b, c, d, e, f] = upstreams as [TestUpstream, TestUpstream, TestUpstream, TestUpstream, TestUpstream, TestUpstream];
    e.respond = (_req, res) => res.writeHead(500).end('application error');
    f.respond = (_req, res) => res.writeHead(503).end('overloaded');
    gw = await startGateway((base) => ({
      ...base,
      upstreams: {
        weighted: { targets: [{ url: a.url }, { url: b.url }, { url: c.url, weight: 2 }] },
        flaky: {
          targets: [{ url: d.url }, { url: `http://127.0.0.1:${dead}` }],
          passive_health: { consecutive_failures: 2, ejection_ms: 400, max_ejection_ms: 800 },
        },
        down: {
          targets: [{ url: `http://127.0.0.1:${dead}` }, { url: `http://127.0.0.1:${deadToo}` }],
          passive_health: { consecutive_failures: 1, ejection_ms: 60_000 },
        },
        based: { url: `${d.url}/api/v2`, connections: 2 },
        resets: {
          targets: [{ url: `http://127.0.0.1:${resetter.port}` }, { url: b.url }],
          passive_health: { consecutive_failures: 1000, failure_rate: 1, min_requests: 1_000_000 },
        },
        statuses: {
          targets: [{ url: e.url }, { url: f.url }],
          passive_health: { consecutive_failures: 2, ejection_ms: 60_000, max_ejection_ms: 60_000 },
        },
        timeouts: {
          targets: [{ url: `http://127.0.0.1:${slow.port}` }, { url: a.url }],
          headers_timeout_ms: 200,
          passive_health: { consecutive_failures: 1000, failure_rate: 1, min_requests: 1_000_000 },
        },
        storm: {
          targets: [{ url: `http://127.0.0.1:${stormA.port}` }, { url: `http://127.0.0.1:${stormB.port}` }],
          headers_timeout_ms: 200,
          passive_health: { consecutive_failures: 1000, failure_rate: 1, min_requests: 1_000_000 },
          retry_budget: { ratio: 0.1, burst: 2 },
        },
        hanging: {
          targets: [{ url: a.url }, { url: `http://127.0.0.1:${hanging.port}` }],
          headers_timeout_ms: 300,
          passive_health: { consecutive_failures: 100, failure_rate: 0.5, min_requests: 2, window_ms: 10_000, ejection_ms: 60_000 },
        },
        checked: {
          targets: [{ url: a.url }, { url: b.url }],
          health: { path: '/healthz', interval_ms: 100, timeout_ms: 80, healthy_after: 2, unhealthy_after: 2 },
        },
        revived: {
          targets: [{ url: c.url }, { url: `http://127.0.0.1:${revived}` }],
          passive_health: { consecutive_failures: 1, ejection_ms: 600_000, max_ejection_ms: 600_000 },
          health: { path: '/healthz', interval_ms: 100, timeout_ms: 80, healthy_after: 2, unhealthy_after: 2 },
        },
      },
      routes: [
        ...base.routes,
        route('weighted', '/weighted', { to: 'weighted' }),
        route('flaky', '/flaky', { to: 'flaky', methods: ['GET', 'POST'] }),
        route('down', '/down', { to: 'down' }),
        route('based', '/based', { to: 'based', proxy: { strip_prefix: true } }),
        route('checked', '/checked', { to: 'checked' }),
        route('hanging', '/hanging', { to: 'hanging' }),
        route('timeouts', '/timeouts', { to: 'timeouts', methods: ['GET', 'POST'] }),
        route('storm', '/storm', { to: 'storm' }),
        route('statuses', '/statuses', { to: 'statuses' }),
        route('resets', '/resets', { to: 'resets', methods: ['GET', 'POST'] }),
        route('revived', '/revived', { to: 'revived' }),
      ],
    }));
  });

  afterAll(async () => {
    await gw.stop();
    await Promise.all(upstreams.map((u) => u.close()));
    await Promise.all([hanging, slow, stormA, stormB, resetter].map((server) => server.close()));
  });

  const get = async (path: string, init: { method?: 'GET' | 'POST'; body?: string } = {}) => {
    const response = await request(`${gw.origin}${path}`, {
      dispatcher: gw.agent(),
      method: init.method ?? 'GET',
      ...(init.body !== undefined ? { body: init.body } : {}),
    });
    const body = await response.body.text();
    return { status: response.statusCode, body, headers: response.headers };
  };
  const completions = () => readRecords(join(gw.dataDir, 'audit')).filter((record) => record.type === 'completion') as Array<Record<string, unknown>>;

  it('spreads the load by weight', async () => {
    const before = seen();
    for (let i = 0; i < 40; i++) expect((await get('/weighted/x')).status).toBe(200);
    const after = seen().map((n, i) => n - (before[i] ?? 0));
    expect(after.slice(0, 3)).toEqual([10, 10, 20]);
  });

  it('a GET to a target that refuses connections goes to another; the target is ejected, then tried again when its time is up', async () => {
    const d = upstreams[3] as TestUpstream;
    const before = d.requests.length;
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await get('/flaky/x')).status);
    expect(statuses).toEqual(Array(6).fill(200));
    expect(d.requests.length - before).toBe(6);
    // The attempts on the dead target are on the requests' records; after two failures it is out, so later ones go straight.
    await gw.gateway.audit.flush();
    const retried = completions()
      .filter((record) => record['route'] === 'flaky')
      .map((record) => record['upstream_retried']);
    expect(retried.filter((r) => r !== null)).toEqual([[`127.0.0.1:${dead} ECONNREFUSED`], [`127.0.0.1:${dead} ECONNREFUSED`]]);
    expect(gw.logs.some((line) => line.includes('upstream target ejected'))).toBe(true);
    // Once its ejection ends it gets a request again (and, still dead, is ejected again at once, for twice as long).
    await new Promise((resolve) => setTimeout(resolve, 450));
    expect([(await get('/flaky/x')).status, (await get('/flaky/x')).status, (await get('/flaky/x')).status]).toEqual([200, 200, 200]);
    await gw.gateway.audit.flush();
    const lastThree = completions()
      .filter((record) => record['route'] === 'flaky')
      .slice(-3)
      .map((record) => record['upstream_retried']);
    expect(lastThree.filter((r) => r !== null)).toEqual([[`127.0.0.1:${dead} ECONNREFUSED`]]);
  });

  it('a POST is never sent to a second target: a refused connection is a 502', async () => {
    // Wait until the dead target is back in rotation, and pick the moment it is next in turn.
    await new Promise((resolve) => setTimeout(resolve, 900));
    const d = upstreams[3] as TestUpstream;
    const posts: number[] = [];
    for (let i = 0; i < 2; i++) posts.push((await get('/flaky/p', { method: 'POST', body: 'once' })).status);
    // One of the two went to the dead target and failed there: it is not replayed on the live one.
    expect(posts.sort()).toEqual([200, 502]);
    expect(d.requests.filter((r) => r.url === '/flaky/p')).toHaveLength(1);
  });

  it('every target down: 502 while they fail, then 503 at once with Retry-After, on record as no_healthy_upstream; no address leaks', async () => {
    const first = await get('/down/x');
    expect(first.status).toBe(502);
    const refused = await get('/down/x');
    expect(refused.status).toBe(503);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(30);
    expect(JSON.parse(refused.body)).toMatchObject({ code: 'no_healthy_upstream' });
    for (const body of [first.body, refused.body]) {
      expect(body).not.toContain(String(dead));
      expect(body).not.toContain(String(deadToo));
      expect(body).not.toContain('127.0.0.1');
    }
    const requestId = JSON.parse(refused.body).request_id as string;
    const record = (await gw.auditRecords()).find((r) => r.request_id === requestId);
    expect(record).toMatchObject({ decision: 'deny', code: 'no_healthy_upstream', status: 503 });
  });

  it('joins the base path with the canonical path: dot segments resolved first, encoded slashes refused, nothing escapes it', async () => {
    const d = upstreams[3] as TestUpstream;
    expect((await get('/based/items/7')).status).toBe(200);
    expect(d.requests.at(-1)?.url).toBe('/api/v2/items/7');
    expect((await get('/based')).status).toBe(200);
    expect(d.requests.at(-1)?.url).toBe('/api/v2/');
    const count = d.requests.length;
    // Sent as raw bytes, so no client normalizes them first.
    const dotted = await rawHttp1(gw.port, gw.certs, 'GET /based/../../admin HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
    const encoded = await rawHttp1(gw.port, gw.certs, 'GET /based/..%2f..%2fadmin HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
    expect(encoded.status).toBe(400);
    // `/based/../../admin` is `/admin` once canonical: no route of this gateway, and never the upstream's /api/admin.
    expect(dotted.status).toBe(404);
    expect(d.requests.slice(count).map((r) => r.url)).toEqual([]);
  });

  it('active checks take a target that fails them out before any request fails, and put it back once it passes them', async () => {
    const [a, b] = upstreams as [TestUpstream, TestUpstream];
    await eventually(() => b.healthChecks.length >= 2, 5000, 'health checks reaching the target');
    expect(b.healthChecks.at(-1)).toMatchObject({ method: 'GET', url: '/healthz' });
    b.healthStatus = 503;
    const about = (what: string) => gw.logs.some((line) => line.includes(what) && line.includes(`127.0.0.1:${b.port}`));
    await eventually(() => about('fails its health checks'), 5000, 'target taken out');
    const [beforeA, beforeB] = [a.requests.length, b.requests.length];
    for (let i = 0; i < 6; i++) expect((await get('/checked/x')).status).toBe(200);
    expect([a.requests.length - beforeA, b.requests.length - beforeB]).toEqual([6, 0]);
    b.healthStatus = 200;
    await eventually(() => about('passes its health checks'), 5000, 'target back');
    const [againA, againB] = [a.requests.length, b.requests.length];
    for (let i = 0; i < 6; i++) expect((await get('/checked/x')).status).toBe(200);
    expect([a.requests.length - againA, b.requests.length - againB]).toEqual([3, 3]);
  });

  it('a target that was down is reinstated by the active check long before its passive ejection would end', async () => {
    const c = upstreams[2] as TestUpstream;
    // The dead target is ejected for ten minutes at its first failure (or taken out by its checks).
    for (let i = 0; i < 3; i++) expect((await get('/revived/x')).status).toBe(200);
    // It comes back on the same port.
    const server = createServer((_req, res) => res.end('revived'));
    await new Promise<void>((resolve) => server.listen(revived, '127.0.0.1', resolve));
    try {
      await eventually(
        async () => {
          const before = c.requests.length;
          await get('/revived/x');
          return c.requests.length === before;
        },
        5000,
        'a request served by the revived target',
      );
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('a target that accepts and never answers trips its circuit: after two timeouts (retried elsewhere) no request waits on it', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await get('/hanging/x')).status);
    // Round robin: every other request went to the hanging target until two of them (all it had) timed out; each of those
    // GETs was then answered by the other target.
    expect(statuses).toEqual(Array(8).fill(200));
    expect(hanging.requests).toBe(2);
  });

  it('an idempotent request without response headers in time goes to another target; a POST does not', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 2; i++) statuses.push((await get('/timeouts/x')).status);
    expect(statuses).toEqual([200, 200]);
    await gw.gateway.audit.flush();
    const retried = completions()
      .filter((record) => record['route'] === 'timeouts')
      .map((record) => record['upstream_retried']);
    expect(retried.filter((r) => r !== null)).toEqual([[`127.0.0.1:${slow.port} UND_ERR_HEADERS_TIMEOUT`]]);
    const posts: number[] = [];
    for (let i = 0; i < 2; i++) posts.push((await get('/timeouts/p', { method: 'POST' })).status);
    expect(posts.sort()).toEqual([200, 504]);
  });

  it('a retry storm is bounded by the budget: retries stay a fraction of the requests', async () => {
    const statuses = await Promise.all(Array.from({ length: 20 }, () => get('/storm/x').then((r) => r.status)));
    expect(statuses).toEqual(Array(20).fill(504));
    const sent = stormA.requests + stormB.requests;
    // 20 requests, a burst of 2 retries, and 0.1 of a retry earned per request: at most 24 attempts, never 40.
    expect(sent).toBeGreaterThan(20);
    expect(sent).toBeLessThanOrEqual(24);
  });

  it('a target answering 503 in a row is ejected; one answering 500 (an application error) is not', async () => {
    const [e, f] = upstreams.slice(4) as [TestUpstream, TestUpstream];
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await get('/statuses/x')).status);
    expect(statuses).toEqual([500, 503, 500, 503, 500, 500]);
    expect([e.requests.length, f.requests.length]).toEqual([4, 2]);
  });

  it('a POST that reached a target which then reset the connection is not sent again: the upstream saw it once', async () => {
    const b = upstreams[1] as TestUpstream;
    const before = b.requests.filter((r) => r.url === '/resets/p').length;
    const statuses: number[] = [];
    for (let i = 0; i < 2; i++) statuses.push((await get('/resets/p', { method: 'POST', body: 'the end' })).status);
    // Round robin: one went to the resetting target (a 502, sent nowhere else), one to the other.
    expect(statuses.sort()).toEqual([200, 502]);
    expect(resetter.requests).toBe(1);
    expect(b.requests.filter((r) => r.url === '/resets/p').length - before).toBe(1);
  });

  it('keeps the pinned-CA rule for https targets', async () => {
    const { buildConfig, ConfigError } = await import('../../src/config/load.js');
    const attempt = () =>
      buildConfig(
        {
          tls: { cert: 'c.pem', key: 'k.pem' },
          upstreams: { app: { targets: [{ url: 'https://10.0.0.1' }, { url: 'https://10.0.0.2' }] } },
        },
        '/etc',
      );
    expect(attempt).toThrow(ConfigError);
    expect(() => attempt()).toThrow(/upstreams\.app\.ca: an https upstream needs a pinned CA bundle/);
  });

  it('sends nothing to an ejected target: every request is refused before any connection attempt', async () => {
    const statuses = await Promise.all(Array.from({ length: 5 }, () => get('/down/y').then((r) => r.status)));
    expect(statuses).toEqual(Array(5).fill(503));
    await gw.gateway.audit.flush();
    // Refused before the allow: no completion record, so no attempt, for any of them.
    expect(completions().filter((record) => record['route'] === 'down')).toHaveLength(1);
  });
});
