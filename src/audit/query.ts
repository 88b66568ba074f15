// Searching the audit log: decision records that match a filter, chain by chain in seq order. Built to stay fast on a big
// log: a segment whose time range cannot overlap the filter's is skipped after reading its first line, and a line whose
// text cannot match (its timestamp, or a required value not in it) is skipped before it is parsed.
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { listChains, segmentLines } from './read.js';

export interface RecordFilter {
  /** Epoch ms, inclusive. */
  readonly since?: number;
  /** Epoch ms, exclusive. */
  readonly until?: number;
  readonly instance?: string;
  /** Matches `client_id`. */
  readonly client?: string;
  readonly subject?: string;
  readonly route?: string;
  readonly decision?: 'allow' | 'deny';
  readonly status?: number;
  readonly requestId?: string;
}

/** A decision record as read back (JSON values, checked for the fields a query looks at). */
export type DecisionLine = Readonly<Record<string, unknown>> & { readonly seq: number; readonly ts: string; readonly instance: string };

/**
 * Segments are skipped by time only when they end more than this before `since` or begin more than this after `until`:
 * records are ordered by seq, and a clock stepped back by NTP can put a record's ts a little before its segment's start.
 */
const CLOCK_SLACK_MS = 5 * 60_000;
const TS_PREFIX = /^\{"seq":\d+,"ts":"([^"]{24})"/;

export function* queryRecords(dir: string, filter: RecordFilter): Generator<DecisionLine> {
  const sinceIso = filter.since !== undefined ? new Date(filter.since).toISOString() : undefined;
  const untilIso = filter.until !== undefined ? new Date(filter.until).toISOString() : undefined;
  // Values a matching line must contain verbatim (JSON.stringify gives the same escaping the writer used).
  const needles = [
    filter.client !== undefined ? `"client_id":${JSON.stringify(filter.client)}` : undefined,
    filter.subject !== undefined ? `"subject":${JSON.stringify(filter.subject)}` : undefined,
    filter.route !== undefined ? `"route":${JSON.stringify(filter.route)}` : undefined,
    filter.requestId !== undefined ? `"request_id":${JSON.stringify(filter.requestId)}` : undefined,
    filter.decision !== undefined ? `"decision":"${filter.decision}"` : undefined,
    filter.status !== undefined ? `"status":${filter.status},` : undefined,
  ].filter((needle): needle is string => needle !== undefined);

  for (const [instance, segments] of listChains(dir)) {
    if (filter.instance !== undefined && instance !== filter.instance) continue;
    const starts = segments.map((segment) => firstTimestamp(join(dir, segment)));
    for (const [index, segment] of segments.entries()) {
      const start = starts[index];
      const next = starts[index + 1];
      if (filter.until !== undefined && start !== undefined && start - CLOCK_SLACK_MS >= filter.until) continue;
      if (filter.since !== undefined && next !== undefined && next + CLOCK_SLACK_MS < filter.since) continue;
      for (const { text, complete } of segmentLines(dir, segment)) {
        if (!complete) continue;
        const ts = TS_PREFIX.exec(text)?.[1];
        if (ts === undefined) continue;
        if (sinceIso !== undefined && ts < sinceIso) continue;
        if (untilIso !== undefined && ts >= untilIso) continue;
        if (!needles.every((needle) => text.includes(needle))) continue;
        let record: unknown;
        try {
          record = JSON.parse(text);
        } catch {
          continue;
        }
        if (isDecision(record) && matches(record, filter)) yield record;
      }
    }
  }
}

function isDecision(value: unknown): value is DecisionLine {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  return r['type'] === 'decision' && typeof r['seq'] === 'number' && typeof r['ts'] === 'string' && typeof r['instance'] === 'string';
}

