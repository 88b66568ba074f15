// The audit verifier: walks every segment of every chain in a directory, recomputes every record's hash from its bytes,
// follows the prev links and the sequence, checks each checkpoint's signature with the audit public key, and reports the
// first break of each chain — where (segment, line, seq) and what kind: a record modified, deleted, inserted or
// reordered, a segment missing, a bad signature. What the chain alone cannot show — a tail cut off at a record
// boundary, a chain rewritten from scratch — shows against checkpoints exported elsewhere: truncated, or modified.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkpointPayload, prunePayload } from './audit-key.js';
import { GENESIS, open, parseSegmentName } from './chain.js';
import { listChains, segmentLines, type SegmentLine } from './read.js';

export type BreakKind = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'segment missing' | 'truncated' | 'bad signature';

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

export interface VerifyOptions {
  /** The audit public key: every checkpoint's signature is checked with it. */
  readonly key?: { readonly keyId: string; verify(payload: Buffer, signature: string): boolean };
  /** A directory of exported checkpoints (`<instance>.checkpoints.jsonl`): the chain must contain each of them. */
  readonly checkpointsDir?: string;
}

export function verifyDirectory(dir: string, options: VerifyOptions = {}): VerifyReport {
  const chains = [...listChains(dir)].map(([instance, segments]) => verifyChain(dir, instance, segments, options));
  return { ok: chains.every((chain) => chain.break === undefined), chains };
}

interface Exported {
  readonly seq: number;
  readonly hash: string;
  readonly line: number;
  readonly record: Record<string, unknown>;
}

/** The exported checkpoints of one chain, each verified on its own (hash over its bytes). */
function exportedCheckpoints(dir: string, instance: string): { readonly file: string; readonly list: Exported[]; readonly bad: number | undefined } | undefined {
  const file = join(dir, `${instance}.checkpoints.jsonl`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const list: Exported[] = [];
  for (const [index, line] of text.split('\n').entries()) {
    if (line === '') continue;
    const opened = open(line);
    if (!opened.ok || opened.record.type !== 'checkpoint') return { file, list, bad: index + 1 };
    list.push({ seq: opened.record.seq, hash: opened.hash, line: index + 1, record: opened.record });
  }
  return { file, list, bad: undefined };
}

/** Whether a checkpoint record commits to the record before it, and (with a key) is signed by it. */
function checkCheckpoint(record: Record<string, unknown> & { seq: number; ts: string; instance: string; boot_id: string }, head: string | undefined, key: VerifyOptions['key']): 'modified' | 'bad signature' | undefined {
  if (record['covers_seq'] !== record.seq - 1 || (head !== undefined && record['head'] !== head)) return 'modified';
  if (key === undefined) return undefined;
  if (record['key_id'] !== key.keyId || typeof record['signature'] !== 'string') return 'bad signature';
  const payload = checkpointPayload({ instance: record.instance, coversSeq: record.seq - 1, head: String(record['head']), ts: record.ts, bootId: record.boot_id });
  return key.verify(payload, record['signature']) ? undefined : 'bad signature';
}

/** Whether a prune record is signed by the key (with a key; without one, it stands on the chain's hashes alone). */
function checkPrune(record: Record<string, unknown> & { ts: string; instance: string; boot_id: string }, key: VerifyOptions['key']): boolean {
  if (key === undefined) return true;
  if (record['key_id'] !== key.keyId || typeof record['signature'] !== 'string') return false;
  const payload = prunePayload({
    instance: record.instance,
    throughSeq: Number(record['through_seq']),
    throughHash: String(record['through_hash']),
    segments: String(record['segments']),
    ts: record.ts,
    bootId: record.boot_id,
  });
  return key.verify(payload, record['signature']);
}

/**
 * The retention record that accounts for a chain beginning at `seq` after `prev` (its older segments removed by policy):
 * a `segments_pruned` record, later in the chain, naming exactly that end. Only the chain's own walk then proves the
 * record itself (its hash, its link, its signature).
 */
function pruneRecordFor(dir: string, segments: readonly string[], seq: number, prev: string): { seq: number; ts: string } | undefined {
  for (const segment of segments) {
    for (const line of segmentLines(dir, segment)) {
      if (!line.complete || !line.text.includes('"type":"segments_pruned"')) continue;
      const opened = open(line.text);
      if (opened.ok && opened.record['through_seq'] === seq - 1 && opened.record['through_hash'] === prev) return { seq: opened.record.seq, ts: opened.record.ts };
    }
  }
  return undefined;
}

function verifyChain(dir: string, instance: string, segments: readonly string[], options: VerifyOptions): ChainReport {
  let expected = 1;
  /** Records before this seq were removed by the retention policy (a segments_pruned record says so). */
  let retainedFrom = 1;
  let head = GENESIS;
  let records = 0;
  let checkpoints = 0;
  const boots = new Set<string>();
  const notes: string[] = [];
  const exported = options.checkpointsDir === undefined ? undefined : exportedCheckpoints(options.checkpointsDir, instance);
  const exportedSeqs = new Set(exported?.list.map((checkpoint) => checkpoint.seq));
  /** The chain's hash at each exported checkpoint's seq. */
  const hashAt = new Map<number, string>();
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
      if (records === 0 && expected === 1 && record.seq > 1) {
        // The chain does not begin at its genesis: its oldest segments were pruned by policy, or deleted.
        const pruned = pruneRecordFor(dir, segments, record.seq, record.prev);
        if (pruned !== undefined) {
          notes.push(`records 1..${record.seq - 1} were removed by the retention policy (segments_pruned at seq ${pruned.seq}, ${pruned.ts})`);
          expected = record.seq;
          head = record.prev;
          retainedFrom = record.seq;
        }
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
      if (record.type === 'checkpoint') {
        const problem = checkCheckpoint(record, head, options.key);
        if (problem === 'modified') return report(at('modified', record.seq, 'the checkpoint does not name the record before it'));
        if (problem === 'bad signature') return report(at('bad signature', record.seq, record['key_id'] !== options.key?.keyId ? 'the checkpoint was signed by another key' : 'the checkpoint signature does not verify'));
        checkpoints++;
      }
      if (record.type === 'segments_pruned' && !checkPrune(record, options.key)) {
        return report(at('bad signature', record.seq, record['key_id'] !== options.key?.keyId ? 'the prune record was signed by another key' : 'the prune record signature does not verify'));
      }
      if (exportedSeqs.has(record.seq)) hashAt.set(record.seq, opened.hash);
      if (record.type === 'segment_lost') {
        notes.push(`${String(record['segment'])} was moved or deleted while the gateway wrote it (noticed at seq ${record.seq})`);
      }
      head = opened.hash;
      expected = record.seq + 1;
      records++;
      boots.add(record.boot_id);
    }
  }
  notes.push(
    options.key === undefined
      ? `${checkpoints} checkpoint(s), signatures not checked (give the audit public key: --key)`
      : `${checkpoints} checkpoint(s), every signature verified with key ${options.key.keyId}`,
  );
  if (options.checkpointsDir !== undefined) {
    if (exported === undefined) notes.push(`no exported checkpoints for this chain in ${options.checkpointsDir}`);
    else {
      const found = compareExported(exported, hashAt, expected - 1, options.key, segments.at(-1) ?? '', retainedFrom);
      if (found !== undefined) return report(found);
      const before = exported.list.filter((checkpoint) => checkpoint.seq < retainedFrom).length;
      notes.push(
        `${exported.list.length} exported checkpoint(s) in ${exported.file}, all in the chain` + (before > 0 ? ` (${before} of them in segments the retention policy removed)` : ''),
      );
    }
  }
  return report(undefined);
}

