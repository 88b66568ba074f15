// The admin commands `gatehouse init`, `gatehouse clients …` and `gatehouse keys …`: OAuth clients and access-token
// signing keys in the configured credential store. They parse, call one operation (src/issuer/clients.ts, keys.ts), record
// the change in the admin log and print; a client secret exists in clear only in the output of `add` / `rotate-secret`.
import { type Command, InvalidArgumentError, type Option } from 'commander';
import { pino } from 'pino';
import { ADMIN_CHAIN } from '../audit/chain.js';
import { checkpointExportFor } from '../audit/export.js';
import { retentionOf } from '../audit/log.js';
import { recordAdminChanges } from '../audit/admin-log.js';
import type { AdminActor, AdminChange } from '../audit/event.js';
import { auditKeyFile, loadOrCreateAuditKey } from '../audit/audit-key.js';
import { loadCommandConfig, print, printable, printJson, table, UNPRINTABLE } from './output.js';
import { ISSUER_DEFAULTS, type Config, type IssuerConfig } from '../config/schema.js';
import { isResourceUri, SCOPE_TOKEN } from '../lib/oauth-syntax.js';
import { addClient, disableClient, enableClient, removeClient, rotateClientSecret, updateClient, type ClientSettings } from '../issuer/clients.js';
import {
  MasterKeyError,
  SigningKeyError,
  revokeSigningKey,
  rotateSigningKey,
  signingKeyStates,
  rotateSigningKeyNow,
  SIGNING_ALGORITHMS,
  MASTER_KEY_ENV,
  type SigningAlgorithm,
} from '../issuer/keys.js';
import { CLIENT_ID_PATTERN, isActiveSecret } from '../issuer/secrets.js';
import { StoreError, type Client, type CredentialStore, type SigningKey } from '../store/contract.js';
import { openVerifiedKeyEncryptionKey } from '../issuer/master-key.js';
import { credentialStoreExists, describeCredentialStore, openCredentialStore } from '../store/open.js';

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

interface StoreOptions {
  readonly config: string;
  readonly data?: string;
}
interface JsonOption {
  readonly json?: boolean;
}

const MAX_NAME_CHARS = 100;
const MAX_SCOPE_CHARS = 128;
const MAX_SCOPES = 64;
const MAX_KEEP_OLD_MS = 30 * 86_400_000;
/** The shortest access-token lifetime a client may have (the issuer's own lower bound). */
const MIN_TOKEN_TTL_S = 30;
const DURATION_UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

const EXIT_CODES_HELP = `
Exit codes: 0 ok; 1 failure (store, key or I/O error, or the change could not be recorded in the admin log);
64 usage (bad argument or option); 66 no such client or key, or no credential store (run \`gatehouse init\` or
\`gatehouse serve\` first, or check --data); 69 the PostgreSQL server cannot be reached (nothing was changed); 78 configuration (invalid config file, invalid ${MASTER_KEY_ENV} or master key file).`;

const ID_HELP = `
A client id that begins with "-" can be given as it is, or after "--" (e.g. \`gatehouse clients show -- -nQnd…\`).`;

/** An expected failure with its exit code: reported on stderr after the store is closed. */
class AdminError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

// ---- Argument parsers (a thrown InvalidArgumentError is a usage error: exit 64) ----

function parseName(value: string): string {
  const chars = [...value].length;
  if (chars === 0 || chars > MAX_NAME_CHARS || value.trim() === '') throw new InvalidArgumentError(`must be 1-${MAX_NAME_CHARS} characters, not only spaces`);
  if (UNPRINTABLE.test(value)) throw new InvalidArgumentError('must not contain control or invisible formatting characters');
  return value;
}

/** RFC 6749 §3.3 scope tokens, space-separated; a comma is legal in a scope but usually a mistaken separator (warned). */
function parseScopes(value: string, warn: (message: string) => void): string[] {
  const scopes = [...new Set(value.split(' ').filter((scope) => scope !== ''))];
  if (scopes.length === 0) throw new InvalidArgumentError('give at least one scope');
  if (scopes.length > MAX_SCOPES) throw new InvalidArgumentError(`at most ${MAX_SCOPES} scopes`);
  for (const scope of scopes) {
    if (scope.length > MAX_SCOPE_CHARS || !SCOPE_TOKEN.test(scope)) {
      throw new InvalidArgumentError(`${JSON.stringify(scope)} is not a scope token (1-${MAX_SCOPE_CHARS} printable ASCII characters, no space, " or \\)`);
    }
    if (scope.includes(','))
      warn(`scope ${JSON.stringify(scope)} contains a comma: scopes are separated by spaces (--scope "${scope.split(',').filter(Boolean).join(' ')}")`);
  }
  return scopes;
}

