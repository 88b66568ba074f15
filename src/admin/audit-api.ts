// The admin API's audit queries (issue #12 item 4): `gatehouse audit query` and `audit verify` over the admin listener.
// Each call runs the CLI command itself, in a process of its own: the same implementation, and a query or verification
// over a log of millions of records reads files for seconds without ever holding the gateway's event loop. One job runs
// at a time (a second call meanwhile: 503 + Retry-After), each within a time limit, a query within a record limit.
//
//   GET  /v1/audit/records?type=&since=&until=&client=&subject=&route=&path=&decision=&status=&request_id=&trace_id=&instance=&limit=
//   POST /v1/audit/verify     every chain's hashes and links, and with the gateway's audit key its checkpoint signatures
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, ServiceResult } from '../pipeline/stage.js';
import { answer, ApiResource, type ApiParts, badQuery, type JsonBody, methodOf, noSuch, notAllowed, refused, segmentsUnder } from './api.js';

export const AUDIT_PATH = '/v1/audit';
const DEFAULT_RECORDS = 100;
const MAX_RECORDS = 1000;
/** Past this a job is stopped: an answer nobody waits for any more is not worth a process. */
const JOB_TIMEOUT_MS = 60_000;
/** What one output line may be at most (a decision record is well under 2 KiB): bounds what a job's output can hold. */
const MAX_LINE_BYTES = 1024 * 1024;
/** A verification report is one JSON document (pretty-printed or not): it is read whole, up to this many lines. */
const MAX_REPORT_LINES = 100_000;

/** The query parameters and the `audit query` option each one is. */
const FILTERS: Readonly<Record<string, string>> = {
  type: '--type',
  since: '--since',
  until: '--until',
  client: '--client',
  subject: '--subject',
  route: '--route',
  path: '--path',
  decision: '--decision',
  status: '--status',
  request_id: '--request-id',
  trace_id: '--trace-id',
  instance: '--instance',
};

export interface AuditApiParts extends ApiParts {
  readonly auditDir: string;
  /** The `gatehouse` command (its main module), run with this Node. */
  readonly cli: string;
  /** The audit key's public half (PEM), when the gateway has one: verify then checks checkpoint signatures and cadence. */
  readonly publicKeyPem: () => string | undefined;
  readonly cadence: { readonly everyRecords: number; readonly intervalS: number };
}

interface JobResult {
  readonly code: number | null;
  readonly lines: readonly string[];
  /** More lines came than were asked for: the job was stopped. */
  readonly truncated: boolean;
  readonly stderr: string;
}

export class AuditApi extends ApiResource {
  private busy = false;

  constructor(private readonly audit: AuditApiParts) {
    super(audit, 'no such audit resource');
  }

  protected async handle(request: AuthenticatedRequest, body: JsonBody): Promise<ServiceResult> {
    const segments = segmentsUnder(AUDIT_PATH, request.path);
    const method = methodOf(request);
    const [what, beyond] = segments ?? [];
    if (segments === undefined || beyond !== undefined || (what !== 'records' && what !== 'verify')) return refused(noSuch('no such audit resource'));
    if (what === 'records') {
      if (method !== 'GET') return notAllowed('GET, HEAD');
      return this.query(request.query);
    }
    if (method !== 'POST') return notAllowed('POST');
    await body.parse(z.strictObject({}), true);
    return this.verify();
  }

  private async query(query: string): Promise<ServiceResult> {
    const params = new URLSearchParams(query);
    const args = ['audit', 'query', '--dir', this.audit.auditDir, '--json'];
    let limit = DEFAULT_RECORDS;
    const seen = new Set<string>();
    for (const [name, value] of params) {
      if (seen.has(name)) throw badQuery(`${name}: given twice`);
      seen.add(name);
      if (name === 'limit') {
        if (!/^\d{1,4}$/.test(value) || Number(value) < 1 || Number(value) > MAX_RECORDS) throw badQuery(`limit: a whole number from 1 to ${MAX_RECORDS}`);
        limit = Number(value);
        continue;
      }
      const option = FILTERS[name];
      if (option === undefined) throw badQuery(`${name}: not a filter (${[...Object.keys(FILTERS), 'limit'].join(', ')})`);
      // One argument `--option=value`: a value beginning with "-" can never be read as another option.
      args.push(`${option}=${value}`);
    }
    const result = await this.job(args, limit);
    if (result.code === 64) throw badQuery(usageDetail(result.stderr));
    if (result.code !== 0 && !result.truncated) throw new Error(`audit query exited with ${String(result.code)}: ${result.stderr.slice(0, 200)}`);
    return answer(200, { records: result.lines.map((line) => JSON.parse(line) as unknown), truncated: result.truncated });
  }

