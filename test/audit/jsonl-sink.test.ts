import { mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/event.js';
import { AuditUnavailableError } from '../../src/audit/event.js';
import { JsonLinesAuditSink } from '../../src/audit/jsonl-sink.js';

const root = mkdtempSync(join(tmpdir(), 'gatehouse-audit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const event = (i: number, extra: Partial<AuditEvent> = {}): AuditEvent => ({
  request_id: `req-${i}`,
  method: 'GET',
  path: '/x',
  raw_target: '/x',
  route: 'r',
  protocol: 'h1',
  client_ip: '127.0.0.1',
  peer_ip: '127.0.0.1',
  decision: 'allow',
  stage: 'handler',
  code: null,
  reason: null,
  status: null,
  subject: null,
  auth_method: null,
  cert_thumbprint: null,
  client_id: null,
  jti: null,
  scopes: null,
  ...extra,
});

describe('JSON-lines audit sink', () => {
  it('writes every record once, in seq order, across batches, to a 0600 file', async () => {
    const dir = join(root, 'order');
    const sink = new JsonLinesAuditSink({ dir });
    for (let i = 1; i <= 500; i++) {
      sink.append(event(i));
      if (i % 97 === 0) await new Promise((r) => setImmediate(r));
    }
    await sink.flush();
    await sink.close();
    const lines = readFileSync(sink.file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { seq: number; request_id: string; boot_id: string });
    expect(lines.map((l) => l.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    expect(lines.map((l) => l.request_id)).toEqual(Array.from({ length: 500 }, (_, i) => `req-${i + 1}`));
    expect(new Set(lines.map((l) => l.boot_id)).size).toBe(1);
    expect(statSync(sink.file).mode & 0o777).toBe(0o600);
  });

  it('escapes hostile strings and cuts the raw target to 512 characters', async () => {
    const dir = join(root, 'escape');
    const sink = new JsonLinesAuditSink({ dir });
    const hostile = '/a"\n{"seq":999}\u2028\\';
    sink.append(event(1, { raw_target: hostile + 'x'.repeat(2000), reason: '\r\ninjected' }));
    await sink.close();
    const lines = readFileSync(sink.file, 'utf8').split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    const record = JSON.parse(lines[0]!) as { raw_target: string; reason: string; seq: number };
    expect(record.seq).toBe(1);
    expect(record.raw_target.startsWith(hostile)).toBe(true);
    expect(record.raw_target).toHaveLength(512);
    expect(record.reason).toBe('\r\ninjected');
  });

  it('uses UTC millisecond timestamps from the injected clock', async () => {
    const sink = new JsonLinesAuditSink({ dir: join(root, 'clock'), now: () => Date.UTC(2026, 10, 26, 5, 54, 28, 7) });
    expect(sink.append(event(1)).ts).toBe('2026-11-26T05:54:28.007Z');
    await sink.close();
  });

  it('appends to an existing file after a restart with a new boot id', async () => {
    const dir = join(root, 'restart');
    const first = new JsonLinesAuditSink({ dir });
    first.append(event(1));
    await first.close();
    const second = new JsonLinesAuditSink({ dir });
    second.append(event(2));
    await second.close();
    const lines = readFileSync(second.file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { boot_id: string });
    expect(lines).toHaveLength(2);
    expect(lines[0]!.boot_id).not.toBe(lines[1]!.boot_id);
  });

  it('refuses appends once the queue passes its bound (LOG-07)', () => {
    const sink = new JsonLinesAuditSink({ dir: join(root, 'bounded'), maxBufferedBytes: 2048 });
    let refused = 0;
    for (let i = 0; i < 100; i++) {
      try {
        sink.append(event(i));
      } catch (error) {
        expect(error).toBeInstanceOf(AuditUnavailableError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(50);
    return sink.close();
  });

  it('reports a failing disk: flush rejects and later appends throw (LOG-07)', async () => {
    const dir = join(root, 'full');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    symlinkSync('/dev/full', join(dir, 'audit.jsonl'));
    const sink = new JsonLinesAuditSink({ dir });
    sink.append(event(1));
    await expect(sink.flush()).rejects.toBeInstanceOf(AuditUnavailableError);
    expect(() => sink.append(event(2))).toThrow(AuditUnavailableError);
    await sink.close();
  });
});
