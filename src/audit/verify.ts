// The audit verifier: walks every segment of every chain in a directory, recomputes every record's hash from its bytes,
// follows the prev links and the sequence, checks each checkpoint's signature with the audit public key, and reports the
// first break of each chain — where (segment, line, seq) and what kind: a record modified, deleted, inserted or
// reordered, a segment missing or cut short, a bad signature, records left unsigned for longer than the checkpoint
// cadence allows. What the chain alone cannot show — a tail cut off at a record boundary, a chain rewritten from scratch
// or deleted whole — shows against checkpoints exported elsewhere: truncated, modified, chain_missing.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkpointPayload, prunePayload } from './audit-key.js';
import { GENESIS, open, parseSegmentName } from './chain.js';
import { listChains, segmentLines, type SegmentLine } from './read.js';

export type BreakKind = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'segment_missing' | 'truncated' | 'bad_signature' | 'unsigned' | 'chain_missing';

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
  /** The records after the last checkpoint: no signature covers them yet (a running gateway's newest records). */
  readonly unsigned: UnsignedTail;
  readonly break: ChainBreak | undefined;
}

export interface UnsignedTail {
  readonly records: number;
  /** The first and last seq after the last checkpoint (null when a checkpoint is the chain's last record). */
  readonly fromSeq: number | null;
  readonly toSeq: number | null;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly chains: readonly ChainReport[];
  /** What this run could not check at all (said once, not per chain). */
  readonly notes: readonly string[];
}

/**
 * How often an honest gateway signs: `audit.checkpoint_every_records` and `audit.checkpoint_interval_s` as the operator
 * configured them (never as the log says: whoever rewrites the log would say what suits them).
 */
export interface CheckpointCadence {
  readonly everyRecords: number;
  readonly intervalS: number;
}

/**
 * What a chain may leave uncovered before verify calls it `unsigned`: the cadence plus 10 % (at least 10 records, at least
 * 10 s). The log checkpoints at exactly every N records, so the record slack only absorbs a cadence lowered since; the
 * time slack absorbs timer lag under load.
 */
export function cadenceAllowance(cadence: CheckpointCadence): { readonly records: number; readonly spanS: number } {
  return {
    records: cadence.everyRecords + Math.max(10, Math.ceil(cadence.everyRecords / 10)),
    spanS: cadence.intervalS + Math.max(10, Math.ceil(cadence.intervalS / 10)),
  };
}

/** Said once per run without --checkpoints: what only exported checkpoints can show. */
export const NO_EXPORT_NOTE =
  'no exported checkpoints given (--checkpoints): the deletion of a whole chain, and a tail cut off at a record boundary, cannot be detected';

export interface VerifyOptions {
  /** The audit public key: every checkpoint's signature is checked with it. */
  readonly key?: { readonly keyId: string; verify(payload: Buffer, signature: string): boolean };
  /** A directory of exported checkpoints (`<instance>.checkpoints.jsonl`): the chain must contain each of them. */
  readonly checkpointsDir?: string;
  /** With `key`: no more records, nor a longer span, than this cadence allows may go without a signed checkpoint. */
  readonly cadence?: CheckpointCadence;
}

export function verifyDirectory(dir: string, options: VerifyOptions = {}): VerifyReport {
  const found = listChains(dir);
  const chains = [...found].map(([instance, segments]) => verifyChain(dir, instance, segments, options));
  // A chain whose checkpoints were exported must still be there: deleting every segment of it is a break.
  if (options.checkpointsDir !== undefined) {
    for (const instance of exportedChains(options.checkpointsDir)) {
      if (!found.has(instance)) chains.push(missingChain(options.checkpointsDir, instance));
    }
  }
  return { ok: chains.every((chain) => chain.break === undefined), chains, notes: options.checkpointsDir === undefined ? [NO_EXPORT_NOTE] : [] };
}

const EXPORTED = /^(.+)\.checkpoints\.jsonl$/;

function exportedChains(dir: string): string[] {
  return readdirSync(dir)
    .map((name) => EXPORTED.exec(name)?.[1])
    .filter((instance): instance is string => instance !== undefined)
    .sort();
}