/** Repeatable; `previous` is undefined for the first one when the option has no default (`clients update`). */
function collectAudience(value: string, previous: string[] | undefined): string[] {
  if (!isResourceUri(value)) throw new InvalidArgumentError('must be an absolute URI without a fragment, e.g. https://api.example.com');
  const list = previous ?? [];
  return list.includes(value) ? list : [...list, value];
}

/**
 * `--token-ttl`: a duration (30s, 5m, 1h) in whole seconds, or `default` (the issuer's access_token_ttl_s). `default` stays
 * a word here: commander turns a parser's null into an empty string, so tokenLifetime() maps it to null later.
 */
function parseTokenTtl(value: string): number | 'default' {
  if (value === 'default') return 'default';
  const ms = durationMs(value, 'smh');
  if (ms === undefined) throw new InvalidArgumentError('must be a duration with a unit s, m or h (e.g. 5m), or "default"');
  const seconds = ms / 1000;
  if (seconds < MIN_TOKEN_TTL_S) throw new InvalidArgumentError(`must be at least ${MIN_TOKEN_TTL_S}s`);
  return seconds;
}

function parseClientId(value: string): string {
  if (!CLIENT_ID_PATTERN.test(value)) throw new InvalidArgumentError('not a client id (1-64 of A-Z a-z 0-9 _ -)');
  return value;
}

/** `30s`, `15m`, `24h`, `7d` → milliseconds; positive, at most 30 days. */
export function parseDuration(value: string): number {
  const ms = durationMs(value, 'smhd');
  if (ms === undefined) throw new InvalidArgumentError('must be a positive whole number with a unit s, m, h or d, e.g. 24h');
  if (ms > MAX_KEEP_OLD_MS) throw new InvalidArgumentError('must be at most 30d');
  return ms;
}

/** A positive whole number with one of `units` (s, m, h, d) → milliseconds; undefined for anything else. */
function durationMs(value: string, units: string): number | undefined {
  const match = /^([1-9][0-9]{0,7})([smhd])$/.exec(value);
  const unit = match?.[2];
  if (match === null || unit === undefined || !units.includes(unit)) return undefined;
  return Number(match[1]) * (DURATION_UNIT_MS[unit] ?? Number.NaN);
}

function parseAlgorithm(value: string): SigningAlgorithm {
  const alg = SIGNING_ALGORITHMS.find((candidate) => candidate === value);
  if (alg === undefined) throw new InvalidArgumentError(`must be one of ${SIGNING_ALGORITHMS.join(', ')}`);
  return alg;
}

// ---- Client ids that begin with "-" ----

/** The shape of every id `generateClientId` ever issued: 16 random bytes in base64url (the last character holds 2 bits). */
const ISSUED_CLIENT_ID = /^[A-Za-z0-9_-]{21}[AQgw]$/;
const ID_OPERAND_COMMANDS = new Set(['show', 'disable', 'enable', 'rotate-secret', 'remove', 'update']);

/**
 * Ids issued before ids were kept from starting with "-" (about one in 64) would be read as options by the parser. For the
 * commands that take a client id, the first argument with exactly an issued id's shape that begins with "-" — and is not
 * one of the command's option names, nor the value of an option before it — is moved behind "--", where it can only be
 * the id. That is safe: such an argument is no valid option of these commands, and a random id named in the wrong store
 * finds no client (exit 66) rather than another one. Returns argv unchanged when there is nothing to do.
 */
