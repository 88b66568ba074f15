// makeDirectory: each missing level made once with the wanted mode, existing directories untouched, every failure named.
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DirectoryError, makeDirectory } from '../../src/lib/make-directory.js';

const work = mkdtempSync(join(tmpdir(), 'gatehouse-mkdir-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function failure(dir: string): DirectoryError {
  try {
    makeDirectory(dir, 0o700);
  } catch (error) {
    if (error instanceof DirectoryError) return error;
    throw error;
  }
  throw new Error('expected a DirectoryError');
}

describe('makeDirectory', () => {
  it('creates every missing level with the mode and leaves an existing directory as it is', () => {
    const nested = join(work, 'a', 'b', 'c');
    makeDirectory(nested, 0o700);
    for (const level of [join(work, 'a'), join(work, 'a', 'b'), nested]) expect(statSync(level).mode & 0o777).toBe(0o700);
    const existing = join(work, 'existing');
    mkdirSync(existing, { mode: 0o755 });
    makeDirectory(existing, 0o700);
    expect(statSync(existing).mode & 0o777).toBe(0o755);
  });

  it('names the file that stands where a directory should be, and a dangling symlink', () => {
    writeFileSync(join(work, 'file'), '');
    const underFile = failure(join(work, 'file', 'x', 'y'));
    expect(underFile.code).toBe('ENOTDIR');
    expect(underFile.message).toBe(`cannot create directory ${join(work, 'file', 'x', 'y')}: ${join(work, 'file')} exists and is not a directory`);
    symlinkSync(join(work, 'nowhere'), join(work, 'dangling'));
    expect(failure(join(work, 'dangling', 'x')).message).toMatch(/EEXIST.*mkdir .*dangling/);
  });
});
