// The access log: one line per request once its answer ended, on the gateway's log destination and in the same format as
// its other lines; never a query string (it may carry a token), never a probe.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccessLog, type AccessEntry } from '../../src/server/access-log.js';
import { h2Request, h2Session, rawHttp1, startGateway, type TestGateway } from '../support/harness.js';

interface Line {
  readonly [key: string]: unknown;
}

let gw: TestGateway;
beforeAll(async () => {
  gw = await startGateway();
});
afterAll(() => gw.stop());

/** The access-log line of the request whose answer carried `id`, waited for (it is written when the answer's stream closes). */
async function accessLine(id: string): Promise<Line> {
  for (let i = 0; i < 100; i++) {
    const line = gw.logs.map((text) => JSON.parse(text) as Line).find((entry) => entry['msg'] === 'request' && entry['request_id'] === id);
    if (line !== undefined) return line;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no access-log line for ${id}`);
}

const requestId = (text: string): string => /x-request-id: ([0-9a-f-]+)/i.exec(text)?.[1] ?? 'none';

describe('access log', () => {
  it('an answered request: one line with its method, path (no query), route, status, completion, client and protocol', async () => {
    const reply = await rawHttp1(gw.port, gw.certs, 'GET /public/a?access_token=secret-in-query HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    expect(reply.status).toBe(200);
    const id = requestId(reply.text);
    const line = await accessLine(id);
    expect(line).toMatchObject({
      level: 30,
      request_id: id,
      method: 'GET',
      path: '/public/a',
      route: 'public',
      status: 200,
      completed: true,
      client_ip: '127.0.0.1',
      protocol: 'h1',
      msg: 'request',
    });
    expect(typeof line['time']).toBe('number');
    expect(line['duration_ms']).toBeGreaterThanOrEqual(0);
    expect(JSON.stringify(line)).not.toContain('secret-in-query');
    expect(gw.logs.filter((text) => text.includes(id) && text.includes('"msg":"request"'))).toHaveLength(1);
  });

  it('an edge refusal is logged with what the edge knew; an unknown route has none', async () => {
    const reply = await rawHttp1(gw.port, gw.certs, 'GET /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    expect(reply.status).toBe(404);
    expect(await accessLine(requestId(reply.text))).toMatchObject({ path: '/nowhere', route: null, status: 404, completed: true });
  });

  it('HTTP/2 requests are logged as h2; probes are not logged', async () => {
    const session = await h2Session(gw.port, gw.certs);
    try {
      const answer = await h2Request(session, { ':method': 'GET', ':path': '/public/h2', ':authority': 'localhost' });
      expect(answer.status).toBe(200);
      expect(await accessLine(String(answer.headers['x-request-id']))).toMatchObject({ path: '/public/h2', protocol: 'h2', status: 200 });
      const probe = await h2Request(session, { ':method': 'GET', ':path': '/healthz', ':authority': 'localhost' });
      expect(probe.status).toBe(200);
      const probeId = String(probe.headers['x-request-id']);
      await accessLine(String((await h2Request(session, { ':method': 'GET', ':path': '/public/after', ':authority': 'localhost' })).headers['x-request-id']));
      expect(gw.logs.some((text) => text.includes(probeId))).toBe(false);
    } finally {
      session.close();
    }
  });
});

describe('access-log line format', () => {
  const entry: AccessEntry = {
    requestId: 'r-1',
    method: 'GET',
    path: '/a"b\\c\u0001é',
    route: undefined,
    status: 502,
    completed: false,
    durationMs: 1.23456,
    clientIp: '::1',
    protocol: 'h2',
  };

  function capture(make: (sink: Writable) => pino.Logger): string[] {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(chunk.toString('utf8'));
        callback();
      },
    });
    new AccessLog(make(sink)).write(entry);
    return lines;
  }

  it('is the line pino itself writes for the same fields (bindings, escaping, null for unknown), and valid JSON', () => {
    const [direct] = capture((sink) => pino({ base: { service: 'gatehouse', worker: 2 } }, sink));
    const viaPino: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        viaPino.push(chunk.toString('utf8'));
        callback();
      },
    });
    pino({ base: { service: 'gatehouse', worker: 2 } }, sink).info(
      {
        request_id: 'r-1',
        method: 'GET',
        path: entry.path,
        route: null,
        status: 502,
        completed: false,
        duration_ms: 1.23,
        client_ip: '::1',
        protocol: 'h2',
      },
      'request',
    );
    const withoutTime = (line: string | undefined): string => (line ?? '').replace(/"time":\d+/, '"time":0');
    expect(withoutTime(direct)).toBe(withoutTime(viaPino[0]));
    expect(JSON.parse(direct ?? '')).toMatchObject({ path: entry.path, route: null, service: 'gatehouse', worker: 2 });
  });

  it('writes nothing when the level is above info', () => {
    expect(capture((sink) => pino({ level: 'warn' }, sink))).toEqual([]);
  });
});
