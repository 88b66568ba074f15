// The CredentialStore contract, one suite run against every backend: SQLite always, PostgreSQL when
// GATEHOUSE_TEST_POSTGRES_URL names a server (`.ci/run` sets it and requires it; without it the PostgreSQL half is
// skipped with a visible message). Each PostgreSQL store gets a schema of its own, dropped at the end.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { StoreError, type CredentialStore, type SigningKey, type StoreSnapshot } from '../../src/store/contract.js';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { PostgresCredentialStore } from '../../src/store/postgres.js';
import { dropTestSchemas, POSTGRES_URL, testSchema } from '../support/services.js';
import { CA, certificate, client, HASH, key, storeError } from '../support/store-fixtures.js';

const root = mkdtempSync(join(tmpdir(), 'gatehouse-contract-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
afterAll(dropTestSchemas);

interface Opened {
  readonly store: CredentialStore;
  /** Rows matching `from` ("table [WHERE …]"), read beside the store as another process would. */
  count(from: string): Promise<number>;
  /** A second, independent connection to the same store (another process would have one). */
  another(): Promise<CredentialStore>;
  close(): Promise<void>;
}

interface Backend {
  readonly name: string;
  open(opts?: { readonly now?: () => number }): Promise<Opened>;
}

let dbCount = 0;
const sqlite: Backend = {
  name: 'SQLite',
  open: async (opts = {}) => {
    const file = join(root, `db-${++dbCount}`, 'gatehouse.db');
    const store = SqliteCredentialStore.open(file, opts);
    return {
      store,
      count: async (from) => {
        const db = new Database(file);
        try {
          return Number(db.prepare(`SELECT count(*) FROM ${from}`).pluck().get());
        } finally {
          db.close();
        }
      },
      another: async () => SqliteCredentialStore.open(file, { create: false }),
      close: async () => undefined,
    };
  },
};

const postgres = (url: string): Backend => ({
  name: 'PostgreSQL',
  open: async (opts = {}) => {
    const schema = testSchema();
    const store = await PostgresCredentialStore.open({ url, schema, ...opts });
    const { default: pg } = await import('pg');
    const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema}` });
    await client.connect();
    return {
      store,
      count: async (from) => Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${from}`)).rows[0]?.n),
      another: () => PostgresCredentialStore.open({ url, schema, create: false }),
      close: () => client.end(),
    };
  },
});

const backends: Backend[] = [sqlite, ...(POSTGRES_URL !== undefined ? [postgres(POSTGRES_URL)] : [])];
if (POSTGRES_URL === undefined) {
  describe.skip('PostgreSQL credential store: SKIPPED (set GATEHOUSE_TEST_POSTGRES_URL, e.g. postgres://127.0.0.1:5432/test)', () => {
    it('runs the contract against PostgreSQL', () => undefined);
  });
}

