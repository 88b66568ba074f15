// Issue #22 items 1-3: what an attacker with write access to the audit directory (but not the audit key) can no longer
// hide. Checkpoints stripped (all, or those after an edit) are `unsigned` under --key, with the cadence taken from the
// operator's configuration or flags; a chain deleted whole is `chain_missing` against its exported checkpoints; a closed
// segment cut short is `truncated` at its own last intact line. The honest chains (clean stop, rotation by size and age
// on a stepped clock) still pass. Real logs, real keys, the built CLI.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditVerify } from '../support/cli.js';
import { loadOrCreateAuditKey, readAuditPublicKey } from '../../src/audit/audit-key.js';
import { readRecords } from '../../src/audit/read.js';
import { NO_EXPORT_NOTE } from '../../src/audit/verify.js';
import { loadKeyEncryptionKey } from '../../src/lib/key-encryption.js';
import { auditEvent, testAuditLog, writeSignedLog } from '../support/harness.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const root = mkdtempSync(join(tmpdir(), 'gatehouse-unsigned-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const data = join(root, 'data');
const original = join(root, 'original', 'audit');
const exported = join(root, 'original', 'exported');
const keyPem = join(root, 'audit-key.pem');
/** The operator's configuration: a checkpoint every 10 records or 60 s, as the log below was run. */
const config = join(root, 'gatehouse.yaml');
let signer: ReturnType<typeof loadOrCreateAuditKey>;

const verify = auditVerify;

/** The chain every case starts from: 45 decisions, one refusal (req-23) among them, the cadence of the config below. */
const writeLog = (
  dir: string,
  exportDir: string,
  instance: string,
  count: number,
  extra: Omit<Parameters<typeof writeSignedLog>[1], 'signer' | 'exportDir' | 'count' | 'instance'> = {},
): Promise<void> =>
  writeSignedLog(dir, {
    signer,
    exportDir,
    count,
    instance,
    segmentMaxBytes: 6000,
    event: (i) => auditEvent(i, { decision: i === 23 ? 'deny' : 'allow' }),
    ...extra,
  });

beforeAll(async () => {
  mkdirSync(data, { recursive: true });
  mkdirSync(exported, { recursive: true });
  signer = loadOrCreateAuditKey(join(data, 'audit-key.json'), loadKeyEncryptionKey({ file: join(data, 'master.key') }));
  writeFileSync(keyPem, readAuditPublicKey(join(data, 'audit-key.json')).pem);
  writeFileSync(
    config,
    `tls: { cert: a.pem, key: b.pem }\nroutes:\n  - { id: pub, match: { path_prefix: /p, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n` +
      `data_dir: ${data}\naudit: { checkpoint_every_records: 10, checkpoint_interval_s: 60 }\n`,
  );
  await writeLog(original, exported, 'test', 45);
});

function copy(name: string): { dir: string; exportDir: string } {
  const dir = join(root, name, 'audit');
  const exportDir = join(root, name, 'exported');
  cpSync(original, dir, { recursive: true });
  cpSync(exported, exportDir, { recursive: true });
  return { dir, exportDir };
}

const segmentsOf = (dir: string, instance = 'test'): string[] =>
  readdirSync(dir)
    .filter((n) => n.startsWith(`${instance}.`) && n.endsWith('.jsonl'))
    .sort((a, b) => Number(a.split('.')[1]) - Number(b.split('.')[1]));
const linesOf = (file: string): string[] => readFileSync(file, 'utf8').split('\n').slice(0, -1);

/**
 * Rewrites the chain as someone who knows the format but not the audit key: from the first line `drop` says to remove,
 * the records are renumbered and re-hashed (segments renamed after their new first seq), and `edit` changes any line.
 */
function rewrite(dir: string, drop: (record: { seq: number; type: string }) => boolean, edit: (line: string) => string = (line) => line): void {
  let prev = '0'.repeat(64);
  let seq = 0;
  for (const name of segmentsOf(dir)) {
    const out: string[] = [];
    for (const line of linesOf(join(dir, name))) {
      const record = JSON.parse(edit(line)) as Record<string, unknown> & { seq: number; type: string };
      if (drop(record)) continue;
      delete record['hash'];
      record['seq'] = ++seq;
      record['prev'] = prev;
      const unsealed = JSON.stringify(record);
      prev = createHash('sha256').update(unsealed).digest('hex');
      out.push(`${unsealed.slice(0, -1)},"hash":"${prev}"}`);
    }
    rmSync(join(dir, name), { force: true });
    const first = (JSON.parse(out[0]!) as { seq: number }).seq;
    writeFileSync(join(dir, `test.${String(first).padStart(12, '0')}.jsonl`), `${out.join('\n')}\n`);
  }
}

