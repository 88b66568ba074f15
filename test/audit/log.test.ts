// The audit log writer: the chain it writes (order, hashes, links), segments (start, restart, rotation, read-only when
// closed), group commit and its failure policies, and a segment moved behind its back. Real files in a temp directory.
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { open, segmentName } from '../../src/audit/chain.js';
import { AuditUnavailableError } from '../../src/audit/event.js';
import { readRecords } from '../../src/audit/read.js';
import { verifyDirectory } from '../../src/audit/verify.js';
import { auditEvent as event, testAuditLog } from '../support/harness.js';

const root = mkdtempSync(join(tmpdir(), 'gatehouse-auditlog-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const segments = (dir: string): string[] =>
  readdirSync(dir)
    .filter((name) => name.endsWith('.jsonl'))
    .sort();
const decisions = (dir: string) => readRecords(dir).filter((r) => r.type === 'decision');

describe('the audit chain as written', () => {
  it('writes every record once, in seq order, across batches, each line verifying and linked to the one before', async () => {
    const dir = join(root, 'order');
    const log = testAuditLog(dir);
    for (let i = 1; i <= 500; i++) {
      log.append(event(i));
      if (i % 97 === 0) await new Promise((r) => setImmediate(r));
    }
    await log.flush();
    expect(statSync(join(dir, segments(dir)[0]!)).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    await log.close();
    const lines = readFileSync(join(dir, segments(dir)[0]!), 'utf8')
      .trim()
      .split('\n');
    expect(lines).toHaveLength(501);
    let prev = '0'.repeat(64);
    for (const [i, line] of lines.entries()) {
      const opened = open(line);
      if (!opened.ok) throw new Error(`line ${i + 1} does not verify`);
      expect(opened.record.seq).toBe(i + 1);
      expect(opened.record.prev).toBe(prev);
      prev = opened.hash;
    }
    expect(JSON.parse(lines[0]!)).toMatchObject({ seq: 1, type: 'segment_start', reason: 'start', instance: 'test', previous_segment: null });
    expect(decisions(dir).map((r) => r['request_id'])).toEqual(Array.from({ length: 500 }, (_, i) => `req-${i + 1}`));
    // Closed on a clean stop: read-only.
    expect(statSync(join(dir, segments(dir)[0]!)).mode & 0o777).toBe(0o400);
    expect(verifyDirectory(dir)).toMatchObject({ ok: true, chains: [{ instance: 'test', records: 501, lastSeq: 501, boots: 1 }] });
  });

  it('a record returned by append carries the hash that the next record links to', async () => {
    const log = testAuditLog(join(root, 'returned'));
    const first = log.append(event(1));
    const second = log.append(event(2));
    expect(second.prev).toBe(first.hash);
    expect(second.seq).toBe(first.seq + 1);
    await log.close();
  });

  it('escapes hostile strings and cuts the raw target to 512 characters (LOG-03)', async () => {
    const dir = join(root, 'escape');
    const log = testAuditLog(dir);
    const hostile = '/a"\n{"seq":999,"hash":"x"}\u2028\\';
    log.append(event(1, { raw_target: hostile + 'x'.repeat(2000), reason: '\r\ninjected' }));
    await log.close();
    const lines = readFileSync(join(dir, segments(dir)[0]!), 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    expect(lines).toHaveLength(2);
    const [record] = decisions(dir);
    expect(record?.seq).toBe(2);
    expect(String(record?.['raw_target']).startsWith(hostile)).toBe(true);
    expect(record?.['raw_target']).toHaveLength(512);
    expect(record?.['reason']).toBe('\r\ninjected');
    expect(verifyDirectory(dir).ok).toBe(true);
  });

  it('uses UTC millisecond timestamps from the injected clock', async () => {
    const log = testAuditLog(join(root, 'clock'), { now: () => Date.UTC(2026, 10, 26, 5, 54, 28, 7) });
    expect(log.append(event(1)).ts).toBe('2026-11-26T05:54:28.007Z');
    await log.close();
  });
});

describe('segments', () => {
  it('a restart continues the chain in a new segment that names the previous one and its boot (LOG-06)', async () => {
    const dir = join(root, 'restart');
    const first = testAuditLog(dir);
    first.append(event(1));
    const bootA = first.bootId;
    await first.close();
    const second = testAuditLog(dir);
    second.append(event(2));
    await second.close();
    const names = segments(dir);
    expect(names).toEqual([segmentName('test', 1), segmentName('test', 3)]);
    const records = readRecords(dir);
    expect(records.map((r) => [r.seq, r.type])).toEqual([
      [1, 'segment_start'],
      [2, 'decision'],
      [3, 'segment_start'],
      [4, 'decision'],
    ]);
    expect(records[2]).toMatchObject({ reason: 'restart', previous_segment: names[0], previous_boot_id: bootA, torn_bytes: 0 });
    expect(records[3]?.boot_id).not.toBe(bootA);
    expect(verifyDirectory(dir)).toMatchObject({ ok: true, chains: [{ records: 4, boots: 2, segments: 2 }] });
  });

  it('after a crash that tore the last write, the restart links to the last complete record and says how much was torn', async () => {
    const dir = join(root, 'torn');
    const first = testAuditLog(dir);
    first.append(event(1));
    await first.close();
    const segment = join(dir, segments(dir)[0]!);
    // What kill -9 during a write leaves: part of a line. (The file is read-only after the clean close; root writes anyway.)
    appendFileSync(segment, '{"seq":3,"ts":"2026');
    const second = testAuditLog(dir);
    second.append(event(2));
    await second.close();
    const records = readRecords(dir);
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    expect(records[2]).toMatchObject({ type: 'segment_start', reason: 'restart', torn_bytes: 19 });
    const report = verifyDirectory(dir);
    expect(report.ok).toBe(true);
    expect(report.chains[0]?.notes.join(' ')).toMatch(/19 bytes after the last complete record/);
  });

  it('a newest segment without a complete record (a crash right after it was created) is set aside, not in the way', async () => {
    const dir = join(root, 'empty-newest');
    const first = testAuditLog(dir);
    first.append(event(1));
    await first.close();
    // What a crash leaves when a segment was created but nothing reached it, or only part of a line.
    writeFileSync(join(dir, segmentName('test', 3)), '');
    const second = testAuditLog(dir);
    await second.close();
    writeFileSync(join(dir, segmentName('test', 4)), '{"seq":4,"ts"');
    const third = testAuditLog(dir);
    third.append(event(9));
    await third.close();
    expect(segments(dir)).toEqual([segmentName('test', 1), segmentName('test', 3), segmentName('test', 4)]);
    expect(readdirSync(dir)).toContain(`${segmentName('test', 4)}.torn`);
    expect(
      readRecords(dir)
        .filter((r) => r.type === 'segment_start')
        .map((r) => [r.seq, r['reason'], r['torn_bytes']]),
    ).toEqual([
      [1, 'start', 0],
      [3, 'restart', 0],
      [4, 'restart', 13],
    ]);
    expect(verifyDirectory(dir).ok).toBe(true);
  });

  it('a segment lost while a rotation waits in the same turn: the records stay in seq order and the log stays writable', async () => {
    const dir = join(root, 'lost-rotating');
    const log = testAuditLog(dir, { segmentMaxBytes: 4096 });
    log.append(event(1));
    await log.flush();
    renameSync(join(dir, segments(dir)[0]!), join(root, 'lost-rotating-away.jsonl'));
    // One turn: enough records to begin a new segment before the first batch is written.
    for (let i = 2; i <= 20; i++) log.append(event(i));
    await log.flush();
    log.append(event(21));
    await log.close();
    expect(log.ready).toBe(true);
    const records = readRecords(dir);
    const seqs = records.map((r) => r.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(records.filter((r) => r.type === 'decision').map((r) => r['request_id'])).toEqual(Array.from({ length: 20 }, (_, i) => `req-${i + 2}`));
    expect(records.filter((r) => r.type === 'segment_lost')).toHaveLength(1);
    // Put back, the chain is whole.
    renameSync(join(root, 'lost-rotating-away.jsonl'), join(dir, segmentName('test', 1)));
    expect(verifyDirectory(dir)).toMatchObject({ ok: true });
  });

  it('rotates by size: each new segment begins with a record naming the previous one; closed segments are read-only (LOG-10)', async () => {
    const dir = join(root, 'size');
    const log = testAuditLog(dir, { segmentMaxBytes: 4096 });
    for (let i = 1; i <= 60; i++) {
      log.append(event(i));
      if (i % 7 === 0) await log.flush();
    }
    await log.flush();
    const names = segments(dir);
    expect(names.length).toBeGreaterThan(3);
    for (const name of names.slice(0, -1)) expect(statSync(join(dir, name)).mode & 0o777, name).toBe(0o400);
    expect(statSync(join(dir, names.at(-1)!)).mode & 0o777).toBe(0o600);
    await log.close();
    const starts = readRecords(dir).filter((r) => r.type === 'segment_start');
    expect(starts.slice(1).map((r) => r['reason'])).toEqual(Array(names.length - 1).fill('size'));
    expect(starts.slice(1).map((r) => r['previous_segment'])).toEqual(names.slice(0, -1));
    expect(decisions(dir)).toHaveLength(60);
    expect(verifyDirectory(dir)).toMatchObject({ ok: true, chains: [{ segments: names.length }] });
  });

  it('rotates by age', async () => {
    const dir = join(root, 'age');
    let now = Date.UTC(2026, 0, 1);
    const log = testAuditLog(dir, { segmentMaxAgeMs: 60_000, now: () => now });
    log.append(event(1));
    now += 61_000;
    log.append(event(2));
    await log.close();
    expect(segments(dir)).toHaveLength(2);
    expect(
      readRecords(dir)
        .filter((r) => r.type === 'segment_start')
        .map((r) => r['reason']),
    ).toEqual(['start', 'age']);
    expect(verifyDirectory(dir).ok).toBe(true);
  });

  it('a segment moved away behind the gateway is noticed at the next batch: a fresh segment records the loss, and verify reports it missing', async () => {
    const dir = join(root, 'moved');
    const log = testAuditLog(dir);
    log.append(event(1));
    await log.flush();
    const [original] = segments(dir);
    renameSync(join(dir, original!), join(root, 'moved-away.jsonl'));
    log.append(event(2));
    await log.flush();
    log.append(event(3));
    await log.close();
    const names = segments(dir);
    expect(names).toHaveLength(1);
    expect(names[0]).not.toBe(original);
    const records = readRecords(dir);
    expect(records.map((r) => r.type)).toEqual(['decision', 'segment_lost', 'decision']);
    expect(records[1]).toMatchObject({ segment: original, last_seq_written: 2 });
    const report = verifyDirectory(dir);
    expect(report.ok).toBe(false);
    expect(report.chains[0]?.break).toMatchObject({ kind: 'segment_missing', segment: names[0], line: 1, seq: 3 });
    // Put back, the chain is whole again: nothing was lost but the file's place.
    renameSync(join(root, 'moved-away.jsonl'), join(dir, original!));
    const whole = verifyDirectory(dir);
    expect(whole.ok).toBe(true);
    expect(whole.chains[0]?.notes.join(' ')).toMatch(/moved or deleted while the gateway wrote it/);
  });

  it('refuses a second writer on the same chain, and takes over the lock of a process that is gone', async () => {
    const dir = join(root, 'locked');
    const log = testAuditLog(dir);
    expect(() => testAuditLog(dir)).toThrow(/is being written by process \d+; give each gateway its own audit.instance/);
    const other = testAuditLog(dir, { instance: 'other' });
    await other.close();
    await log.close();
    // A lock left by a crashed process (a pid that does not exist) is taken over; so is one naming this process's own
    // pid that no log of this process holds (a container restarted as pid 1 finds pid 1 in the stale lock).
    for (const stale of ['2147483646', String(process.pid)]) {
      writeFileSync(join(dir, 'test.lock'), `${stale}\n`);
      const next = testAuditLog(dir);
      await next.close();
    }
    expect(readdirSync(dir).filter((name) => name.includes('.lock'))).toEqual([]);
    expect(verifyDirectory(dir)).toMatchObject({ ok: true });
    expect(
      verifyDirectory(dir)
        .chains.map((c) => c.instance)
        .sort(),
    ).toEqual(['other', 'test']);
  });
});

describe('group commit and failure (LOG-07)', () => {
  it('flush resolves only once the batch holding the last record is in the file', async () => {
    const dir = join(root, 'commit');
    const log = testAuditLog(dir);
    log.append(event(1));
    const appended = log.append(event(2));
    await log.flush();
    // Read straight after: the record is there, not still queued.
    expect(readFileSync(log.currentSegment, 'utf8')).toContain(`"request_id":"req-2"`);
    expect(appended.seq).toBe(3);
    await log.close();
  });

  it('fail-closed: refuses appends past the buffer bound', async () => {
    const log = testAuditLog(join(root, 'bounded'), { maxBufferedBytes: 65_536 });
    let refused = 0;
    for (let i = 0; i < 500; i++) {
      try {
        log.append(event(i, { reason: 'x'.repeat(400) }));
      } catch (error) {
        expect(error).toBeInstanceOf(AuditUnavailableError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(300);
    await log.close();
  });

  it('fail-closed: a directory that is gone makes flush reject, appends throw and readiness fail, until it is back', async () => {
    const dir = join(root, 'gone');
    const log = testAuditLog(dir);
    log.append(event(1));
    await log.flush();
    rmSync(dir, { recursive: true });
    log.append(event(2));
    await expect(log.flush()).rejects.toBeInstanceOf(AuditUnavailableError);
    expect(() => log.append(event(3))).toThrow(AuditUnavailableError);
    expect(log.ready).toBe(false);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { mode: 0o700 });
    for (let i = 0; i < 50 && !log.ready; i++) await new Promise((r) => setTimeout(r, 20));
    expect(log.ready).toBe(true);
    log.append(event(4));
    await log.close();
    const records = readRecords(dir);
    expect(records[0]).toMatchObject({ type: 'segment_start', reason: 'recovered', lost_from_seq: 3, lost_to_seq: 3, refused_or_dropped: 2 });
    expect(records[1]).toMatchObject({ type: 'decision', request_id: 'req-4' });
  });

  it('fail-open: the same failure drops records (counted) and flush resolves, so requests go on', async () => {
    const dir = join(root, 'open');
    const log = testAuditLog(dir, { onFailure: 'fail-open' });
    log.append(event(1));
    await log.flush();
    rmSync(dir, { recursive: true });
    log.append(event(2));
    await expect(log.flush()).resolves.toBeUndefined();
    expect(log.append(event(3)).seq).toBe(0);
    expect(log.ready).toBe(true);
    await log.close();
  });
});
