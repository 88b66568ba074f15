// Rows for the store tests: a client and a signing key with every field set, and a helper that expects a StoreError.
import { expect } from 'vitest';
import { StoreError, type Client, type SigningKey } from '../../src/store/contract.js';

export const HASH = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA';

export const client = (id: string, extra: Partial<Client> = {}): Client => ({
  id,
  name: `client ${id}`,
  secrets: [{ hash: HASH, createdAt: 1_000, expiresAt: null }],
  scopes: ['echo:read', 'echo:write'],
  audiences: ['https://api.example'],
  enabled: true,
  tokensNotBeforeS: null,
  accessTokenTtlS: null,
  requireDpop: false,
  tlsClientAuthSubject: null,
  createdAt: 1_000,
  updatedAt: 1_000,
  ...extra,
});

export const key = (kid: string, extra: Partial<SigningKey> = {}): SigningKey => ({
  kid,
  alg: 'EdDSA',
  publicJwk: JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x: 'AAAA', kid, alg: 'EdDSA', use: 'sig' }),
  encryptedPrivateKey: `ciphertext-${kid}`,
  createdAt: 1_000,
  activatesAt: 2_000,
  retiredAt: null,
  expiresAt: null,
  revokedAt: null,
  ...extra,
});

/** The StoreError `promise` rejects with; fails the test if it resolves or rejects with anything else. */
export async function storeError(promise: Promise<unknown>): Promise<StoreError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(StoreError);
    return error as StoreError;
  }
  throw new Error('expected a StoreError, got success');
}