function missingChain(checkpointsDir: string, instance: string): ChainReport {
  const exported = exportedCheckpoints(checkpointsDir, instance);
  const last = exported?.list.at(-1);
  return {
    instance,
    segments: 0,
    records: 0,
    lastSeq: 0,
    head: GENESIS,
    boots: 0,
    notes: [],
    unsigned: { records: 0, fromSeq: null, toSeq: null },
    break: {
      kind: 'chain_missing',
      segment: exported?.file ?? join(checkpointsDir, `${instance}.checkpoints.jsonl`),
      line: last?.line ?? 0,
      seq: last?.seq ?? null,
      detail: `no segment of chain ${instance} is in the audit directory, but ${exported?.list.length ?? 0} checkpoint(s) of it were exported${
        last !== undefined ? ` (the last at seq ${last.seq})` : ''
      }: the chain was deleted or moved`,
    },
  };
}

interface Exported {
  readonly seq: number;
  readonly hash: string;
  readonly line: number;
  readonly record: Record<string, unknown>;
}

/** The exported checkpoints of one chain, each verified on its own (hash over its bytes). */
function exportedCheckpoints(
  dir: string,
  instance: string,
): { readonly file: string; readonly list: Exported[]; readonly bad: number | undefined } | undefined {
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
function checkCheckpoint(
  record: Record<string, unknown> & { seq: number; ts: string; instance: string; boot_id: string },
  head: string | undefined,
  key: VerifyOptions['key'],
): 'modified' | 'bad_signature' | undefined {
  if (record['covers_seq'] !== record.seq - 1 || (head !== undefined && record['head'] !== head)) return 'modified';
  if (key === undefined) return undefined;
  if (record['key_id'] !== key.keyId || typeof record['signature'] !== 'string') return 'bad_signature';
  const payload = checkpointPayload({
    instance: record.instance,
    coversSeq: record.seq - 1,
    head: String(record['head']),
    ts: record.ts,
    bootId: record.boot_id,
  });
  return key.verify(payload, record['signature']) ? undefined : 'bad_signature';
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
      if (opened.ok && opened.record['through_seq'] === seq - 1 && opened.record['through_hash'] === prev)
        return { seq: opened.record.seq, ts: opened.record.ts };
    }
  }
  return undefined;
}

/** Where the walk stands: the last record that verified. */
interface Position {
  readonly segment: string;
  readonly line: number;
  readonly seq: number;
}

/**
 * The records since the last checkpoint. `spanFrom` is the time the uncovered span is measured from: the first uncovered
 * record, or a later start of a boot or recovery (a crash or a write outage leaves records uncovered until the restart's
 * or the recovery's own checkpoint, however long it took).
 */
interface Uncovered {
  count: number;
  first: (Position & { readonly ts: string }) | undefined;
  last: number | null;
  spanFrom: number;
}

