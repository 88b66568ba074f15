// The audit log: one hash chain per gateway instance, written as JSON-lines segments in the audit directory (0700).
// Records appended in one event-loop turn form a batch that goes to the file in one write (group commit); flush()
// resolves once the batch holding the last appended record was handed to the operating system (and, with fsync
// `always`, made durable), so the pipeline can hold a request until its allow is written. Segments rotate by size and
// age; each new segment, and each restart, begins with a record naming the previous segment and head. Closed segments
// are made read-only (0400). A segment moved or deleted behind the gateway's back is noticed at the next batch: the batch
// goes to a fresh segment, followed by a record saying what was lost. When the directory cannot be written, appends
// throw (fail-closed: admitted requests get 503, refusals are still enforced) or are dropped and counted (fail-open),
// and the log tries to open a fresh segment every few seconds until it can. Its parts live beside it: chain-lock.ts (one
// writer per chain), segments.ts (reading segments back after a restart), checkpoint-cadence.ts (when to sign),
// retention.ts (what may be pruned), encode.ts (the records of a request, serialized by hand).
import { randomUUID } from 'node:crypto';
import { closeSync, close as closeFd, fdatasync, fdatasyncSync, fstatSync, openSync, readdirSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { makeDirectory } from '../lib/make-directory.js';
import { checkpointPayload, prunePayload, type CheckpointSigner } from './audit-key.js';
import { chainsIn, GENESIS, open as openLine, seal, segmentName } from './chain.js';
import { ChainLock } from './chain-lock.js';
import { CheckpointCadence } from './checkpoint-cadence.js';
import { lastCompleteRecord, sealSegment, statOrUndefined } from './segments.js';
import { planPruning, type RetentionPolicy } from './retention.js';
import { encodeCompletion, encodeDecision } from './encode.js';
import { RefusalAggregator, type AggregationSettings } from './aggregate.js';
import type { CheckpointExport } from './export.js';
import {
  AuditLogError,
  AuditUnavailableError,
  type AdminRecordFields,
  type AuditEvent,
  type AuditRecord,
  type AuditSink,
  type AuditState,
  type CompletionEvent,
  decisionRecordOf,
  type OperationalEvent,
} from './event.js';

/** While records are being dropped (fail-open) or refused, the alert is repeated this often. */
const ALERT_INTERVAL_MS = 10_000;

/** The audit log cannot be opened: a start-up failure an operator can act on (the message says what and where). */
function asAuditLogError(error: unknown, context: string): AuditLogError {
  if (error instanceof AuditLogError) return error;
  return new AuditLogError(`${context}: ${error instanceof Error ? error.message : String(error)}`);
}

export type FsyncPolicy = 'always' | 'interval' | 'off';
export type FailurePolicy = 'fail-closed' | 'fail-open';

export interface AuditLogOptions {
  readonly dir: string;
  /** The chain this process writes: its segments are `<instance>.<first seq>.jsonl`. */
  readonly instance: string;
  /**
   * Which configuration decides: the first 16 hex digits of its SHA-256, carried by every decision record (the full hash
   * is in the boot's gateway_start record). Changed with setConfigVersion when a reload takes effect.
   */
  readonly configVersion?: string;
  readonly fsync: FsyncPolicy;
  readonly fsyncIntervalMs: number;
  readonly onFailure: FailurePolicy;
  readonly segmentMaxBytes: number;
  readonly segmentMaxAgeMs: number;
  /** Bytes that may wait for the disk before appends are refused (fail-closed) or dropped (fail-open). */
  readonly maxBufferedBytes: number;
  readonly log: Logger;
  readonly now?: () => number;
  /** How often a fresh segment is tried after a write failure. */
  readonly recoveryIntervalMs?: number;
  /**
   * Retention: closed segments of this chain whose records are all older than `maxAgeMs`, or the oldest while the chain
   * is larger than `maxBytes`, are removed — after a `segments_pruned` record (signed with the audit key) says which, and
   * where the retained chain begins, so policy pruning verifies and a hand deletion does not. Checked every `checkMs`.
   */
  readonly retention?: RetentionPolicy;
  /** LOG-08: repeated refusals of one source are counted into one record per window past the first few. */
  readonly aggregateRefusals?: AggregationSettings;
  /** Signed checkpoints: every `everyRecords` records or `intervalMs` (whichever first), and at close. */
  readonly checkpoints?: {
    readonly signer: CheckpointSigner;
    readonly everyRecords: number;
    readonly intervalMs: number;
    /** Where each checkpoint also goes once it is in the log (a directory elsewhere, an HTTPS collector). */
    readonly exportTo?: CheckpointExport;
  };
}

/** Records of one event-loop turn (or of a turn's overflow), bound for one segment. */
class Batch {
  /** The file it goes to; re-pointed when that segment was lost before the batch was written. */
  segment: string;
  lines: string[] = [];
  bytes = 0;
  firstSeq = 0;
  lastSeq = 0;
  lastHash = '';
  readonly done: Promise<void>;
  resolve!: () => void;
  reject!: (error: Error) => void;
  constructor(segment: string) {
    this.segment = segment;
    this.done = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // A batch nobody waits for must not become an unhandled rejection.
    this.done.catch(() => undefined);
  }
}

interface OpenSegment {
  readonly name: string;
  readonly fd: number;
  readonly ino: number;
}

export class AuditLog implements AuditSink {
  readonly bootId = randomUUID();
  readonly dir: string;
  private readonly now: () => number;
  private readonly chainLock: ChainLock;
  private seq: number;
  private head: string;
  /** Last record known to be in a file: what a segment started after a loss or a failure links back to. */
  private writtenSeq: number;
  private writtenHead: string;
  /** The segment appends go to (its name), when it was started and the bytes appended to it so far. */
  private segment: { name: string; startedAt: number; bytes: number };
  private file: OpenSegment | undefined;
  private pending: Batch | undefined;
  /** Batches closed by a rotation within one turn, waiting to be written before the pending one. */
  private overflow: Batch[] = [];
  private writing: Batch | undefined;
  /** The segment holding the last written record. */
  private writtenSegment: string | null = null;
  private scheduled = false;
  private queuedBytes = 0;
  private unsynced = false;
  private syncing = false;
  private failure: Error | undefined;
  private dropped = 0;
  private lastAlert = 0;
  private closed = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private lastMs = Number.NaN;
  private lastIso = '';
  /** Present when checkpoints are signed: counts what they must cover. */
  private readonly cadence: CheckpointCadence | undefined;
  private exporting: Promise<void> = Promise.resolve();
  private recovery: NodeJS.Timeout | undefined;
  private configVersion: string | null;
  /** The seq the newest checkpoint of this run covers (see AuditState). */
  private checkpointSeq = 0;
  private readonly aggregator: RefusalAggregator | undefined;
  private pruning = false;

  constructor(private readonly options: AuditLogOptions) {
    this.dir = options.dir;
    this.configVersion = options.configVersion ?? null;
    this.aggregator = options.aggregateRefusals === undefined ? undefined : new RefusalAggregator(options.aggregateRefusals);
    this.now = options.now ?? Date.now;
    this.cadence = options.checkpoints === undefined ? undefined : new CheckpointCadence(options.checkpoints.everyRecords, options.checkpoints.intervalMs);
    makeDirectory(options.dir, 0o700);
    try {
      this.chainLock = new ChainLock(options.dir, options.instance, this.bootId);
    } catch (error) {
      throw asAuditLogError(error, `cannot lock audit chain "${options.instance}" (${join(options.dir, `${options.instance}.lock`)})`);
    }
    try {
      const previous = lastCompleteRecord(this.dir, this.options.instance, this.options.log);
      this.seq = previous?.seq ?? 0;
      this.head = previous?.hash ?? GENESIS;
      this.writtenSeq = this.seq;
      this.writtenHead = this.head;
      this.writtenSegment = previous?.segment ?? null;
      // Opened at start: a missing or unwritable audit location stops the gateway before it serves anything.
      this.segment = { name: segmentName(options.instance, this.seq + 1), startedAt: this.now(), bytes: 0 };
      this.file = this.openSegment(this.segment.name);
      this.appendChainRecord('segment_start', {
        reason: previous === undefined ? 'start' : 'restart',
        previous_segment: previous?.segment ?? null,
        previous_boot_id: previous?.bootId ?? null,
        // Bytes after the previous segment's last complete record: a write torn by a crash.
        torn_bytes: previous?.tornBytes ?? 0,
      });
      // After a crash the previous run's newest records are covered by no signature: this start signs over them at once,
      // so an honest chain never leaves records unsigned for longer than the cadence (verify --key holds it to that).
      if (previous !== undefined && !previous.signed) this.checkpoint();
    } catch (error) {
      this.chainLock.release();
      throw asAuditLogError(error, `cannot open audit chain "${options.instance}" in ${options.dir}`);
    }
    if (options.fsync === 'interval') {
      const timer = setInterval(() => this.syncNow(), options.fsyncIntervalMs);
      timer.unref();
      this.timers.push(timer);
    }
    const { retention } = options;
    if (retention !== undefined && (retention.maxAgeMs !== undefined || retention.maxBytes !== undefined)) {
      const timer = setInterval(() => void this.pruneIfDue(), retention.checkMs ?? 60_000);
      timer.unref();
      this.timers.push(timer);
    }
    if (this.aggregator !== undefined) {
      const timer = setInterval(() => this.writeAggregates(), this.aggregator.windowMs);
      timer.unref();
      this.timers.push(timer);
    }
    if (options.checkpoints !== undefined) {
      const timer = setInterval(() => {
        if (this.cadence?.uncovered === true && this.unavailableReason() === undefined) this.checkpoint();
      }, options.checkpoints.intervalMs);
      timer.unref();
      this.timers.push(timer);
    }
  }

  /** False while records cannot be written under fail-closed; readiness reports it (fail-open stays ready, and alerts). */
  get ready(): boolean {
    return this.failure === undefined || this.options.onFailure === 'fail-open';
  }

  /** The segment now being written. */
  get currentSegment(): string {
    return join(this.dir, this.segment.name);
  }

  append(event: AuditEvent): AuditRecord {
    const unavailable = this.unavailableReason();
    if (unavailable !== undefined) return this.refuseAppend(unavailable, event);
    // Counted into its source's aggregate, not written on its own: seq 0, like a record never written.
    if (event.decision === 'deny' && this.aggregator !== undefined && !this.aggregator.admit(event, this.now())) return this.unwritten(event);
    this.rotateIfDue();
    const seq = ++this.seq;
    const record = decisionRecordOf(
      { seq, ts: this.timestamp(), instance: this.options.instance, boot_id: this.bootId, config: this.configVersion, prev: this.head },
      event,
    );
    const { hash } = this.enqueue(record, encodeDecision(record));
    // The member is added after serialization (the sealed bytes have no hash of their own): one shape transition for
    // every record alike, instead of copying the record.
    return Object.assign(record, { hash });
  }

  /** The configuration that decides from the next record on (a reload). */
  setConfigVersion(version: string): void {
    this.configVersion = version;
  }

  state(): AuditState {
    return { seq: this.seq, dropped: this.dropped, queuedBytes: this.queuedBytes, checkpointSeq: this.checkpointSeq };
  }

  event(type: OperationalEvent, fields: Readonly<Record<string, string | number | null>>): void {
    if (this.unavailableReason() !== undefined) {
      this.dropped++;
      return;
    }
    this.checkpointIfStale(this.now());
    this.appendChainRecord(type, fields);
  }

  /**
   * A change made with the CLI (clients, signing keys) and who made it. Throws like append (the command reports a change
   * it could not record); the caller awaits flush() before it reports success.
   */
  admin(change: AdminRecordFields): void {
    const unavailable = this.unavailableReason();
    if (unavailable !== undefined) throw new AuditUnavailableError(unavailable);
    this.rotateIfDue();
    const seq = ++this.seq;
    const record = { seq, ts: this.timestamp(), type: 'admin', instance: this.options.instance, boot_id: this.bootId, ...change, prev: this.head };
    this.enqueue(record);
  }

  complete(event: CompletionEvent): void {
    if (this.unavailableReason() !== undefined) {
      this.dropped++;
      return;
    }
    this.rotateIfDue();
    const seq = ++this.seq;
    // One per admitted request: built in one literal of one shape, like a decision record.
    const record = {
      seq,
      ts: this.timestamp(),
      type: 'completion' as const,
      instance: this.options.instance,
      boot_id: this.bootId,
      request_id: event.request_id,
      route: event.route,
      status: event.status,
      upstream: event.upstream,
      upstream_status: event.upstream_status,
      upstream_error: event.upstream_error,
      upstream_target: event.upstream_target,
      upstream_retried: event.upstream_retried,
      code: event.code,
      upstream_ms: event.upstream_ms,
      bytes_in: event.bytes_in,
      bytes_out: event.bytes_out,
      duration_ms: event.duration_ms,
      prev: this.head,
    };
    this.enqueue(record, encodeCompletion(record));
  }

  /**
   * Resolves once every record appended so far was handed to the operating system (and fsynced, with `always`). Rejects
   * when they could not be written and the policy is fail-closed.
   */
  flush(): Promise<void> {
    const last = this.pending ?? this.writing;
    if (last !== undefined) return last.done;
    if (this.failure !== undefined && this.options.onFailure === 'fail-closed') return Promise.reject(new AuditUnavailableError(this.failure.message));
    return Promise.resolve();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.writeAggregates();
    // A clean stop leaves its tail covered by a checkpoint. Then closed: nothing appended from here on can start a write
    // behind the final one.
    if (this.cadence?.uncovered === true && this.unavailableReason() === undefined) this.checkpoint();
    this.closed = true;
    while (this.pending !== undefined || this.writing !== undefined || this.overflow.length > 0) await this.flush().catch(() => undefined);
    await this.exporting;
    await this.options.checkpoints?.exportTo?.close();
    for (const timer of this.timers) clearInterval(timer);
    if (this.recovery !== undefined) clearTimeout(this.recovery);
    if (this.file !== undefined) {
      const { fd, name } = this.file;
      this.file = undefined;
      await new Promise<void>((resolve) => fdatasync(fd, () => resolve()));
      await new Promise<void>((resolve) => closeFd(fd, () => resolve()));
      sealSegment(this.dir, name);
    }
    this.chainLock.release();
  }

  private unavailableReason(): string | undefined {
    if (this.closed) return 'audit log closed';
    if (this.failure !== undefined) return `audit log cannot be written: ${this.failure.message}`;
    if (this.queuedBytes > this.options.maxBufferedBytes) return 'audit buffer full';
    return undefined;
  }

  /** Fail-closed: the caller gets the error (admitted requests fail with 503). Fail-open: the record is dropped and counted. */
  private refuseAppend(reason: string, event: AuditEvent): AuditRecord {
    this.dropped++;
    const now = this.now();
    if (now - this.lastAlert >= ALERT_INTERVAL_MS) {
      this.lastAlert = now;
      this.options.log.error({ dropped: this.dropped, policy: this.options.onFailure, reason }, 'audit records are not being written');
    }
    if (this.options.onFailure === 'fail-closed') throw new AuditUnavailableError(reason);
    return this.unwritten(event);
  }

  /** The record of a decision that is not in the chain on its own (dropped under fail-open, or aggregated): seq 0. */
  private unwritten(event: AuditEvent): AuditRecord {
    const record = decisionRecordOf(
      { seq: 0, ts: this.timestamp(), instance: this.options.instance, boot_id: this.bootId, config: this.configVersion, prev: '' },
      event,
    );
    return Object.assign(record, { hash: '' });
  }

  /** The window's aggregated refusals, one record per source (exact counts); counted as dropped if they cannot be written. */
  private writeAggregates(): void {
    const aggregates = this.aggregator?.drain() ?? [];
    for (const fields of aggregates) {
      if (this.unavailableReason() !== undefined) this.dropped++;
      else {
        this.rotateIfDue();
        this.appendChainRecord('refusals_aggregated', fields);
      }
    }
  }

  /** A record of the chain itself (segment start, segment lost, checkpoint), chained like every other. Returns its line. */
  private appendChainRecord(type: string, fields: Record<string, string | number | null>, ts = this.timestamp()): string {
    const seq = ++this.seq;
    const record = { seq, ts, type, instance: this.options.instance, boot_id: this.bootId, ...fields, prev: this.head };
    return this.enqueue(record).line;
  }

  /**
   * The one way a built record (its seq just taken, its prev the current head) joins the chain: sealed, queued for the
   * next batch, and — unless it is a checkpoint — counted towards the next checkpoint.
   */
  private enqueue(record: { readonly seq: number; readonly type: string }, json = JSON.stringify(record)): { readonly line: string; readonly hash: string } {
    const sealed = seal(json);
    this.queue(sealed.line, record.seq, sealed.hash);
    // Exactly every N records, whatever kind: verify holds a chain to this cadence (`unsigned` past it).
    if (record.type !== 'checkpoint' && this.cadence?.counted(this.now) === true) this.checkpoint();
    return sealed;
  }

  /**
   * Applies the retention policy to this chain's closed segments (never the one being written): the oldest ones it
   * covers are named in a signed `segments_pruned` record, and deleted once that record is in the file. A segment whose
   * successor does not begin with a verifiable record stops the pruning there (verify would have nothing to link to).
   */
  pruneIfDue(): Promise<void> {
    const policy = this.options.retention;
    if (policy === undefined || this.pruning || this.unavailableReason() !== undefined) return Promise.resolve();
    const names = chainsIn(readdirSync(this.dir)).get(this.options.instance) ?? [];
    const open = [this.segment.name, ...(this.file === undefined ? [] : [this.file.name])];
    const plan = planPruning(this.dir, names, open, policy, this.now(), this.options.log);
    if (plan === undefined) return Promise.resolve();
    const { through, reason } = plan;
    const pruned = plan.segments;
    const segments = pruned.join(' ');
    const ts = this.timestamp();
    const signer = this.options.checkpoints?.signer;
    const signature =
      signer === undefined
        ? null
        : signer.sign(prunePayload({ instance: this.options.instance, throughSeq: through.seq, throughHash: through.hash, segments, ts, bootId: this.bootId }));
    this.rotateIfDue();
    this.appendChainRecord(
      'segments_pruned',
      {
        segments,
        through_seq: through.seq,
        through_hash: through.hash,
        pruned_bytes: plan.bytes,
        reason,
        key_id: signer?.keyId ?? null,
        signature,
      },
      ts,
    );
    this.pruning = true;
    // Resolves once the files are gone (or their removal failed, which is logged): never rejects.
    return this.flush()
      .then(() => {
        for (const name of pruned) unlinkSync(join(this.dir, name));
        this.options.log.info({ segments: pruned.length, through_seq: through.seq, reason }, 'audit retention removed old segments');
      })
      .catch((error: unknown) =>
        this.options.log.error({ err: error instanceof Error ? error.message : String(error) }, 'audit retention could not remove old segments'),
      )
      .finally(() => {
        this.pruning = false;
      });
  }

  /**
   * The interval timer signs idle stretches; this signs busy ones whose timer is late (a loaded event loop, a stepped
   * clock), so no record waits for a signature longer than the interval: the bound verify --key holds a chain to.
   */
  private checkpointIfStale(now: number): void {
    if (this.cadence?.stale(now) === true && this.unavailableReason() === undefined) this.checkpoint();
  }

  /**
   * A checkpoint: the seq and hash of the newest record, the time and the boot, signed with the audit key (LOG-05). In
   * the chain like every record, and exported once it is in the file: a verifier holding exported checkpoints detects a
   * tail cut off after them and a chain rewritten by anyone without the audit key.
   */
  private checkpoint(): void {
    const settings = this.options.checkpoints;
    if (settings === undefined) return;
    const ts = this.timestamp();
    const coversSeq = this.seq;
    const head = this.head;
    const signature = settings.signer.sign(checkpointPayload({ instance: this.options.instance, coversSeq, head, ts, bootId: this.bootId }));
    const line = this.appendChainRecord('checkpoint', { covers_seq: coversSeq, head, key_id: settings.signer.keyId, signature }, ts);
    this.checkpointSeq = coversSeq;
    this.cadence?.signed();
    const target = settings.exportTo;
    if (target === undefined) return;
    const written = this.flush();
    // Exported in order, once in the file; a checkpoint that could not be written is not exported (that failure alerts).
    this.exporting = this.exporting
      .then(() => written)
      .then(
        () => target.send(line),
        () => undefined,
      );
  }

  private queue(line: string, seq: number, hash: string): void {
    this.head = hash;
    let batch = this.pending;
    if (batch === undefined || batch.segment !== this.segment.name) {
      // A new turn's batch, or the first records of a segment that a rotation just began (written after the old ones).
      batch = new Batch(this.segment.name);
      if (this.pending !== undefined) this.overflow.push(this.pending);
      this.pending = batch;
    }
    if (batch.lines.length === 0) batch.firstSeq = seq;
    batch.lines.push(line);
    batch.bytes += line.length;
    batch.lastSeq = seq;
    batch.lastHash = hash;
    this.segment.bytes += line.length;
    this.queuedBytes += line.length;
    this.schedule();
  }

  /** Before a record takes its seq: a checkpoint first if the uncovered records are due one by time, then a new segment if due. */
  private rotateIfDue(): void {
    const now = this.now();
    this.checkpointIfStale(now);
    const { segment } = this;
    const reason = segment.bytes >= this.options.segmentMaxBytes ? 'size' : now - segment.startedAt >= this.options.segmentMaxAgeMs ? 'age' : undefined;
    if (reason === undefined) return;
    const previous = segment.name;
    this.segment = { name: segmentName(this.options.instance, this.seq + 1), startedAt: this.now(), bytes: 0 };
    this.appendChainRecord('segment_start', { reason, previous_segment: previous, previous_boot_id: this.bootId, torn_bytes: 0 });
  }

  private schedule(): void {
    if (this.scheduled || this.writing !== undefined) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.writeNext();
    });
  }

  private writeNext(): void {
    const batch = this.overflow.shift() ?? this.pending;
    if (batch === undefined) return;
    if (batch === this.pending) this.pending = undefined;
    this.writing = batch;
    let target: OpenSegment;
    try {
      target = this.targetFor(batch);
    } catch (error) {
      this.failed(batch, error);
      return;
    }
    const data = Buffer.from(batch.lines.join(''), 'utf8');
    this.writeAll(target.fd, data, batch);
  }

  /**
   * The open file for a batch: the current one, a new segment a rotation asked for (the old one is closed and made
   * read-only), or — when the current file was moved or deleted behind the gateway — a fresh segment, with an alert and
   * a record of the loss after this batch.
   */
  private targetFor(batch: Batch): OpenSegment {
    const file = this.file;
    if (file !== undefined && file.name === batch.segment) {
      const onDisk = statOrUndefined(join(this.dir, file.name));
      if (onDisk !== undefined && onDisk.ino === file.ino) return file;
      // Named after the first record it will hold, as every segment is.
      const replacement = segmentName(this.options.instance, batch.firstSeq);
      this.options.log.error({ segment: file.name, replacement }, 'audit segment was moved or deleted behind the gateway; continuing in a new segment');
      this.closeSegment(file, false);
      this.file = this.openSegment(replacement);
      // Appends go on in the replacement, unless a rotation already moved them on to a newer segment.
      if (this.segment.name === file.name) this.segment = { name: replacement, startedAt: this.now(), bytes: batch.bytes };
      // Later batches already bound for the lost name go to the replacement as well.
      for (const waiting of [...this.overflow, this.pending]) if (waiting?.segment === file.name) waiting.segment = replacement;
      this.appendChainRecord('segment_lost', { segment: file.name, last_seq_written: this.writtenSeq, last_hash_written: this.writtenHead });
      return this.file;
    }
    if (file !== undefined) this.closeSegment(file, true);
    this.file = this.openSegment(batch.segment);
    return this.file;
  }

  /**
   * Writes the batch in one call on the event loop, continuing after short writes; the file is opened in append mode, so
   * order is kept. Synchronous on purpose: a write into the page cache takes microseconds, while handing it to libuv's
   * thread pool cost more CPU than the write itself (a thread wake-up and a completion callback per batch) and put every
   * admitted request behind a thread-pool round trip (`npm run bench`). Durability is fdatasync's business, which stays
   * off the loop (fsync `always` awaits it per batch; `interval` runs it on a timer).
   */
  private writeAll(fd: number, data: Buffer, batch: Batch): void {
    let offset = 0;
    try {
      while (offset < data.length) offset += writeSync(fd, data, offset, data.length - offset);
    } catch (error) {
      this.failed(batch, error, offset);
      return;
    }
    // A failed fsync leaves the bytes written (in the page cache, maybe on disk): they are counted as written.
    if (this.options.fsync === 'always') fdatasync(fd, (syncError) => (syncError !== null ? this.failed(batch, syncError, data.length) : this.written(batch)));
    else {
      this.unsynced = true;
      this.written(batch);
    }
  }

  private written(batch: Batch): void {
    this.writing = undefined;
    this.queuedBytes -= batch.bytes;
    this.writtenSeq = batch.lastSeq;
    this.writtenHead = batch.lastHash;
    this.writtenSegment = batch.segment;
    batch.resolve();
    if (this.overflow.length > 0 || this.pending !== undefined) this.writeNext();
  }

  /**
   * The write failed: what is not in the file of this batch, and every batch queued behind it, is lost; the log recovers
   * in a fresh segment later. `writtenBytes` of the batch did reach the file: its complete lines are on record, and the
   * recovered segment links to the last of them (a partial line after them is a torn write).
   */
  private failed(batch: Batch, error: unknown, writtenBytes = 0): void {
    const failure = error instanceof Error ? error : new Error(String(error));
    this.failure = failure;
    this.writing = undefined;
    let bytes = 0;
    for (const line of batch.lines) {
      bytes += Buffer.byteLength(line);
      if (bytes > writtenBytes) break;
      const opened = openLine(line.slice(0, -1));
      if (opened.ok) {
        this.writtenSeq = opened.record.seq;
        this.writtenHead = opened.hash;
        this.writtenSegment = batch.segment;
      }
    }
    const lost = [batch, ...this.overflow, ...(this.pending !== undefined ? [this.pending] : [])];
    this.overflow = [];
    this.pending = undefined;
    this.queuedBytes = 0;
    for (const each of lost) {
      this.dropped += each.lines.length;
      if (this.options.onFailure === 'fail-closed') each.reject(new AuditUnavailableError(failure.message));
      else each.resolve();
    }
    this.lastAlert = this.now();
    this.options.log.error({ err: failure.message, dropped: this.dropped, policy: this.options.onFailure }, 'audit log write failed');
    this.scheduleRecovery();
  }

  /** Every few seconds, a fresh segment is tried; once it opens, the chain goes on there with a record of the gap. */
  private scheduleRecovery(): void {
    if (this.recovery !== undefined || this.closed) return;
    this.recovery = setTimeout(() => {
      this.recovery = undefined;
      if (this.closed || this.failure === undefined) return;
      const name = segmentName(this.options.instance, this.seq + 1);
      try {
        const fresh = this.openSegment(name);
        if (this.file !== undefined) this.closeSegment(this.file, true);
        this.file = fresh;
      } catch (error) {
        this.options.log.warn({ err: error instanceof Error ? error.message : String(error) }, 'audit log still cannot be written');
        this.scheduleRecovery();
        return;
      }
      const lostFrom = this.writtenSeq + 1;
      const lostTo = this.seq;
      const dropped = this.dropped;
      this.failure = undefined;
      this.dropped = 0;
      this.segment = { name, startedAt: this.now(), bytes: 0 };
      // Records lost_from..lost_to were appended but never written; the chain links to the last one that was.
      this.head = this.writtenHead;
      this.appendChainRecord('segment_start', {
        reason: 'recovered',
        previous_segment: this.writtenSegment,
        previous_boot_id: this.bootId,
        torn_bytes: 0,
        lost_from_seq: lostFrom,
        lost_to_seq: lostTo,
        refused_or_dropped: dropped,
      });
      // The records written before the outage waited for a checkpoint all along: signed now.
      this.checkpoint();
      this.options.log.warn({ segment: name, lost_from_seq: lostFrom, lost_to_seq: lostTo }, 'audit log writable again');
    }, this.options.recoveryIntervalMs ?? 5000);
    this.recovery.unref();
  }

  /** fsync `interval`: what was written since the last sync is made durable. */
  private syncNow(): void {
    const file = this.file;
    if (!this.unsynced || this.syncing || file === undefined) return;
    this.unsynced = false;
    this.syncing = true;
    fdatasync(file.fd, (error) => {
      this.syncing = false;
      if (error !== null && this.file === file) this.options.log.error({ err: error.message }, 'audit log fsync failed');
    });
  }

  /**
   * Closes a segment the log is done with: its data is made durable first (unless fsync is off; only the current
   * segment has an fsync timer), so a power loss cannot take an old segment's tail while a newer segment survives.
   */
  private closeSegment(file: OpenSegment, seal: boolean): void {
    if (this.file === file) this.file = undefined;
    try {
      if (this.options.fsync !== 'off') fdatasyncSync(file.fd);
    } catch (error) {
      this.options.log.error({ segment: file.name, err: error instanceof Error ? error.message : String(error) }, 'audit log fsync failed');
    }
    closeSync(file.fd);
    if (seal) sealSegment(this.dir, file.name);
  }

  private openSegment(name: string): OpenSegment {
    // 'wx': a segment is never reopened or shared; owner read/write only while it is written.
    const fd = openSync(join(this.dir, name), 'wx', 0o600);
    return { name, fd, ino: fstatSync(fd).ino };
  }

  /** Many records share a millisecond under load; the ISO string is made once per millisecond. */
  private timestamp(): string {
    const now = this.now();
    if (now !== this.lastMs) {
      this.lastMs = now;
      this.lastIso = new Date(now).toISOString();
    }
    return this.lastIso;
  }
}