export function protectDashClientIds(program: Command, argv: readonly string[]): string[] {
  const [node = '', script = '', group, name, ...rest] = argv;
  if (group !== 'clients' || name === undefined || !ID_OPERAND_COMMANDS.has(name)) return [...argv];
  const command = program.commands.find((c) => c.name() === 'clients')?.commands.find((c) => c.name() === name);
  if (command === undefined) return [...argv];
  const options: readonly Option[] = command.options;
  const flags = new Set(options.flatMap((o) => [o.short, o.long]).filter((f): f is string => f !== undefined));
  const takesValue = new Set(
    options
      .filter((o) => o.required || o.optional)
      .flatMap((o) => [o.short, o.long])
      .filter((f): f is string => f !== undefined),
  );
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] ?? '';
    if (arg === '--') return [...argv];
    if (takesValue.has(arg)) {
      i++;
      continue;
    }
    if (arg.startsWith('-') && !flags.has(arg) && ISSUED_CLIENT_ID.test(arg)) {
      return [node, script, group, name, ...rest.slice(0, i), ...rest.slice(i + 1), '--', arg];
    }
  }
  return [...argv];
}

// ---- Running a command against the store ----

function loadConfig(ctx: AdminContext, options: StoreOptions): Config {
  return loadCommandConfig(options, ctx.fail, ctx.exit.config, ctx.databaseUrl);
}

/** The message and exit code of an expected failure; undefined for a bug (which keeps its stack). */
function describeFailure(ctx: AdminContext, error: unknown, config: Config): { message: string; code: number } | undefined {
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
interface Session {
  readonly store: CredentialStore;
  readonly config: Config;
  /**
   * Records a change in the admin log. A change that cannot be recorded was still made: the command prints its result
   * (a new secret must not be lost) and then exits 1 naming the log.
   */
  readonly record: (change: AdminChange) => void;
}

/** Loads the config, opens the existing store, runs `fn`, and always closes the store before reporting any failure. */
function withStore(ctx: AdminContext, options: StoreOptions, fn: (session: Session) => Promise<void>): Promise<void> {
  return withConfiguredStore(ctx, loadConfig(ctx, options), fn, false);
}

/** withStore for a loaded config; `create` (only `init`) makes the store when there is none. */
async function withConfiguredStore(ctx: AdminContext, config: Config, fn: (session: Session) => Promise<void>, create: boolean): Promise<void> {
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

function noSuchClient(ctx: AdminContext, id: string): AdminError {
  return new AdminError(`no client with id ${id}`, ctx.exit.noInput);
}

/** Runs a store operation; the store's not_found becomes `missing` (exit 66, the command's own message). */
async function orMissing<T>(operation: Promise<T>, missing: () => AdminError): Promise<T> {
  try {
    return await operation;
  } catch (error) {
    if (error instanceof StoreError && error.code === 'not_found') throw missing();
    throw error;
  }
}

/** A client operation: an unknown id is "no client with id" (exit 66). */
function onClient<T>(ctx: AdminContext, id: string, operation: Promise<T>): Promise<T> {
  return orMissing(operation, () => noSuchClient(ctx, id));
}

// ---- Output ----

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** A JSON array with --json, else a table (or `empty` when there is nothing to list). */
function printList<T>(options: JsonOption, items: readonly T[], empty: string, header: readonly string[], row: (item: T) => readonly string[]): void {
  if (options.json === true) printJson(items);
  else print(items.length === 0 ? empty : table(header, items.map(row)));
}

/** Everything about a client an operator may see: never a hash. */
function clientView(client: Client, now: number) {
  return {
    client_id: client.id,
    name: client.name,
    enabled: client.enabled,
    scopes: client.scopes,
    audiences: client.audiences,
    access_token_ttl_s: client.accessTokenTtlS,
    tokens_not_before: client.tokensNotBeforeS === null ? null : iso(client.tokensNotBeforeS * 1000),
    active_secrets: client.secrets.filter((secret) => isActiveSecret(secret, now)).length,
    created_at: iso(client.createdAt),
    updated_at: iso(client.updatedAt),
  };
}

const SECRET_WARNING = 'The secret is shown only now: Gatehouse keeps only its hash. Store it safely.';

/** The issuer settings the running gateway uses: the config's, or the defaults when it has no `issuer` section. */
function issuerOf(config: Config): Readonly<IssuerConfig> {
  return config.issuer ?? ISSUER_DEFAULTS;
}

/** The issuer's token lifetime, the longest a client's may be. */
function issuerTokenTtlS(config: Config): number {
  return issuerOf(config).access_token_ttl_s;
}

/** Within how many seconds every gateway sees a change to the store. */
function refreshS(config: Config): number {
  return issuerOf(config).refresh_interval_ms / 1000;
}

function checkTokenTtl(ctx: AdminContext, config: Config, ttl: number | null | undefined): void {
  if (ttl !== undefined && ttl !== null && ttl > issuerTokenTtlS(config)) {
    throw new AdminError(`--token-ttl must be at most the issuer's access_token_ttl_s (${issuerTokenTtlS(config)}s)`, ctx.exit.usage);
  }
}

function ttlText(ttl: number | null, config: Config): string {
  return ttl === null ? `${issuerTokenTtlS(config)}s (issuer default)` : `${ttl}s`;
}

// ---- init ----

async function init(ctx: AdminContext, options: StoreOptions & JsonOption): Promise<void> {
  const config = loadConfig(ctx, options);
  let existed: boolean;
  try {
    existed = await credentialStoreExists(config);
  } catch (error) {
    const described = describeFailure(ctx, error, config);
    if (described === undefined) throw error;
    ctx.fail(described.message, described.code);
  }
  await withConfiguredStore(ctx, config, async () => undefined, true);
  const where = describeCredentialStore(config);
  const result = { store: where, backend: config.store.backend, created: !existed };
  if (options.json === true) return printJson(result);
  print(existed ? `credential store ${where} already exists; nothing to do` : `created credential store ${where}`);
}

// ---- clients ----

type TokenTtlOption = number | 'default';
type AddOptions = StoreOptions & JsonOption & { scope: string[]; audience: string[]; tokenTtl?: TokenTtlOption };

/** A client's token lifetime from --token-ttl: seconds, or null for the issuer's. */
function tokenLifetime(option: TokenTtlOption): number | null {
  return option === 'default' ? null : option;
}

async function clientsAdd(ctx: AdminContext, name: string, options: AddOptions): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    const ttl = options.tokenTtl === undefined ? null : tokenLifetime(options.tokenTtl);
    checkTokenTtl(ctx, config, ttl);
    const settings: ClientSettings = { name, scopes: options.scope, audiences: options.audience, accessTokenTtlS: ttl };
    const { client, secret } = await addClient(store, settings, Date.now());
    record({
      action: 'client.add',
      target: client.id,
      changes: { name: client.name, scopes: client.scopes, audiences: client.audiences, access_token_ttl_s: client.accessTokenTtlS },
    });
    if (options.json === true) {
      printJson({
        client_id: client.id,
        client_secret: secret,
        name,
        scopes: client.scopes,
        audiences: client.audiences,
        access_token_ttl_s: client.accessTokenTtlS,
      });
    } else {
      print(`client_id:     ${client.id}\nclient_secret: ${secret}\n${SECRET_WARNING}`);
    }
  });
}

