// `gatehouse store copy`: moves a whole credential store to another backend (an embedded SQLite deployment to
// PostgreSQL, or back) exactly as it is — secret hashes and sealed signing keys included, so no client gets a new secret,
// no token or JWKS consumer notices, and no master key is needed to copy. Reads the source in one consistent snapshot,
// writes it into an empty target in one transaction, then reads the target back and compares every row.
import { realpathSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { POSTGRES_URL } from '../config/store.js';
import type { Config } from '../config/schema.js';
import type { AdminChange } from '../audit/event.js';
import { StoreError, type CredentialStore, type StoreSnapshot } from '../store/contract.js';
import { describeCredentialStore } from '../store/open.js';
import { describePostgresUrl, PostgresCredentialStore, SCHEMA_NAME } from '../store/postgres.js';
import { snapshotDifferences } from '../store/snapshot.js';
import { SqliteCredentialStore } from '../store/sqlite.js';
import { recordChanges, type AdminContext } from './admin-session.js';
import { loadCommandConfig, print, printable, printJson } from './output.js';

const DEFAULT_SCHEMA = 'gatehouse';
/** A copy is a few statements per table, each possibly large: more room than a gateway's per-statement bound. */
const COPY_STATEMENT_TIMEOUT_MS = 60_000;
const CONNECT_TIMEOUT_MS = 5000;
/** How many differences a failed read-back check names. */
const MAX_DIFFERENCES_SHOWN = 10;

const MASTER_KEY_NOTE =
  'serve the target with the same master key as the source: the signing keys were copied still sealed under it ' +
  '(GATEHOUSE_MASTER_KEY, or the source data_dir/master.key copied into the new data_dir, mode 0600)';

const COPY_HELP = `
A store is sqlite:PATH (the database file, e.g. sqlite:data/gatehouse.db) or a postgres:// (postgresql://) URL; a password
in the URL is never printed. The source is opened only if it exists; the target is created (and its schema migrated)
when missing, and must hold no client, signing key or revocation. Revocations whose token has expired are not copied.
Stop the gateways using the source first: changes made after the copy read it are not carried over.

Nothing is decrypted: serve the target with the master key of the source (GATEHOUSE_MASTER_KEY, or data_dir/master.key).
With --config (the target deployment's configuration), the copy is recorded in that deployment's admin audit chain
(audit.dir), proven with the master key against the copied signing keys; without it, it is not recorded.

Example: gatehouse store copy --from sqlite:data/gatehouse.db --to postgres://gatehouse@db.internal/gatehouse

Exit codes: 0 copied and verified; 1 failure (the target is not empty — nothing was changed —, a store or file error, or
the copy could not be recorded in the admin audit chain); 64 usage (missing or bad --from/--to or schema, the same store
twice); 66 no credential store at --from; 69 a PostgreSQL server cannot be reached (nothing was copied); 70 the target
does not read back exactly as the source was read (the copy is left in the target for inspection); 78 configuration
(--config).`;

/** Where a store is: a SQLite file (absolute path) or a schema in a PostgreSQL database. */
type StoreLocation = { readonly backend: 'sqlite'; readonly path: string } | { readonly backend: 'postgres'; readonly url: string; readonly schema: string };

interface CopyOptions {
  readonly from: string;
  readonly to: string;
  readonly fromSchema?: string;
  readonly toSchema?: string;
  readonly config?: string;
  readonly data?: string;
  readonly json?: boolean;
}

/** An expected failure with its exit code, reported after both stores are closed. */
class CopyError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CopyError';
  }
}

/**
 * --from / --to (and its schema option) → a location; a usage error otherwise. Parsed here rather than by commander,
 * whose message would repeat the value — and with it a password in the URL.
 */
