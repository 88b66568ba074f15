// Where signed checkpoints go once they are in the log (LOG-05): a directory (an append-only file, mounted from
// elsewhere) or an HTTPS collector with its CA pinned. A checkpoint held only next to the log proves nothing against
// someone who can rewrite the log, so an export failure is an alert and a retry, never a reason to refuse requests.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { appendFile } from 'node:fs/promises';
import { validateHeaderValue, type ClientRequest } from 'node:http';
import { Agent, request, type RequestOptions } from 'node:https';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { makeDirectory } from '../lib/make-directory.js';
import { AuditLogError } from './event.js';

/** Receives each checkpoint line (JSON ending in "\n") once it is in the log file. */
export interface CheckpointExport {
  /** Queues the line; never throws, never waits. */
  send(line: string): void;
  /** Resolves (never rejects) once every line sent before it was delivered or given up on. */
  close(): Promise<void>;
}

/** Appends each line, in order, to `<dir>/<instance>.checkpoints.jsonl` (created 0600). */
export function directoryExport(dir: string, instance: string, log: Logger): CheckpointExport {
  const target = join(dir, `${instance}.checkpoints.jsonl`);
  let chain: Promise<void> = Promise.resolve();
  return {
    send(line: string): void {
      // One append at a time keeps the file in checkpoint order; a failed one is logged and the next still runs.
      chain = chain
        .then(() => appendFile(target, line, { mode: 0o600 }))
        .catch((error: unknown) => log.error({ target, err: errorMessage(error) }, 'audit checkpoint export failed'));
    },
    close: () => chain,
  };
}

