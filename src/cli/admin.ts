// The admin commands `gatehouse clients …` and `gatehouse keys …`: OAuth clients and access-token signing keys in the
// configured credential store. A client secret exists in clear only in the output of `clients add` / `rotate-secret`.
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError, loadConfigFile } from '../config/load.js';
import { SCOPE_TOKEN, isResourceUri, type Config } from '../config/schema.js';
import {
  MasterKeyError,
  SigningKeyError,
  rotateSigningKey,
  signingKeyState,
  SIGNING_ALGORITHMS,
  MASTER_KEY_ENV,
  type SigningAlgorithm,
} from '../issuer/keys.js';
import { CLIENT_ID_PATTERN, generateClientId, generateClientSecret, hashSecret } from '../issuer/secrets.js';
import { StoreError, type Client, type CredentialStore, type SecretHash, type SigningKey } from '../store/contract.js';
import { openCredentialStore, openVerifiedKeyEncryptionKey } from '../store/open.js';
import { MAX_SECRETS_PER_CLIENT } from '../store/contract.js';

/** What main.ts (the only reader of the environment and owner of process exit) hands to the admin commands. */
export interface AdminContext {
  readonly defaultConfig: string;
  /** The value of GATEHOUSE_MASTER_KEY, or undefined (the key file in data_dir is used). */
  readonly masterKey: string | undefined;
  readonly exit: { readonly failure: number; readonly usage: number; readonly noInput: number; readonly config: number };
  readonly fail: (message: string, code: number) => never;
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
const DURATION_UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
// Control, format (bidi overrides, zero-width), surrogate, private-use and line/paragraph separator characters: a name is
// printed in tables and logs, so nothing in it may move the cursor or reorder what a reader sees.
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Zl}\p{Zp}]/u;
const UNPRINTABLES = new RegExp(UNPRINTABLE.source, 'gu');

const EXIT_CODES_HELP = `
Exit codes: 0 ok; 1 failure (store, key or I/O error); 64 usage (bad argument or option);
66 no such client; 78 configuration (invalid config file, invalid ${MASTER_KEY_ENV} or master key file).`;

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

function parseScopes(value: string): string[] {
  const scopes = [...new Set(value.split(' ').filter((scope) => scope !== ''))];
  if (scopes.length === 0) throw new InvalidArgumentError('give at least one scope');
  if (scopes.length > MAX_SCOPES) throw new InvalidArgumentError(`at most ${MAX_SCOPES} scopes`);
  for (const scope of scopes) {
    if (scope.length > MAX_SCOPE_CHARS || !SCOPE_TOKEN.test(scope)) {
      throw new InvalidArgumentError(`${JSON.stringify(scope)} is not a scope token (1-${MAX_SCOPE_CHARS} printable ASCII characters, no space, " or \\)`);
    }
  }
  return scopes;
}

function collectAudience(value: string, previous: string[]): string[] {
  if (!isResourceUri(value)) throw new InvalidArgumentError('must be an absolute URI without a fragment, e.g. https://api.example.com');
  return previous.includes(value) ? previous : [...previous, value];
}

function parseClientId(value: string): string {
  if (!CLIENT_ID_PATTERN.test(value)) throw new InvalidArgumentError('not a client id (1-64 of A-Z a-z 0-9 _ -)');
  return value;
}

/** `30s`, `15m`, `24h`, `7d` → milliseconds; positive, at most 30 days. */
export function parseDuration(value: string): number {
  const match = /^([1-9][0-9]{0,7})([smhd])$/.exec(value);
  const unit = DURATION_UNIT_MS[match?.[2] ?? ''];
  if (match === null || unit === undefined) throw new InvalidArgumentError('must be a positive whole number with a unit s, m, h or d, e.g. 24h');
  const ms = Number(match[1]) * unit;
  if (ms > MAX_KEEP_OLD_MS) throw new InvalidArgumentError('must be at most 30d');
  return ms;
}

function parseAlgorithm(value: string): SigningAlgorithm {
  const alg = SIGNING_ALGORITHMS.find((candidate) => candidate === value);
  if (alg === undefined) throw new InvalidArgumentError(`must be one of ${SIGNING_ALGORITHMS.join(', ')}`);
  return alg;
}

// ---- Running a command against the store ----

function loadConfig(ctx: AdminContext, options: StoreOptions): Config {
  try {
    return loadConfigFile(options.config, options.data !== undefined ? { dataDir: options.data } : {});
  } catch (error) {
    if (error instanceof ConfigError) ctx.fail(error.message, ctx.exit.config);
    throw error;
  }
}

