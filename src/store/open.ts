// Opens the configured credential store and the key-encryption key: the one place the gateway and the CLI agree on where
// clients, signing keys and revocations live.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { loadKeyEncryptionKey, MASTER_KEY_ENV, MasterKeyError, type KeyEncryptionKey } from '../issuer/key-encryption.js';
import { KeyRing } from '../issuer/keys.js';
import { StoreError, type CredentialStore } from './contract.js';
import { describePostgresUrl, PostgresCredentialStore } from './postgres.js';
import { SqliteCredentialStore } from './sqlite.js';

/**
 * The configured backend: PostgreSQL (store.postgres) or the SQLite file. `create: false` (the admin commands) opens only
 * a store that exists, and throws StoreError('not_found') otherwise: a mistyped --data or URL must not silently become a
 * new, empty store. `serve` and `gatehouse init` create it.
 */
export async function openCredentialStore(config: Pick<Config, 'store'>, opts: { readonly create: boolean } = { create: true }): Promise<CredentialStore> {
  const { store } = config;
  if (store.backend === 'sqlite' || store.postgres === undefined) return SqliteCredentialStore.open(store.path, { create: opts.create });
  let ca: string | undefined;
  if (store.postgres_ca !== undefined) {
    try {
      ca = readFileSync(store.postgres_ca, 'utf8');
    } catch (error) {
      throw new StoreError('unavailable', `store.postgres_ca: cannot read ${store.postgres_ca} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  return PostgresCredentialStore.open({
    url: store.postgres,
    schema: store.postgres_schema,
    ca,
    create: opts.create,
    poolMax: store.postgres_pool_max,
    connectTimeoutMs: store.postgres_timeout_ms,
    statementTimeoutMs: store.postgres_timeout_ms,
  });
}

/** Where the configured store lives, for messages: the SQLite file, or the schema and the URL without its password. */
export function describeCredentialStore(config: Pick<Config, 'store'>): string {
  const { store } = config;
  if (store.backend === 'sqlite' || store.postgres === undefined) return store.path;
  return `schema ${store.postgres_schema} at ${describePostgresUrl(store.postgres)}`;
}

/** Whether the configured store exists (for `init`); a PostgreSQL server that cannot be reached throws StoreError. */
export async function credentialStoreExists(config: Pick<Config, 'store'>): Promise<boolean> {
  if (config.store.backend === 'sqlite' || config.store.postgres === undefined) return existsSync(config.store.path);
  try {
    await (await openCredentialStore(config, { create: false })).close();
    return true;
  } catch (error) {
    if (error instanceof StoreError && error.code === 'not_found') return false;
    throw error;
  }
}

/** The master key file beside the store's data: data_dir/master.key (0600), unless GATEHOUSE_MASTER_KEY is given. */
export function masterKeyFile(config: Pick<Config, 'data_dir'>): string {
  return join(config.data_dir, 'master.key');
}

/** `masterKey` is the value of GATEHOUSE_MASTER_KEY as read by the CLI (the only reader of the environment). */
export function openKeyEncryptionKey(config: Pick<Config, 'data_dir'>, masterKey: string | undefined): KeyEncryptionKey {
  return loadKeyEncryptionKey({ masterKey, file: masterKeyFile(config) });
}

/**
 * The key-encryption key for `store`, proven to open every signing key the store holds — before anything is sealed with
 * it — and the KeyRing that proof loaded. A master key file is created only for a store without signing keys: otherwise a
 * missing file means the keys were sealed with another key (GATEHOUSE_MASTER_KEY, or a file elsewhere), and a new file
 * would seal new keys that the running gateway cannot open. Throws MasterKeyError, or SigningKeyError('undecryptable_key')
 * for the wrong key.
 */
export async function openVerifiedKeyEncryptionKey(
  config: Pick<Config, 'data_dir'>,
  store: CredentialStore,
  masterKey: string | undefined,
  now: () => number = Date.now,
): Promise<{ readonly kek: KeyEncryptionKey; readonly ring: KeyRing }> {
  // Keys past their expiry are never opened again (KeyRing skips them), so only live keys make a missing file an error.
  const at = now();
  const live = (await store.listSigningKeys()).filter((key) => key.expiresAt === null || key.expiresAt > at);
  if (masterKey === undefined && !existsSync(masterKeyFile(config)) && live.length > 0) {
    throw new MasterKeyError(
      'missing_master_key',
      `The store holds signing keys but ${masterKeyFile(config)} does not exist: set ${MASTER_KEY_ENV} to the key they were sealed with.`,
    );
  }
  const kek = openKeyEncryptionKey(config, masterKey);
  return { kek, ring: await KeyRing.load(store, kek, { now }) };
}