export interface HttpsExportOptions {
  /** An `https:` URL; each attempt POSTs the queued lines to it as one application/x-ndjson body. */
  readonly url: URL;
  /** PEM: the only certificate authorities trusted for the collector (the system roots are not). */
  readonly ca: string;
  readonly instance: string;
  readonly log: Logger;
  /** One attempt, from connecting to the end of the answer. */
  readonly timeoutMs?: number;
  readonly maxQueued?: number;
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** PEM certificate and key presented to the collector (mTLS); both or neither. */
  readonly clientCert?: string;
  readonly clientKey?: string;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_QUEUED = 10_000;
const DEFAULT_RETRY_MIN_MS = 1_000;
const DEFAULT_RETRY_MAX_MS = 60_000;
/** While the collector keeps failing, the alert is repeated this often (as the audit log's own alerts are). */
const ERROR_LOG_INTERVAL_MS = 10_000;
/** The collector's answer is read and discarded; beyond this much the connection is cut. */
const RESPONSE_BODY_MAX_BYTES = 64 * 1024;
/** setTimeout takes a longer delay as 1 ms: a retry delay beyond it would be a busy loop. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What one attempt came to: the collector's status, or why there was none. */
type Outcome = { readonly status: number } | { readonly err: string };

/**
 * POSTs queued checkpoints, oldest first, to a collector whose certificate must chain to the pinned CA and name the URL's
 * host. A 2xx answer takes the lines sent off the queue; anything else keeps them for a retry with exponential backoff.
 * The queue is bounded: when full the oldest line goes, since a later checkpoint covers more of the chain. Lines sent
 * after close() are ignored.
 */
export function httpsExport(options: HttpsExportOptions): CheckpointExport {
  return new HttpsExport(options);
}

class HttpsExport implements CheckpointExport {
  private readonly url: URL;
  /** What logs name: never the credentials or the query the URL may carry. */
  private readonly logUrl: string;
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly maxQueued: number;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;
  private readonly agent: Agent;
  private readonly requestOptions: RequestOptions & { readonly secureContext: SecureContext };
  private readonly lines: string[] = [];
  /** Lines at the head of `lines` in the attempt now running. */
  private sending = 0;
  /** Lines of the running attempt pushed out of the queue meanwhile: lost unless that attempt succeeds. */
  private droppedSending = 0;
  /** Lines lost to the queue bound, since the start. */
  private dropped = 0;
  private failures = 0;
  private lastErrorLog = Number.NEGATIVE_INFINITY;
  private running: Promise<boolean> | undefined;
  private backoff: NodeJS.Timeout | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: HttpsExportOptions) {
    const { url } = options;
    if (url.protocol !== 'https:') throw new Error(`audit checkpoint export: only https: URLs are allowed, got ${url.protocol} (${url.origin}${url.pathname})`);
    this.timeoutMs = positiveInteger(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs', MAX_TIMER_MS);
    this.maxQueued = positiveInteger(options.maxQueued ?? DEFAULT_MAX_QUEUED, 'maxQueued', Number.MAX_SAFE_INTEGER);
    this.retryMinMs = positiveInteger(options.retryMinMs ?? DEFAULT_RETRY_MIN_MS, 'retryMinMs', MAX_TIMER_MS);
    this.retryMaxMs = positiveInteger(options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS, 'retryMaxMs', MAX_TIMER_MS);
    if (this.retryMaxMs < this.retryMinMs) throw new Error('audit checkpoint export: retryMaxMs must not be below retryMinMs');
    if ((options.clientCert === undefined) !== (options.clientKey === undefined))
      throw new Error('audit checkpoint export: clientCert and clientKey go together');
    // An empty or unreadable CA would not fail here: Node would trust the system roots, or nothing, without a word.
    try {
      new X509Certificate(options.ca);
    } catch (error) {
      throw new Error(`audit checkpoint export: the pinned CA is not a PEM certificate (${errorMessage(error)})`);
    }
    validateHeaderValue('x-gatehouse-instance', options.instance);
    this.url = url;
    this.logUrl = `${url.origin}${url.pathname}`;
    this.log = options.log;
    // No keep-alive: checkpoints are minutes apart, and a reused socket the collector just closed would be a false alarm.
    // The agent still caches TLS sessions for resumption.
    this.agent = new Agent({ keepAlive: false });
    this.requestOptions = {
      method: 'POST',
      agent: this.agent,
      // Built once (tls.connect takes it as is): the PEM is parsed here, so a bad client key fails at start-up. With
      // `ca` given, only it is trusted, not the system roots; the host name is checked as usual.
      secureContext: createSecureContext({
        ca: options.ca,
        minVersion: 'TLSv1.2',
        ...(options.clientCert !== undefined && options.clientKey !== undefined ? { cert: options.clientCert, key: options.clientKey } : {}),
      }),
      rejectUnauthorized: true,
      headers: { 'content-type': 'application/x-ndjson', 'x-gatehouse-instance': options.instance },
    };
  }

  send(line: string): void {
    if (this.closed) return;
    if (this.lines.length >= this.maxQueued) {
      this.lines.shift();
      if (this.sending > 0) {
        this.sending--;
        this.droppedSending++;
      } else this.dropped++;
    }
    this.lines.push(line);
    if (this.running === undefined && this.backoff === undefined) this.attempt();
  }

  close(): Promise<void> {
    this.closed = true;
    this.closing ??= this.finish();
    return this.closing;
  }

  private async finish(): Promise<void> {
    clearTimeout(this.backoff);
    this.backoff = undefined;
    // The attempt running now is the final one, unless it succeeds and later lines wait behind it; a pending retry is
    // made at once instead.
    const ok = this.running === undefined ? true : await this.running;
    if (ok && this.lines.length > 0) await this.attempt();
    if (this.lines.length > 0) {
      this.log.error({ url: this.logUrl, queued: this.lines.length, dropped: this.dropped, at_close: true }, 'audit checkpoint export failed');
    }
    this.agent.destroy();
  }

  /** POSTs every queued line; resolves true when the collector took them. */
  private attempt(): Promise<boolean> {
    const count = this.lines.length;
    this.sending = count;
    this.droppedSending = 0;
    const running = this.post(Buffer.from(this.lines.join(''), 'utf8')).then((outcome) => this.settled(outcome, count));
    this.running = running;
    return running;
  }

  private settled(outcome: Outcome, count: number): boolean {
    this.running = undefined;
    const ok = 'status' in outcome && outcome.status >= 200 && outcome.status < 300;
    if (ok) {
      this.lines.splice(0, this.sending);
      if (this.failures > 0) this.log.warn({ url: this.logUrl, delivered: count }, 'audit checkpoint export recovered');
      this.failures = 0;
    } else {
      this.dropped += this.droppedSending;
      this.failures++;
    }
    this.sending = 0;
    this.droppedSending = 0;
    if (ok) {
      // Lines sent while this attempt ran go at once.
      if (this.lines.length > 0 && !this.closed) this.attempt();
      return true;
    }
    const now = Date.now();
    if (now - this.lastErrorLog >= ERROR_LOG_INTERVAL_MS) {
      this.lastErrorLog = now;
      this.log.error(
        { url: this.logUrl, ...outcome, queued: this.lines.length, dropped: this.dropped, failures: this.failures },
        'audit checkpoint export failed',
      );
    }
    if (!this.closed) {
      const delay = Math.min(this.retryMaxMs, this.retryMinMs * 2 ** Math.min(this.failures - 1, 30));
      this.backoff = setTimeout(() => {
        this.backoff = undefined;
        if (!this.closed && this.lines.length > 0) this.attempt();
      }, delay);
      this.backoff.unref();
    }
    return false;
  }

  /** One request, never rejecting: settles with the status once the answer was read (or cut), or with the error. */
  private post(body: Buffer): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      let outcome: Outcome | undefined;
      let req: ClientRequest;
      try {
        req = request(this.url, this.requestOptions);
        req.setHeader('content-length', body.length);
      } catch (error) {
        // Not expected (the options were checked when built), but send() must never throw nor leave an attempt hanging.
        resolve({ err: errorMessage(error) });
        return;
      }
      // The whole exchange is bounded, not just idle time: a collector trickling bytes cannot hold the queue (or close()).
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      timer.unref();
      req.on('response', (res) => {
        outcome ??= { status: res.statusCode ?? 0 };
        let received = 0;
        res.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (received > RESPONSE_BODY_MAX_BYTES) req.destroy();
        });
        res.on('error', () => undefined);
      });
      req.on('error', (error) => {
        outcome ??= { err: errorMessage(error) };
      });
      // The next attempt starts only once this connection is done, so attempts never overlap.
      req.on('close', () => {
        clearTimeout(timer);
        resolve(outcome ?? { err: 'connection closed without an answer' });
      });
      req.end(body);
    });
  }
}

