// Part C retention: old segments leave only through a signed segments_pruned record, so a log pruned by policy verifies
// (against its key and its exported checkpoints) and a segment deleted by hand still does not.
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditVerify } from '../support/cli.js';
import { loadOrCreateAuditKey, readAuditPublicKey } from '../../src/audit/audit-key.js';
import { directoryExport } from '../../src/audit/export.js';
import { readRecords } from '../../src/audit/read.js';
import { loadKeyEncryptionKey } from '../../src/lib/key-encryption.js';
import { auditEvent, testAuditLog } from '../support/harness.js';

const root = mkdtempSync(join(tmpdir(), 'gatehouse-retention-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const keyFile = join(root, 'audit-key.json');
const keyPem = join(root, 'audit-key.pem');
let signer: ReturnType<typeof loadOrCreateAuditKey>;

beforeAll(() => {
  signer = loadOrCreateAuditKey(keyFile, loadKeyEncryptionKey({ file: join(root, 'master.key') }));
  writeFileSync(keyPem, readAuditPublicKey(keyFile).pem);
});

const verify = (dir: string, ...args: string[]): ReturnType<typeof auditVerify> => auditVerify(dir, '--key', keyPem, ...args);

const segmentsOf = (dir: string): string[] =>
  readdirSync(dir)
    .filter((n) => n.endsWith('.jsonl'))
    .sort();

/** Appends decisions `from`..`to`, each written before the next. */
async function write(log: ReturnType<typeof testAuditLog>, from: number, to: number): Promise<void> {
  for (let i = from; i <= to; i++) {
    log.append(auditEvent(i));
    await log.flush();
  }
}

describe('retention', () => {
  it('by size: the oldest segments go after a signed record says which; verify and the exported checkpoints still pass', async () => {
    const dir = join(root, 'size');
    const exported = join(root, 'size-exported');
    mkdirSync(exported);
    const log = testAuditLog(dir, {
      segmentMaxBytes: 4096,
      retention: { maxBytes: 16_384, checkMs: 3_600_000 },
      checkpoints: { signer, everyRecords: 10, intervalMs: 60_000, exportTo: directoryExport(exported, 'test', pino({ level: 'silent' })) },
    });
    await write(log, 1, 150);
    const before = segmentsOf(dir);
    await log.pruneIfDue();
    await log.close();
    const after = segmentsOf(dir);
    expect(after.length).toBeLessThan(before.length);
    // Only the oldest went, and what is left is within the limit (the segment being written is never removed).
    expect(before.slice(before.length - after.length)).toEqual(after.filter((name) => before.includes(name)));
    const pruned = readRecords(dir).filter((r) => r.type === 'segments_pruned');
    expect(pruned).toHaveLength(1);
    expect(pruned[0]).toMatchObject({
      reason: 'size',
      segments: before.slice(0, before.length - after.length).join(' '),
      key_id: signer.keyId,
      signature: expect.any(String),
    });
    const { status, report } = verify(dir, '--checkpoints', exported);
    expect(status, JSON.stringify(report)).toBe(0);
    expect(report.chains[0]?.notes.join('\n')).toMatch(/were removed by the retention policy/);
    expect(report.chains[0]?.notes.join('\n')).toMatch(/in segments the retention policy removed/);

    // A segment deleted by hand after that is still a missing segment.
    const copy = join(root, 'size-deleted');
    cpSync(dir, copy, { recursive: true });
    unlinkSync(join(copy, segmentsOf(copy)[0] as string));
    const deleted = verify(copy);
    expect(deleted.status).toBe(1);
    expect(deleted.report.chains[0]?.break?.kind).toBe('segment_missing');
  });

  it('by age: segments whose records are all older than the limit go; the newer ones and the current one stay', async () => {
    const dir = join(root, 'age');
    let now = Date.parse('2026-11-01T00:00:00Z');
    const log = testAuditLog(dir, {
      now: () => now,
      segmentMaxBytes: 4096,
      retention: { maxAgeMs: 7 * 86_400_000, checkMs: 3_600_000 },
      checkpoints: { signer, everyRecords: 1000, intervalMs: 3_600_000 },
    });
    await write(log, 1, 40);
    now += 10 * 86_400_000;
    await write(log, 41, 60);
    const before = segmentsOf(dir);
    await log.pruneIfDue();
    await log.close();
    const kept = readRecords(dir).filter((r) => r.type === 'decision');
    // Records of day 1 may remain only in the segment where day 11 began; every later record is kept.
    expect(kept.at(-1)?.['request_id']).toBe('req-60');
    expect(kept.filter((r) => r.ts >= '2026-11-11').length).toBe(20);
    expect(segmentsOf(dir).length).toBeLessThan(before.length);
    expect(readRecords(dir).find((r) => r.type === 'segments_pruned')).toMatchObject({ reason: 'age' });
    expect(verify(dir).status).toBe(0);
  });

  it('a prune record signed by another key is a bad signature', async () => {
    const dir = join(root, 'other-key');
    const other = loadOrCreateAuditKey(join(root, 'other-key.json'), loadKeyEncryptionKey({ file: join(root, 'other-master.key') }));
    const log = testAuditLog(dir, {
      segmentMaxBytes: 4096,
      retention: { maxBytes: 8192, checkMs: 3_600_000 },
      checkpoints: { signer: other, everyRecords: 1_000_000, intervalMs: 3_600_000 },
    });
    await write(log, 1, 60);
    await log.pruneIfDue();
    await log.close();
    const { status, report } = verify(dir);
    expect(status).toBe(1);
    expect(report.chains[0]?.break?.kind).toBe('bad_signature');
  });
});