/** The message and exit code of an expected failure; undefined for a bug (which keeps its stack). */
function describeFailure(ctx: AdminContext, error: unknown): { message: string; code: number } | undefined {
  if (error instanceof AdminError) return { message: error.message, code: error.exitCode };
  if (error instanceof StoreError) return { message: error.message, code: error.code === 'not_found' ? ctx.exit.noInput : ctx.exit.failure };
  if (error instanceof MasterKeyError) return { message: error.message, code: error.code === 'key_file_unavailable' ? ctx.exit.failure : ctx.exit.config };
  // A key that does not open the stored signing keys is the wrong configuration (the same as `serve` says).
  if (error instanceof SigningKeyError) return { message: error.message, code: error.code === 'undecryptable_key' ? ctx.exit.config : ctx.exit.failure };
  return undefined;
}

/** Loads the config, opens the store, runs `fn`, and always closes the store before reporting any failure. */
async function withStore(ctx: AdminContext, options: StoreOptions, fn: (store: CredentialStore, config: Config) => Promise<void>): Promise<void> {
  const config = loadConfig(ctx, options);
  let failure: unknown;
  let failed = false;
  try {
    const store = openCredentialStore(config);
    try {
      await fn(store, config);
    } finally {
      await store.close();
    }
  } catch (error) {
    failed = true;
    failure = error;
  }
  if (!failed) return;
  const described = describeFailure(ctx, failure);
  if (described === undefined) throw failure;
  ctx.fail(described.message, described.code);
}

async function requireClient(ctx: AdminContext, store: CredentialStore, id: string): Promise<Client> {
  const client = await store.getClient(id);
  if (client === undefined) throw noSuchClient(ctx, id);
  return client;
}

function noSuchClient(ctx: AdminContext, id: string): AdminError {
  return new AdminError(`no client with id ${id}`, ctx.exit.noInput);
}

// ---- Output ----

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** For human output: a name written into the store by other means still cannot drive the terminal. */
function printable(text: string): string {
  return text.replace(UNPRINTABLES, '\uFFFD');
}

function table(header: readonly string[], rawRows: readonly (readonly string[])[]): string {
  const rows = rawRows.map((row) => row.map(printable));
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)));
  return [header, ...rows].map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** A JSON array with --json, else a table (or `empty` when there is nothing to list). */
function printList<T>(options: JsonOption, items: readonly T[], empty: string, header: readonly string[], row: (item: T) => readonly string[]): void {
  if (options.json === true) printJson(items);
  else print(items.length === 0 ? empty : table(header, items.map(row)));
}

function isActive(secret: SecretHash, now: number): boolean {
  return secret.expiresAt === null || secret.expiresAt > now;
}

/** Everything about a client an operator may see: never a hash. */
function clientView(client: Client, now: number) {
  return {
    client_id: client.id,
    name: client.name,
    enabled: client.enabled,
    scopes: client.scopes,
    audiences: client.audiences,
    active_secrets: client.secrets.filter((secret) => isActive(secret, now)).length,
    created_at: iso(client.createdAt),
    updated_at: iso(client.updatedAt),
  };
}

const SECRET_WARNING = 'The secret is shown only now: Gatehouse keeps only its hash. Store it safely.';

// ---- clients ----

async function clientsAdd(ctx: AdminContext, name: string, options: StoreOptions & JsonOption & { scope: string[]; audience: string[] }): Promise<void> {
  const id = generateClientId();
  const secret = generateClientSecret();
  const now = Date.now();
  const client: Client = {
    id,
    name,
    secrets: [{ hash: await hashSecret(secret), createdAt: now, expiresAt: null }],
    scopes: options.scope,
    audiences: options.audience,
    enabled: true,
    createdAt: now,
    updatedAt: now,
  };
  await withStore(ctx, options, (store) => store.createClient(client));
  if (options.json === true) {
    printJson({ client_id: id, client_secret: secret, name, scopes: client.scopes, audiences: client.audiences });
  } else {
    print(`client_id:     ${id}\nclient_secret: ${secret}\n${SECRET_WARNING}`);
  }
}

async function clientsList(ctx: AdminContext, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async (store) => {
    const now = Date.now();
    const clients = (await store.listClients()).map((client) => clientView(client, now));
    printList(options, clients, 'no clients', ['CLIENT_ID', 'NAME', 'ENABLED', 'SCOPES', 'AUDIENCES', 'SECRETS', 'CREATED'], (c) =>
      [c.client_id, c.name, c.enabled ? 'yes' : 'no', c.scopes.join(' '), c.audiences.join(' ') || '-', String(c.active_secrets), c.created_at ?? '-'],
    );
  });
}

