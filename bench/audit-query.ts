// Benchmark of `gatehouse audit query` on a big log: one million decision records over 30 days (a segment per day,
// 200 clients), then the time to answer "client X on day D" — the query an investigation starts with — and, for scale,
// the same client over the whole log.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { AuditLog } from '../src/audit/log.js';
import { queryRecords } from '../src/audit/query.js';
import { seal } from '../src/audit/chain.js';

const RECORDS = Number(process.env['BENCH_AUDIT_RECORDS'] ?? 1_000_000);
const DAYS = 30;
const CLIENTS = 200;
const START = Date.UTC(2026, 10, 1);

/**
 * The chain's own price per record: serializing a decision record, then sealing it (SHA-256 over its bytes and the
 * hash member). `gatewayCpuUs`: the audited gateway's CPU per request in this run, to put the seal in proportion.
 */
function chainCost(gatewayCpuUs: number): string {
  const record = {
    seq: 1,
    ts: new Date().toISOString(),
    type: 'decision',
    instance: 'bench',
    boot_id: '6f1c3f0e-9c55-4a61-9a53-2b7f3c1f0d3a',
    request_id: 'Qk3nXw1x5Zr8T2bLmVc9pA',
    method: 'GET',
    path: '/bench/x',
    raw_target: '/bench/x',
    route: 'bench',
    protocol: 'h1',
    client_ip: '127.0.0.1',
    peer_ip: '127.0.0.1',
    decision: 'allow',
    stage: 'handler',
    code: null,
    reason: null,
    status: null,
    subject: 'spiffe://gatehouse.local/dev-client',
    auth_method: 'mtls',
    cert_thumbprint: 'n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg',
    client_id: null,
    jti: null,
    scopes: null,
    prev: '0'.repeat(64),
  };
  const rounds = 300_000;
  let sink = 0;
  let started = performance.now();
  for (let i = 0; i < rounds; i++) {
    record.seq = i;
    sink += JSON.stringify(record).length;
  }
  const serialize = ((performance.now() - started) * 1000) / rounds;
  started = performance.now();
  for (let i = 0; i < rounds; i++) {
    record.seq = i;
    sink += seal(JSON.stringify(record)).line.length;
  }
  const sealUs = ((performance.now() - started) * 1000) / rounds - serialize;
  if (sink === 0) throw new Error('unreachable');
  return `audit chain, per record: serialize ${serialize.toFixed(2)} µs, seal (SHA-256 + hash member) ${sealUs.toFixed(2)} µs = ${((100 * sealUs) / gatewayCpuUs).toFixed(1)} % of the gateway's ${Math.round(gatewayCpuUs)} µs CPU per request\n`;
}

export async function benchAuditQuery(gatewayCpuUs: number): Promise<void> {
  process.stdout.write(`\n${chainCost(gatewayCpuUs)}`);
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-audit-'));
  try {
    let now = START;
    const log = new AuditLog({
      dir,
      instance: 'bench',
      fsync: 'off',
      fsyncIntervalMs: 1000,
      onFailure: 'fail-closed',
      segmentMaxBytes: 1024 ** 3,
      segmentMaxAgeMs: 86_400_000,
      maxBufferedBytes: 256 * 1024 * 1024,
      log: pino({ level: 'silent' }),
      now: () => now,
    });
    const step = (DAYS * 86_400_000) / RECORDS;
    const written = performance.now();
    for (let i = 0; i < RECORDS; i++) {
      now = START + Math.floor(i * step);
      log.append({
        request_id: `r-${i}`,
        trace_id: null,
        method: 'GET',
        path: '/api/items',
        raw_target: '/api/items?page=2',
        route: 'api',
        protocol: 'h2',
        client_ip: '192.0.2.10',
        peer_ip: '192.0.2.10',
        decision: i % 20 === 0 ? 'deny' : 'allow',
        stage: i % 20 === 0 ? 'authz' : 'handler',
        code: i % 20 === 0 ? 'insufficient_scope' : null,
        reason: null,
        status: i % 20 === 0 ? 403 : null,
        subject: `client-${i % CLIENTS}`,
        auth_method: 'bearer',
        cert_thumbprint: null,
        client_id: `client-${i % CLIENTS}`,
        jti: `jti-${i}`,
        scopes: ['api:read'],
      });
      if (i % 10_000 === 9_999) await log.flush();
    }
    await log.close();
    const writeS = (performance.now() - written) / 1000;

    const time = (filter: Parameters<typeof queryRecords>[1]): { ms: number; matched: number } => {
      const started = performance.now();
      let matched = 0;
      for (const _ of queryRecords(dir, filter)) matched++;
      return { ms: performance.now() - started, matched };
    };
    const day = START + 17 * 86_400_000;
    const oneDay = time({ client: 'client-42', since: day, until: day + 86_400_000 });
    const whole = time({ client: 'client-42' });
    process.stdout.write(
      `audit log: ${RECORDS} records, ${DAYS} daily segments, written and chained in ${writeS.toFixed(1)} s (${Math.round(RECORDS / writeS)} records/s)\n` +
        `audit query, one client on one day: ${oneDay.ms.toFixed(0)} ms (${oneDay.matched} records)\n` +
        `audit query, one client over all ${DAYS} days: ${whole.ms.toFixed(0)} ms (${whole.matched} records)\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