/** The edit an attacker wants: the one refusal in the log becomes an allow. */
const denyToAllow = (line: string): string => (line.includes('"request_id":"req-23"') ? line.replace('"decision":"deny"', '"decision":"allow"') : line);

describe('issue #22 item 1: checkpoints cannot be stripped under --key', () => {
  it('the chain as written passes with the cadence from the configuration, and its last record is a checkpoint (no unsigned tail)', () => {
    const { status, report } = verify(original, '--key', keyPem, '-c', config);
    expect(status).toBe(0);
    expect(report.chains[0]?.unsigned).toEqual({ records: 0, fromSeq: null, toSeq: null });
    const text = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', original, '--key', keyPem, '-c', config], { encoding: 'utf8' });
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/unsigned tail: none/);
  });

  it('an edit (deny → allow) with every checkpoint removed and the chain re-hashed: unsigned at the first record, exit 1', () => {
    const { dir } = copy('all-stripped');
    expect(segmentsOf(dir).length).toBeGreaterThan(1);
    rewrite(dir, (r) => r.type === 'checkpoint', denyToAllow);
    expect(readRecords(dir).some((r) => r.type === 'checkpoint')).toBe(false);
    expect(readRecords(dir).find((r) => r['request_id'] === 'req-23')?.['decision']).toBe('allow');
    // The forged chain is intact as a chain, and its signatures (there are none) all verify: only the cadence gives it away.
    expect(verify(dir).status).toBe(0);
    for (const cadence of [
      ['-c', config],
      ['--checkpoint-every', '10', '--checkpoint-interval', '60'],
    ]) {
      const { status, report } = verify(dir, '--key', keyPem, ...cadence);
      expect(status).toBe(1);
      expect(report.chains[0]?.break).toMatchObject({ kind: 'unsigned', segment: segmentsOf(dir)[0], line: 1, seq: 1 });
    }
  });

  it('an edit with only the checkpoints after it removed: unsigned, naming the first record after the last checkpoint kept', () => {
    const { dir } = copy('tail-stripped');
    const records = readRecords(dir);
    const edited = records.find((r) => r['request_id'] === 'req-23')!;
    const lastKept = records.filter((r) => r.type === 'checkpoint' && r.seq < edited.seq).at(-1)!;
    rewrite(dir, (r) => r.type === 'checkpoint' && r.seq > edited.seq, denyToAllow);
    const { status, report } = verify(dir, '--key', keyPem, '-c', config);
    expect(status).toBe(1);
    expect(report.chains[0]?.break).toMatchObject({ kind: 'unsigned', seq: lastKept.seq + 1 });
    expect(report.chains[0]?.break?.detail).toMatch(/covered by no signed checkpoint/);
  });

  it('reports the unsigned tail of a chain whose gateway has not stopped (text and JSON), which is not a break', async () => {
    const dir = join(root, 'running', 'audit');
    const log = testAuditLog(dir, { checkpoints: { signer, everyRecords: 10, intervalMs: 60_000 } });
    for (let i = 1; i <= 14; i++) log.append(auditEvent(i));
    await log.flush();
    try {
      const { status, report } = verify(dir, '--key', keyPem, '-c', config);
      expect(status).toBe(0);
      const lastCheckpoint = readRecords(dir)
        .filter((r) => r.type === 'checkpoint')
        .at(-1)!.seq;
      const last = readRecords(dir).at(-1)!.seq;
      expect(report.chains[0]?.unsigned).toEqual({ records: last - lastCheckpoint, fromSeq: lastCheckpoint + 1, toSeq: last });
      const text = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', dir], { encoding: 'utf8' });
      expect(text.stdout).toContain(`unsigned tail: ${last - lastCheckpoint} record(s), seq ${lastCheckpoint + 1}..${last}, after the last checkpoint`);
    } finally {
      await log.close();
    }
  });

  it('honest rotation by size and by age, on a clock stepped 2 s a record for the last 60, passes the cadence (the log signs busy stretches itself)', async () => {
    const dir = join(root, 'stepped', 'audit');
    const exportDir = join(root, 'stepped', 'exported');
    let now = Date.parse('2026-12-01T00:00:00Z');
    let records = 0;
    // A busy first minute (100 ms apart: segments fill up), then a slow stretch (2 s apart: segments age out).
    const step = (): void => {
      records++;
      now += records <= 60 ? 100 : 2000;
    };
    await writeLog(dir, exportDir, 'test', 120, { now: () => now, step, segmentMaxAgeMs: 20_000, segmentMaxBytes: 12_000, everyRecords: 1000 });
    const starts = readRecords(dir)
      .filter((r) => r.type === 'segment_start')
      .map((r) => r['reason']);
    expect(starts).toContain('age');
    expect(starts).toContain('size');
    const { status, report, stderr } = verify(dir, '--key', keyPem, '--checkpoints', exportDir, '--checkpoint-every', '1000', '--checkpoint-interval', '60');
    expect(report?.chains[0]?.break, stderr).toBeUndefined();
    expect(status).toBe(0);
  });
});