async function clientsList(ctx: AdminContext, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async ({ store }) => {
    const now = Date.now();
    const clients = (await store.listClients()).map((client) => clientView(client, now));
    printList(options, clients, 'no clients', ['CLIENT_ID', 'NAME', 'ENABLED', 'SCOPES', 'AUDIENCES', 'SECRETS', 'CREATED'], (c) => [
      c.client_id,
      c.name,
      c.enabled ? 'yes' : 'no',
      c.scopes.join(' '),
      c.audiences.join(' ') || '-',
      String(c.active_secrets),
      c.created_at ?? '-',
    ]);
  });
}

async function clientsShow(ctx: AdminContext, id: string, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async ({ store, config }) => {
    const now = Date.now();
    const client = await store.getClient(id);
    if (client === undefined) throw noSuchClient(ctx, id);
    const secrets = client.secrets.map((secret) => ({
      created_at: iso(secret.createdAt),
      expires_at: iso(secret.expiresAt),
      active: isActiveSecret(secret, now),
    }));
    const view = { ...clientView(client, now), secrets };
    if (options.json === true) return printJson(view);
    print(
      [
        `client_id:  ${view.client_id}`,
        `name:       ${printable(view.name)}`,
        `enabled:    ${view.enabled ? 'yes' : 'no'}`,
        `scopes:     ${view.scopes.join(' ')}`,
        `audiences:  ${view.audiences.join(' ') || '(default audience)'}`,
        `token ttl:  ${ttlText(view.access_token_ttl_s, config)}`,
        ...(view.tokens_not_before === null ? [] : [`tokens:     issued before ${view.tokens_not_before} are refused (set by the last disable or enable)`]),
        `created:    ${view.created_at ?? '-'}`,
        `updated:    ${view.updated_at ?? '-'}`,
        `secrets:    ${view.active_secrets} active`,
        ...secrets.map(
          (s, i) =>
            `  ${i + 1}. created ${s.created_at ?? '-'}, ${s.expires_at === null ? 'no expiry' : `${s.active ? 'expires' : 'expired'} ${s.expires_at}`}`,
        ),
      ].join('\n'),
    );
  });
}