async function clientsShow(ctx: AdminContext, id: string, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async (store) => {
    const now = Date.now();
    const client = await requireClient(ctx, store, id);
    const secrets = client.secrets.map((secret) => ({ created_at: iso(secret.createdAt), expires_at: iso(secret.expiresAt), active: isActive(secret, now) }));
    const view = { ...clientView(client, now), secrets };
    if (options.json === true) return printJson(view);
    print(
      [
        `client_id:  ${view.client_id}`,
        `name:       ${printable(view.name)}`,
        `enabled:    ${view.enabled ? 'yes' : 'no'}`,
        `scopes:     ${view.scopes.join(' ')}`,
        `audiences:  ${view.audiences.join(' ') || '(default audience)'}`,
        `created:    ${view.created_at ?? '-'}`,
        `updated:    ${view.updated_at ?? '-'}`,
        `secrets:    ${view.active_secrets} active`,
        ...secrets.map((s, i) => `  ${i + 1}. created ${s.created_at ?? '-'}, ${s.expires_at === null ? 'no expiry' : `${s.active ? 'expires' : 'expired'} ${s.expires_at}`}`),
      ].join('\n'),
    );
  });
}

async function clientsSetEnabled(ctx: AdminContext, id: string, enabled: boolean, options: StoreOptions): Promise<void> {
  const word = enabled ? 'enabled' : 'disabled';
  await withStore(ctx, options, async (store) => {
    const client = await requireClient(ctx, store, id);
    if (client.enabled === enabled) return print(`client ${id} is already ${word}`);
    await store.updateClient(id, (current) => ({ ...current, enabled }));
    print(`client ${id} ${word}`);
  });
}

/**
 * The secrets after a rotation: the new one, plus (with keepOldMs) the newest old secret still valid, ending at
 * now + keepOldMs at the latest (a rotation never lengthens an old secret's life). Expired secrets are dropped.
 */
export function rotatedSecrets(current: readonly SecretHash[], next: SecretHash, now: number, keepOldMs: number | undefined): SecretHash[] {
  if (keepOldMs === undefined) return [next];
  const newestOld = current.filter((secret) => isActive(secret, now)).sort((a, b) => b.createdAt - a.createdAt)[0];
  if (newestOld === undefined) return [next];
  const until = now + keepOldMs;
  const kept: SecretHash = { ...newestOld, expiresAt: newestOld.expiresAt === null ? until : Math.min(newestOld.expiresAt, until) };
  return [next, kept].slice(0, MAX_SECRETS_PER_CLIENT);
}

async function clientsRotateSecret(ctx: AdminContext, id: string, options: StoreOptions & JsonOption & { keepOldFor?: number }): Promise<void> {
  const secret = generateClientSecret();
  const now = Date.now();
  const next: SecretHash = { hash: await hashSecret(secret), createdAt: now, expiresAt: null };
  let oldExpiresAt: number | null = null;
  await withStore(ctx, options, async (store) => {
    await requireClient(ctx, store, id);
    const updated = await store.updateClient(id, (current) => ({ ...current, secrets: rotatedSecrets(current.secrets, next, now, options.keepOldFor) }));
    oldExpiresAt = updated.secrets.find((s) => s.hash !== next.hash)?.expiresAt ?? null;
  });
  if (options.json === true) return printJson({ client_id: id, client_secret: secret, old_secret_expires_at: iso(oldExpiresAt) });
  const old = oldExpiresAt === null ? 'every previous secret stopped working now' : `the previous secret keeps working until ${iso(oldExpiresAt) ?? '-'}`;
  print(`client_id:     ${id}\nclient_secret: ${secret}\n${old}\n${SECRET_WARNING}`);
}

async function clientsRemove(ctx: AdminContext, id: string, options: StoreOptions): Promise<void> {
  await withStore(ctx, options, async (store) => {
    if (!(await store.removeClient(id))) throw noSuchClient(ctx, id);
    print(`client ${id} removed`);
  });
}

// ---- keys ----

async function keysRotate(ctx: AdminContext, options: StoreOptions & JsonOption & { alg?: SigningAlgorithm }): Promise<void> {
  await withStore(ctx, options, async (store, config) => {
    // Proven against the keys already stored: a rotation sealed under another master key would break the gateway.
    const { kek } = await openVerifiedKeyEncryptionKey(config, store, ctx.masterKey);
    const before = new Map((await store.listSigningKeys()).map((key) => [key.kid, key]));
    const next = await rotateSigningKey(store, kek, {
      alg: options.alg ?? config.issuer?.signing_alg ?? 'EdDSA',
      now: Date.now(),
      activationDelayS: config.issuer?.key_activation_delay_s ?? 600,
      maxTokenLifetimeS: config.issuer?.access_token_ttl_s ?? 600,
    });
    // The key this rotation retired: the one whose retirement it just scheduled.
    const retired = (await store.listSigningKeys()).find((key) => key.retiredAt !== null && before.get(key.kid)?.retiredAt === null);
    const retires = retired === undefined ? null : { kid: retired.kid, retired_at: iso(retired.retiredAt), expires_at: iso(retired.expiresAt) };
    if (options.json === true) return printJson({ kid: next.kid, alg: next.alg, created_at: iso(next.createdAt), activates_at: iso(next.activatesAt), retires });
    print(`new signing key ${next.kid} (${next.alg}): published now, signs from ${iso(next.activatesAt) ?? '-'}`);
    print(
      retires === null
        ? 'no previous key to retire'
        : `key ${retires.kid} stops signing at ${retires.retired_at ?? '-'} and is unpublished at ${retires.expires_at ?? '-'}`,
    );
  });
}

