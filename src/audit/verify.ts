// The audit verifier: walks every segment of every chain in a directory, recomputes every record's hash from its bytes,
// follows the prev links and the sequence, and reports the first break of each chain — where (segment, line, seq) and
// what kind: a record modified, deleted, inserted or reordered, a segment missing. What the chain alone cannot show (a
// tail cut off at a record boundary, a chain rewritten from scratch) needs signed checkpoints kept elsewhere.
import { GENESIS, open, parseSegmentName } from './chain.js';
import { listChains, segmentLines, type SegmentLine } from './read.js';

export type BreakKind = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'segment missing';

export interface ChainBreak {
  readonly kind: BreakKind;
  readonly segment: string;
  readonly line: number;
  /** The seq the break was found at (the record's own, when it could be read). */
  readonly seq: number | null;
  readonly detail: string;
}

export interface ChainReport {
  readonly instance: string;
  readonly segments: number;
  readonly records: number;
  readonly lastSeq: number;
  /** Hash of the last record that verified: what a checkpoint of this chain must name. */
  readonly head: string;
  /** Process runs (boot ids) seen. */
  readonly boots: number;
  /** What is not a break but an operator should know: crashes (a torn final write), records lost to a write failure. */
  readonly notes: readonly string[];
  readonly break: ChainBreak | undefined;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly chains: readonly ChainReport[];
}

export function verifyDirectory(dir: string): VerifyReport {
  const chains = [...listChains(dir)].map(([instance, segments]) => verifyChain(dir, instance, segments));
  return { ok: chains.every((chain) => chain.break === undefined), chains };
}

function verifyChain(dir: string, instance: string, segments: readonly string[]): ChainReport {
  let expected = 1;
  let head = GENESIS;
  let records = 0;
  const boots = new Set<string>();
  const notes: string[] = [];
  const report = (found: ChainBreak | undefined): ChainReport => ({
    instance,
    segments: segments.length,
    records,
    lastSeq: expected - 1,
    head,
    boots: boots.size,
    notes,
    break: found,
  });

  for (const segment of segments) {
    const lines = [...segmentLines(dir, segment)];
    const named = parseSegmentName(segment)?.firstSeq;
    for (const [index, line] of lines.entries()) {
      const at = (kind: BreakKind, seq: number | null, detail: string): ChainBreak => ({ kind, segment, line: line.line, seq, detail });
      if (!line.complete) {
        // The bytes after the last newline: a write cut short by a crash (or a cut through a record). Nothing after them
        // was acknowledged, so they are not a record; the next segment (a restart) links to the last complete one.
        notes.push(`${segment}: ${Buffer.byteLength(line.text)} bytes after the last complete record (a write torn by a crash)`);
        break;
      }
      const opened = open(line.text);
      if (!opened.ok) return report(at('modified', seqOf(line.text), opened.problem === 'hash mismatch' ? 'the record does not match its hash' : 'not a record of the chain'));
      const record = opened.record;

      if (index === 0 && named !== undefined && named !== record.seq) {
        return report(at('modified', record.seq, `the segment's name says it begins at seq ${named}`));
      }
      if (record.seq > expected) {
        const recovered =
          record.type === 'segment_start' && record['reason'] === 'recovered' && record['lost_from_seq'] === expected && record['lost_to_seq'] === record.seq - 1 && record.prev === head;
        if (!recovered) {
          if (laterInSegment(lines, index, expected)) return report(at('reordered', record.seq, `seq ${expected} comes later in the segment`));
          if (index === 0) return report(at('segment missing', record.seq, `records ${expected}..${record.seq - 1} are in no segment (a segment was deleted or moved)`));
          return report(at('deleted', record.seq, `records ${expected}..${record.seq - 1} are missing`));
        }
        notes.push(`records ${expected}..${record.seq - 1} were never written: the audit log could not write (${segment} recovered)`);
        expected = record.seq;
      } else if (record.seq < expected) {
        return report(at('inserted', record.seq, `seq ${record.seq} appears again after seq ${expected - 1}`));
      }
      if (record.prev !== head) {
        return report(at('modified', record.seq, 'does not link to the record before it: that record or this one was altered'));
      }
      if (record.type === 'segment_lost') {
        notes.push(`${String(record['segment'])} was moved or deleted while the gateway wrote it (noticed at seq ${record.seq})`);
      }
      head = opened.hash;
      expected = record.seq + 1;
      records++;
      boots.add(record.boot_id);
    }
  }
  return report(undefined);
}

function laterInSegment(lines: readonly SegmentLine[], index: number, seq: number): boolean {
  for (let i = index + 1; i < lines.length; i++) if (seqOf(lines[i]?.text ?? '') === seq) return true;
  return false;
}

/** The seq of a line that may not verify, for the report only. */
function seqOf(text: string): number | null {
  const match = /^\{"seq":(\d+),/.exec(text);
  return match === null ? null : Number(match[1]);
}