type UpdateOptions = StoreOptions & JsonOption & { name?: string; scope?: string[]; audience?: string[]; clearAudiences?: boolean; tokenTtl?: TokenTtlOption };

async function clientsUpdate(ctx: AdminContext, id: string, options: UpdateOptions): Promise<void> {
  if (options.audience !== undefined && options.clearAudiences === true) ctx.fail('--audience and --clear-audiences cannot be combined', ctx.exit.usage);
  const settings: Partial<ClientSettings> = {
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.scope !== undefined ? { scopes: options.scope } : {}),
    ...(options.audience !== undefined ? { audiences: options.audience } : options.clearAudiences === true ? { audiences: [] } : {}),
    ...(options.tokenTtl !== undefined ? { accessTokenTtlS: tokenLifetime(options.tokenTtl) } : {}),
  };
  if (Object.keys(settings).length === 0) ctx.fail('nothing to change: give --name, --scope, --audience, --clear-audiences or --token-ttl', ctx.exit.usage);
  await withStore(ctx, options, async ({ store, config, record }) => {
    checkTokenTtl(ctx, config, settings.accessTokenTtlS);
    const { client, changes } = await onClient(ctx, id, updateClient(store, id, settings));
    if (Object.keys(changes).length > 0) record({ action: 'client.update', target: id, changes });
    if (options.json === true) return printJson({ ...clientView(client, Date.now()), changes });
    if (Object.keys(changes).length === 0) return print(`client ${id} already has these settings; nothing changed`);
    for (const [field, change] of Object.entries(changes)) print(`${field}: ${JSON.stringify(change.from)} -> ${JSON.stringify(change.to)}`);
    print(
      `client ${id} updated. Tokens already issued keep what they were issued with until they expire (at most ${issuerTokenTtlS(config)}s); ` +
        '`clients disable` then `clients enable` ends them now.',
    );
  });
}

async function clientsDisable(ctx: AdminContext, id: string, options: StoreOptions): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    const { changes } = await onClient(ctx, id, disableClient(store, id, Date.now()));
    if (Object.keys(changes).length === 0) return print(`client ${id} is already disabled`);
    record({ action: 'client.disable', target: id, changes });
    print(`client ${id} disabled: it cannot authenticate, and every token issued to it so far is refused within ${refreshS(config)}s, also after an enable`);
  });
}

async function clientsEnable(ctx: AdminContext, id: string, options: StoreOptions): Promise<void> {
  await withStore(ctx, options, async ({ store, record }) => {
    const { changes } = await onClient(ctx, id, enableClient(store, id));
    if (Object.keys(changes).length === 0) return print(`client ${id} is already enabled`);
    record({ action: 'client.enable', target: id, changes });
    print(`client ${id} enabled: it can authenticate again; no token issued before this enable is accepted`);
  });
}

async function clientsRotateSecret(ctx: AdminContext, id: string, options: StoreOptions & JsonOption & { keepOldFor?: number }): Promise<void> {
  await withStore(ctx, options, async ({ store, record }) => {
    const { secret, oldSecretExpiresAt } = await onClient(ctx, id, rotateClientSecret(store, id, options.keepOldFor, Date.now()));
    record({ action: 'client.rotate_secret', target: id, changes: { old_secret_expires_at: iso(oldSecretExpiresAt) } });
    if (options.json === true) return printJson({ client_id: id, client_secret: secret, old_secret_expires_at: iso(oldSecretExpiresAt) });
    const old =
      oldSecretExpiresAt === null ? 'every previous secret stopped working now' : `the previous secret keeps working until ${iso(oldSecretExpiresAt) ?? '-'}`;
    print(`client_id:     ${id}\nclient_secret: ${secret}\n${old}\n${SECRET_WARNING}`);
  });
}

async function clientsRemove(ctx: AdminContext, id: string, options: StoreOptions): Promise<void> {
  await withStore(ctx, options, async ({ store, record }) => {
    await onClient(ctx, id, removeClient(store, id));
    record({ action: 'client.remove', target: id, changes: {} });
    print(`client ${id} removed`);
  });
}

