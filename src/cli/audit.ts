// The `gatehouse audit` commands: what an operator or auditor runs against the audit directory. They read segment files
// only (never the credential store), so they work on a copy of the log, on another machine, with read access alone.
import { InvalidArgumentError, type Command } from 'commander';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadCommandConfig, print, table } from './output.js';
import { verifyDirectory, type ChainReport, type CheckpointCadence, type VerifyOptions } from '../audit/verify.js';
import { AuditKeyError, auditKeyFile, checkpointVerifier, readAuditPublicKey } from '../audit/audit-key.js';
import { AGGREGATE, AuditFollower, queryRecords, RECORD_TYPES, type DecisionLine, type RecordFilter, type RecordType } from '../audit/query.js';

export interface AuditCommandContext {
  readonly defaultConfig: string;
  readonly exit: { readonly failure: number; readonly usage: number; readonly noInput: number; readonly config: number };
  readonly fail: (message: string, code: number) => never;
}

interface DirOptions {
  readonly dir?: string;
  readonly config: string;
  readonly data?: string;
  readonly json?: boolean;
}

const VERIFY_HELP = `
Checks every record's hash, the links between records and segments, the sequence of each chain in the directory and,
with --key, every checkpoint's signature and that no more records, nor a longer time, than the checkpoint cadence
allows (plus 10 %, at least 10 records and 10 s) went unsigned; the cadence is the configuration's (--config) unless
--checkpoint-every / --checkpoint-interval say otherwise, never the log's own. With --checkpoints, every chain that
exported checkpoints must be present and still hold each of them.
Reports the first break of each chain: the file, line and seq, and its kind (modified, deleted, inserted, reordered,
segment_missing, truncated, bad_signature, unsigned, chain_missing), and the records after its last checkpoint.
Crashes (a torn final write) and records lost to a write failure are notes.

Keep the public key (gatehouse audit key) and the exported checkpoints where whoever can write the log cannot: only
then do they detect a tail cut off after the last exported checkpoint, a chain deleted whole, or a chain rewritten
without the audit key.

Exit codes: 0 every chain intact; 1 a chain is broken, or a file could not be read; 64 usage; 66 no such directory, or
no chain in it; 78 configuration (invalid config file, when --dir is not given).`;

const QUERY_HELP = `
Times are ISO 8601 (2026-12-03, 2026-12-03T14:00:00Z) or relative to now (30m, 24h, 7d). Each filter narrows the
result; records are printed chain by chain in seq order. Decision queries include the refusals counted into
refusals_aggregated records (the count column), show for each allow the status actually sent (from its completion
record; --json prints both records), and end with a line counting allows and refusals.

Examples:
  gatehouse audit query --route echo --since 2026-12-03 --until 2026-12-04
  gatehouse audit query --path /echo --since 24h          who called /echo (and /echo/…)
  gatehouse audit query --client Zt3… --decision deny --since 24h --json    every refusal naming the client
  gatehouse audit query --type admin --client Zt3…        who changed this client, and what
  gatehouse audit query --type event --since 7d           starts, stops, key changes, store outages

Exit codes: 0 ok (also when nothing matched); 1 a file could not be read; 64 usage; 66 no such directory; 78 configuration.`;

const TAIL_HELP = `
Exit codes: 0 ok; 1 a file could not be read; 64 usage; 66 no such directory; 78 configuration.`;

/** Commander sets only the options given, under the filter's own names. */
interface QueryOptions extends DirOptions, RecordFilter {}