/**
 * Each exported checkpoint must be a record of the chain, byte for byte: one past the chain's end means records after
 * it were cut off (or the newest segment deleted); one that differs means the chain was rewritten.
 */
function compareExported(
  exported: NonNullable<ReturnType<typeof exportedCheckpoints>>,
  hashAt: ReadonlyMap<number, string>,
  lastSeq: number,
  key: VerifyOptions['key'],
  lastSegment: string,
  /** Checkpoints before this seq covered segments removed by policy: their signatures are still checked. */
  retainedFrom: number,
): ChainBreak | undefined {
  if (exported.bad !== undefined) return { kind: 'modified', segment: exported.file, line: exported.bad, seq: null, detail: 'an exported checkpoint does not verify' };
  for (const checkpoint of exported.list) {
    const record = checkpoint.record as Record<string, unknown> & { seq: number; ts: string; instance: string; boot_id: string };
    const problem = checkCheckpoint(record, undefined, key);
    if (problem !== undefined) return { kind: problem, segment: exported.file, line: checkpoint.line, seq: checkpoint.seq, detail: `the exported checkpoint itself: ${problem}` };
    if (checkpoint.seq < retainedFrom) continue;
    if (checkpoint.seq > lastSeq) {
      return { kind: 'truncated', segment: lastSegment, line: 0, seq: lastSeq, detail: `the chain ends at seq ${lastSeq}, but a checkpoint exported at seq ${checkpoint.seq} covers more: records were cut off` };
    }
    if (hashAt.get(checkpoint.seq) !== checkpoint.hash) {
      return { kind: 'modified', segment: exported.file, line: checkpoint.line, seq: checkpoint.seq, detail: `record ${checkpoint.seq} of the chain is not the exported checkpoint: the chain was rewritten` };
    }
  }
  return undefined;
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