// ---- keys ----

async function keysRotate(ctx: AdminContext, options: StoreOptions & JsonOption & { alg?: SigningAlgorithm; now?: boolean }): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    // Proven against the keys already stored: a rotation sealed under another master key would break the gateway.
    const { kek } = await openVerifiedKeyEncryptionKey(config, store, ctx.masterKey);
    const alg = options.alg ?? issuerOf(config).signing_alg;
    const maxTokenLifetimeS = issuerTokenTtlS(config);
    const delayS = issuerOf(config).key_activation_delay_s;
    const now = Date.now();
    if (options.now === true) {
      // Every key that was signing or in line to sign stops now: what signs is the new key, and only it.
      const { next, stopped } = await rotateSigningKeyNow(store, kek, { alg, now, maxTokenLifetimeS });
      const stops = stopped.map((key) => ({ kid: key.kid, retired_at: iso(key.retiredAt), expires_at: iso(key.expiresAt), signed: key.activatesAt <= now }));
      const skippedDelay = delayS > 0 && stops.length > 0;
      record({
        action: 'key.rotate',
        target: next.kid,
        changes: {
          alg: next.alg,
          activates_at: iso(next.activatesAt),
          retires: stops.map((k) => k.kid).join(' ') || null,
          without_publication_delay: skippedDelay,
        },
      });
      if (options.json === true) {
        return printJson({
          kid: next.kid,
          alg: next.alg,
          created_at: iso(next.createdAt),
          activates_at: iso(next.activatesAt),
          stopped: stops,
          without_publication_delay: skippedDelay,
        });
      }
      print(`new signing key ${next.kid} (${next.alg}): published and signing now`);
      for (const key of stops) {
        print(
          key.signed
            ? `key ${key.kid} stops signing now; it only verifies until ${key.expires_at ?? '-'}, when its last token has expired`
            : `pending key ${key.kid} will never sign; it is unpublished now`,
        );
      }
      if (skippedDelay) ctx.warn(publicationWarning(config));
      return;
    }
    const before = new Map((await store.listSigningKeys()).map((key) => [key.kid, key]));
    const next = await rotateSigningKey(store, kek, { alg, now, activationDelayS: delayS, maxTokenLifetimeS });
    // The key this rotation retired: the one whose retirement it just scheduled.
    const retired = (await store.listSigningKeys()).find((key) => key.retiredAt !== null && before.get(key.kid)?.retiredAt === null);
    const retires = retired === undefined ? null : { kid: retired.kid, retired_at: iso(retired.retiredAt), expires_at: iso(retired.expiresAt) };
    record({
      action: 'key.rotate',
      target: next.kid,
      changes: { alg: next.alg, activates_at: iso(next.activatesAt), retires: retires?.kid ?? null, without_publication_delay: false },
    });
    if (options.json === true) {
      return printJson({
        kid: next.kid,
        alg: next.alg,
        created_at: iso(next.createdAt),
        activates_at: iso(next.activatesAt),
        retires,
        without_publication_delay: false,
      });
    }
    print(`new signing key ${next.kid} (${next.alg}): published now, signs from ${iso(next.activatesAt) ?? '-'}`);
    print(
      retires === null
        ? 'no previous key to retire'
        : `key ${retires.kid} stops signing at ${retires.retired_at ?? '-'} and is unpublished at ${retires.expires_at ?? '-'}`,
    );
  });
}

function publicationWarning(config: Config): string {
  const delayS = issuerOf(config).key_activation_delay_s;
  return (
    `the new key signs without the ${delayS}s publication delay. Resource servers that cached the JWKS before ` +
    'now may refuse its tokens until they fetch the JWKS again.'
  );
}

