// RL: a slow upstream must not make the gateway hoard requests. Past connections + max_queued requests in flight, the
// next one is refused at once with 503 + Retry-After; slots come back as requests finish (or their clients leave).
import { route } from '../support/routes.js';
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { problemCode, startGateway, type TestGateway } from '../support/harness.js';

describe('upstream queue bound', () => {
  const held: ServerResponse[] = [];
  let seen = 0;
  const upstream = createServer((_req, res) => {
    seen++;
    held.push(res);
  });
  let gw: TestGateway;

  beforeAll(async () => {
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const port = (upstream.address() as AddressInfo).port;
    gw = await startGateway((base) => ({
      ...base,
      upstreams: { slow: { url: `http://127.0.0.1:${port}`, connections: 1, max_queued: 2, headers_timeout_ms: 20_000 } },
      routes: [...base.routes, route('slow', '/slow', { to: 'slow' })],
    }));
  });
  afterAll(async () => {
    for (const res of held) res.destroy();
    await gw.stop();
    upstream.closeAllConnections();
    upstream.close();
  });

  const get = async (path: string): Promise<{ status: number; body: string; retryAfter: string | undefined; requestId: string }> => {
    const res = await request(`${gw.origin}${path}`, { dispatcher: gw.agent() });
    const body = await res.body.text();
    const retryAfter = res.headers['retry-after'];
    return {
      status: res.statusCode,
      body,
      retryAfter: typeof retryAfter === 'string' ? retryAfter : undefined,
      requestId: String(res.headers['x-request-id']),
    };
  };

  it('refuses the request past connections + max_queued with 503 at once, then serves again once slots free up', async () => {
    // One request on the single connection and two waiting for it: the bound exactly.
    const admitted = [get('/slow/1'), get('/slow/2'), get('/slow/3')];
    const deadline = Date.now() + 5000;
    while (seen < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(seen).toBe(1);
    // Give the two queued requests time to reach the pool (they are admitted by the pipeline first).
    await new Promise((resolve) => setTimeout(resolve, 200));

    const started = Date.now();
    const refused = await get('/slow/4');
    expect(refused.status).toBe(503);
    expect(problemCode(refused.body)).toBe('service_unavailable');
    expect(refused.retryAfter).toBe('1');
    expect(Date.now() - started).toBeLessThan(2000);
    expect(seen).toBe(1); // the refused request never reached the upstream
    // Issue #22 item 4: on record as what was sent — a deny with the 503, never an allow (capacity is checked before it).
    const records = (await gw.auditRecords()).filter((r) => r.request_id === refused.requestId);
    expect(records.map((r) => [r.decision, r.stage, r.code, r.status])).toEqual([['deny', 'handler', 'service_unavailable', 503]]);

    // Answer the held requests one by one: each frees the connection for the next queued one.
    for (let answered = 0; answered < 3; answered++) {
      const until = Date.now() + 5000;
      while (held.length <= answered && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
      held[answered]?.end('ok');
    }
    expect((await Promise.all(admitted)).map((r) => r.status)).toEqual([200, 200, 200]);

    // Every slot came back: a new request is forwarded again.
    const next = get('/slow/5');
    const until = Date.now() + 5000;
    while (held.length < 4 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
    held[3]?.end('ok');
    expect((await next).status).toBe(200);
  });

  it('requests whose clients left while queued keep their slots until undici drops them (the queue cannot grow behind them)', async () => {
    held.length = 0;
    seen = 0;
    const running = get('/slow/run');
    const deadline = Date.now() + 5000;
    while (seen < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(seen).toBe(1);

    // Two clients queue behind the busy connection, then hang up.
    const leavers = [new AbortController(), new AbortController()];
    const left = leavers.map((controller, i) =>
      request(`${gw.origin}/slow/leaver-${i}`, { dispatcher: gw.agent(), signal: controller.signal }).then(
        () => 'answered',
        () => 'aborted',
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const controller of leavers) controller.abort();
    expect(await Promise.all(left)).toEqual(['aborted', 'aborted']);
    await new Promise((resolve) => setTimeout(resolve, 100));

    // Their entries are still in the pool's queue: the bound still counts them.
    expect((await get('/slow/while-queued')).status).toBe(503);

    // Once the connection frees, undici drops them without sending them, and every slot is back.
    held[0]?.end('ok');
    expect((await running).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(seen).toBe(1);
    const next = get('/slow/after');
    const until = Date.now() + 5000;
    while (held.length < 2 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
    held[1]?.end('ok');
    expect((await next).status).toBe(200);
  });
});
