// JSON-lines audit sink: appends one record per line to <dir>/audit.jsonl (mode 0600), buffered and bounded.
// When the file fails or the buffer is full, append() throws so the pipeline can refuse instead of admitting unrecorded.
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
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
  private readonly stream: WriteStream;
  private readonly maxBufferedBytes: number;
  private readonly now: () => number;
  private seq = 0;
  private failure: Error | undefined;

  constructor(options: JsonLinesAuditSinkOptions) {
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    this.file = join(options.dir, 'audit.jsonl');
    this.maxBufferedBytes = options.maxBufferedBytes ?? 8 * 1024 * 1024;
    this.now = options.now ?? Date.now;
    this.stream = createWriteStream(this.file, { flags: 'a', mode: 0o600 });
    this.stream.on('error', (error) => {
      this.failure = error;
    });
  }

  append(event: AuditEvent): AuditRecord {
    if (this.failure !== undefined) throw new AuditUnavailableError(`audit file failed: ${this.failure.message}`);
    if (this.stream.writableLength > this.maxBufferedBytes) throw new AuditUnavailableError('audit buffer full');
    const record: AuditRecord = {
      seq: ++this.seq,
      ts: new Date(this.now()).toISOString(),
      boot_id: this.bootId,
      ...event,
      raw_target: event.raw_target.length > RAW_TARGET_MAX ? event.raw_target.slice(0, RAW_TARGET_MAX) : event.raw_target,
    };
    this.stream.write(JSON.stringify(record) + '\n');
    return record;
  }

  flush(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(new AuditUnavailableError(this.failure.message));
    // Writes complete in order, so the callback of an empty write fires after everything before it.
    return new Promise((resolve, reject) => {
      this.stream.write('', (error) => (error ? reject(error) : resolve()));
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.stream.closed || this.stream.destroyed) {
        resolve();
        return;
      }
      this.stream.end(() => resolve());
    });
  }
}
