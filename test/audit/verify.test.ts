// LOG-04, LOG-06: `gatehouse audit verify` finds each kind of tampering at the right place. A real chain is written by
// the audit log, copied, tampered with as an attacker with file access would, and verified by the built CLI.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditVerify } from '../support/cli.js';
import { auditEvent as event, testAuditLog } from '../support/harness.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const root = mkdtempSync(join(tmpdir(), 'gatehouse-verify-'));
const original = join(root, 'original');
afterAll(() => rmSync(root, { recursive: true, force: true }));

beforeAll(async () => {
  // About 13 records per segment: several segments, so tampering can be placed inside one and across them.
  const log = testAuditLog(original, { segmentMaxBytes: 8192 });
  for (let i = 1; i <= 60; i++) {
    log.append(event(i, { decision: i % 5 === 0 ? 'deny' : 'allow' }));
    await log.flush();
  }
  await log.close();
});

const verify = auditVerify;

/** A tampered copy of the original chain: `change` gets the segment names and edits the files. */
function tampered(name: string, change: (dir: string, segments: string[]) => void): string {
  const dir = join(root, name);
  cpSync(original, dir, { recursive: true });
  change(
    dir,
    readdirSync(dir)
      .filter((n) => n.endsWith('.jsonl'))
      .sort(),
  );
  return dir;
}

function editLines(dir: string, segment: string, edit: (lines: string[]) => string[]): void {
  const file = join(dir, segment);
  const lines = readFileSync(file, 'utf8').split('\n').slice(0, -1);
  // Closed segments are 0400: an attacker with the file's owner (or root) rewrites it anyway.
  writeFileSync(file, `${edit(lines).join('\n')}\n`);
}

/** Re-seals a line after its content was changed, as someone who knows the format (but not any key) would. */
function reseal(line: string): string {
  const unsealed = line.replace(/,"hash":"[0-9a-f]{64}"\}$/, '}');
  const hash = createHash('sha256').update(unsealed).digest('hex');
  return `${unsealed.slice(0, -1)},"hash":"${hash}"}`;
}

describe('gatehouse audit verify', () => {
  it('passes the chain as written (exit 0), with its records and segments', () => {
    const { status, report } = verify(original);
    expect(status).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.chains[0]?.records).toBeGreaterThan(60);
    const human = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', original], { encoding: 'utf8' });
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(/^chain test: \d+ segment\(s\), \d+ record\(s\) up to seq \d+, 1 boot\(s\): intact/);
  });

  const cases: Array<[string, (dir: string, segments: string[]) => void, { kind: string; segment: number; line: number }]> = [
    [
      'a field changed in place',
      (dir, s) => editLines(dir, s[1]!, (l) => l.map((x, i) => (i === 4 ? x.replace('"method":"GET"', '"method":"PUT"') : x))),
      { kind: 'modified', segment: 1, line: 5 },
    ],
    [
      'a record changed and re-hashed (its successor no longer links to it)',
      (dir, s) => editLines(dir, s[1]!, (l) => l.map((x, i) => (i === 4 ? reseal(x.replace('"client_ip":"127.0.0.1"', '"client_ip":"10.9.9.9"')) : x))),
      { kind: 'modified', segment: 1, line: 6 },
    ],
    ['a record deleted', (dir, s) => editLines(dir, s[1]!, (l) => l.filter((_, i) => i !== 4)), { kind: 'deleted', segment: 1, line: 5 }],
    [
      'a record inserted (a copy of another)',
      (dir, s) => editLines(dir, s[1]!, (l) => [...l.slice(0, 5), l[3]!, ...l.slice(5)]),
      { kind: 'inserted', segment: 1, line: 6 },
    ],
    [
      'two records swapped',
      (dir, s) => editLines(dir, s[1]!, (l) => [...l.slice(0, 4), l[5]!, l[4]!, ...l.slice(6)]),
      { kind: 'reordered', segment: 1, line: 5 },
    ],
    ['a middle segment deleted', (dir, s) => unlinkSync(join(dir, s[1]!)), { kind: 'segment_missing', segment: 2, line: 1 }],
    ['the first segment deleted', (dir, s) => unlinkSync(join(dir, s[0]!)), { kind: 'segment_missing', segment: 1, line: 1 }],
  ];
  for (const [label, change, expected] of cases) {
    it(`LOG-04 detects ${label}: kind ${expected.kind}, at its segment and line, exit 1`, () => {
      let names: string[] = [];
      const dir = tampered(label.replace(/\W+/g, '-'), (d, s) => {
        names = s;
        change(d, s);
      });
      const { status, report } = verify(dir);
      expect(status).toBe(1);
      expect(report.ok).toBe(false);
      expect(report.chains[0]?.break).toMatchObject({ kind: expected.kind, segment: names[expected.segment], line: expected.line });
    });
  }

  it('a cut through the last record is a torn write, not a break: reported as a note', () => {
    const dir = tampered('torn-tail', (d, s) => {
      const file = join(d, s.at(-1)!);
      const text = readFileSync(file, 'utf8');
      writeFileSync(file, text.slice(0, -30));
    });
    const { status, report } = verify(dir);
    expect(status).toBe(0);
    expect(report.chains[0]?.notes.join(' ')).toMatch(/bytes after the last complete record/);
  });

  it('exits 66 for a missing directory and for one without a chain', () => {
    const missing = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', join(root, 'nope')], { encoding: 'utf8' });
    expect(missing.status).toBe(66);
    expect(missing.stderr).toMatch(/no audit directory/);
    const empty = join(root, 'empty');
    cpSync(original, empty, { recursive: true, filter: (src) => !src.endsWith('.jsonl') });
    const none = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', empty], { encoding: 'utf8' });
    expect(none.status).toBe(66);
    expect(none.stderr).toMatch(/no audit chain/);
  });
});
