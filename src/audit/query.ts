// Searching the audit log: decision records that match a filter, chain by chain in seq order. Built to stay fast on a big
// log: a segment whose time range cannot overlap the filter's is skipped after reading its first line, and a line whose
// text cannot match (its timestamp, or a required value not in it) is skipped before it is parsed. A line is shown only
// once its own hash verifies (the chain as a whole is `audit verify`'s job); one that does not is counted, never shown.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { open } from './chain.js';
import { listChains, segmentLines } from './read.js';

/** Which records a query returns: one kind, `event` (everything else: gateway, key, store and chain events) or all. */
export const RECORD_TYPES = ['decision', 'completion', 'admin', 'event', 'all'] as const;
export type RecordType = (typeof RECORD_TYPES)[number];
const KINDS: ReadonlySet<string> = new Set(['decision', 'completion', 'admin']);

export interface RecordFilter {
  /** Default `decision`. */
  readonly type?: RecordType;
  /** Epoch ms, inclusive. */
  readonly since?: number;
  /** Epoch ms, exclusive. */
  readonly until?: number;
  readonly instance?: string;
  /** Matches `client_id`, or (admin records) the client a change was made to. */
  readonly client?: string;
  readonly subject?: string;
  readonly route?: string;
  readonly decision?: 'allow' | 'deny';
  readonly status?: number;
  readonly requestId?: string;
}

/** A record as read back (JSON values, checked for the fields a query looks at). */
export type DecisionLine = Readonly<Record<string, unknown>> & { readonly seq: number; readonly ts: string; readonly instance: string };

/**
 * Segments are skipped by time only when they end more than this before `since` or begin more than this after `until`:
 * records are ordered by seq, and a clock stepped back by NTP can put a record's ts a little before its segment's start.
 */
const CLOCK_SLACK_MS = 5 * 60_000;
const TS_PREFIX = /^\{"seq":\d+,"ts":"([^"]{24})"/;

/** Told of each line that does not verify on its own (an edited or forged line): it is skipped. */
export type Unverified = (segment: string, line: number) => void;

export function* queryRecords(dir: string, filter: RecordFilter, unverified: Unverified = () => undefined): Generator<DecisionLine> {
  const sinceIso = filter.since !== undefined ? new Date(filter.since).toISOString() : undefined;
  const untilIso = filter.until !== undefined ? new Date(filter.until).toISOString() : undefined;
  const type = filter.type ?? 'decision';
  // Values a matching line must contain verbatim (JSON.stringify gives the same escaping the writer used); for the client,
  // one of two (a decision names it as client_id, an admin record as its target).
  const clientNeedles =
    filter.client === undefined ? undefined : [`"client_id":${JSON.stringify(filter.client)}`, `"target":${JSON.stringify(filter.client)}`];
  const needles = [
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
      for (const { text, complete, line } of segmentLines(dir, segment)) {
        if (!complete) continue;
        const ts = TS_PREFIX.exec(text)?.[1];
        if (ts === undefined) continue;
        if (sinceIso !== undefined && ts < sinceIso) continue;
        if (untilIso !== undefined && ts >= untilIso) continue;
        if (!needles.every((needle) => text.includes(needle))) continue;
        if (clientNeedles !== undefined && !clientNeedles.some((needle) => text.includes(needle))) continue;
        const opened = open(text);
        if (!opened.ok) {
          unverified(segment, line);
          continue;
        }
        const record: unknown = opened.record;
        if (isOfType(record, type) && matches(record, filter)) yield record;
      }
    }
  }
}

function isOfType(value: unknown, type: RecordType): value is DecisionLine {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  if (typeof r['type'] !== 'string' || typeof r['seq'] !== 'number' || typeof r['ts'] !== 'string' || typeof r['instance'] !== 'string') return false;
  return type === 'all' || r['type'] === type || (type === 'event' && !KINDS.has(r['type']));
}

function isDecision(value: unknown): value is DecisionLine {
  return isOfType(value, 'decision');
}

/** The client a record is about: a decision's client_id, or the client an admin change was made to. */
function clientOf(record: DecisionLine): unknown {
  const action = record['action'];
  return record['type'] === 'admin' && typeof action === 'string' && action.startsWith('client.') ? record['target'] : record['client_id'];
}

