// Reading audit chains back: the segment files of a directory, chain by chain, line by line. Used by the verifier, the
// query and tail commands (which never trust a line they have not checked), and by tests.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chainsIn, open, type Opened } from './chain.js';

export interface SegmentLine {
  readonly segment: string;
  /** 1-based line number in its segment. */
  readonly line: number;
  readonly text: string;
  /** False only for the bytes after a segment's last newline (a write torn by a crash, or a truncation). */
  readonly complete: boolean;
}

/** Every line of one segment. */
export function* segmentLines(dir: string, segment: string): Generator<SegmentLine> {
  const text = readFileSync(join(dir, segment), 'utf8');
  let start = 0;
  let line = 0;
  while (start < text.length) {
    const end = text.indexOf('\n', start);
    line++;
    if (end === -1) {
      yield { segment, line, text: text.slice(start), complete: false };
      return;
    }
    yield { segment, line, text: text.slice(start, end), complete: true };
    start = end + 1;
  }
}

/** The chains in a directory: instance id → its segment names in order. */
export function listChains(dir: string): Map<string, string[]> {
  return chainsIn(readdirSync(dir));
}

/** Every record of every chain in `dir` that verifies on its own (hash over its bytes), chain by chain, in seq order. */
export function readRecords(dir: string): Array<Extract<Opened, { ok: true }>['record']> {
  const records: Array<Extract<Opened, { ok: true }>['record']> = [];
  for (const segments of listChains(dir).values()) {
    for (const segment of segments) {
      for (const line of segmentLines(dir, segment)) {
        const opened = open(line.text);
        if (opened.ok) records.push(opened.record);
      }
    }
  }
  return records;
}
