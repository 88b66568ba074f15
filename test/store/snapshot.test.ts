// The read-back check of `gatehouse store copy`: rows compared by id, whatever their order, every field counted, and the
// report naming rows, never their hashes or ciphertexts.
import { describe, expect, it } from 'vitest';
import type { StoreSnapshot } from '../../src/store/contract.js';
import { snapshotDifferences } from '../../src/store/snapshot.js';
import { client, HASH, key } from '../support/store-fixtures.js';

const ISS = 'https://gatehouse.example';
const snapshot: StoreSnapshot = {
  at: 5_000,
  clients: [client('a'), client('b')],
  signingKeys: [key('k1'), key('k2')],
  revocations: [{ iss: ISS, jti: 'j1', expiresAt: 9_000 }],
  clientCa: null,
  certificates: [],
};

describe('snapshotDifferences', () => {
  it('finds none between equal snapshots, whatever the order of their rows', () => {
    expect(snapshotDifferences(snapshot, structuredClone(snapshot))).toEqual([]);
    expect(snapshotDifferences(snapshot, { ...snapshot, clients: [client('b'), client('a')], signingKeys: [key('k2'), key('k1')] })).toEqual([]);
  });

  it('names a changed field, a missing row and an extra one, without printing a hash', () => {
    const changed: StoreSnapshot = {
      ...snapshot,
      clients: [client('a', { secrets: [{ hash: `${HASH}x`, createdAt: 1_000, expiresAt: null }] }), client('b'), client('c')],
      signingKeys: [key('k1', { revokedAt: 1 })],
      revocations: [{ iss: ISS, jti: 'j1', expiresAt: 9_001 }],
    };
    const differences = snapshotDifferences(snapshot, changed);
    expect(differences).toEqual([
      '2 clients expected, 3 found',
      'client "a" differs',
      'client "c" not in the source',
      '2 signing keys expected, 1 found',
      'signing key "k1" differs',
      'signing key "k2" missing',
      `revocation "${ISS} j1" differs`,
    ]);
    expect(differences.join('\n')).not.toContain(HASH);
  });
});
