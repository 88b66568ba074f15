// Comparing two StoreSnapshots row by row, for `gatehouse store copy`'s read-back check: by id, not by position (backends
// order rows with equal time stamps by their own collation). Names what differs, never a hash or a ciphertext.
import { isDeepStrictEqual } from 'node:util';
import type { StoreSnapshot } from './contract.js';

/** What in `actual` is not exactly as in `expected`: [] when every row (client CA and certificate records too) is identical. */
export function snapshotDifferences(expected: StoreSnapshot, actual: StoreSnapshot): string[] {
  const asRows = (snapshot: StoreSnapshot) => (snapshot.clientCa === null ? [] : [snapshot.clientCa]);
  return [
    ...rowDifferences('client', expected.clients, actual.clients, (client) => client.id),
    ...rowDifferences('signing key', expected.signingKeys, actual.signingKeys, (key) => key.kid),
    ...rowDifferences('revocation', expected.revocations, actual.revocations, (revocation) => `${revocation.iss} ${revocation.jti}`),
    ...rowDifferences('client CA', asRows(expected), asRows(actual), () => 'client CA'),
    ...rowDifferences('certificate', expected.certificates, actual.certificates, (certificate) => certificate.serial),
  ];
}

function rowDifferences<T>(kind: string, expected: readonly T[], actual: readonly T[], keyOf: (row: T) => string): string[] {
  const problems: string[] = [];
  if (expected.length !== actual.length) problems.push(`${expected.length} ${kind}s expected, ${actual.length} found`);
  const found = new Map(actual.map((row) => [keyOf(row), row]));
  for (const row of expected) {
    const key = keyOf(row);
    const other = found.get(key);
    if (other === undefined) problems.push(`${kind} ${JSON.stringify(key)} missing`);
    else if (!isDeepStrictEqual(row, other)) problems.push(`${kind} ${JSON.stringify(key)} differs`);
    found.delete(key);
  }
  for (const key of found.keys()) problems.push(`${kind} ${JSON.stringify(key)} not in the source`);
  return problems;
}