describe('issue #22 item 2: a whole chain deleted', () => {
  it('with exported checkpoints: chain_missing, exit 1 — also when it was the only chain', async () => {
    const { dir, exportDir } = copy('chain-deleted');
    await writeLog(dir, exportDir, 'other', 12);
    for (const name of segmentsOf(dir)) rmSync(join(dir, name));
    const { status, report } = verify(dir, '--key', keyPem, '--checkpoints', exportDir);
    expect(status).toBe(1);
    const missing = report.chains.find((c) => c.instance === 'test');
    expect(missing?.break).toMatchObject({ kind: 'chain_missing', segment: join(exportDir, 'test.checkpoints.jsonl') });
    expect(report.chains.find((c) => c.instance === 'other')?.break).toBeUndefined();

    for (const name of segmentsOf(dir, 'other')) rmSync(join(dir, name));
    const alone = verify(dir, '--checkpoints', exportDir);
    expect(alone.status).toBe(1);
    expect(alone.report.chains.map((c) => c.break?.kind)).toEqual(['chain_missing', 'chain_missing']);
  });

  it('without exported checkpoints: says once that whole-chain deletion and tail truncation cannot be detected', async () => {
    const { dir, exportDir } = copy('chain-deleted-unexported');
    await writeLog(dir, exportDir, 'other', 12);
    for (const name of segmentsOf(dir)) rmSync(join(dir, name));
    const { status, report } = verify(dir, '--key', keyPem);
    expect(status).toBe(0);
    expect(report.notes).toEqual([NO_EXPORT_NOTE]);
    const text = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', dir], { encoding: 'utf8' });
    expect(text.stdout.split(NO_EXPORT_NOTE).length - 1).toBe(1);
  });
});

describe('issue #22 item 3: a closed segment cut short', () => {
  for (const [label, cut] of [
    ['by its last record', (lines: string[]): string => `${lines.slice(0, -1).join('\n')}\n`],
    ['by some bytes', (lines: string[]): string => `${lines.join('\n')}\n`.slice(0, -40)],
  ] as const) {
    it(`${label}: truncated, naming that segment, its last intact line and seq`, () => {
      const { dir } = copy(`cut-${label.replace(/\W+/g, '-')}`);
      const segment = segmentsOf(dir)[1]!;
      const lines = linesOf(join(dir, segment));
      writeFileSync(join(dir, segment), cut(lines));
      const lastIntact = JSON.parse(lines.at(-2)!) as { seq: number };
      const { status, report } = verify(dir);
      expect(status).toBe(1);
      expect(report.chains[0]?.break).toMatchObject({ kind: 'truncated', segment, line: lines.length - 1, seq: lastIntact.seq });
    });
  }

  it('the newest segment cut at a record boundary: truncated against the exported checkpoints at its last intact line, not line 0', () => {
    const { dir, exportDir } = copy('cut-newest');
    const segment = segmentsOf(dir).at(-1)!;
    const lines = linesOf(join(dir, segment));
    writeFileSync(join(dir, segment), `${lines.slice(0, -2).join('\n')}\n`);
    const { status, report } = verify(dir, '--checkpoints', exportDir);
    expect(status).toBe(1);
    expect(report.chains[0]?.break).toMatchObject({ kind: 'truncated', segment, line: lines.length - 2 });
  });
});