for (const backend of backends) {
  describe(`${backend.name} credential store: clients`, () => {
    it('creates, reads, lists, updates and removes clients, secrets included', async () => {
      const { store, count, close } = await backend.open({ now: () => 5_000 });
      const a = client('a', {
        secrets: [
          { hash: HASH, createdAt: 1_000, expiresAt: null },
          { hash: `${HASH}x`, createdAt: 900, expiresAt: 3_000 },
        ],
      });
      const b = client('b', { createdAt: 2_000, updatedAt: 2_000, enabled: false, scopes: [], audiences: [] });
      await store.createClient(a);
      await store.createClient(b);
      expect(await store.getClient('a')).toEqual(a);
      expect(await store.getClient('b')).toEqual(b);
      expect(await store.getClient('nope')).toBeUndefined();
      expect(await store.listClients()).toEqual([a, b]);

      const updated = await store.updateClient('a', (c) => ({ ...c, name: 'renamed', enabled: false, secrets: [c.secrets[0]!], createdAt: 1, updatedAt: 1 }));
      // The store keeps createdAt and stamps updatedAt from its clock.
      expect(updated).toEqual({ ...a, name: 'renamed', enabled: false, secrets: [a.secrets[0]], updatedAt: 5_000 });
      expect(await store.getClient('a')).toEqual(updated);

      expect(await store.removeClient('a')).toBe(true);
      expect(await store.removeClient('a')).toBe(false);
      expect(await store.getClient('a')).toBeUndefined();
      expect(await store.listClients()).toEqual([b]);
      await store.close();

      // ON DELETE CASCADE took the secrets with the client.
      expect(await count("client_secrets WHERE client_id = 'a'")).toBe(0);
      await close();
    });

    it('refuses a second client with the same id (conflict) and leaves the first as it was', async () => {
      const store = (await backend.open()).store;
      await store.createClient(client('dup'));
      const error = await storeError(store.createClient(client('dup', { name: 'impostor', secrets: [] })));
      expect(error.code).toBe('conflict');
      expect(await store.getClient('dup')).toEqual(client('dup'));
      await store.close();
    });

    it('answers not_found when updating an unknown client', async () => {
      const store = (await backend.open()).store;
      const error = await storeError(store.updateClient('ghost', (c) => c));
      expect(error.code).toBe('not_found');
      await store.close();
    });

    it('allows at most two secrets per client, on create and on update', async () => {
      const store = (await backend.open()).store;
      const three = [1, 2, 3].map((i) => ({ hash: `${HASH}${i}`, createdAt: i, expiresAt: null }));
      expect((await storeError(store.createClient(client('c3', { secrets: three })))).code).toBe('invalid');
      expect(await store.getClient('c3')).toBeUndefined();
      await store.createClient(client('c2'));
      expect(await storeError(store.updateClient('c2', (c) => ({ ...c, secrets: three })))).toMatchObject({ code: 'invalid' });
      expect(await store.getClient('c2')).toEqual(client('c2'));
      await store.close();
    });

    it('updateClient is atomic: a change that throws, or a write that fails half-way, leaves the row untouched', async () => {
      const { store, count, close } = await backend.open({ now: () => 9_000 });
      const original = client('atomic', {
        secrets: [
          { hash: HASH, createdAt: 1_000, expiresAt: null },
          { hash: `${HASH}old`, createdAt: 500, expiresAt: 8_000 },
        ],
      });
      await store.createClient(original);

      const boom = new Error('boom');
      await expect(
        store.updateClient('atomic', () => {
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await store.getClient('atomic')).toEqual(original);

      // The client row is updated and the old secrets deleted before the bad secret's INSERT fails (the schema refuses a
      // fractional timestamp): everything must roll back.
      const halfway = await storeError(
        store.updateClient('atomic', (c) => ({ ...c, name: 'half', scopes: [], secrets: [{ hash: HASH, createdAt: 1.5, expiresAt: null }] })),
      );
      expect(halfway.code).toBe('invalid');
      expect(await store.getClient('atomic')).toEqual(original);

      expect((await storeError(store.updateClient('atomic', (c) => ({ ...c, id: 'other' })))).code).toBe('invalid');
      expect(await store.getClient('other')).toBeUndefined();
      expect(await store.getClient('atomic')).toEqual(original);
      await store.close();

      expect(await count("client_secrets WHERE client_id = 'atomic'")).toBe(2);
      await close();
    });
  });

  describe(`${backend.name} credential store: signing keys`, () => {
    it('adds and lists keys; a duplicate kid is a conflict; an unknown algorithm is refused by the schema', async () => {
      const store = (await backend.open()).store;
      const k1 = key('k1');
      const k2 = key('k2', { alg: 'ES256', createdAt: 3_000, activatesAt: 4_000, retiredAt: 5_000, expiresAt: 6_000 });
      await store.addSigningKey(k1);
      await store.addSigningKey(k2);
      expect(await store.listSigningKeys()).toEqual([k1, k2]);
      expect((await storeError(store.addSigningKey(key('k1', { encryptedPrivateKey: 'other' })))).code).toBe('conflict');
      const none = { ...key('k3'), alg: 'none' } as unknown as SigningKey;
      expect((await storeError(store.addSigningKey(none))).code).toBe('invalid');
      expect(await store.listSigningKeys()).toEqual([k1, k2]);
      await store.close();
    });

    it('rotates in one transaction: adds the next key and retires the old one together', async () => {
      const store = (await backend.open()).store;
      await store.addSigningKey(key('old'));
      await store.rotateSigningKey(key('new', { createdAt: 10_000, activatesAt: 20_000 }), { kid: 'old', retiredAt: 20_000, expiresAt: 30_000 });
      expect(await store.listSigningKeys()).toEqual([
        key('old', { retiredAt: 20_000, expiresAt: 30_000 }),
        key('new', { createdAt: 10_000, activatesAt: 20_000 }),
      ]);
      // No key to retire (first key): just adds.
      await store.rotateSigningKey(key('solo', { createdAt: 40_000 }), undefined);
      expect((await store.listSigningKeys()).map((k) => k.kid)).toEqual(['old', 'new', 'solo']);
      await store.close();
    });

    it('rotation is atomic: when the next kid exists the retirement is not applied; an unknown retiree adds nothing', async () => {
      const store = (await backend.open()).store;
      await store.addSigningKey(key('current'));
      await store.addSigningKey(key('taken', { createdAt: 2_000 }));
      const before = await store.listSigningKeys();

      const conflict = await storeError(store.rotateSigningKey(key('taken', { createdAt: 3_000 }), { kid: 'current', retiredAt: 5, expiresAt: 6 }));
      expect(conflict.code).toBe('conflict');
      expect(await store.listSigningKeys()).toEqual(before);

      const missing = await storeError(store.rotateSigningKey(key('fresh', { createdAt: 4_000 }), { kid: 'ghost', retiredAt: 5, expiresAt: 6 }));
      expect(missing.code).toBe('not_found');
      expect(await store.listSigningKeys()).toEqual(before);
      await store.close();
    });

    it('two rotations racing from the same current key: the second is refused with conflict and adds nothing', async () => {
      const store = (await backend.open()).store;
      await store.addSigningKey(key('current'));
      await store.rotateSigningKey(key('winner', { createdAt: 2_000 }), { kid: 'current', retiredAt: 3_000, expiresAt: 9_000 });
      const before = await store.listSigningKeys();
      const lost = await storeError(store.rotateSigningKey(key('loser', { createdAt: 2_001 }), { kid: 'current', retiredAt: 3_001, expiresAt: 9_001 }));
      expect(lost.code).toBe('conflict');
      expect(await store.listSigningKeys()).toEqual(before);
      await store.close();
    });

    it('purges only keys whose expiry has passed', async () => {
      const store = (await backend.open()).store;
      await store.addSigningKey(key('live'));
      await store.addSigningKey(key('retired-later', { createdAt: 2_000, retiredAt: 5_000, expiresAt: 9_000 }));
      await store.addSigningKey(key('retired-gone', { createdAt: 3_000, retiredAt: 4_000, expiresAt: 7_000 }));
      expect(await store.purgeExpiredSigningKeys(6_999)).toBe(0);
      expect(await store.purgeExpiredSigningKeys(7_000)).toBe(1);
      expect((await store.listSigningKeys()).map((k) => k.kid)).toEqual(['live', 'retired-later']);
      expect(await store.purgeExpiredSigningKeys(Number.MAX_SAFE_INTEGER)).toBe(1);
      expect((await store.listSigningKeys()).map((k) => k.kid)).toEqual(['live']);
      await store.close();
    });
  });

  describe(`${backend.name} credential store: revocations`, () => {
    const ISS = 'https://gatehouse.example';

    it('revokes by (iss, jti), idempotently, never shortening a revocation', async () => {
      const { store, count, close } = await backend.open();
      await store.revoke({ iss: ISS, jti: 'j1', expiresAt: 10_000 });
      await store.revoke({ iss: ISS, jti: 'j1', expiresAt: 10_000 });
      await store.revoke({ iss: ISS, jti: 'j1', expiresAt: 5_000 });
      expect(await store.listRevocations(0)).toEqual([{ iss: ISS, jti: 'j1', expiresAt: 10_000 }]);
      await store.revoke({ iss: ISS, jti: 'j1', expiresAt: 12_000 });
      expect(await store.listRevocations(0)).toEqual([{ iss: ISS, jti: 'j1', expiresAt: 12_000 }]);

      // In force until just before its expiry; the same jti from another issuer is another token.
      await store.revoke({ iss: 'https://other.example', jti: 'j2', expiresAt: 12_000 });
      expect(await store.listRevocations(11_999)).toEqual([
        { iss: ISS, jti: 'j1', expiresAt: 12_000 },
        { iss: 'https://other.example', jti: 'j2', expiresAt: 12_000 },
      ]);
      await store.close();

      expect(await count('revocations')).toBe(2);
      await close();
    });

    it('stops counting a revocation once its token expired, lists only those in force, and purges the rest', async () => {
      const store = (await backend.open()).store;
      await store.revoke({ iss: ISS, jti: 'early', expiresAt: 1_000 });
      await store.revoke({ iss: ISS, jti: 'middle', expiresAt: 2_000 });
      await store.revoke({ iss: ISS, jti: 'late', expiresAt: 3_000 });

      // A token is expired at its exp: from then on its revocation is moot.
      expect((await store.listRevocations(1_999)).map((r) => r.jti)).toEqual(['middle', 'late']);
      expect((await store.listRevocations(2_000)).map((r) => r.jti)).toEqual(['late']);
      expect((await store.listRevocations(999)).map((r) => r.jti)).toEqual(['early', 'middle', 'late']);

      expect(await store.purgeExpiredRevocations(2_000)).toBe(2);
      expect(await store.purgeExpiredRevocations(2_000)).toBe(0);
      expect(await store.listRevocations(0)).toEqual([{ iss: ISS, jti: 'late', expiresAt: 3_000 }]);
      await store.close();
    });
  });

  describe(`${backend.name} credential store: the client CA and its certificates`, () => {
    it('keeps one client CA, never replaced, and reads it back as written', async () => {
      const { store, count, close } = await backend.open();
      expect(await store.getClientCa()).toBeUndefined();
      await store.createClientCa(CA);
      expect(await store.getClientCa()).toEqual(CA);
      expect((await storeError(store.createClientCa({ ...CA, encryptedPrivateKey: 'another' }))).code).toBe('conflict');
      expect(await store.getClientCa()).toEqual(CA);
      expect(await count('client_ca')).toBe(1);
      await store.close();
      await close();
    });

    it('records issued certificates once each, revokes them once (the first time stays), lists the revoked ones still valid, purges expired records', async () => {
      const { store, close } = await backend.open();
      const a = certificate('0a', { notAfter: 5_000 });
      const b = certificate('0b', { issuedAt: 2_000, notAfter: 9_000 });
      await store.addIssuedCertificate(a);
      await store.addIssuedCertificate(b);
      expect((await storeError(store.addIssuedCertificate(a))).code).toBe('conflict');
      // Another serial with a thumbprint already recorded is the same certificate bytes: refused too.
      expect((await storeError(store.addIssuedCertificate({ ...certificate('0c'), thumbprint: a.thumbprint }))).code).toBe('conflict');
      expect(await store.listIssuedCertificates()).toEqual([a, b]);
      expect(await store.findIssuedCertificate(b.thumbprint)).toEqual(b);
      expect(await store.findIssuedCertificate(certificate('99').thumbprint)).toBeUndefined();
      expect(await store.listRevokedCertificates(0)).toEqual([]);

      expect(await store.revokeCertificate('0a', 3_000)).toEqual({ ...a, revokedAt: 3_000 });
      expect(await store.revokeCertificate('0a', 4_000)).toEqual({ ...a, revokedAt: 3_000 });
      await store.revokeCertificate('0b', 3_500);
      expect((await storeError(store.revokeCertificate('ff', 3_000))).code).toBe('not_found');
      expect((await store.listRevokedCertificates(4_999)).map((c) => c.serial)).toEqual(['0a', '0b']);
      // A certificate past its notAfter is refused by TLS itself: its revocation need not be carried any more.
      expect((await store.listRevokedCertificates(5_000)).map((c) => c.serial)).toEqual(['0b']);

      expect(await store.purgeExpiredCertificates(6_000)).toBe(1);
      expect(await store.purgeExpiredCertificates(6_000)).toBe(0);
      expect((await store.listIssuedCertificates()).map((c) => c.serial)).toEqual(['0b']);
      await store.close();
      await close();
    });

    it('refuses a record the schema cannot hold (a validity that ends before it starts)', async () => {
      const { store, close } = await backend.open();
      expect((await storeError(store.addIssuedCertificate(certificate('0d', { notBefore: 5_000, notAfter: 5_000 })))).code).toBe('invalid');
      await store.close();
      await close();
    });

    it('a revocation made on another connection reaches a watcher', async () => {
      const { store, another, close } = await backend.open();
      await store.addIssuedCertificate(certificate('0e'));
      const changes: string[] = [];
      const watch = await store.watch?.({ onChange: (change) => changes.push(change.kind) });
      const other = await another();
      await other.revokeCertificate('0e', 2_000);
      await expect.poll(() => changes, { timeout: 5_000 }).toContainEqual(expect.stringMatching(/^(certificates|resync)$/));
      await watch?.close();
      await other.close();
      await store.close();
      await close();
    });
  });

  describe(`${backend.name} credential store: export and import of a whole store`, () => {
    const ISS = 'https://gatehouse.example';
    const AT = 5_000;
    /** Every field set, and every state a row can be in: two secrets, disabled, cut-off, retired, expired, revoked. */
    async function fill(store: CredentialStore): Promise<void> {
      await store.createClient(
        client('a', {
          secrets: [
            { hash: HASH, createdAt: 1_000, expiresAt: null },
            { hash: `${HASH}old`, createdAt: 900, expiresAt: 9_000 },
          ],
          accessTokenTtlS: 300,
        }),
      );
      await store.createClient(
        client('b', { enabled: false, tokensNotBeforeS: 4, scopes: [], audiences: [], createdAt: 2_000, updatedAt: 3_000, name: 'naïve "quoted" \\ name' }),
      );
      await store.createClient(client('c', { secrets: [] }));
      await store.addSigningKey(key('k1', { retiredAt: 3_000, expiresAt: 8_000 }));
      await store.addSigningKey(key('k2', { alg: 'ES256', createdAt: 2_000, activatesAt: 2_000, revokedAt: 4_000 }));
      await store.addSigningKey(key('k3', { createdAt: 3_000, activatesAt: 3_500, expiresAt: 4_000 }));
      await store.revoke({ iss: ISS, jti: 'live', expiresAt: 10_000 });
      await store.revoke({ iss: 'https://other.example', jti: 'live', expiresAt: 6_000 });
      await store.revoke({ iss: ISS, jti: 'expired', expiresAt: AT });
      await store.createClientCa(CA);
      await store.addIssuedCertificate(certificate('0a', { issuedAt: 1_000 }));
      await store.addIssuedCertificate(certificate('0b', { issuedAt: 2_000, revokedAt: 2_500 }));
    }

    it('exports clients, keys and the revocations in force, and every backend imports it unchanged', async () => {
      const source = (await backend.open()).store;
      await fill(source);
      const snapshot = await source.exportSnapshot(AT);
      expect(snapshot.at).toBe(AT);
      expect(snapshot.clients).toEqual(await source.listClients());
      expect(snapshot.signingKeys).toEqual(await source.listSigningKeys());
      // A revocation whose token has expired is moot: it is not carried over.
      expect(snapshot.revocations).toEqual(await source.listRevocations(AT));
      expect(snapshot.revocations.map((r) => r.jti)).toEqual(['live', 'live']);
      expect(snapshot.clients.map((c) => c.id)).toEqual(['a', 'c', 'b']);
      expect(snapshot.signingKeys.map((k) => k.kid)).toEqual(['k1', 'k2', 'k3']);
      expect(snapshot.clientCa).toEqual(CA);
      expect(snapshot.certificates.map((c) => c.serial)).toEqual(['0a', '0b']);

      for (const target of backends) {
        const { store, count, close } = await target.open({ now: () => 99_999 });
        await store.importSnapshot(snapshot);
        // As it was: no time stamp restamped by the target's clock, no hash or ciphertext changed.
        expect(await store.exportSnapshot(AT), `into ${target.name}`).toEqual(snapshot);
        expect(await store.getClient('a')).toEqual(snapshot.clients[0]);
        expect(await count('client_secrets')).toBe(3);
        await store.close();
        await close();
      }
      await source.close();
    });

    it('an empty store exports an empty snapshot, which imports into an empty store', async () => {
      const { store } = await backend.open({ now: () => 7_000 });
      const empty = await store.exportSnapshot();
      expect(empty).toEqual({ at: 7_000, clients: [], signingKeys: [], revocations: [], clientCa: null, certificates: [] });
      await store.importSnapshot(empty);
      await store.close();
    });

    it('refuses to import into a store holding a client, a key or even an expired revocation (conflict), changing nothing', async () => {
      const source = (await backend.open()).store;
      await fill(source);
      const snapshot = await source.exportSnapshot(AT);
      await source.close();
      const holdings: readonly ((store: CredentialStore) => Promise<void>)[] = [
        (store) => store.createClient(client('z')),
        (store) => store.addSigningKey(key('kz')),
        (store) => store.revoke({ iss: ISS, jti: 'old', expiresAt: 1 }),
        (store) => store.createClientCa(CA),
        (store) => store.addIssuedCertificate(certificate('ff', { notBefore: 1, notAfter: 2 })),
      ];
      for (const hold of holdings) {
        const { store, count, close } = await backend.open();
        await hold(store);
        const before = await store.exportSnapshot(0);
        const error = await storeError(store.importSnapshot(snapshot));
        expect(error.code).toBe('conflict');
        expect(await store.exportSnapshot(0)).toEqual(before);
        expect((await count('clients')) + (await count('client_secrets')) + (await count('signing_keys')) + (await count('revocations'))).toBe(
          before.clients.length + before.clients.reduce((n, c) => n + c.secrets.length, 0) + before.signingKeys.length + before.revocations.length,
        );
        await store.close();
        await close();
      }
    });

    it('is one transaction: a snapshot the store refuses half-way leaves it empty', async () => {
      const { store, count, close } = await backend.open();
      const bad: StoreSnapshot = {
        at: AT,
        clients: [client('a'), client('b')],
        signingKeys: [key('k1'), key('k1')],
        revocations: [{ iss: ISS, jti: 'j', expiresAt: 9_000 }],
        clientCa: null,
        certificates: [],
      };
      expect((await storeError(store.importSnapshot(bad))).code).toBe('conflict');
      const tooManySecrets: StoreSnapshot = {
        ...bad,
        signingKeys: [],
        clients: [client('a', { secrets: [...client('a').secrets, ...client('a').secrets, ...client('a').secrets] })],
      };
      expect((await storeError(store.importSnapshot(tooManySecrets))).code).toBe('invalid');
      for (const table of ['clients', 'client_secrets', 'signing_keys', 'revocations']) expect(await count(table), table).toBe(0);
      // Still empty, so a good snapshot goes in afterwards.
      await store.importSnapshot({ ...bad, signingKeys: [key('k1')] });
      expect(await count('signing_keys')).toBe(1);
      await store.close();
      await close();
    });

    it('two importers at once on two connections: one fills the store, the other is refused with conflict', async () => {
      const { store, another, count, close } = await backend.open();
      const second = await another();
      const one: StoreSnapshot = { at: AT, clients: [client('one')], signingKeys: [key('k-one')], revocations: [], clientCa: null, certificates: [] };
      const two: StoreSnapshot = {
        at: AT,
        clients: [client('two-1'), client('two-2')],
        signingKeys: [],
        revocations: [{ iss: ISS, jti: 'two', expiresAt: 9_000 }],
        clientCa: null,
        certificates: [],
      };
      const results = await Promise.allSettled([store.importSnapshot(one), second.importSnapshot(two)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(refused?.reason).toBeInstanceOf(StoreError);
      expect((refused?.reason as StoreError | undefined)?.code).toBe('conflict');
      const won = results[0]?.status === 'fulfilled' ? one : two;
      expect(await store.exportSnapshot(AT)).toEqual(won);
      expect(await count('clients')).toBe(won.clients.length);
      await second.close();
      await store.close();
      await close();
    });
  });
}
