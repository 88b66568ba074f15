// The PostgreSQL store beyond the shared contract: opening (missing store, foreign or newer schema, bad schema name),
// migrations under concurrent start, and outages — a server that refuses, one that accepts and never answers, a line
// cut under a live pool — each answered `unavailable` within the configured timeout, then recovery without a restart.
// Real server only (GATEHOUSE_TEST_POSTGRES_URL); skipped with a visible message without it.
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { POSTGRES_LATEST_VERSION, PostgresCredentialStore, describePostgresUrl } from '../../src/store/postgres.js';
import { dropTestSchemas, POSTGRES_URL, testSchema } from '../support/services.js';
import { client, storeError } from '../support/store-fixtures.js';
import { hostPort, TcpRelay } from '../support/tcp-relay.js';

afterAll(dropTestSchemas);

/** url with its host and port replaced by 127.0.0.1:port (a relay in front of the real server). */
function via(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.hostname = '127.0.0.1';
  parsed.port = String(port);
  return parsed.toString();
}

async function sql(url: string, text: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(text);
  } finally {
    await c.end();
  }
}

if (POSTGRES_URL === undefined) {
  describe.skip('PostgreSQL store: SKIPPED (set GATEHOUSE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test)', () => {
    it('needs a PostgreSQL server', () => undefined);
  });
} else {
  const url = POSTGRES_URL;

  describe('PostgreSQL store: opening', () => {
    it('create: false finds no store in a schema that does not exist, and creates nothing', async () => {
      const schema = testSchema();
      const error = await storeError(PostgresCredentialStore.open({ url, schema, create: false }));
      expect(error.code).toBe('not_found');
      expect(error.message).toContain(schema);
      expect((await sql(url, `SELECT 1 FROM pg_namespace WHERE nspname = '${schema}'`)).rowCount).toBe(0);
    });

    it('instances starting together on a new schema migrate it once, and all of them serve', async () => {
      const schema = testSchema();
      const stores = await Promise.all(Array.from({ length: 6 }, () => PostgresCredentialStore.open({ url, schema })));
      try {
        await stores[0]!.createClient(client('shared'));
        for (const store of stores) expect((await store.getClient('shared'))?.id).toBe('shared');
        const version = await sql(url, `SELECT application, version FROM ${schema}.gatehouse_schema`);
        expect(version.rows).toEqual([{ application: 'gatehouse-credential-store', version: POSTGRES_LATEST_VERSION }]);
      } finally {
        await Promise.all(stores.map((store) => store.close()));
      }
    });

    it('refuses a schema holding someone else’s tables, and one from a newer Gatehouse, without touching them', async () => {
      const foreign = testSchema();
      await sql(url, `CREATE SCHEMA ${foreign}; CREATE TABLE ${foreign}.orders (id int); INSERT INTO ${foreign}.orders VALUES (7)`);
      const error = await storeError(PostgresCredentialStore.open({ url, schema: foreign }));
      expect(error.code).toBe('invalid');
      expect(error.message).toContain('not a Gatehouse credential store');
      expect((await sql(url, `SELECT id FROM ${foreign}.orders`)).rows).toEqual([{ id: 7 }]);

      const newer = testSchema();
      await (await PostgresCredentialStore.open({ url, schema: newer })).close();
      await sql(url, `UPDATE ${newer}.gatehouse_schema SET version = ${POSTGRES_LATEST_VERSION + 1}`);
      const tooNew = await storeError(PostgresCredentialStore.open({ url, schema: newer }));
      expect(tooNew.code).toBe('invalid');
      expect(tooNew.message).toContain('upgrade Gatehouse');
    });

    it('refuses a schema name that is not a plain lower-case identifier', async () => {
      for (const schema of ['Public', 'a;drop schema public', 'x-y', '', 'a'.repeat(64)]) {
        expect((await storeError(PostgresCredentialStore.open({ url, schema }))).code).toBe('invalid');
      }
    });

    it('never prints the password of the URL', () => {
      expect(describePostgresUrl('postgres://gate:s3cr3t-pw@db.internal:5432/gh')).toBe('postgres://gate@db.internal:5432/gh');
    });
  });

  describe('PostgreSQL store: outages', () => {
    it('a server that refuses connections is `unavailable`, and the URL password is not in the message', async () => {
      const relay = await TcpRelay.start(hostPort(url, 5432));
      relay.set('refuse');
      try {
        const withPassword = new URL(via(url, relay.port));
        withPassword.password = 'do-not-print-me';
        const error = await storeError(PostgresCredentialStore.open({ url: withPassword.toString(), schema: testSchema(), connectTimeoutMs: 1000 }));
        expect(error.code).toBe('unavailable');
        expect(error.message).not.toContain('do-not-print-me');
      } finally {
        await relay.close();
      }
    });

    it('a server that accepts and never answers is `unavailable` within the connect timeout', async () => {
      const relay = await TcpRelay.start(hostPort(url, 5432));
      relay.set('blackhole');
      try {
        const started = Date.now();
        const error = await storeError(PostgresCredentialStore.open({ url: via(url, relay.port), schema: testSchema(), connectTimeoutMs: 500 }));
        expect(error.code).toBe('unavailable');
        // Bounded: the attempt gave up instead of waiting for the kernel's TCP timeout (minutes).
        expect(Date.now() - started).toBeLessThan(10_000);
      } finally {
        await relay.close();
      }
    });

    it('a live pool whose line is cut or hangs answers `unavailable`, then serves again when the line is back', async () => {
      const relay = await TcpRelay.start(hostPort(url, 5432));
      const store = await PostgresCredentialStore.open({ url: via(url, relay.port), schema: testSchema(), connectTimeoutMs: 500, statementTimeoutMs: 500 });
      try {
        await store.createClient(client('steady'));

        relay.set('refuse');
        expect((await storeError(store.getClient('steady'))).code).toBe('unavailable');
        expect((await storeError(store.listRevocations(Date.now()))).code).toBe('unavailable');

        relay.set('pass');
        expect((await store.getClient('steady'))?.id).toBe('steady');

        relay.set('blackhole');
        expect((await storeError(store.getClient('steady'))).code).toBe('unavailable');
        expect((await storeError(store.createClient(client('during-outage')))).code).toBe('unavailable');

        relay.set('pass');
        expect((await store.getClient('steady'))?.id).toBe('steady');
        // The write that failed during the outage did not half-happen.
        expect(await store.getClient('during-outage')).toBeUndefined();
      } finally {
        await store.close();
        await relay.close();
      }
    });
  });
}