function parseLocation(ctx: AdminContext, flag: '--from' | '--to', value: string, schema: string | undefined): StoreLocation {
  const schemaFlag = `${flag}-schema`;
  if (value.startsWith('sqlite:')) {
    const path = value.slice('sqlite:'.length);
    if (path === '') ctx.fail(`${flag}: give the database file, e.g. sqlite:data/gatehouse.db`, ctx.exit.usage);
    // sqlite://host/… reads as a URL whose first path part would silently become a directory name: say what is meant.
    if (path.startsWith('//'))
      ctx.fail(`${flag}: sqlite:PATH takes a file path, not a URL (e.g. sqlite:data/gatehouse.db or sqlite:/var/lib/gatehouse/gatehouse.db)`, ctx.exit.usage);
    if (schema !== undefined) ctx.fail(`${schemaFlag} is for a PostgreSQL store; ${flag} is a SQLite file`, ctx.exit.usage);
    const absolute = resolve(path);
    if (isDirectory(absolute))
      ctx.fail(`${flag}: ${printable(absolute)} is a directory; name the database file in it (e.g. sqlite:${printable(path)}/gatehouse.db)`, ctx.exit.usage);
    return { backend: 'sqlite', path: absolute };
  }
  if (/^postgres(ql)?:/i.test(value)) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(value);
    } catch {
      parsed = undefined;
    }
    if (parsed === undefined || !POSTGRES_URL.test(value) || parsed.hostname === '') {
      ctx.fail(`${flag}: not a valid PostgreSQL URL (postgres://user[:password]@host[:port]/database)`, ctx.exit.usage);
    }
    const name = schema ?? DEFAULT_SCHEMA;
    if (!SCHEMA_NAME.test(name))
      ctx.fail(`${schemaFlag}: ${JSON.stringify(printable(name))} is not a schema name (lower-case letters, digits and _, at most 63)`, ctx.exit.usage);
    return { backend: 'postgres', url: value, schema: name };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(value)?.[1];
  ctx.fail(
    `${flag}: ${scheme !== undefined ? `unsupported scheme ${JSON.stringify(printable(scheme))}` : 'no scheme'}; give sqlite:PATH or a postgres:// URL`,
    ctx.exit.usage,
  );
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** For messages and output: the file, or the database URL without its password and the schema. */
function describeLocation(location: StoreLocation): string {
  return location.backend === 'sqlite' ? `sqlite:${location.path}` : `${describePostgresUrl(location.url)} (schema ${location.schema})`;
}

/**
 * Whether two locations are one store: the same file (through symbolic or hard links too), or the same schema of the
 * same database on the same server (whoever logs in). Different spellings of one host (localhost, 127.0.0.1) are not
 * caught here; the import then finds the store not empty and changes nothing.
 */
function sameStore(a: StoreLocation, b: StoreLocation): boolean {
  if (a.backend === 'sqlite' && b.backend === 'sqlite') {
    try {
      const [sa, sb] = [statSync(a.path), statSync(b.path)];
      return sa.dev === sb.dev && sa.ino === sb.ino;
    } catch {
      return canonicalPath(a.path) === canonicalPath(b.path);
    }
  }
  if (a.backend === 'postgres' && b.backend === 'postgres') return postgresIdentity(a) === postgresIdentity(b);
  return false;
}