async function keysRevoke(ctx: AdminContext, kid: string, options: StoreOptions & JsonOption & { alg?: SigningAlgorithm }): Promise<void> {
  await withStore(ctx, options, async ({ store, config, record }) => {
    const { kek } = await openVerifiedKeyEncryptionKey(config, store, ctx.masterKey);
    const { revoked, succession, signer, previousSigner } = await orMissing(
      revokeSigningKey(store, kek, { kid, alg: options.alg ?? issuerOf(config).signing_alg, now: Date.now() }),
      () => new AdminError(`no signing key with kid ${kid}`, ctx.exit.noInput),
    );
    if (revoked !== undefined) {
      record({ action: 'key.revoke', target: kid, changes: { revoked_at: iso(revoked.revokedAt), succession, signer: signer?.kid ?? null } });
    }
    const view = {
      kid,
      revoked: revoked !== undefined,
      revoked_at: iso(revoked?.revokedAt ?? null),
      succession,
      signer: signer === undefined ? null : signer.kid,
    };
    if (options.json === true) return printJson(view);
    if (revoked === undefined) return print(`key ${kid} is already revoked; nothing changed`);
    print(`key ${kid} revoked: it is unpublished now, and every token it signed is refused by every gateway within ${refreshS(config)}s`);
    const signerKid = signer?.kid ?? '-';
    // "Goes on" only about the key that was signing a moment ago; a key that had stopped signs again.
    const wasSigning = signer !== undefined && signer.kid === previousSigner;
    if (succession === 'unchanged') print(wasSigning ? `key ${signerKid} goes on signing` : `key ${signerKid} signs now`);
    if (succession === 'kept')
      print(
        wasSigning
          ? `key ${signerKid} goes on signing; its handover to the revoked key is cancelled`
          : `key ${signerKid} signs again; its retirement is cancelled`,
      );
    if (succession === 'activated') print(`pending key ${signerKid} signs now, before its publication delay ran out`);
    if (succession === 'created') print(`new key ${signerKid} (${signer?.alg ?? '-'}) signs now`);
    if (succession === 'activated' || succession === 'created') ctx.warn(publicationWarning(config));
  });
}

function keyView(key: SigningKey, states: ReadonlyMap<string, string>) {
  return {
    kid: key.kid,
    alg: key.alg,
    state: states.get(key.kid) ?? 'expired',
    created_at: iso(key.createdAt),
    activates_at: iso(key.activatesAt),
    retired_at: iso(key.retiredAt),
    expires_at: iso(key.expiresAt),
    revoked_at: iso(key.revokedAt),
  };
}

async function keysList(ctx: AdminContext, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async ({ store }) => {
    const stored = await store.listSigningKeys();
    const states = signingKeyStates(stored, Date.now());
    const keys = stored.map((key) => keyView(key, states));
    printList(options, keys, 'no signing keys', ['KID', 'ALG', 'STATE', 'CREATED', 'ACTIVATES', 'RETIRED', 'EXPIRES'], (k) => [
      k.kid,
      k.alg,
      k.state,
      k.created_at ?? '-',
      k.activates_at ?? '-',
      k.retired_at ?? '-',
      k.expires_at ?? '-',
    ]);
  });
}

// ---- Registration ----

function storeCommand(parent: Command, name: string, description: string, ctx: AdminContext): Command {
  return parent
    .command(name)
    .description(description)
    .option('-c, --config <file>', 'YAML configuration file', ctx.defaultConfig)
    .option('-d, --data <dir>', 'data directory (overrides data_dir)')
    .addHelpText('after', EXIT_CODES_HELP);
}

function clientIdCommand(parent: Command, name: string, description: string, ctx: AdminContext): Command {
  return storeCommand(parent, name, description, ctx).argument('<id>', 'client id', parseClientId).addHelpText('after', ID_HELP);
}

