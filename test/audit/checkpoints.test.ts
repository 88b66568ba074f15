// LOG-05: signed checkpoints. The chain alone cannot show a tail cut at a record boundary, a deleted newest segment or
// a chain rewritten from some record on; checkpoints signed with the audit key, and exported elsewhere as they are
// written, do. Real logs, real keys, tampered as an attacker with write access to the audit directory would.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditVerify } from '../support/cli.js';
import { AuditKeyError, loadOrCreateAuditKey, readAuditPublicKey } from '../../src/audit/audit-key.js';
import { readRecords } from '../../src/audit/read.js';
import { loadKeyEncryptionKey } from '../../src/lib/key-encryption.js';
import { writeSignedLog } from '../support/harness.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const root = mkdtempSync(join(tmpdir(), 'gatehouse-checkpoints-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const data = join(root, 'data');
const original = join(data, 'audit');
const exported = join(root, 'exported');
const keyPem = join(root, 'audit-key.pem');

beforeAll(async () => {
  mkdirSync(data, { recursive: true });
  mkdirSync(exported);
  const kek = loadKeyEncryptionKey({ file: join(data, 'master.key') });
  await writeSignedLog(original, { signer: loadOrCreateAuditKey(join(data, 'audit-key.json'), kek), exportDir: exported, count: 45, segmentMaxBytes: 6000 });
  writeFileSync(keyPem, readAuditPublicKey(join(data, 'audit-key.json')).pem);
});

const verify = auditVerify;

function copy(name: string): { dir: string; exportDir: string } {
  const dir = join(root, name, 'audit');
  const exportDir = join(root, name, 'exported');
  cpSync(original, dir, { recursive: true });
  cpSync(exported, exportDir, { recursive: true });
  return { dir, exportDir };
}

const segmentsOf = (dir: string): string[] =>
  readdirSync(dir)
    .filter((n) => n.endsWith('.jsonl'))
    .sort();
const linesOf = (file: string): string[] => readFileSync(file, 'utf8').split('\n').slice(0, -1);

/** Re-chains lines from `from` on, as someone who knows the format but not the audit key would after an edit. */
function rechain(lines: string[], from: number, prev: string): string[] {
  let head = prev;
  return lines.map((line, i) => {
    if (i < from) {
      head = (JSON.parse(line) as { hash: string }).hash;
      return line;
    }
    const record = JSON.parse(line) as Record<string, unknown>;
    delete record['hash'];
    record['prev'] = head;
    // A checkpoint is made to name the new head too; only its signature cannot be redone.
    if (record['type'] === 'checkpoint') record['head'] = head;
    const unsealed = JSON.stringify(record);
    head = createHash('sha256').update(unsealed).digest('hex');
    return `${unsealed.slice(0, -1)},"hash":"${head}"}`;
  });
}

describe('checkpoints as written', () => {
  it('a checkpoint every N records and at close, each in the chain and exported once written, all verifying with the key', () => {
    const checkpoints = readRecords(original).filter((r) => r.type === 'checkpoint');
    // 45 decisions plus the chain's own records: one every 10 records, and the close covers the rest.
    expect(checkpoints.length).toBeGreaterThanOrEqual(5);
    for (const checkpoint of checkpoints) expect(checkpoint['covers_seq']).toBe(checkpoint.seq - 1);
    const exportedLines = linesOf(join(exported, 'test.checkpoints.jsonl'));
    expect(exportedLines.map((line) => (JSON.parse(line) as { seq: number }).seq)).toEqual(checkpoints.map((c) => c.seq));
    const { status, report } = verify(original, '--key', keyPem, '--checkpoints', exported);
    expect(status).toBe(0);
    expect(report.chains[0]?.notes.join(' ')).toMatch(/every signature verified with key .*all in the chain/);
  });

  it('the audit key file holds the private key only sealed; another master key does not open it', () => {
    const text = readFileSync(join(data, 'audit-key.json'), 'utf8');
    expect(text).not.toMatch(/PRIVATE KEY/);
    const other = loadKeyEncryptionKey({ file: join(root, 'other-master.key') });
    expect(() => loadOrCreateAuditKey(join(data, 'audit-key.json'), other)).toThrow(AuditKeyError);
  });

  it('gatehouse audit key prints the public key that verify takes', () => {
    const result = spawnSync(process.execPath, [CLI, 'audit', 'key', '-d', data], { encoding: 'utf8' });
    expect(result.status).toBe(0);
    expect(result.stdout).toBe(readFileSync(keyPem, 'utf8'));
    expect(result.stdout).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    const missing = spawnSync(process.execPath, [CLI, 'audit', 'key', '-d', join(root, 'no-data')], { encoding: 'utf8' });
    expect(missing.status).toBe(66);
  });
});