function canonicalPath(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

function postgresIdentity(location: { readonly url: string; readonly schema: string }): string {
  const url = new URL(location.url);
  const user = decodeURIComponent(url.username);
  // libpq's defaults: a host given as a query parameter (a socket directory), port 5432, the user's name as the database.
  const host = (url.hostname || url.searchParams.get('host') || '').toLowerCase();
  const database = decodeURIComponent(url.pathname.replace(/^\//, '')) || user;
  return JSON.stringify([host, url.port || '5432', database, location.schema]);
}

function openLocation(location: StoreLocation, create: boolean): Promise<CredentialStore> {
  if (location.backend === 'sqlite') return Promise.resolve(SqliteCredentialStore.open(location.path, { create }));
  return PostgresCredentialStore.open({
    url: location.url,
    schema: location.schema,
    create,
    poolMax: 2,
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
    statementTimeoutMs: COPY_STATEMENT_TIMEOUT_MS,
  });
}

/** A store failure on one side → its message and exit code: a PostgreSQL server that cannot be reached is 69. */
function storeFailure(ctx: AdminContext, side: 'source' | 'target', location: StoreLocation, error: StoreError): CopyError {
  const code =
    error.code === 'not_found' ? ctx.exit.noInput : error.code === 'unavailable' && location.backend === 'postgres' ? ctx.exit.unavailable : ctx.exit.failure;
  return new CopyError(`${side}: ${error.message}`, code);
}

/** Runs one step against one side; its StoreErrors become that side's CopyError. */
async function onSide<T>(ctx: AdminContext, side: 'source' | 'target', location: StoreLocation, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    if (error instanceof StoreError) throw storeFailure(ctx, side, location, error);
    throw error;
  }
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function counts(snapshot: StoreSnapshot): string {
  const rows = `${plural(snapshot.clients.length, 'client', 'clients')}, ${plural(snapshot.signingKeys.length, 'signing key', 'signing keys')}, ${plural(snapshot.revocations.length, 'revocation', 'revocations')}`;
  // Said only of a store that has a client CA, so the line stays as it was for one that never used it.
  if (snapshot.clientCa === null && snapshot.certificates.length === 0) return rows;
  return `${rows}, ${snapshot.clientCa === null ? 'no client CA' : 'the client CA'}, ${plural(snapshot.certificates.length, 'certificate record', 'certificate records')}`;
}

/** Whether a store holds anything at all (expired revocations aside): what import refuses to write over. */
function holdsRows(snapshot: StoreSnapshot): boolean {
  return snapshot.clients.length + snapshot.signingKeys.length + snapshot.revocations.length + snapshot.certificates.length > 0 || snapshot.clientCa !== null;
}

function locationView(location: StoreLocation) {
  return location.backend === 'sqlite'
    ? { backend: 'sqlite' as const, path: location.path }
    : { backend: 'postgres' as const, url: describePostgresUrl(location.url), schema: location.schema };
}

/** The config whose store is not `to` is still the one asked for: the record goes there, with a warning. */
function checkConfiguredStore(ctx: AdminContext, config: Config, to: StoreLocation): void {
  const { store } = config;
  const configured: StoreLocation =
    store.backend === 'postgres' && store.postgres !== undefined
      ? { backend: 'postgres', url: store.postgres, schema: store.postgres_schema }
      : { backend: 'sqlite', path: resolve(store.path) };
  if (!sameStore(configured, to)) {
    ctx.warn(
      `--config names the store ${describeCredentialStore(config)}, not the target ${describeLocation(to)}; the copy is recorded in its audit chain (${config.audit.dir}) all the same`,
    );
  }
}

async function storeCopy(ctx: AdminContext, options: CopyOptions): Promise<void> {
  const from = parseLocation(ctx, '--from', options.from, options.fromSchema);
  const to = parseLocation(ctx, '--to', options.to, options.toSchema);
  if (sameStore(from, to)) ctx.fail(`--from and --to are the same store (${describeLocation(from)}); copy into another one`, ctx.exit.usage);
  if (options.data !== undefined && options.config === undefined)
    ctx.fail('--data needs --config (the target deployment whose admin audit chain records the copy)', ctx.exit.usage);
  const config =
    options.config === undefined
      ? undefined
      : loadCommandConfig(
          { config: options.config, ...(options.data !== undefined ? { data: options.data } : {}) },
          ctx.fail,
          ctx.exit.config,
          ctx.databaseUrl,
        );
  if (config !== undefined) checkConfiguredStore(ctx, config, to);

  let source: CredentialStore | undefined;
  let target: CredentialStore | undefined;
  let failure: unknown;
  let failed = false;
  let unrecorded: string | undefined;
  let snapshot: StoreSnapshot | undefined;
  try {
    // The source first, and only if it exists: a mistyped --from must neither create an empty target nor a new source.
    source = await onSide(ctx, 'source', from, () => openLocation(from, false));
    const read = source;
    snapshot = await onSide(ctx, 'source', from, () => read.exportSnapshot());
    await source.close();
    source = undefined;

    target = await onSide(ctx, 'target', to, () => openLocation(to, true));
    const into = target;
    const copy = snapshot;
    await onSide(ctx, 'target', to, async () => {
      try {
        await into.importSnapshot(copy);
      } catch (error) {
        if (!(error instanceof StoreError && error.code === 'conflict')) throw error;
        // Refused before writing anything: say what the target holds (a conflict inside the snapshot itself stays as it is).
        const held = await into.exportSnapshot(0);
        if (holdsRows(held)) throw notEmpty(ctx, to, held);
        throw error;
      }
    });
    const back = await onSide(ctx, 'target', to, () => into.exportSnapshot(copy.at));
    const differences = snapshotDifferences(copy, back);
    if (differences.length > 0) {
      const shown = differences.slice(0, MAX_DIFFERENCES_SHOWN).join('; ');
      const more = differences.length > MAX_DIFFERENCES_SHOWN ? `; and ${differences.length - MAX_DIFFERENCES_SHOWN} more` : '';
      throw new CopyError(
        `the copy in ${describeLocation(to)} does not read back as ${describeLocation(from)} was read (${shown}${more}); ` +
          'it was written and is left there for inspection: do not serve it, empty the target before copying again',
        ctx.exit.software,
      );
    }
    if (config !== undefined) {
      const change: AdminChange = {
        action: 'store.copy',
        target: describeLocation(to),
        changes: {
          from: describeLocation(from),
          to: describeLocation(to),
          clients: copy.clients.length,
          signing_keys: copy.signingKeys.length,
          revocations: copy.revocations.length,
          client_ca: copy.clientCa !== null,
          certificates: copy.certificates.length,
        },
      };
      unrecorded = await recordChanges(ctx, config, into, [change]);
    }
  } catch (error) {
    failed = true;
    failure = error;
  } finally {
    await source?.close().catch(() => undefined);
    await target?.close().catch(() => undefined);
  }
  if (failed) {
    if (failure instanceof CopyError) ctx.fail(failure.message, failure.exitCode);
    throw failure;
  }
  if (snapshot === undefined) return;
  const recordedIn = config !== undefined && unrecorded === undefined ? config.audit.dir : null;
  if (options.json === true) {
    printJson({
      from: locationView(from),
      to: locationView(to),
      clients: snapshot.clients.length,
      signing_keys: snapshot.signingKeys.length,
      revocations: snapshot.revocations.length,
      client_ca: snapshot.clientCa !== null,
      certificates: snapshot.certificates.length,
      verified: true,
      recorded_in: recordedIn,
      master_key: MASTER_KEY_NOTE,
    });
  } else {
    print(`copied ${counts(snapshot)} from ${printable(describeLocation(from))} to ${printable(describeLocation(to))}`);
    print('verified: the target reads back exactly as the source was read');
    if (recordedIn !== null) print(`recorded in the admin audit chain in ${printable(recordedIn)}`);
    print(MASTER_KEY_NOTE);
  }
  // The copy was made and verified; only its record is missing.
  if (unrecorded !== undefined) ctx.fail(unrecorded, ctx.exit.failure);
}

/** Wraps the target's refusal of a non-empty store into the operator's message (nothing was changed). */
function notEmpty(ctx: AdminContext, to: StoreLocation, held: StoreSnapshot): CopyError {
  return new CopyError(
    `the target ${describeLocation(to)} is not empty (it holds ${counts(held)}); ` +
      'store copy writes only into a store without clients, signing keys, revocations or a client CA. Nothing was changed.',
    ctx.exit.failure,
  );
}

export function registerStoreCommands(program: Command, ctx: AdminContext): void {
  const store = program.command('store').description('the credential store as a whole');
  store
    .command('copy')
    .description(
      'copy every client, signing key and revocation from one credential store into an empty one (SQLite ⇄ PostgreSQL), without re-issuing any secret or key',
    )
    .requiredOption('--from <store>', 'the store to read: sqlite:PATH or a postgres:// URL (opened only if it exists)')
    .requiredOption('--to <store>', 'the empty store to write: sqlite:PATH or a postgres:// URL (created when missing)')
    .option('--from-schema <name>', `schema of a PostgreSQL --from (default: ${DEFAULT_SCHEMA})`)
    .option('--to-schema <name>', `schema of a PostgreSQL --to (default: ${DEFAULT_SCHEMA})`)
    .option('-c, --config <file>', "the target deployment's configuration: record the copy in its admin audit chain")
    .option('-d, --data <dir>', 'data directory (overrides data_dir of --config)')
    .option('--json', 'print one JSON object')
    .addHelpText('after', COPY_HELP)
    .action((options: CopyOptions) => storeCopy(ctx, options));
}