export function registerAdminCommands(program: Command, ctx: AdminContext): void {
  const scopes = (value: string): string[] => parseScopes(value, ctx.warn);
  storeCommand(
    program,
    'init',
    'create the credential store (data_dir/gatehouse.db) if it does not exist (`serve` also does, and makes the master key and the first signing key)',
    ctx,
  )
    .option('--json', 'print one JSON object')
    .action((options: StoreOptions & JsonOption) => init(ctx, options));

  const clients = program.command('clients').description('OAuth clients of the built-in issuer');

  storeCommand(clients, 'add', 'register a client; prints its id and secret (the secret only this once)', ctx)
    .argument('<name>', `display name (1-${MAX_NAME_CHARS} printable characters)`, parseName)
    .requiredOption('--scope <scopes>', 'space-separated scopes the client may request (RFC 6749 scope tokens)', scopes)
    .option('--audience <uri>', 'an audience (resource URI) the client may request; repeatable', collectAudience, [])
    .option(
      '--token-ttl <duration>',
      `lifetime of its access tokens, e.g. 5m (${MIN_TOKEN_TTL_S}s up to issuer.access_token_ttl_s; default: that)`,
      parseTokenTtl,
    )
    .option('--json', 'print one JSON object')
    .action((name: string, options: AddOptions) => clientsAdd(ctx, name, options));

  storeCommand(clients, 'list', 'list clients (never secrets or hashes)', ctx)
    .option('--json', 'print a JSON array')
    .action((options: StoreOptions & JsonOption) => clientsList(ctx, options));

  clientIdCommand(clients, 'show', "one client's details and its secrets' creation and expiry times", ctx)
    .option('--json', 'print one JSON object')
    .action((id: string, options: StoreOptions & JsonOption) => clientsShow(ctx, id, options));

  clientIdCommand(clients, 'update', "change a client's name, scopes, audiences or token lifetime (recorded in the admin log)", ctx)
    .option('--name <name>', `new display name (1-${MAX_NAME_CHARS} printable characters)`, parseName)
    .option('--scope <scopes>', 'the space-separated scopes it may request, replacing the current ones', scopes)
    .option('--audience <uri>', 'an audience (resource URI) it may request; repeatable; replaces the current list', collectAudience)
    .option('--clear-audiences', "no audiences of its own: tokens get the issuer's default audience")
    .option('--token-ttl <duration>', `lifetime of its access tokens, e.g. 5m, or "default" (issuer.access_token_ttl_s)`, parseTokenTtl)
    .option('--json', 'print the client and the changes as one JSON object')
    .action((id: string, options: UpdateOptions) => clientsUpdate(ctx, id, options));

  clientIdCommand(clients, 'disable', 'stop a client from authenticating and end every token issued to it so far, for good (idempotent)', ctx).action(
    (id: string, options: StoreOptions) => clientsDisable(ctx, id, options),
  );

  clientIdCommand(clients, 'enable', 'let a disabled client authenticate again; no token issued before the enable is ever accepted (idempotent)', ctx).action(
    (id: string, options: StoreOptions) => clientsEnable(ctx, id, options),
  );

  clientIdCommand(clients, 'rotate-secret', 'give a client a new secret; the old one ends now or after --keep-old-for', ctx)
    .option('--keep-old-for <duration>', 'keep the newest old secret valid this long, e.g. 30s, 15m, 24h, 7d (at most 30d)', parseDuration)
    .option('--json', 'print one JSON object')
    .action((id: string, options: StoreOptions & JsonOption & { keepOldFor?: number }) => clientsRotateSecret(ctx, id, options));

  clientIdCommand(clients, 'remove', 'delete a client and its secrets; its tokens stop working too', ctx).action((id: string, options: StoreOptions) =>
    clientsRemove(ctx, id, options),
  );

  const keys = program.command('keys').description('access-token signing keys of the built-in issuer');

  storeCommand(
    keys,
    'rotate',
    'publish a new signing key; it signs after issuer.key_activation_delay_s (or at once with --now) and the current key retires then',
    ctx,
  )
    .option('--alg <alg>', `${SIGNING_ALGORITHMS.join(' or ')} (default: issuer.signing_alg)`, parseAlgorithm)
    .option(
      '--now',
      'sign with the new key at once, without the publication delay (resource servers with a cached JWKS may refuse its tokens until they refetch it)',
    )
    .option('--json', 'print one JSON object')
    .action((options: StoreOptions & JsonOption & { alg?: SigningAlgorithm; now?: boolean }) => keysRotate(ctx, options));

  storeCommand(
    keys,
    'revoke',
    'emergency: unpublish a signing key now, so every token it signed is refused; another key signs at once (a new one if needed, without the publication delay)',
    ctx,
  )
    .argument('<kid>', 'key id, as `keys list` shows it')
    .option('--alg <alg>', `algorithm of a new key, if one must be made (default: issuer.signing_alg)`, parseAlgorithm)
    .option('--json', 'print one JSON object')
    .action((kid: string, options: StoreOptions & JsonOption & { alg?: SigningAlgorithm }) => keysRevoke(ctx, kid, options));

  storeCommand(keys, 'list', 'list signing keys and their states (never private key material)', ctx)
    .option('--json', 'print a JSON array')
    .action((options: StoreOptions & JsonOption) => keysList(ctx, options));
}