describe('LOG-05 what only checkpoints detect', () => {
  it('a tail cut off at a record boundary: invisible to the chain alone, truncated against the exported checkpoints', () => {
    const { dir, exportDir } = copy('cut-tail');
    const last = join(dir, segmentsOf(dir).at(-1)!);
    writeFileSync(last, `${linesOf(last).slice(0, -3).join('\n')}\n`);
    expect(verify(dir, '--key', keyPem).status).toBe(0);
    const { status, report } = verify(dir, '--key', keyPem, '--checkpoints', exportDir);
    expect(status).toBe(1);
    expect(report.chains[0]?.break).toMatchObject({ kind: 'truncated' });
  });

  it('the newest segment deleted: truncated', () => {
    const { dir, exportDir } = copy('newest-deleted');
    unlinkSync(join(dir, segmentsOf(dir).at(-1)!));
    const { status, report } = verify(dir, '--checkpoints', exportDir);
    expect(status).toBe(1);
    expect(report.chains[0]?.break).toMatchObject({ kind: 'truncated' });
  });

  it('a chain re-chained after an edit, without the audit key: the next checkpoint signature no longer verifies', () => {
    const { dir } = copy('rechained');
    const first = join(dir, segmentsOf(dir)[0]!);
    const lines = linesOf(first);
    lines[4] = lines[4]!.replace('"decision":"allow"', '"decision":"deny"');
    writeFileSync(first, `${rechain(lines, 4, (JSON.parse(lines[3]!) as { hash: string }).hash).join('\n')}\n`);
    // The later segments link to the old head: re-chain them too, as a careful forger would.
    let prev = (JSON.parse(linesOf(first).at(-1)!) as { hash: string }).hash;
    for (const name of segmentsOf(dir).slice(1)) {
      const rewritten = rechain(linesOf(join(dir, name)), 0, prev);
      writeFileSync(join(dir, name), `${rewritten.join('\n')}\n`);
      prev = (JSON.parse(rewritten.at(-1)!) as { hash: string }).hash;
    }
    const { status, report } = verify(dir, '--key', keyPem);
    expect(status).toBe(1);
    expect(report.chains[0]?.break).toMatchObject({ kind: 'bad_signature' });
  });

  it('a chain re-chained with its checkpoints removed: modified against the exported checkpoints', () => {
    const { dir, exportDir } = copy('stripped');
    let prev = '0'.repeat(64);
    let seq = 0;
    for (const name of segmentsOf(dir)) {
      const kept = linesOf(join(dir, name))
        .filter((line) => !line.includes('"type":"checkpoint"'))
        .map((line) => {
          const record = JSON.parse(line) as Record<string, unknown>;
          record['seq'] = ++seq;
          return JSON.stringify(record);
        });
      const rewritten = rechain(kept, 0, prev);
      writeFileSync(join(dir, name), `${rewritten.join('\n')}\n`);
      prev = (JSON.parse(rewritten.at(-1)!) as { hash: string }).hash;
    }
    const { status, report } = verify(dir, '--key', keyPem, '--checkpoints', exportDir);
    expect(status).toBe(1);
    expect(['modified', 'truncated']).toContain(report.chains[0]?.break?.kind);
  });

  it('checkpoints signed by another key: bad signature', async () => {
    const otherData = join(root, 'other');
    mkdirSync(otherData);
    const otherKey = loadOrCreateAuditKey(join(otherData, 'audit-key.json'), loadKeyEncryptionKey({ file: join(otherData, 'master.key') }));
    mkdirSync(join(otherData, 'exported'));
    await writeSignedLog(join(otherData, 'audit'), { signer: otherKey, exportDir: join(otherData, 'exported'), count: 12 });
    const { status, report } = verify(join(otherData, 'audit'), '--key', keyPem);
    expect(status).toBe(1);
    expect(report.chains[0]?.break).toMatchObject({ kind: 'bad_signature', detail: 'the checkpoint was signed by another key' });
  });
});

describe('configuration', () => {
  it('refuses a checkpoint export directory inside the audit directory', () => {
    const file = join(root, 'inside.yaml');
    writeFileSync(
      file,
      `tls: { cert: a.pem, key: b.pem }\nroutes:\n  - { id: pub, match: { path_prefix: /p, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n` +
        `data_dir: ${data}\naudit: { checkpoint_export_dir: audit/checkpoints }\n`,
    );
    const result = spawnSync(process.execPath, [CLI, 'audit', 'verify', '-c', file], { encoding: 'utf8' });
    expect(result.status).toBe(78);
    expect(result.stderr).toMatch(/audit.checkpoint_export_dir: must be outside audit.dir/);
  });
});
