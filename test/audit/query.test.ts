// `gatehouse audit query` and `audit tail` against real chains (two instances in one directory, segments by day),
// through the built CLI: filters match exactly, time ranges skip what cannot match, bad input is a usage error.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvent, testAuditLog } from '../support/harness.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const dir = mkdtempSync(join(tmpdir(), 'gatehouse-query-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const DAY = 86_400_000;
const START = Date.UTC(2026, 11, 1, 12, 0, 0);

beforeAll(async () => {
  // Dec 1..4, one record every 2 h per instance; a segment per day; client "alpha" on even hours of instance a.
  for (const instance of ['a', 'b']) {
    let now = START;
    const log = testAuditLog(dir, { instance, segmentMaxAgeMs: DAY, now: () => now });
    for (let i = 0; i < 36; i++) {
      now = START + i * 2 * 3_600_000;
      log.append(
        auditEvent(i, {
          request_id: `${instance}-${i}`,
          route: i % 3 === 0 ? 'admin' : 'echo',
          decision: i % 4 === 0 ? 'deny' : 'allow',
          status: i % 4 === 0 ? 401 : null,
          client_id: instance === 'a' && i % 2 === 0 ? 'alpha' : 'beta',
          // Text that contains another filter's needle must not match it.
          subject: i === 5 ? '"client_id":"alpha"' : `sub-${i}`,
        }),
      );
      await log.flush();
    }
    await log.close();
  }
});

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, 'audit', ...args, '--dir', dir], { encoding: 'utf8', timeout: 20_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function ids(stdout: string): string[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => String((JSON.parse(line) as { request_id: string }).request_id));
}

describe('gatehouse audit query', () => {
  it('who called route admin on Dec 2, and was it allowed: exactly those records, in seq order', () => {
    const { status, stdout } = cli('query', '--route', 'admin', '--since', '2026-12-02', '--until', '2026-12-03', '--json');
    expect(status).toBe(0);
    // Dec 2 00:00..24:00 is i = 6..17 (12:00 + 2h·i); route admin: i divisible by 3.
    expect(ids(stdout)).toEqual(['a-6', 'a-9', 'a-12', 'a-15', 'b-6', 'b-9', 'b-12', 'b-15']);
    for (const line of stdout.trim().split('\n')) expect(JSON.parse(line)).toHaveProperty('decision');
  });

  it('filters by client, decision, status, request id and instance, and matches values exactly', () => {
    expect(ids(cli('query', '--client', 'alpha', '--since', '2026-12-04', '--json').stdout)).toEqual(['a-30', 'a-32', 'a-34']);
    expect(ids(cli('query', '--decision', 'deny', '--instance', 'b', '--until', '2026-12-02', '--json').stdout)).toEqual(['b-0', 'b-4']);
    expect(ids(cli('query', '--status', '401', '--instance', 'a', '--since', '2026-12-04', '--json').stdout)).toEqual(['a-32']);
    expect(ids(cli('query', '--request-id', 'b-7', '--json').stdout)).toEqual(['b-7']);
    // a-5's subject contains the text of the client filter; its client is beta.
    expect(ids(cli('query', '--client', 'alpha', '--until', '2026-12-01T23:00:00Z', '--json').stdout)).toEqual(['a-0', 'a-2', 'a-4']);
  });

  it('prints an aligned table by default, with control characters neutralised', () => {
    const { status, stdout } = cli('query', '--request-id', 'a-1');
    expect(status).toBe(0);
    const [header, row, summary] = stdout.trim().split('\n');
    expect(header).toMatch(/^ts\s+decision\s+count\s+status\s+route\s+method\s+path\s+who\s+code\s+request_id$/);
    // No completion record was written for this allow: its status stays unknown.
    expect(row).toMatch(/^2026-12-01T14:00:00\.000Z\s+allow\s+1\s+-\s+echo\s+GET\s+\/x\s+beta\s+-\s+a-1$/);
    expect(summary).toBe('1 allowed, 0 refused (0 recorded one by one, 0 counted in 0 aggregate record(s))');
    expect(header?.indexOf('request_id')).toBe(row?.indexOf('a-1'));
    expect(cli('query', '--request-id', 'nothing-like-it').stdout).toBe('no matching records\n');
  });

  it('never shows a line that does not verify (edited in place): it is skipped, and stderr says so', () => {
    const copy = join(dir, '..', `${dir.split('/').at(-1)}-edited`);
    cpSync(dir, copy, { recursive: true });
    try {
      const segment = readdirSync(copy)
        .filter((name) => name.startsWith('a.'))
        .sort()[0]!;
      const file = join(copy, segment);
      writeFileSync(file, readFileSync(file, 'utf8').replace('"request_id":"a-1"', '"request_id":"a-1","client_id":"alpha"'));
      const result = spawnSync(process.execPath, [CLI, 'audit', 'query', '--dir', copy, '--request-id', 'a-1', '--json'], { encoding: 'utf8' });
      expect(result.status).toBe(0);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/1 line\(s\) that do not verify were skipped; run gatehouse audit verify/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('refuses a time it cannot read (64), and a missing directory (66)', () => {
    for (const bad of ['yesterday', '2026-12-03T10:00', '5y', '']) {
      const { status, stderr } = cli('query', '--since', bad);
      expect(status, bad).toBe(64);
      expect(stderr, bad).toMatch(/ISO 8601/);
    }
    expect(cli('query', '--status', '42').status).toBe(64);
    expect(cli('query', '--decision', 'maybe').status).toBe(64);
    const missing = spawnSync(process.execPath, [CLI, 'audit', 'query', '--dir', join(dir, 'nope')], { encoding: 'utf8' });
    expect(missing.status).toBe(66);
  });
});

describe('gatehouse audit tail', () => {
  it('prints the newest records of every chain, oldest first', () => {
    expect(ids(cli('tail', '-n', '3', '--json').stdout)).toEqual(['b-34', 'a-35', 'b-35']);
  });

  it('-f prints records as they are written, new segments included', async () => {
    const child = spawn(process.execPath, [CLI, 'audit', 'tail', '-n', '1', '-f', '--json', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: string[] = [];
    createInterface({ input: child.stdout }).on('line', (line) => lines.push(line));
    try {
      // Waits of up to 10 s each: the CLI starts in a process of its own, slow on a machine loaded by other test files.
      for (let i = 0; i < 500 && lines.length < 1; i++) await new Promise((r) => setTimeout(r, 20));
      // A third instance starts writing: its first segment appears while tail runs.
      const log = testAuditLog(dir, { instance: 'c' });
      log.append(auditEvent(1, { request_id: 'c-live-1' }));
      log.append(auditEvent(2, { request_id: 'c-live-2' }));
      await log.close();
      for (let i = 0; i < 500 && lines.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
      expect(lines.slice(1).map((line) => (JSON.parse(line) as { request_id: string }).request_id)).toEqual(['c-live-1', 'c-live-2']);
    } finally {
      child.kill('SIGINT');
    }
  });
});
