// Opens the configured credential store and the key-encryption key: the one place the gateway and the CLI agree on where
// clients, signing keys and revocations live.
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { loadKeyEncryptionKey, type KeyEncryptionKey } from '../issuer/key-encryption.js';
import type { CredentialStore } from './contract.js';
import { SqliteCredentialStore } from './sqlite.js';

export function openCredentialStore(config: Pick<Config, 'store'>): CredentialStore {
  return SqliteCredentialStore.open(config.store.path);
}

/** The master key file beside the store's data: data_dir/master.key (0600), unless GATEHOUSE_MASTER_KEY is given. */
export function masterKeyFile(config: Pick<Config, 'data_dir'>): string {
  return join(config.data_dir, 'master.key');
}

/** `masterKey` is the value of GATEHOUSE_MASTER_KEY as read by the CLI (the only reader of the environment). */
export function openKeyEncryptionKey(config: Pick<Config, 'data_dir'>, masterKey: string | undefined): KeyEncryptionKey {
  return loadKeyEncryptionKey({ masterKey, file: masterKeyFile(config) });
}
