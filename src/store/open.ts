// Opens the configured credential store: the one place the gateway and the CLI agree on where clients, signing keys and
// revocations live.
import { existsSync, readFileSync } from 'node:fs';
import type { Config } from '../config/schema.js';
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
