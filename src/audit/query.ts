// Searching the audit log: decision records that match a filter, chain by chain in seq order — with the aggregated
// refusals that belong to the same question, and (on request) the completion record of each allow found, so the answer
// is what was sent. Built to stay fast on a big
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
  /** Default `decision` (refusals counted into `refusals_aggregated` records included). */
  readonly type?: RecordType;
  /** Epoch ms, inclusive. */
  readonly since?: number;
  /** Epoch ms, exclusive. */
  readonly until?: number;
  readonly instance?: string;
  /**
   * Every record that names the client: as `client_id` (it authenticated), as the `subject` it claimed (a refused client
   * authentication, an aggregate of them), or (admin records) as the client a change was made to.
   */
  readonly client?: string;
  readonly subject?: string;
  readonly route?: string;
  /** A canonical path prefix, by whole segments: `/echo` matches `/echo` and `/echo/x`, not `/echoes`. */
  readonly path?: string;
  readonly decision?: 'allow' | 'deny';
  readonly status?: number;
  readonly requestId?: string;
  /** The W3C trace id (decision records carry it): every request of one trace, across instances. */
  readonly traceId?: string;
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

/** The record type that counts refusals past the first ones of a flood (LOG-08): a decision query includes it. */
export const AGGREGATE = 'refusals_aggregated';
const AGGREGATE_NEEDLE = `"type":"${AGGREGATE}"`;
const COMPLETION_NEEDLE = '"type":"completion"';
/** Allows whose completion a query still waits for; past this many the oldest is given up (its status stays unknown). */
const MAX_AWAITED = 100_000;

export interface QueryOptions {
  /** Also yield the completion record of each allow yielded (after it, when it is found): what was sent. */
  readonly completions?: boolean;
}

export function* queryRecords(
  dir: string,
  filter: RecordFilter,
  unverified: Unverified = () => undefined,
  options: QueryOptions = {},
): Generator<DecisionLine> {
  const sinceIso = filter.since !== undefined ? new Date(filter.since).toISOString() : undefined;
  const untilIso = filter.until !== undefined ? new Date(filter.until).toISOString() : undefined;
  const type = filter.type ?? 'decision';
  // Values a matching line must contain verbatim (JSON.stringify gives the same escaping the writer used); for the client,
  // one of three (an authenticated client_id, a claimed subject, an admin record's target).
  const clientNeedles =
    filter.client === undefined
      ? undefined
      : [`"client_id":${JSON.stringify(filter.client)}`, `"subject":${JSON.stringify(filter.client)}`, `"target":${JSON.stringify(filter.client)}`];
  const needles = [
    filter.subject !== undefined ? `"subject":${JSON.stringify(filter.subject)}` : undefined,
    filter.route !== undefined ? `"route":${JSON.stringify(filter.route)}` : undefined,
    filter.requestId !== undefined ? `"request_id":${JSON.stringify(filter.requestId)}` : undefined,
    filter.traceId !== undefined ? `"trace_id":${JSON.stringify(filter.traceId)}` : undefined,
    filter.status !== undefined ? `"status":${filter.status},` : undefined,
    // The prefix without its closing quote: the path may go on.
    filter.path !== undefined ? `"path":${JSON.stringify(filter.path).slice(0, -1)}` : undefined,
  ].filter((needle): needle is string => needle !== undefined);
  // An aggregate is a count of refusals: it never says "decision", and only a deny query (or none) wants it.
  const decisionNeedle = filter.decision !== undefined ? `"decision":"${filter.decision}"` : undefined;
  const aggregatesWanted = filter.decision !== 'allow' && filter.requestId === undefined && filter.traceId === undefined && filter.path === undefined;
  /** instance + request id of each allow yielded whose completion is still ahead. */
  const awaited = new Set<string>();

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
        if (awaited.size > 0 && text.includes(COMPLETION_NEEDLE)) {
          // A completion is wanted for its allow, whatever the filter says (it may even fall just after `until`).
          const opened = open(text);
          if (!opened.ok) unverified(segment, line);
          else if (awaited.delete(`${instance}\n${String(opened.record['request_id'])}`)) yield opened.record;
          continue;
        }
        if (sinceIso !== undefined && ts < sinceIso) continue;
        if (untilIso !== undefined && ts >= untilIso) continue;
        if (!needles.every((needle) => text.includes(needle))) continue;
        if (clientNeedles !== undefined && !clientNeedles.some((needle) => text.includes(needle))) continue;
        if (decisionNeedle !== undefined && !text.includes(decisionNeedle) && !(aggregatesWanted && text.includes(AGGREGATE_NEEDLE))) continue;
        const opened = open(text);
        if (!opened.ok) {
          unverified(segment, line);
          continue;
        }
        const record: unknown = opened.record;
        if (!isOfType(record, type) || !matches(record, filter)) continue;
        if (record['type'] === AGGREGATE && !aggregatesWanted) continue;
        yield record;
        if (options.completions === true && record['decision'] === 'allow') {
          if (awaited.size >= MAX_AWAITED) awaited.delete(awaited.values().next().value as string);
          awaited.add(`${instance}\n${String(record['request_id'])}`);
        }
      }
    }
  }
}

function isOfType(value: unknown, type: RecordType): value is DecisionLine {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Record<string, unknown>;
  if (typeof r['type'] !== 'string' || typeof r['seq'] !== 'number' || typeof r['ts'] !== 'string' || typeof r['instance'] !== 'string') return false;
  return (
    type === 'all' ||
    r['type'] === type ||
    (type === 'decision' && r['type'] === AGGREGATE) ||
    (type === 'event' && !KINDS.has(r['type']) && r['type'] !== AGGREGATE)
  );
}

function isDecision(value: unknown): value is DecisionLine {
  return isOfType(value, 'decision');
}

/**
 * Whether a record names the client: an admin change made to it, or a request by it — authenticated (`client_id`) or only
 * claimed (`subject`: a client authentication that failed, and the aggregates of such refusals).
 */
function namesClient(record: DecisionLine, client: string): boolean {
  const action = record['action'];
  if (record['type'] === 'admin') return typeof action === 'string' && action.startsWith('client.') && record['target'] === client;
  return record['client_id'] === client || record['subject'] === client;
}

/** By whole segments: `/echo` is under `/echo` and `/echo/`, `/echo/x` too, `/echoes` is not. */
function underPath(path: unknown, prefix: string): boolean {
  if (typeof path !== 'string' || !path.startsWith(prefix)) return false;
  return path.length === prefix.length || prefix.endsWith('/') || path[prefix.length] === '/';
}

/** The exact check, after the text prefilter (a needle could have matched inside another field's value). */
function matches(record: DecisionLine, filter: RecordFilter): boolean {
  // An aggregate counts refusals: it is a deny for --decision.
  const decision = record['type'] === AGGREGATE ? 'deny' : record['decision'];
  return (
    (filter.client === undefined || namesClient(record, filter.client)) &&
    (filter.subject === undefined || record['subject'] === filter.subject) &&
    (filter.route === undefined || record['route'] === filter.route) &&
    (filter.path === undefined || underPath(record['path'], filter.path)) &&
    (filter.requestId === undefined || record['request_id'] === filter.requestId) &&
    (filter.traceId === undefined || record['trace_id'] === filter.traceId) &&
    (filter.decision === undefined || decision === filter.decision) &&
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
function decisionsIn(
  dir: string,
  segment: string,
  offset: number,
  unverified: Unverified,
  limit = Number.POSITIVE_INFINITY,
): { records: DecisionLine[]; end: number } {
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