function verifyChain(dir: string, instance: string, segments: readonly string[], options: VerifyOptions): ChainReport {
  let expected = 1;
  /** Records before this seq were removed by the retention policy (a segments_pruned record says so). */
  let retainedFrom = 1;
  let head = GENESIS;
  let records = 0;
  let checkpoints = 0;
  let intact: Position | undefined;
  const uncovered: Uncovered = { count: 0, first: undefined, last: null, spanFrom: 0 };
  const allowance = options.key !== undefined && options.cadence !== undefined ? cadenceAllowance(options.cadence) : undefined;
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
    unsigned: { records: uncovered.count, fromSeq: uncovered.first?.seq ?? null, toSeq: uncovered.last },
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
      if (!opened.ok)
        return report(
          at('modified', seqOf(line.text), opened.problem === 'hash mismatch' ? 'the record does not match its hash' : 'not a record of the chain'),
        );
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
          record.type === 'segment_start' &&
          record['reason'] === 'recovered' &&
          record['lost_from_seq'] === expected &&
          record['lost_to_seq'] === record.seq - 1 &&
          record.prev === head;
        if (!recovered) {
          if (laterInSegment(lines, index, expected)) return report(at('reordered', record.seq, `seq ${expected} comes later in the segment`));
          if (index === 0) {
            // A segment begins by naming the one before it: when that is the segment just read, records were cut from its end.
            if (intact !== undefined && record.type === 'segment_start' && record['previous_segment'] === intact.segment) {
              return report({
                kind: 'truncated',
                segment: intact.segment,
                line: intact.line,
                seq: intact.seq,
                detail: `the segment ends at seq ${intact.seq} (line ${intact.line}), but ${segment} continues from seq ${record.seq - 1}: records ${expected}..${record.seq - 1} were cut from its end`,
              });
            }
            return report(at('segment_missing', record.seq, `records ${expected}..${record.seq - 1} are in no segment (a segment was deleted or moved)`));
          }
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
        if (problem === 'bad_signature')
          return report(
            at(
              'bad_signature',
              record.seq,
              record['key_id'] !== options.key?.keyId ? 'the checkpoint was signed by another key' : 'the checkpoint signature does not verify',
            ),
          );
        checkpoints++;
        uncovered.count = 0;
        uncovered.first = undefined;
        uncovered.last = null;
      } else {
        const ms = Date.parse(record.ts);
        if (uncovered.first === undefined) {
          uncovered.first = { segment, line: line.line, seq: record.seq, ts: record.ts };
          uncovered.spanFrom = ms;
        } else if (record.type === 'segment_start' && (record['reason'] === 'restart' || record['reason'] === 'recovered')) {
          uncovered.spanFrom = ms;
        }
        uncovered.count++;
        uncovered.last = record.seq;
        if (allowance !== undefined) {
          const first = uncovered.first;
          const spanS = (ms - uncovered.spanFrom) / 1000;
          if (uncovered.count > allowance.records || spanS > allowance.spanS) {
            const over = uncovered.count > allowance.records ? `${uncovered.count} records` : `${Math.round(spanS)} s of records`;
            return report({
              kind: 'unsigned',
              segment: first.segment,
              line: first.line,
              seq: first.seq,
              detail: `${over} from seq ${first.seq} (${first.ts}) on are covered by no signed checkpoint, more than the cadence allows (every ${options.cadence?.everyRecords} records or ${options.cadence?.intervalS} s, with slack: ${allowance.records} records, ${allowance.spanS} s): checkpoints were removed`,
            });
          }
        }
      }
      if (record.type === 'segments_pruned' && !checkPrune(record, options.key)) {
        return report(
          at(
            'bad_signature',
            record.seq,
            record['key_id'] !== options.key?.keyId ? 'the prune record was signed by another key' : 'the prune record signature does not verify',
          ),
        );
      }
      if (exportedSeqs.has(record.seq)) hashAt.set(record.seq, opened.hash);
      if (record.type === 'segment_lost') {
        notes.push(`${String(record['segment'])} was moved or deleted while the gateway wrote it (noticed at seq ${record.seq})`);
      }
      head = opened.hash;
      expected = record.seq + 1;
      records++;
      intact = { segment, line: line.line, seq: record.seq };
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
      const found = compareExported(
        exported,
        hashAt,
        expected - 1,
        options.key,
        intact ?? { segment: segments.at(-1) ?? '', line: 0, seq: expected - 1 },
        retainedFrom,
      );
      if (found !== undefined) return report(found);
      const before = exported.list.filter((checkpoint) => checkpoint.seq < retainedFrom).length;
      notes.push(
        `${exported.list.length} exported checkpoint(s) in ${exported.file}, all in the chain` +
          (before > 0 ? ` (${before} of them in segments the retention policy removed)` : ''),
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
  /** The chain's last intact record: where a cut tail is reported. */
  end: Position,
  /** Checkpoints before this seq covered segments removed by policy: their signatures are still checked. */
  retainedFrom: number,
): ChainBreak | undefined {
  if (exported.bad !== undefined)
    return { kind: 'modified', segment: exported.file, line: exported.bad, seq: null, detail: 'an exported checkpoint does not verify' };
  for (const checkpoint of exported.list) {
    const record = checkpoint.record as Record<string, unknown> & { seq: number; ts: string; instance: string; boot_id: string };
    const problem = checkCheckpoint(record, undefined, key);
    if (problem !== undefined)
      return { kind: problem, segment: exported.file, line: checkpoint.line, seq: checkpoint.seq, detail: `the exported checkpoint itself: ${problem}` };
    if (checkpoint.seq < retainedFrom) continue;
    if (checkpoint.seq > lastSeq) {
      return {
        kind: 'truncated',
        segment: end.segment,
        line: end.line,
        seq: lastSeq,
        detail: `the chain ends at seq ${lastSeq} (${end.segment} line ${end.line}), but a checkpoint exported at seq ${checkpoint.seq} covers more: records were cut off`,
      };
    }
    if (hashAt.get(checkpoint.seq) !== checkpoint.hash) {
      return {
        kind: 'modified',
        segment: exported.file,
        line: checkpoint.line,
        seq: checkpoint.seq,
        detail: `record ${checkpoint.seq} of the chain is not the exported checkpoint: the chain was rewritten`,
      };
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
