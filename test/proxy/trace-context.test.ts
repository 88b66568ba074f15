// W3C Trace Context (issue #12 item 6): a traceparent is taken only from a trusted proxy, and made by the gateway
// otherwise; the upstream receives the trace with the gateway's hop as its parent, and the decision record carries the
// trace id, so one request can be followed from the edge through the audit chain to the upstream's logs.
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';
import { join } from 'node:path';
import { runCli } from '../support/cli.js';
import { route } from '../support/routes.js';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const SENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SENT_PARENT = '00f067aa0ba902b7';
const SENT = `00-${SENT_TRACE}-${SENT_PARENT}-01`;

let app: TestUpstream;
beforeAll(async () => {
  app = await startUpstream();
});
afterAll(() => app.close());

async function send(gw: TestGateway, path: string, headers: Record<string, string>): Promise<{ status: number; requestId: string }> {
  const res = await request(`${gw.origin}${path}`, { dispatcher: gw.agent(), headers });
  await res.body.dump();
  return { status: res.statusCode, requestId: String(res.headers['x-request-id']) };
}

/** The traceparent the upstream received last, split into trace id, parent id and flags. */
function received(): { traceId: string; parentId: string; flags: string; state: string | undefined } {
  const headers = app.requests.at(-1)?.headers ?? {};
  const match = TRACEPARENT.exec(String(headers['traceparent']));
  if (match === null) throw new Error(`no valid traceparent upstream: ${String(headers['traceparent'])}`);
  return { traceId: match[1] ?? '', parentId: match[2] ?? '', flags: match[3] ?? '', state: headers['tracestate'] as string | undefined };
}

async function traceOnRecord(gw: TestGateway, requestId: string): Promise<unknown> {
  return (await gw.auditRecords()).find((r) => r.request_id === requestId)?.trace_id;
}

describe('a client that is not a trusted proxy', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway((base) => ({ ...base, upstreams: { app: { url: app.url } }, routes: [...base.routes, route('app', '/app', { to: 'app' })] }));
  });
  afterAll(() => gw.stop());

  it('cannot choose the trace: its traceparent and tracestate are replaced by a trace the gateway made, on record', async () => {
    const sent = await send(gw, '/app/x', { traceparent: SENT, tracestate: 'vendor=secret' });
    expect(sent.status).toBe(200);
    const upstream = received();
    expect(upstream.traceId).not.toBe(SENT_TRACE);
    expect(upstream.parentId).not.toBe(SENT_PARENT);
    expect(upstream.flags).toBe('00');
    expect(upstream.state).toBeUndefined();
    expect(await traceOnRecord(gw, sent.requestId)).toBe(upstream.traceId);
    expect(app.requests.at(-1)?.rawHeaders.filter((name) => name.toLowerCase() === 'traceparent')).toHaveLength(1);
  });

  it('gets a trace of its own without one, a new trace per request, and refusals at the edge are on record with theirs', async () => {
    await send(gw, '/app/a', {});
    const first = received().traceId;
    await send(gw, '/app/b', {});
    expect(received().traceId).not.toBe(first);
    const missing = await send(gw, '/nowhere', {});
    expect(missing.status).toBe(404);
    expect(await traceOnRecord(gw, missing.requestId)).toMatch(/^[0-9a-f]{32}$/);
  });
});

describe('a trusted proxy', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway((base) => ({
      ...base,
      server: { ...base.server, trusted_proxies: ['127.0.0.1'] },
      upstreams: { app: { url: app.url } },
      routes: [...base.routes, route('app', '/app', { to: 'app' })],
    }));
  });
  afterAll(() => gw.stop());

  it("continues the proxy's trace: same trace id and flags, the gateway's hop as the parent, tracestate passed on, the trace id on record", async () => {
    const sent = await send(gw, '/app/x', { traceparent: SENT, tracestate: 'vendor=abc' });
    const upstream = received();
    expect(upstream.traceId).toBe(SENT_TRACE);
    expect(upstream.parentId).not.toBe(SENT_PARENT);
    expect(upstream.parentId).not.toBe('0000000000000000');
    expect(upstream.flags).toBe('01');
    expect(upstream.state).toBe('vendor=abc');
    expect(await traceOnRecord(gw, sent.requestId)).toBe(SENT_TRACE);
    // The operator's way in: every request of the trace, by its id.
    const second = await send(gw, '/app/y', { traceparent: SENT });
    await gw.gateway.audit.flush();
    const found = runCli(['audit', 'query', '--dir', join(gw.dataDir, 'audit'), '--trace-id', SENT_TRACE, '--json']);
    expect(found.status, found.stderr).toBe(0);
    const records = found.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { type: string; request_id: string });
    // Each allow comes with the completion record of what was sent.
    expect(records.filter((r) => r.type === 'decision').map((r) => r.request_id)).toEqual([sent.requestId, second.requestId]);
  });

  it('a malformed traceparent starts a new trace: another version, an all-zero id, upper-case hex, a wrong length', async () => {
    for (const bad of [
      `ff-${SENT_TRACE}-${SENT_PARENT}-01`,
      `00-${'0'.repeat(32)}-${SENT_PARENT}-01`,
      `00-${SENT_TRACE}-${'0'.repeat(16)}-01`,
      `00-${SENT_TRACE.toUpperCase()}-${SENT_PARENT}-01`,
      `00-${SENT_TRACE}-${SENT_PARENT}-1`,
      `00-${SENT_TRACE}-${SENT_PARENT}-01-extra`,
    ]) {
      const sent = await send(gw, '/app/x', { traceparent: bad, tracestate: 'vendor=abc' });
      const upstream = received();
      expect(upstream.traceId, bad).not.toBe(SENT_TRACE);
      expect(upstream.state, bad).toBeUndefined();
      expect(await traceOnRecord(gw, sent.requestId), bad).toBe(upstream.traceId);
    }
  });
});
