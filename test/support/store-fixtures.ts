// Rows for the store tests: a client and a signing key with every field set, and a helper that expects a StoreError.
import { expect } from 'vitest';
import { createHash } from 'node:crypto';
import { StoreError, type Client, type ClientCa, type IssuedCertificate, type SigningKey } from '../../src/store/contract.js';

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

export const CA: ClientCa = { certPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', encryptedPrivateKey: 'ciphertext-ca', createdAt: 500 };

/** A certificate record; its thumbprint follows from its serial, so two records never share one by accident. */
export const certificate = (serial: string, extra: Partial<IssuedCertificate> = {}): IssuedCertificate => ({
  serial,
  clientId: 'a',
  subject: 'spiffe://gatehouse.test/a',
  thumbprint: createHash('sha256').update(serial).digest('base64url'),
  notBefore: 1_000,
  notAfter: 10_000,
  issuedAt: 1_000,
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