export function registerAuditCommands(program: Command, ctx: AuditCommandContext): void {
  const audit = program.command('audit').description('the tamper-evident audit log: verify, query, tail, key');
  dirOptions(audit.command('verify').description('verify the hash chains of the audit log'), ctx)
    .option('--key <file>', 'the audit public key (PEM, as `gatehouse audit key` prints it): checkpoint signatures are checked')
    .option('--checkpoints <dir>', 'exported checkpoints (audit.checkpoint_export_dir): every chain they name must be there and hold each of them')
    .option(
      '--checkpoint-every <n>',
      'with --key: the gateway signs every N records (default: audit.checkpoint_every_records of the configuration)',
      parseCount,
    )
    .option('--checkpoint-interval <s>', 'with --key: and every S seconds (default: audit.checkpoint_interval_s of the configuration)', parseCount)
    .option('--json', 'print one JSON object')
    .addHelpText('after', VERIFY_HELP)
    .action((options: VerifyCommandOptions) => verify(ctx, options));

  audit
    .command('key')
    .description("print the audit public key (PEM) that verifies the checkpoints' signatures")
    .option('-c, --config <file>', 'YAML configuration file (for data_dir)', ctx.defaultConfig)
    .option('-d, --data <dir>', 'data directory (overrides data_dir)')
    .option('--json', 'print its key id and PEM as one JSON object')
    .addHelpText('after', KEY_HELP)
    .action((options: DirOptions) => key(ctx, options));

  dirOptions(audit.command('query').description('records that match every filter given (decision records unless --type says otherwise)'), ctx)
    .option('--type <type>', `which records: ${RECORD_TYPES.join(', ')} (event: gateway, key, store and chain events)`, parseType, 'decision')
    .option('--since <time>', 'from this time on (ISO 8601, or relative: 30m, 24h, 7d)', parseTime)
    .option('--until <time>', 'before this time (ISO 8601, or relative)', parseTime)
    .option('--client <id>', 'the OAuth client: every record naming it, authenticated or only claimed (with --type admin, the changes made to it)')
    .option('--subject <subject>', "the principal's subject")
    .option('--route <id>', 'the route id')
    .option('--path <prefix>', 'the canonical request path, by whole segments (/echo: /echo and /echo/…)', parsePath)
    .option('--decision <allow|deny>', 'allow or deny', parseDecision)
    .option('--status <code>', 'the HTTP status sent', parseStatus)
    .option('--request-id <id>', 'one request')
    .option('--trace-id <id>', 'the requests of one W3C trace (32 hex digits)')
    .option('--instance <id>', 'one chain')
    .option('--json', 'print JSON lines, one record each')
    .addHelpText('after', QUERY_HELP)
    .action((options: QueryOptions) => query(ctx, options));

  dirOptions(audit.command('tail').description('the newest decision records; with -f, keep printing new ones'), ctx)
    .option('-n, --lines <n>', 'how many records', parseCount, 10)
    .option('-f, --follow', 'keep printing records as they are written (Ctrl-C stops)')
    .option('--json', 'print JSON lines, one record each')
    .addHelpText('after', TAIL_HELP)
    .action((options: DirOptions & { lines: number; follow?: boolean }) => tail(ctx, options));
}

function dirOptions(command: Command, ctx: AuditCommandContext): Command {
  return command
    .option('--dir <dir>', 'audit directory (default: audit.dir of the configuration)')
    .option('-c, --config <file>', 'YAML configuration file (for audit.dir)', ctx.defaultConfig)
    .option('-d, --data <dir>', 'data directory (overrides data_dir)');
}

const RELATIVE = /^(\d{1,6})(s|m|h|d)$/;
const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const ISO_DATE = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:\d{2}))?$/;

/** ISO 8601 (a date alone is that day's UTC midnight) or a duration back from now. */
export function parseTime(value: string, now = Date.now()): number {
  const relative = RELATIVE.exec(value);
  if (relative !== null) return now - Number(relative[1]) * (UNIT_MS[relative[2] as string] ?? 0);
  if (ISO_DATE.test(value)) {
    // A date-time without a zone would be local time: refused, so a query means the same on every machine.
    const ms = Date.parse(value.length === 10 ? `${value}T00:00:00Z` : value);
    if (!Number.isNaN(ms)) return ms;
  }
  throw new InvalidArgumentError('expected an ISO 8601 time with a zone (2026-12-03, 2026-12-03T14:00:00Z) or a duration (30m, 24h, 7d)');
}

function parseType(value: string): RecordType {
  const found = RECORD_TYPES.find((type) => type === value);
  if (found !== undefined) return found;
  throw new InvalidArgumentError(`expected one of ${RECORD_TYPES.join(', ')}`);
}

function parseDecision(value: string): 'allow' | 'deny' {
  if (value === 'allow' || value === 'deny') return value;
  throw new InvalidArgumentError('expected allow or deny');
}

function parseStatus(value: string): number {
  if (/^[1-5]\d\d$/.test(value)) return Number(value);
  throw new InvalidArgumentError('expected an HTTP status code (100-599)');
}

