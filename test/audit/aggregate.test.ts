// LOG-08: a flood of refusals is aggregated with exact counts, so it cannot fill the disk and still leaves every refusal
// counted in the chain. The log itself, then a real gateway flooded over TLS.
import { route } from '../support/routes.js';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/event.js';
import { readRecords } from '../../src/audit/read.js';
import { auditEvent, startGateway, testAuditLog } from '../support/harness.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const root = mkdtempSync(join(tmpdir(), 'gatehouse-aggregate-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const refusal = (i: number, extra: Partial<AuditEvent> = {}): AuditEvent =>
  auditEvent(i, { decision: 'deny', stage: 'authn', code: 'unauthenticated', reason: 'no credential', status: 401, ...extra });

describe('the log aggregates repeated refusals of one source', () => {
  it('writes the first `after` of each source, counts the rest exactly, and never aggregates an allow', async () => {
    const dir = join(root, 'one');
    const log = testAuditLog(dir, { aggregateRefusals: { after: 5, windowMs: 60_000, maxSources: 100 } });
    for (let i = 1; i <= 12; i++) log.append(refusal(i, { client_ip: '192.0.2.1' }));
    for (let i = 13; i <= 15; i++) log.append(refusal(i, { client_ip: '192.0.2.2' }));
    // Another code from the same address is another source.
    for (let i = 16; i <= 22; i++) log.append(refusal(i, { client_ip: '192.0.2.1', code: 'forbidden', status: 403 }));
    for (let i = 23; i <= 40; i++) log.append(auditEvent(i, { client_ip: '192.0.2.1' }));
    const suppressed = log.append(refusal(41, { client_ip: '192.0.2.1' }));
    expect(suppressed.seq).toBe(0);
    await log.close();

    const records = readRecords(dir);
    const individual = records.filter((r) => r.type === 'decision' && r['decision'] === 'deny');
    const aggregated = records.filter((r) => r.type === 'refusals_aggregated');
    expect(individual.map((r) => r['request_id'])).toEqual([1, 2, 3, 4, 5, 13, 14, 15, 16, 17, 18, 19, 20].map((i) => `req-${i}`));
    expect(records.filter((r) => r['decision'] === 'allow')).toHaveLength(18);
    expect(aggregated.map((r) => [r['client_ip'], r['code'], r['count'], r['recorded_individually'], r['last_request_id']])).toEqual([
      ['192.0.2.1', 'unauthenticated', 8, 5, 'req-41'],
      ['192.0.2.1', 'forbidden', 2, 5, 'req-22'],
    ]);
    expect(aggregated[0]).toMatchObject({ route: 'r', stage: 'authn', status: 401, first_ts: expect.any(String), last_ts: expect.any(String) });
    // Exact: every refusal is either its own record or counted once.
    const counted = individual.length + aggregated.reduce((sum, r) => sum + Number(r['count']), 0);
    expect(counted).toBe(23);
  });

  it('past max_sources in a window, newcomers share one bucket per code and route; a new window starts afresh', async () => {
    const dir = join(root, 'many');
    const log = testAuditLog(dir, { aggregateRefusals: { after: 2, windowMs: 50, maxSources: 2 } });
    let i = 0;
    for (const ip of ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4']) for (let n = 0; n < 3; n++) log.append(refusal(++i, { client_ip: ip }));
    // The window ends: the aggregates are written, and each source may be recorded individually again.
    await new Promise((resolve) => setTimeout(resolve, 200));
    log.append(refusal(++i, { client_ip: '198.51.100.4' }));
    await log.close();
    const records = readRecords(dir);
    const aggregated = records.filter((r) => r.type === 'refusals_aggregated');
    expect(aggregated.map((r) => [r['client_ip'], r['count'], r['recorded_individually']])).toEqual([
      ['198.51.100.1', 1, 2],
      ['198.51.100.2', 1, 2],
      ['*', 6, 0],
    ]);
    const individual = records.filter((r) => r.type === 'decision').map((r) => r['request_id']);
    expect(individual).toEqual(['req-1', 'req-2', 'req-4', 'req-5', `req-${i}`]);
  });
});

describe('LOG-08 against a real gateway', () => {
  it('a flood of unauthenticated requests: a bounded number of records, exact counts, a chain that verifies', async () => {
    const dataDir = join(root, 'gateway');
    const gw = await startGateway(
      (base) => ({
        ...base,
        routes: [...base.routes, route('api', '/api', { authn: ['mtls'] })],
        limits: { pre_auth_per_ip: { points: 100_000, duration_s: 60 } },
        // The default threshold (20 per source and window); a window long enough to hold the whole flood.
        audit: { aggregate_refusals: { window_s: 60 } },
        log: { level: 'warn', access: false },
      }),
      { dataDir },
    );
    const agent = gw.agent();
    const sent = 300;
    try {
      for (let batch = 0; batch < sent / 50; batch++) {
        await Promise.all(
          Array.from({ length: 50 }, async () => {
            const res = await request(`${gw.origin}/api/x`, { dispatcher: agent });
            await res.body.dump();
            expect(res.statusCode).toBe(401);
          }),
        );
      }
    } finally {
      await gw.stop().catch(() => undefined);
    }
    const dir = join(dataDir, 'audit');
    const records = readRecords(dir).filter((r) => r['route'] === 'api');
    const individual = records.filter((r) => r.type === 'decision');
    const aggregated = records.filter((r) => r.type === 'refusals_aggregated');
    expect(individual).toHaveLength(20);
    expect(aggregated).toHaveLength(1);
    expect(aggregated[0]).toMatchObject({ client_ip: '127.0.0.1', code: 'unauthenticated', status: 401, count: sent - 20, recorded_individually: 20 });
    const verified = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', dir], { encoding: 'utf8', timeout: 20_000 });
    expect(verified.status, verified.stdout).toBe(0);
  });
});
