// What every admin command shares: the context main.ts hands over, running one command against the configured store
// (opened, used, closed; failures mapped to exit codes), recording its changes in the admin chain, and output helpers.
import type { Command } from 'commander';
import { pino } from 'pino';
import { ADMIN_CHAIN } from '../audit/chain.js';
import { checkpointExportFor } from '../audit/export.js';
import { retentionOf } from '../audit/retention.js';
import { recordAdminChanges } from '../audit/admin-log.js';
import type { AdminActor, AdminChange } from '../audit/event.js';
import { auditKeyFile, loadOrCreateAuditKey } from '../audit/audit-key.js';
import { loadCommandConfig, print, printJson, table } from './output.js';
import { ISSUER_DEFAULTS, type IssuerConfig } from '../config/issuer.js';
import type { Config } from '../config/schema.js';
import { SigningKeyError } from '../issuer/signing-key.js';
import { MASTER_KEY_ENV, MasterKeyError } from '../lib/key-encryption.js';
import { StoreError, type CredentialStore } from '../store/contract.js';
import { openVerifiedKeyEncryptionKey } from '../issuer/master-key.js';
import { openCredentialStore } from '../store/open.js';

/** What main.ts (the only reader of the environment and owner of process exit) hands to the admin commands. */
export interface AdminContext {
  readonly defaultConfig: string;
  /** The value of GATEHOUSE_DATABASE_URL: the PostgreSQL store, in place of the config file's store. */
  readonly databaseUrl: string | undefined;
  /** The value of GATEHOUSE_MASTER_KEY, or undefined (the key file in data_dir is used). */
  readonly masterKey: string | undefined;
  /** Who runs the command, for the admin log. */
  readonly actor: AdminActor;
  readonly exit: {
    readonly failure: number;
    readonly usage: number;
    readonly noInput: number;
    readonly unavailable: number;
    readonly software: number;
    readonly config: number;
  };
  readonly fail: (message: string, code: number) => never;
  /** Warnings that do not stop the command (stderr). */
  readonly warn: (message: string) => void;
}

export interface StoreOptions {
  readonly config: string;
  readonly data?: string;
}
export interface JsonOption {
  readonly json?: boolean;
}

export const EXIT_CODES_HELP = `
Exit codes: 0 ok; 1 failure (store, key or I/O error, or the change could not be recorded in the admin log);
64 usage (bad argument or option); 66 no such client or key, or no credential store (run \`gatehouse init\` or
\`gatehouse serve\` first, or check --data); 69 the PostgreSQL server cannot be reached (nothing was changed); 78 configuration (invalid config file, invalid ${MASTER_KEY_ENV} or master key file).`;

/** An expected failure with its exit code: reported on stderr after the store is closed. */
export class AdminError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

// ---- Running a command against the store ----

export function loadConfig(ctx: AdminContext, options: StoreOptions): Config {
  return loadCommandConfig(options, ctx.fail, ctx.exit.config, ctx.databaseUrl);
}

/** The message and exit code of an expected failure; undefined for a bug (which keeps its stack). */
export function describeFailure(ctx: AdminContext, error: unknown, config: Config): { message: string; code: number } | undefined {
  if (error instanceof AdminError) return { message: error.message, code: error.exitCode };
  if (error instanceof StoreError) {
    // A PostgreSQL server that cannot be reached is 69; a local file that cannot be opened stays a plain failure.
    const unreachable = error.code === 'unavailable' && config.store.backend === 'postgres';
    return { message: error.message, code: error.code === 'not_found' ? ctx.exit.noInput : unreachable ? ctx.exit.unavailable : ctx.exit.failure };
  }
  if (error instanceof MasterKeyError) return { message: error.message, code: error.code === 'key_file_unavailable' ? ctx.exit.failure : ctx.exit.config };
  // A key that does not open the stored signing keys is the wrong configuration (the same as `serve` says).
  if (error instanceof SigningKeyError) return { message: error.message, code: error.code === 'undecryptable_key' ? ctx.exit.config : ctx.exit.failure };
  return undefined;
}

/** What a command body gets: the open store, the config, and the admin log of this run. */
export interface Session {
  readonly store: CredentialStore;
  readonly config: Config;
  /**
   * Records a change in the admin log. A change that cannot be recorded was still made: the command prints its result
   * (a new secret must not be lost) and then exits 1 naming the log.
   */
  readonly record: (change: AdminChange) => void;
}

/** Loads the config, opens the existing store, runs `fn`, and always closes the store before reporting any failure. */
export function withStore(ctx: AdminContext, options: StoreOptions, fn: (session: Session) => Promise<void>): Promise<void> {
  return withConfiguredStore(ctx, loadConfig(ctx, options), fn, false);
}