function parsePath(value: string): string {
  if (value.startsWith('/') && value.length <= 8192 && !/[\s?#]/.test(value)) return value;
  throw new InvalidArgumentError('expected a path beginning with / (no query, fragment or space)');
}

function parseCount(value: string): number {
  if (/^\d{1,6}$/.test(value) && Number(value) > 0) return Number(value);
  throw new InvalidArgumentError('expected a count from 1 to 999999');
}

function query(ctx: AuditCommandContext, options: QueryOptions): void {
  const dir = auditDirectory(ctx, options);
  const filter: RecordFilter = options;
  let unverified = 0;
  const count = (): void => {
    unverified++;
  };
  // A decision query also reads each allow's completion: the table shows the status sent, --json prints both records.
  const completions = (options.type ?? 'decision') === 'decision';
  if (options.json === true) {
    // Streamed: a query over a big log prints as it reads, in bounded memory.
    readOrFail(ctx, dir, () => {
      let chunk: string[] = [];
      for (const record of queryRecords(dir, filter, count, { completions })) {
        chunk.push(JSON.stringify(record));
        if (chunk.length === 1000) {
          process.stdout.write(`${chunk.join('\n')}\n`);
          chunk = [];
        }
      }
      if (chunk.length > 0) process.stdout.write(`${chunk.join('\n')}\n`);
    });
  } else {
    const records = readOrFail(ctx, dir, () => [...queryRecords(dir, filter, count, { completions })]);
    printRecords(records, false, 'no matching records');
    if (completions && records.length > 0) print(decisionSummary(records));
  }
  warnUnverified(unverified);
}

/** The closing line of a decision table: what was allowed, and every refusal, one by one or counted in an aggregate. */
function decisionSummary(records: readonly DecisionLine[]): string {
  let allowed = 0;
  let individually = 0;
  let aggregated = 0;
  let aggregates = 0;
  for (const r of records) {
    if (r['type'] === AGGREGATE) {
      aggregates++;
      aggregated += typeof r['count'] === 'number' ? r['count'] : 0;
    } else if (r['type'] === 'decision') {
      if (r['decision'] === 'allow') allowed++;
      else individually++;
    }
  }
  const refused = individually + aggregated;
  return `${allowed} allowed, ${refused} refused (${individually} recorded one by one, ${aggregated} counted in ${aggregates} aggregate record(s))`;
}

function tail(ctx: AuditCommandContext, options: DirOptions & { lines: number; follow?: boolean }): void {
  const dir = auditDirectory(ctx, options);
  const json = options.json === true;
  let unverified = 0;
  const follower = readOrFail(ctx, dir, () => new AuditFollower(dir, () => void unverified++));
  printRecords(
    readOrFail(ctx, dir, () => follower.last(options.lines)),
    json,
    options.follow === true ? '' : 'no records',
  );
  if (options.follow !== true) {
    warnUnverified(unverified);
    return;
  }
  const timer = setInterval(() => {
    const fresh = readOrFail(ctx, dir, () => follower.poll());
    if (fresh.length > 0) printRecords(fresh, json, '', false);
  }, 500);
  process.once('SIGINT', () => {
    clearInterval(timer);
    warnUnverified(unverified);
    process.exit(0);
  });
}

/** Lines that do not verify on their own are never shown; that there were any is said on stderr. */
function warnUnverified(count: number): void {
  if (count > 0) process.stderr.write(`warning: ${count} line(s) that do not verify were skipped; run gatehouse audit verify\n`);
}

function readOrFail<T>(ctx: AuditCommandContext, dir: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    return ctx.fail(`cannot read the audit log in ${dir}: ${error instanceof Error ? error.message : String(error)}`, ctx.exit.failure);
  }
}

const COLUMNS = ['ts', 'decision', 'count', 'status', 'route', 'method', 'path', 'who', 'code', 'request_id'] as const;

function printRecords(records: readonly DecisionLine[], json: boolean, empty: string, header = true): void {
  if (json) {
    if (records.length > 0) process.stdout.write(`${records.map((record) => JSON.stringify(record)).join('\n')}\n`);
    return;
  }
  if (records.length === 0) {
    if (empty !== '') process.stdout.write(`${empty}\n`);
    return;
  }
  if (records.some((r) => !DECISION_TYPES.has(String(r['type'])))) {
    process.stdout.write(`${table(EVENT_COLUMNS, records.map(eventRow), header)}\n`);
    return;
  }
  process.stdout.write(`${table(COLUMNS, decisionRows(records), header)}\n`);
}

const DECISION_TYPES: ReadonlySet<string> = new Set(['decision', 'completion', AGGREGATE]);

/**
 * One row per decision or aggregate. An allow shows the status actually sent and the code of an answer the gateway made
 * after it (a 502, a 503), from its completion record; an aggregate shows how many refusals it counts.
 */
function decisionRows(records: readonly DecisionLine[]): string[][] {
  const rows: string[][] = [];
  const allows = new Map<string, string[]>();
  for (const r of records) {
    const key = `${r.instance}\n${String(r['request_id'])}`;
    if (r['type'] === 'completion') {
      const row = allows.get(key);
      if (row === undefined) continue;
      row[3] = String(r['status'] ?? 'none');
      if (r['code'] !== null && r['code'] !== undefined) row[8] = String(r['code']);
      allows.delete(key);
      continue;
    }
    if (r['type'] === AGGREGATE) {
      rows.push([
        r.ts,
        'deny',
        String(r['count'] ?? '?'),
        String(r['status'] ?? '-'),
        String(r['route'] ?? '-'),
        '-',
        '-',
        String(r['subject'] ?? r['client_ip'] ?? '-'),
        String(r['code'] ?? '-'),
        `last ${String(r['last_request_id'] ?? '-')}`,
      ]);
      continue;
    }
    const row = [
      r.ts,
      String(r['decision']),
      '1',
      String(r['status'] ?? '-'),
      String(r['route'] ?? '-'),
      String(r['method']),
      String(r['path'] ?? '-'),
      String(r['client_id'] ?? r['subject'] ?? '-'),
      String(r['code'] ?? '-'),
      String(r['request_id']),
    ];
    if (r['decision'] === 'allow') allows.set(key, row);
    rows.push(row);
  }
  return rows;
}

const EVENT_COLUMNS = ['ts', 'instance', 'seq', 'type', 'what'] as const;
/** Members every record has; the rest say what it is about. */
const CHAIN_MEMBERS = new Set(['seq', 'ts', 'type', 'instance', 'boot_id', 'prev', 'hash']);

/** One line per record of any type: an admin change as "action target by user", anything else as its own members. */
function eventRow(r: DecisionLine): string[] {
  let what: string;
  if (r['type'] === 'admin') {
    const actor = r['actor'] as { os_user?: unknown; sudo_user?: unknown; via?: unknown; subject?: unknown; auth_method?: unknown } | null;
    let by: string;
    if (actor === null || typeof actor !== 'object') by = '?';
    else if (actor.via === 'api') by = `${String(actor.subject)} (admin API, ${String(actor.auth_method)})`;
    else by = `${String(actor.os_user)}${actor.sudo_user !== null && actor.sudo_user !== undefined ? ` (sudo from ${String(actor.sudo_user)})` : ''}`;
    what = `${String(r['action'])} ${String(r['target'])} by ${by}: ${JSON.stringify(r['changes'])}`;
  } else {
    what = Object.entries(r)
      .filter(([member]) => !CHAIN_MEMBERS.has(member))
      .map(([member, value]) => `${member}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
      .join(' ');
  }
  return [r.ts, r.instance, String(r.seq), String(r['type']), what];
}

function auditDirectory(ctx: AuditCommandContext, options: DirOptions): string {
  let dir: string;
  if (options.dir !== undefined) dir = resolve(options.dir);
  else dir = loadCommandConfig(options, ctx.fail, ctx.exit.config).audit.dir;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) ctx.fail(`no audit directory at ${dir}`, ctx.exit.noInput);
  return dir;
}

const KEY_HELP = `
The key is made when \`gatehouse serve\` first starts (data_dir/audit-key.json, its private half sealed under the master
key). Give the printed key to whoever verifies the log: gatehouse audit verify --key audit-key.pem.

Exit codes: 0 ok; 1 the key file could not be read; 64 usage; 66 no audit key yet; 78 configuration.`;

function key(ctx: AuditCommandContext, options: DirOptions): void {
  const file = auditKeyFile(loadCommandConfig(options, ctx.fail, ctx.exit.config));
  if (!existsSync(file)) ctx.fail(`no audit key at ${file} yet: gatehouse serve creates it when it first starts`, ctx.exit.noInput);
  let found: ReturnType<typeof readAuditPublicKey>;
  try {
    found = readAuditPublicKey(file);
  } catch (error) {
    ctx.fail(error instanceof AuditKeyError || error instanceof Error ? error.message : String(error), ctx.exit.failure);
  }
  process.stdout.write(options.json === true ? `${JSON.stringify({ key_id: found.keyId, public_key: found.pem })}\n` : found.pem);
}

interface VerifyCommandOptions extends DirOptions {
  readonly key?: string;
  readonly checkpoints?: string;
  readonly checkpointEvery?: number;
  readonly checkpointInterval?: number;
}

/** The cadence the gateway signs at, from the operator's side: the flags, else the configuration. */
function cadenceOf(ctx: AuditCommandContext, options: VerifyCommandOptions): CheckpointCadence {
  if (options.checkpointEvery !== undefined && options.checkpointInterval !== undefined) {
    return { everyRecords: options.checkpointEvery, intervalS: options.checkpointInterval };
  }
  const { audit } = loadCommandConfig(options, ctx.fail, ctx.exit.config);
  return { everyRecords: options.checkpointEvery ?? audit.checkpoint_every_records, intervalS: options.checkpointInterval ?? audit.checkpoint_interval_s };
}

function verify(ctx: AuditCommandContext, options: VerifyCommandOptions): void {
  const dir = auditDirectory(ctx, options);
  let verifyOptions: VerifyOptions = {};
  if (options.key !== undefined) {
    let pem: string;
    try {
      pem = readFileSync(options.key, 'utf8');
    } catch (error) {
      ctx.fail(`cannot read the key ${options.key}: ${error instanceof Error ? error.message : String(error)}`, ctx.exit.noInput);
    }
    try {
      verifyOptions = { key: checkpointVerifier(pem) };
    } catch (error) {
      ctx.fail(`${options.key}: ${error instanceof Error ? error.message : String(error)}`, ctx.exit.usage);
    }
    verifyOptions = { ...verifyOptions, cadence: cadenceOf(ctx, options) };
  }
  if (options.checkpoints !== undefined) {
    if (!existsSync(options.checkpoints) || !statSync(options.checkpoints).isDirectory())
      ctx.fail(`no checkpoint directory at ${options.checkpoints}`, ctx.exit.noInput);
    verifyOptions = { ...verifyOptions, checkpointsDir: resolve(options.checkpoints) };
  }
  let report: ReturnType<typeof verifyDirectory>;
  try {
    report = verifyDirectory(dir, verifyOptions);
  } catch (error) {
    ctx.fail(`cannot read the audit log in ${dir}: ${error instanceof Error ? error.message : String(error)}`, ctx.exit.failure);
  }
  // No chain at all is "nothing to verify", unless exported checkpoints say chains were there (chain_missing).
  if (report.chains.length === 0) ctx.fail(`no audit chain in ${dir} (segment files are named <instance>.<seq>.jsonl)`, ctx.exit.noInput);
  if (options.json === true) process.stdout.write(`${JSON.stringify({ dir, ...report }, null, 2)}\n`);
  else process.stdout.write(`${[...report.chains.map(describeChain), ...report.notes.map((note) => `note: ${note}`)].join('\n')}\n`);
  if (!report.ok) process.exitCode = ctx.exit.failure;
}

function describeChain(chain: ChainReport): string {
  const summary = `chain ${chain.instance}: ${chain.segments} segment(s), ${chain.records} record(s) up to seq ${chain.lastSeq}, ${chain.boots} boot(s)`;
  const lines = [chain.break === undefined ? `${summary}: intact` : `${summary}: BROKEN`];
  if (chain.break !== undefined) {
    const { kind, segment, line, seq, detail } = chain.break;
    lines.push(`  ${kind} at ${segment} line ${line}${seq !== null ? ` (seq ${seq})` : ''}: ${detail}`);
  }
  for (const note of chain.notes) lines.push(`  note: ${note}`);
  const { records, fromSeq, toSeq } = chain.unsigned;
  lines.push(
    records === 0
      ? '  unsigned tail: none (the last record is a checkpoint)'
      : `  unsigned tail: ${records} record(s), seq ${fromSeq}..${toSeq}, after the last checkpoint`,
  );
  lines.push(`  head ${chain.head}`);
  return lines.join('\n');
}