/** Runs each export side by side; one failing or slow does not hold the others. */
export function combine(...exports: readonly CheckpointExport[]): CheckpointExport {
  return {
    send(line: string): void {
      for (const each of exports) each.send(line);
    },
    close: async () => {
      await Promise.allSettled(exports.map((each) => each.close()));
    },
  };
}

function positiveInteger(value: number, name: string, max: number): number {
  if (!Number.isSafeInteger(value) || value <= 0 || value > max)
    throw new Error(`audit checkpoint export: ${name} must be an integer from 1 to ${max}, got ${String(value)}`);
  return value;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The export settings of the audit configuration (paths already resolved). */
export interface CheckpointExportSettings {
  readonly checkpoint_export_dir?: string | undefined;
  readonly checkpoint_export_url?: string | undefined;
  readonly checkpoint_export_ca?: string | undefined;
  readonly checkpoint_export_client_cert?: string | undefined;
  readonly checkpoint_export_client_key?: string | undefined;
}

/**
 * The exports a chain's checkpoints go to, as configured (the directory is created 0700); undefined for none. Throws
 * AuditLogError naming the setting when a file it names cannot be read or is not what it must be.
 */
export function checkpointExportFor(settings: CheckpointExportSettings, instance: string, log: Logger): CheckpointExport | undefined {
  const exports: CheckpointExport[] = [];
  if (settings.checkpoint_export_dir !== undefined) {
    makeDirectory(settings.checkpoint_export_dir, 0o700);
    exports.push(directoryExport(settings.checkpoint_export_dir, instance, log));
  }
  if (settings.checkpoint_export_url !== undefined) {
    const read = (key: keyof CheckpointExportSettings, path: string | undefined): string | undefined => {
      if (path === undefined) return undefined;
      try {
        return readFileSync(path, 'utf8');
      } catch (error) {
        throw new AuditLogError(`audit.${key}: cannot read ${path}: ${errorMessage(error)}`);
      }
    };
    const clientCert = read('checkpoint_export_client_cert', settings.checkpoint_export_client_cert);
    const clientKey = read('checkpoint_export_client_key', settings.checkpoint_export_client_key);
    try {
      exports.push(
        httpsExport({
          url: new URL(settings.checkpoint_export_url),
          ca: read('checkpoint_export_ca', settings.checkpoint_export_ca) ?? '',
          instance,
          log,
          ...(clientCert !== undefined ? { clientCert } : {}),
          ...(clientKey !== undefined ? { clientKey } : {}),
        }),
      );
    } catch (error) {
      if (error instanceof AuditLogError) throw error;
      throw new AuditLogError(`audit.checkpoint_export_url: ${errorMessage(error)}`);
    }
  }
  if (exports.length === 0) return undefined;
  return exports.length === 1 ? exports[0] : combine(...exports);
}
