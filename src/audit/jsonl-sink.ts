// JSON-lines audit sink: appends one record per line to <dir>/audit.jsonl (mode 0600) through a bounded in-memory queue.
// Records queued in one event-loop turn go to the file in one write, so audit cost stays flat under load (one write
// per batch, not one thread-pool round trip per request). When the file fails or the queue is full, append() throws so
// the pipeline refuses instead of admitting unrecorded.
import { randomUUID } from 'node:crypto';
import { close, openSync, write } from 'node:fs';
import { join } from 'node:path';
import { makeDirectory } from '../lib/make-directory.js';
import { AuditUnavailableError, type AuditEvent, type AuditRecord, type AuditSink } from './event.js';

const RAW_TARGET_MAX = 512;

export interface JsonLinesAuditSinkOptions {
  readonly dir: string;
  /** Bytes that may wait for the disk before appends are refused. */
  readonly maxBufferedBytes?: number;
  readonly now?: () => number;
}

export class JsonLinesAuditSink implements AuditSink {
  readonly file: string;
  readonly bootId = randomUUID();
  private readonly fd: number;
  private readonly maxBufferedBytes: number;
  private readonly now: () => number;
  private seq = 0;
  private lastMs = Number.NaN;
  private lastIso = '';
  private failure: Error | undefined;
  private queue: string[] = [];
  private queuedBytes = 0;
  private writingBytes = 0;
  private scheduled = false;
  private closed = false;
  private waiters: { resolve: () => void; reject: (error: Error) => void }[] = [];

  constructor(options: JsonLinesAuditSinkOptions) {
    makeDirectory(options.dir, 0o700);
    this.file = join(options.dir, 'audit.jsonl');
    this.maxBufferedBytes = options.maxBufferedBytes ?? 8 * 1024 * 1024;
    this.now = options.now ?? Date.now;
    // Opened once at start: a missing or unwritable audit location stops the gateway before it serves anything.
    this.fd = openSync(this.file, 'a', 0o600);
  }

  append(event: AuditEvent): AuditRecord {
    if (this.failure !== undefined) throw new AuditUnavailableError(`audit file failed: ${this.failure.message}`);
    if (this.closed) throw new AuditUnavailableError('audit sink closed');
    if (this.queuedBytes + this.writingBytes > this.maxBufferedBytes) throw new AuditUnavailableError('audit buffer full');
    // Every key spelled out in one order: one object shape for every record (cheap to build and to serialize).
    const record: AuditRecord = {
      seq: ++this.seq,
      ts: this.timestamp(),
      boot_id: this.bootId,
      request_id: event.request_id,
      method: event.method,
      path: event.path,
      raw_target: event.raw_target.length > RAW_TARGET_MAX ? event.raw_target.slice(0, RAW_TARGET_MAX) : event.raw_target,
      route: event.route,
      protocol: event.protocol,
      client_ip: event.client_ip,
      peer_ip: event.peer_ip,
      decision: event.decision,
      stage: event.stage,
      code: event.code,
      reason: event.reason,
      status: event.status,
      subject: event.subject,
      auth_method: event.auth_method,
      cert_thumbprint: event.cert_thumbprint,
      client_id: event.client_id,
      jti: event.jti,
      scopes: event.scopes,
    };
    const line = JSON.stringify(record) + '\n';
    this.queue.push(line);
    this.queuedBytes += line.length;
    this.schedule();
    return record;
  }

  /** Resolves when every record appended so far has been handed to the operating system. */
  flush(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(new AuditUnavailableError(this.failure.message));
    if (this.queue.length === 0 && this.writingBytes === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush().catch(() => undefined);
    this.closed = true;
    await new Promise<void>((resolve) => close(this.fd, () => resolve()));
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

  private schedule(): void {
    if (this.scheduled || this.writingBytes > 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.writeBatch();
    });
  }

  private writeBatch(): void {
    if (this.queue.length === 0 || this.failure !== undefined) {
      this.settle();
      return;
    }
    const data = Buffer.from(this.queue.join(''), 'utf8');
    this.queue = [];
    this.queuedBytes = 0;
    this.writingBytes = data.length;
    this.writeAll(data, 0);
  }

  /** Writes `data` from `offset`, continuing after short writes; the file is opened in append mode, so order is kept. */
  private writeAll(data: Buffer, offset: number): void {
    write(this.fd, data, offset, data.length - offset, null, (error, written) => {
      if (error !== null) {
        this.failure = error;
        this.writingBytes = 0;
        this.settle();
        return;
      }
      if (offset + written < data.length) {
        this.writeAll(data, offset + written);
        return;
      }
      this.writingBytes = 0;
      if (this.queue.length > 0) this.writeBatch();
      else this.settle();
    });
  }

  private settle(): void {
    if (this.queue.length > 0 && this.failure === undefined) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) {
      if (this.failure !== undefined) waiter.reject(new AuditUnavailableError(this.failure.message));
      else waiter.resolve();
    }
  }
}

