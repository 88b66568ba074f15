// RL-03: a quota's concurrency slots are freed however a request ends — the client gone mid-request, the upstream failing,
// the upstream timing out — so the in-flight count returns to 0 and the principal is admitted again. A leaked slot would
// lock its principal out for good.
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../support/eventually.js';
import { startGateway, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';
import { route } from '../support/routes.js';

describe('RL-03 concurrency slots are never leaked', () => {
  let gw: TestGateway;
  let app: TestUpstream;
  const slots = (): number => gw.gateway.quotas.get('pair')?.inFlight() ?? Number.NaN;

  beforeAll(async () => {
    app = await startUpstream();
    app.respond = (req, res) => {
      if (req.url?.startsWith('/held/hang')) return; // never answers: the gateway's upstream timeout ends it
      if (req.url?.startsWith('/held/slow')) {
        setTimeout(() => res.end('late'), 300);
        return;
      }
      if (req.url?.startsWith('/held/reset')) {
        req.socket.destroy(); // an upstream failure mid-request
        return;
      }
      res.end('ok');
    };
    gw = await startGateway((base) => ({
      ...base,
      upstreams: { app: { url: app.url, headers_timeout_ms: 300 } },
      quotas: { pair: { concurrent: 2 } },
      routes: [...base.routes, route('held', '/held', { to: 'app', quota: 'pair' })],
    }));
  });
  afterAll(async () => {
    await gw.stop();
    await app.close();
  });

  const get = async (path: string, signal?: AbortSignal): Promise<number> => {
    const res = await request(`${gw.origin}${path}`, { dispatcher: gw.agent(), ...(signal !== undefined ? { signal } : {}) });
    await res.body.dump();
    return res.statusCode;
  };

  it('two at once are admitted, a third is refused 429 while they run, and the count is back to 0 after', async () => {
    const running = [get('/held/slow/1'), get('/held/slow/2')];
    await eventually(() => slots() === 2, 2000, 'two slots held');
    expect(await get('/held/ok')).toBe(429);
    expect(await Promise.all(running)).toEqual([200, 200]);
    await eventually(() => slots() === 0, 2000, 'slots freed after the answers');
  });

  it('clients that leave mid-request free their slots', async () => {
    for (let round = 0; round < 5; round++) {
      const controllers = [new AbortController(), new AbortController()];
      const gone = controllers.map((c, i) => get(`/held/hang/${round}-${i}`, c.signal).catch(() => 'aborted'));
      await eventually(() => slots() === 2, 2000, 'two slots held');
      for (const c of controllers) c.abort();
      expect(await Promise.all(gone)).toEqual(['aborted', 'aborted']);
      await eventually(() => slots() === 0, 2000, 'slots freed after the clients left');
    }
    expect(await get('/held/ok')).toBe(200);
  });

  it('an upstream that fails (connection reset) or times out frees the slot; the answer is 502 or 504', async () => {
    expect(await Promise.all([get('/held/reset/a'), get('/held/reset/b')])).toEqual([502, 502]);
    await eventually(() => slots() === 0, 2000, 'slots freed after the upstream failures');
    expect(await Promise.all([get('/held/hang/t1'), get('/held/hang/t2')])).toEqual([504, 504]);
    await eventually(() => slots() === 0, 2000, 'slots freed after the upstream timeouts');
    expect(await Promise.all([get('/held/ok/1'), get('/held/ok/2')])).toEqual([200, 200]);
  });
});