/** withStore for a loaded config; `create` (only `init`) makes the store when there is none. */
export async function withConfiguredStore(ctx: AdminContext, config: Config, fn: (session: Session) => Promise<void>, create: boolean): Promise<void> {
  let failure: unknown;
  let failed = false;
  let unrecorded: string | undefined;
  const changes: AdminChange[] = [];
  const record = (change: AdminChange): void => {
    changes.push(change);
  };
  try {
    const store = await openCredentialStore(config, { create });
    try {
      try {
        await fn({ store, config, record });
      } finally {
        // Whatever the command made is recorded, even when it failed afterwards.
        if (changes.length > 0) unrecorded = await recordChanges(ctx, config, store, changes);
      }
    } finally {
      await store.close();
    }
  } catch (error) {
    failed = true;
    failure = error;
  }
  if (!failed) {
    if (unrecorded !== undefined) ctx.fail(unrecorded, ctx.exit.failure);
    return;
  }
  const described = describeFailure(ctx, failure, config);
  if (described === undefined) throw failure;
  ctx.fail(described.message, described.code);
}

/**
 * Appends the command's changes to the admin chain, its checkpoint signed with the audit key (opened with the master key
 * proven against the store, as the gateway does). Returns what to report when they could not be recorded.
 */
export async function recordChanges(ctx: AdminContext, config: Config, store: CredentialStore, changes: readonly AdminChange[]): Promise<string | undefined> {
  try {
    const { kek } = await openVerifiedKeyEncryptionKey(config, store, ctx.masterKey);
    const signer = loadOrCreateAuditKey(auditKeyFile(config), kek);
    const log = pino({ level: 'warn' }, pino.destination(2));
    await recordAdminChanges(
      {
        dir: config.audit.dir,
        signer,
        exportTo: checkpointExportFor(config.audit, ADMIN_CHAIN, log),
        ...(config.audit.retention !== undefined ? { retention: retentionOf(config.audit.retention) } : {}),
        log,
      },
      ctx.actor,
      changes,
    );
    return undefined;
  } catch (error) {
    const made = changes.map((change) => `${change.action} ${change.target}`).join(', ');
    return `${made} was made but could not be recorded in the admin audit chain in ${config.audit.dir}: ${error instanceof Error ? error.message : String(error)}`;
  }
}

export function noSuchClient(ctx: AdminContext, id: string): AdminError {
  return new AdminError(`no client with id ${id}`, ctx.exit.noInput);
}

/** Runs a store operation; the store's not_found becomes `missing` (exit 66, the command's own message). */
export async function orMissing<T>(operation: Promise<T>, missing: () => AdminError): Promise<T> {
  try {
    return await operation;
  } catch (error) {
    if (error instanceof StoreError && error.code === 'not_found') throw missing();
    throw error;
  }
}

/** A client operation: an unknown id is "no client with id" (exit 66). */
export function onClient<T>(ctx: AdminContext, id: string, operation: Promise<T>): Promise<T> {
  return orMissing(operation, () => noSuchClient(ctx, id));
}

// ---- Output ----

export { clientView } from '../issuer/clients.js';
export { isoTime as iso } from '../lib/iso-time.js';

/** A JSON array with --json, else a table (or `empty` when there is nothing to list). */
export function printList<T>(options: JsonOption, items: readonly T[], empty: string, header: readonly string[], row: (item: T) => readonly string[]): void {
  if (options.json === true) printJson(items);
  else print(items.length === 0 ? empty : table(header, items.map(row)));
}

export const SECRET_WARNING = 'The secret is shown only now: Gatehouse keeps only its hash. Store it safely.';

/** The issuer settings the running gateway uses: the config's, or the defaults when it has no `issuer` section. */
export function issuerOf(config: Config): Readonly<IssuerConfig> {
  return config.issuer ?? ISSUER_DEFAULTS;
}

/** The issuer's token lifetime, the longest a client's may be. */
export function issuerTokenTtlS(config: Config): number {
  return issuerOf(config).access_token_ttl_s;
}

/** Within how many seconds every gateway sees a change to the store. */
export function refreshS(config: Config): number {
  return issuerOf(config).refresh_interval_ms / 1000;
}

export function checkTokenTtl(ctx: AdminContext, config: Config, ttl: number | null | undefined): void {
  if (ttl !== undefined && ttl !== null && ttl > issuerTokenTtlS(config)) {
    throw new AdminError(`--token-ttl must be at most the issuer's access_token_ttl_s (${issuerTokenTtlS(config)}s)`, ctx.exit.usage);
  }
}

export function ttlText(ttl: number | null, config: Config): string {
  return ttl === null ? `${issuerTokenTtlS(config)}s (issuer default)` : `${ttl}s`;
}

/** A command that works on the configured store: --config, --data and the admin exit codes. */
export function storeCommand(parent: Command, name: string, description: string, ctx: AdminContext): Command {
  return parent
    .command(name)
    .description(description)
    .option('-c, --config <file>', 'YAML configuration file', ctx.defaultConfig)
    .option('-d, --data <dir>', 'data directory (overrides data_dir)')
    .addHelpText('after', EXIT_CODES_HELP);
}