/** The exact check, after the text prefilter (a needle could have matched inside another field's value). */
function matches(record: DecisionLine, filter: RecordFilter): boolean {
  return (
    (filter.client === undefined || record['client_id'] === filter.client) &&
    (filter.subject === undefined || record['subject'] === filter.subject) &&
    (filter.route === undefined || record['route'] === filter.route) &&
    (filter.requestId === undefined || record['request_id'] === filter.requestId) &&
    (filter.decision === undefined || record['decision'] === filter.decision) &&
    (filter.status === undefined || record['status'] === filter.status)
  );
}

/** The ts of a segment's first record, from its first 4 KiB; undefined when there is none (a segment is never skipped then). */
function firstTimestamp(path: string): number | undefined {
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(4096);
    const read = readSync(fd, buffer, 0, buffer.length, 0);
    const ts = TS_PREFIX.exec(buffer.subarray(0, read).toString('utf8'))?.[1];
    const ms = ts === undefined ? Number.NaN : Date.parse(ts);
    return Number.isNaN(ms) ? undefined : ms;
  } finally {
    closeSync(fd);
  }
}

/** The last `count` decision records over every chain, oldest first by ts. Reads segments from the newest back. */
export function lastRecords(dir: string, count: number): DecisionLine[] {
  const all: DecisionLine[] = [];
  for (const segments of listChains(dir).values()) {
    const kept: DecisionLine[] = [];
    for (let i = segments.length - 1; i >= 0 && kept.length < count; i--) {
      const found = decisionsIn(dir, segments[i] as string, 0).records;
      kept.unshift(...found.slice(-(count - kept.length)));
    }
    all.push(...kept);
  }
  return all.sort(byTs).slice(-count);
}

function byTs(a: DecisionLine, b: DecisionLine): number {
  return a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : a.seq - b.seq;
}

/** Decision records of a segment from byte `offset` on, and the offset after its last complete line. */
function decisionsIn(dir: string, segment: string, offset: number): { records: DecisionLine[]; end: number } {
  const fd = openSync(join(dir, segment), 'r');
  let data: Buffer;
  try {
    const chunks: Buffer[] = [];
    let position = offset;
    for (;;) {
      const chunk = Buffer.alloc(1 << 20);
      const read = readSync(fd, chunk, 0, chunk.length, position);
      if (read === 0) break;
      chunks.push(chunk.subarray(0, read));
      position += read;
    }
    data = Buffer.concat(chunks);
  } finally {
    closeSync(fd);
  }
  const last = data.lastIndexOf(0x0a);
  if (last === -1) return { records: [], end: offset };
  const records: DecisionLine[] = [];
  for (const text of data.subarray(0, last).toString('utf8').split('\n')) {
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch {
      continue;
    }
    if (isDecision(record)) records.push(record);
  }
  return { records, end: offset + last + 1 };
}

/** `tail -f`: what was appended to each chain since the last poll, new segments included. */
export class AuditFollower {
  private readonly positions = new Map<string, { segment: string; offset: number }>();

  constructor(private readonly dir: string) {
    for (const [instance, segments] of listChains(dir)) {
      const segment = segments.at(-1);
      if (segment !== undefined) this.positions.set(instance, { segment, offset: decisionsIn(dir, segment, 0).end });
    }
  }

  poll(): DecisionLine[] {
    const fresh: DecisionLine[] = [];
    for (const [instance, segments] of listChains(this.dir)) {
      const at = this.positions.get(instance);
      // Names sort in chain order: a segment this follower was in and that is gone (moved, pruned) is passed over.
      const from = at === undefined ? 0 : segments.findIndex((segment) => segment >= at.segment);
      for (let i = from; i !== -1 && i < segments.length; i++) {
        const segment = segments[i] as string;
        const offset = at !== undefined && segment === at.segment ? at.offset : 0;
        const { records, end } = decisionsIn(this.dir, segment, offset);
        fresh.push(...records);
        this.positions.set(instance, { segment, offset: end });
      }
    }
    return fresh.sort(byTs);
  }
}