/** The exact check, after the text prefilter (a needle could have matched inside another field's value). */
function matches(record: DecisionLine, filter: RecordFilter): boolean {
  return (
    (filter.client === undefined || clientOf(record) === filter.client) &&
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
    const text = buffer.subarray(0, read).toString('utf8');
    const end = text.indexOf('\n');
    // Only a first record that verifies may decide that a segment is skipped.
    const opened = end === -1 ? undefined : open(text.slice(0, end));
    const ms = opened?.ok === true ? Date.parse(opened.record.ts) : Number.NaN;
    return Number.isNaN(ms) ? undefined : ms;
  } finally {
    closeSync(fd);
  }
}

function byTs(a: DecisionLine, b: DecisionLine): number {
  return a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : a.seq - b.seq;
}

/**
 * Verified decision records of a segment between byte `offset` and `limit` (default: its end), and the offset after the
 * last complete line read.
 */
function decisionsIn(dir: string, segment: string, offset: number, unverified: Unverified, limit = Number.POSITIVE_INFINITY): { records: DecisionLine[]; end: number } {
  const fd = openSync(join(dir, segment), 'r');
  let data: Buffer;
  try {
    const chunks: Buffer[] = [];
    let position = offset;
    while (position < limit) {
      const chunk = Buffer.alloc(Math.min(1 << 20, limit - position));
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
    const opened = open(text);
    if (!opened.ok) {
      unverified(segment, 0);
      continue;
    }
    const record: unknown = opened.record;
    if (isDecision(record)) records.push(record);
  }
  return { records, end: offset + last + 1 };
}

/** The bytes of a segment up to and including its last newline: where a reader of complete lines stands. */
function completeLength(path: string): number {
  return readFileSync(path).lastIndexOf(0x0a) + 1;
}

/**
 * `audit tail`: the newest records of every chain, then (`-f`) what is appended after them. Where it starts reading is
 * fixed when it is made, so the newest records and the followed ones meet exactly: nothing is missed or shown twice.
 */
export class AuditFollower {
  private readonly positions = new Map<string, { segment: string; offset: number }>();

  constructor(
    private readonly dir: string,
    private readonly unverified: Unverified = () => undefined,
  ) {
    for (const [instance, segments] of listChains(dir)) {
      const segment = segments.at(-1);
      if (segment !== undefined) this.positions.set(instance, { segment, offset: completeLength(join(dir, segment)) });
    }
  }

  /** The last `count` decision records over every chain up to where following begins, oldest first by ts. */
  last(count: number): DecisionLine[] {
    const all: DecisionLine[] = [];
    for (const [instance, segments] of listChains(this.dir)) {
      const at = this.positions.get(instance);
      if (at === undefined) continue;
      const kept: DecisionLine[] = [];
      for (let i = segments.indexOf(at.segment); i >= 0 && kept.length < count; i--) {
        const segment = segments[i] as string;
        const found = decisionsIn(this.dir, segment, 0, this.unverified, segment === at.segment ? at.offset : undefined).records;
        kept.unshift(...found.slice(-(count - kept.length)));
      }
      all.push(...kept);
    }
    return all.sort(byTs).slice(-count);
  }

  /** What was appended since the last poll (or since this follower was made), new segments and chains included. */
  poll(): DecisionLine[] {
    const fresh: DecisionLine[] = [];
    for (const [instance, segments] of listChains(this.dir)) {
      const at = this.positions.get(instance);
      // Names sort in chain order: a segment this follower was in and that is gone (moved, pruned) is passed over.
      const from = at === undefined ? 0 : segments.findIndex((segment) => segment >= at.segment);
      for (let i = from; i !== -1 && i < segments.length; i++) {
        const segment = segments[i] as string;
        const offset = at !== undefined && segment === at.segment ? at.offset : 0;
        const { records, end } = decisionsIn(this.dir, segment, offset, this.unverified);
        fresh.push(...records);
        this.positions.set(instance, { segment, offset: end });
      }
    }
    return fresh.sort(byTs);
  }
}
