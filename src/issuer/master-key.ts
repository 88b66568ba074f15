// The master key as the issuer and the CLI open it: the key file beside the data (or GATEHOUSE_MASTER_KEY), proven against
// the signing keys a store holds before anything is sealed with it.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { loadKeyEncryptionKey, MASTER_KEY_ENV, MasterKeyError, type KeyEncryptionKey } from '../lib/key-encryption.js';
import type { CredentialStore } from '../store/contract.js';
import { KeyRing } from './key-ring.js';

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