function keyView(key: SigningKey, now: number) {
  return {
    kid: key.kid,
    alg: key.alg,
    state: signingKeyState(key, now),
    created_at: iso(key.createdAt),
    activates_at: iso(key.activatesAt),
    retired_at: iso(key.retiredAt),
    expires_at: iso(key.expiresAt),
  };
}

async function keysList(ctx: AdminContext, options: StoreOptions & JsonOption): Promise<void> {
  await withStore(ctx, options, async (store) => {
    const now = Date.now();
    const keys = (await store.listSigningKeys()).map((key) => keyView(key, now));
    printList(options, keys, 'no signing keys', ['KID', 'ALG', 'STATE', 'CREATED', 'ACTIVATES', 'RETIRED', 'EXPIRES'], (k) =>
      [k.kid, k.alg, k.state, k.created_at ?? '-', k.activates_at ?? '-', k.retired_at ?? '-', k.expires_at ?? '-'],
    );
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

export function registerAdminCommands(program: Command, ctx: AdminContext): void {
  const clients = program.command('clients').description('OAuth clients of the built-in issuer');

  storeCommand(clients, 'add', 'register a client; prints its id and secret (the secret only this once)', ctx)
    .argument('<name>', `display name (1-${MAX_NAME_CHARS} printable characters)`, parseName)
    .requiredOption('--scope <scopes>', 'space-separated scopes the client may request', parseScopes)
    .option('--audience <uri>', 'an audience (resource URI) the client may request; repeatable', collectAudience, [])
    .option('--json', 'print one JSON object')
    .action((name: string, options: StoreOptions & JsonOption & { scope: string[]; audience: string[] }) => clientsAdd(ctx, name, options));

  storeCommand(clients, 'list', 'list clients (never secrets or hashes)', ctx)
    .option('--json', 'print a JSON array')
    .action((options: StoreOptions & JsonOption) => clientsList(ctx, options));

  storeCommand(clients, 'show', "one client's details and its secrets' creation and expiry times", ctx)
    .argument('<id>', 'client id', parseClientId)
    .option('--json', 'print one JSON object')
    .action((id: string, options: StoreOptions & JsonOption) => clientsShow(ctx, id, options));

  storeCommand(clients, 'disable', 'stop a client from authenticating; its live tokens stop working too (idempotent)', ctx)
    .argument('<id>', 'client id', parseClientId)
    .action((id: string, options: StoreOptions) => clientsSetEnabled(ctx, id, false, options));

  storeCommand(clients, 'enable', 'let a disabled client authenticate again (idempotent)', ctx)
    .argument('<id>', 'client id', parseClientId)
    .action((id: string, options: StoreOptions) => clientsSetEnabled(ctx, id, true, options));

  storeCommand(clients, 'rotate-secret', 'give a client a new secret; the old one ends now or after --keep-old-for', ctx)
    .argument('<id>', 'client id', parseClientId)
    .option('--keep-old-for <duration>', 'keep the newest old secret valid this long, e.g. 30s, 15m, 24h, 7d (at most 30d)', parseDuration)
    .option('--json', 'print one JSON object')
    .action((id: string, options: StoreOptions & JsonOption & { keepOldFor?: number }) => clientsRotateSecret(ctx, id, options));

  storeCommand(clients, 'remove', 'delete a client and its secrets', ctx)
    .argument('<id>', 'client id', parseClientId)
    .action((id: string, options: StoreOptions) => clientsRemove(ctx, id, options));

  const keys = program.command('keys').description('access-token signing keys of the built-in issuer');

  storeCommand(keys, 'rotate', 'publish a new signing key; it signs after issuer.key_activation_delay_s and the current key retires then', ctx)
    .option('--alg <alg>', `${SIGNING_ALGORITHMS.join(' or ')} (default: issuer.signing_alg)`, parseAlgorithm)
    .option('--json', 'print one JSON object')
    .action((options: StoreOptions & JsonOption & { alg?: SigningAlgorithm }) => keysRotate(ctx, options));

  storeCommand(keys, 'list', 'list signing keys and their states (never private key material)', ctx)
    .option('--json', 'print a JSON array')
    .action((options: StoreOptions & JsonOption) => keysList(ctx, options));
}