  private async verify(): Promise<ServiceResult> {
    const pem = this.audit.publicKeyPem();
    const keyDir = pem === undefined ? undefined : mkdtempSync(join(tmpdir(), 'gatehouse-verify-'));
    try {
      const args = ['audit', 'verify', '--dir', this.audit.auditDir, '--json'];
      if (keyDir !== undefined && pem !== undefined) {
        const keyFile = join(keyDir, 'audit-public.pem');
        writeFileSync(keyFile, pem, { mode: 0o600 });
        args.push(
          '--key',
          keyFile,
          '--checkpoint-every',
          String(this.audit.cadence.everyRecords),
          '--checkpoint-interval',
          String(this.audit.cadence.intervalS),
        );
      }
      const result = await this.job(args, MAX_REPORT_LINES);
      if ((result.code !== 0 && result.code !== 1) || result.truncated || result.lines.length === 0) {
        throw new Error(`audit verify exited with ${String(result.code)}: ${result.stderr.slice(0, 200)}`);
      }
      return answer(200, { intact: result.code === 0, signatures_checked: pem !== undefined, report: JSON.parse(result.lines.join('\n')) as unknown });
    } finally {
      if (keyDir !== undefined) rmSync(keyDir, { recursive: true, force: true });
    }
  }

  /** Runs one CLI command, one at a time: its first `limit` stdout lines (then it is stopped), its exit code and stderr. */
  private async job(args: readonly string[], limit: number): Promise<JobResult> {
    if (this.busy) throw new GatewayError('service_unavailable', { reason: 'an audit job is running', headers: { 'retry-after': '1' } });
    this.busy = true;
    try {
      return await runJob(this.audit.cli, args, limit);
    } finally {
      this.busy = false;
    }
  }
}

function runJob(cli: string, args: readonly string[], limit: number): Promise<JobResult> {
  return new Promise((resolve, reject) => {
    // The master key stays with the gateway: neither command needs it.
    const { GATEHOUSE_MASTER_KEY: _secret, ...env } = process.env;
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const lines: string[] = [];
    let partial = '';
    let stderr = '';
    let truncated = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), JOB_TIMEOUT_MS);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      if (truncated) return;
      partial += chunk;
      let newline = partial.indexOf('\n');
      while (newline >= 0) {
        const line = partial.slice(0, newline);
        partial = partial.slice(newline + 1);
        if (line !== '') {
          if (lines.length === limit) {
            truncated = true;
            child.kill('SIGTERM');
            return;
          }
          lines.push(line);
        }
        newline = partial.indexOf('\n');
      }
      if (partial.length > MAX_LINE_BYTES) {
        truncated = true;
        child.kill('SIGTERM');
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 4096) stderr += chunk;
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (!truncated && partial.trim() !== '') lines.push(partial);
      resolve({ code, lines, truncated, stderr });
    });
  });
}

/** What the CLI said was wrong with an option, as a `detail` naming the query parameter. */
function usageDetail(stderr: string): string {
  const line = stderr.split('\n').find((text) => text.trim() !== '') ?? 'not acceptable';
  const option = /'--([a-z-]+)/.exec(line)?.[1];
  const name = option === undefined ? 'query' : option.replaceAll('-', '_');
  const reason = /(expected .*|is invalid.*)$/.exec(line)?.[1] ?? line.replace(/^(gatehouse: |error: )/, '');
  return `${name}: ${reason}`.slice(0, 300);
}
