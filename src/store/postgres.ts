// PostgreSQL credential store (scale-out): the CredentialStore contract over a pg connection pool, in a schema of its own
// (store.postgres_schema), every write one transaction, every row read validated exactly as the SQLite backend validates
// it (rows.ts). Versioned migrations run under an advisory lock, so instances starting together apply each step once.
// Time stamps are BIGINT epoch ms, read back as numbers (every one is a safe integer: the row schemas check).
import pg from 'pg';
import {
  StoreError,
  type Client,
  type ClientCa,
  type CredentialStore,
  type IssuedCertificate,
  type Revocation,
  type SigningKey,
  type SigningKeyChange,
  type StoreChange,
  type StoreSnapshot,
  type StoreWatch,
  type StoreWatchEvents,
} from './contract.js';
import { changeChannel, encodeChange, PostgresWatch, type WatchTiming } from './postgres-watch.js';
import {
  certificateFromRow,
  certificateParams,
  checkSecrets,
  clientCaFromRow,
  clientFromRows,
  clientParams,
  clientsFromRows,
  keyParams,
  keyUpdateMissed,
  retirementMissed,
  revocationFromRow,
  signingKeyFromRow,
  type KeyParams,
} from './rows.js';

export interface PostgresStoreOptions {
  /** postgres://user[:password]@host[:port]/database[?sslmode=…]; never printed with its password. */
  readonly url: string;
  /** The schema holding Gatehouse's tables (created by `serve` and `init` when missing). */
  readonly schema: string;
  /** PEM: the CA the server's certificate must chain to; TLS is then required, with the host name checked. */
  readonly ca?: string | undefined;
  /** Create the schema and its tables when missing (serve, init); the admin commands open an existing store only. */
  readonly create?: boolean;
  readonly now?: () => number;
  readonly poolMax?: number;
  /** Bounds a connection attempt, and every statement: a store that hangs answers `unavailable`, never blocks forever. */
  readonly connectTimeoutMs?: number;
  readonly statementTimeoutMs?: number;
  /** The change listener's heartbeat and reconnect delays (tests shorten them). */
  readonly watchTiming?: WatchTiming;
}

const CLIENTS: StoreChange = Object.freeze({ kind: 'clients' });
const KEYS: StoreChange = Object.freeze({ kind: 'keys' });
const CERTIFICATES: StoreChange = Object.freeze({ kind: 'certificates' });

/** Identifiers Gatehouse puts into SQL itself: lower-case, never quoted, never from a request. */
export const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Schema steps, applied in order; the version table counts them. Never edit a step that has shipped. */
const MIGRATIONS: readonly { readonly version: number; readonly sql: string }[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE clients (
        id                   TEXT     NOT NULL PRIMARY KEY,
        name                 TEXT     NOT NULL,
        scopes               TEXT     NOT NULL,  -- JSON array of strings
        audiences            TEXT     NOT NULL,  -- JSON array of strings
        enabled              SMALLINT NOT NULL CHECK (enabled IN (0, 1)),
        tokens_not_before_s  BIGINT   CHECK (tokens_not_before_s IS NULL OR tokens_not_before_s >= 0),
        access_token_ttl_s   BIGINT   CHECK (access_token_ttl_s IS NULL OR access_token_ttl_s > 0),
        created_at           BIGINT   NOT NULL,
        updated_at           BIGINT   NOT NULL
      );
      CREATE TABLE client_secrets (
        client_id   TEXT     NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        slot        SMALLINT NOT NULL CHECK (slot IN (0, 1)),
        hash        TEXT     NOT NULL,
        created_at  BIGINT   NOT NULL,
        expires_at  BIGINT,
        PRIMARY KEY (client_id, slot)
      );
      CREATE TABLE signing_keys (
        kid                    TEXT   NOT NULL PRIMARY KEY,
        alg                    TEXT   NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
        public_jwk             TEXT   NOT NULL,
        encrypted_private_key  TEXT   NOT NULL,
        created_at             BIGINT NOT NULL,
        activates_at           BIGINT NOT NULL,
        retired_at             BIGINT,
        expires_at             BIGINT,
        revoked_at             BIGINT
      );
      CREATE TABLE revocations (
        iss         TEXT   NOT NULL,
        jti         TEXT   NOT NULL,
        expires_at  BIGINT NOT NULL,
        PRIMARY KEY (iss, jti)
      );
      CREATE INDEX revocations_by_expiry ON revocations (expires_at);
    `,
  },
  {
    version: 2,
    sql: `
      ALTER TABLE clients ADD COLUMN require_dpop SMALLINT NOT NULL DEFAULT 0 CHECK (require_dpop IN (0, 1));
    `,
  },
  {
    version: 3,
    sql: `
      ALTER TABLE clients ADD COLUMN tls_client_auth_subject TEXT CHECK (tls_client_auth_subject IS NULL OR length(tls_client_auth_subject) > 0);
    `,
  },
  {
    version: 4,
    sql: `
      CREATE TABLE client_ca (
        id                     SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
        cert_pem               TEXT     NOT NULL,
        encrypted_private_key  TEXT     NOT NULL,
        created_at             BIGINT   NOT NULL
      );
      CREATE TABLE client_certificates (
        serial      TEXT   NOT NULL PRIMARY KEY,
        client_id   TEXT   NOT NULL,
        subject     TEXT   NOT NULL,
        thumbprint  TEXT   NOT NULL UNIQUE,
        not_before  BIGINT NOT NULL,
        not_after   BIGINT NOT NULL CHECK (not_after > not_before),
        issued_at   BIGINT NOT NULL,
        revoked_at  BIGINT
      );
      CREATE INDEX client_certificates_revoked ON client_certificates (not_after) WHERE revoked_at IS NOT NULL;
    `,
  },
];
export const POSTGRES_LATEST_VERSION = MIGRATIONS.length;
const APPLICATION = 'gatehouse-credential-store';

/** int8 (epoch ms) as a number; everything else as pg parses it. */
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format ?? 'text')) as typeof pg.types.getTypeParser,
};

/** An error thrown by a caller's callback inside a transaction: rolled back, then passed on as it was. */
class CallerError {
  constructor(readonly error: unknown) {}
}

/** The URL without its password, for messages. */
export function describePostgresUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `postgres://${parsed.username !== '' ? `${decodeURIComponent(parsed.username)}@` : ''}${parsed.host}${parsed.pathname}`;
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);

/** pg faults → the contract's codes; a caller's own error passes through. */
function toStoreError(error: unknown, doing: string): unknown {
  if (error instanceof CallerError) return error.error;
  if (error instanceof StoreError) return error;
  if (error instanceof pg.DatabaseError) {
    const code = error.code ?? '';
    if (code === '23505') return new StoreError('conflict', `${doing}: already exists`);
    // A value the schema refuses (constraint, wrong type or range): the caller's data, not the database.
    if (code.startsWith('23') || code.startsWith('22')) return new StoreError('invalid', `${doing}: ${error.message}`);
    // Statement timeout, shutdown, too many connections, serialization, read-only, disk full, …: cannot serve now.
    return new StoreError('unavailable', `${doing}: ${code} ${error.message}`);
  }
  if (error instanceof Error) {
    const errno = (error as NodeJS.ErrnoException).code;
    // pg's own connection failures (connect timeout, connection terminated) carry no code.
    if ((typeof errno === 'string' && (CONNECTION_CODES.has(errno) || errno.startsWith('ERR_TLS') || errno.includes('CERT'))) || errno === undefined) {
      const prefix = typeof errno === 'string' && !error.message.includes(errno) ? `${errno} ` : '';
      return new StoreError('unavailable', `${doing}: ${prefix}${error.message}`);
    }
  }
  return error;
}

export class PostgresCredentialStore implements CredentialStore {
  private closed = false;
  private readonly watches = new Set<StoreWatch>();

  private constructor(
    private readonly pool: pg.Pool,
    private readonly where: string,
    private readonly now: () => number,
    /** How the listener connects: as the pool does, without the pool's and the statements' settings. */
    private readonly connection: pg.ClientConfig,
    /** Where every write announces itself (LISTEN/NOTIFY). */
    private readonly channel: string,
    private readonly watchTiming: WatchTiming | undefined,
  ) {}

  /** Connects, checks (and with `create`, creates or migrates) the schema. Throws StoreError. */
  static async open(opts: PostgresStoreOptions): Promise<PostgresCredentialStore> {
    if (!SCHEMA_NAME.test(opts.schema))
      throw new StoreError('invalid', `store.postgres_schema ${JSON.stringify(opts.schema)}: lower-case letters, digits and _`);
    const where = `schema ${opts.schema} at ${describePostgresUrl(opts.url)}`;
    const statementTimeoutMs = opts.statementTimeoutMs ?? 5000;
    const connection: pg.ClientConfig = {
      connectionString: opts.url,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
      application_name: 'gatehouse',
      options: `-c search_path=${opts.schema}`,
      types: TYPES,
      ...(opts.ca !== undefined ? { ssl: { ca: opts.ca, rejectUnauthorized: true } } : {}),
    };
    const pool = new pg.Pool({
      ...connection,
      max: opts.poolMax ?? 10,
      idleTimeoutMillis: 30_000,
      // The server ends a statement that runs too long; the client gives up a little later on one that never returns.
      statement_timeout: statementTimeoutMs,
      query_timeout: statementTimeoutMs + 1000,
    });
    // A dropped connection must not crash the process: the next query on it reports the outage. The pool listens to its
    // idle clients only, so every connection gets a listener of its own for its whole life, checked out or idle
    // (a line cut mid-transaction otherwise emits an unhandled 'error': node-postgres #2439).
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    const store = new PostgresCredentialStore(pool, where, opts.now ?? Date.now, connection, changeChannel(opts.schema), opts.watchTiming);
    try {
      await store.prepareSchema(opts.schema, opts.create ?? true);
      return store;
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw toStoreError(error, `open ${where}`);
    }
  }

  private async prepareSchema(schema: string, create: boolean): Promise<void> {
    const client = await this.pool.connect();
    try {
      const exists = (await client.query<{ found: string | null }>('SELECT to_regclass($1) AS found', [`${schema}.gatehouse_schema`])).rows[0]?.found ?? null;
      if (exists === null && !create) throw new StoreError('not_found', `no credential store in ${this.where}`);
      await client.query('BEGIN');
      try {
        // One migrator at a time per schema, across every instance starting now.
        await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`gatehouse:${schema}`]);
        await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
        await client.query(
          'CREATE TABLE IF NOT EXISTS gatehouse_schema (id SMALLINT PRIMARY KEY CHECK (id = 1), application TEXT NOT NULL, version INTEGER NOT NULL)',
        );
        const row = (await client.query<{ application: string; version: number }>('SELECT application, version FROM gatehouse_schema WHERE id = 1')).rows[0];
        let version = 0;
        if (row === undefined) {
          const tables =
            (await client.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = $1 AND tablename <> 'gatehouse_schema'", [schema]))
              .rows[0]?.n ?? 0;
          if (tables > 0) throw new StoreError('invalid', `${this.where}: not a Gatehouse credential store (has tables but no schema version)`);
          await client.query('INSERT INTO gatehouse_schema (id, application, version) VALUES (1, $1, 0)', [APPLICATION]);
        } else {
          if (row.application !== APPLICATION) throw new StoreError('invalid', `${this.where}: not a Gatehouse credential store (${row.application})`);
          version = row.version;
        }
        if (version > POSTGRES_LATEST_VERSION) {
          throw new StoreError(
            'invalid',
            `${this.where}: schema version ${version} is newer than this Gatehouse knows (${POSTGRES_LATEST_VERSION}); upgrade Gatehouse`,
          );
        }
        for (const step of MIGRATIONS) {
          if (step.version <= version) continue;
          await client.query(step.sql);
          await client.query('UPDATE gatehouse_schema SET version = $1 WHERE id = 1', [step.version]);
        }
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    } finally {
      client.release();
    }
  }

  /** One statement, outside a transaction. */
  private async run<R extends pg.QueryResultRow>(doing: string, sql: string, params: readonly unknown[] = []): Promise<pg.QueryResult<R>> {
    if (this.closed) throw new StoreError('unavailable', `${doing}: store is closed`);
    try {
      return await this.pool.query<R>(sql, params as unknown[]);
    } catch (error) {
      throw toStoreError(error, doing);
    }
  }

  /** `fn` in one transaction on one connection: committed, or rolled back whatever it threw. */
  private async tx<T>(doing: string, fn: (client: pg.PoolClient) => Promise<T>, isolation = 'READ COMMITTED'): Promise<T> {
    if (this.closed) throw new StoreError('unavailable', `${doing}: store is closed`);
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw toStoreError(error, doing);
    }
    let broken = false;
    try {
      await client.query(`BEGIN ISOLATION LEVEL ${isolation}`);
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      try {
        await client.query('ROLLBACK');
      } catch {
        broken = true;
      }
      throw toStoreError(error, doing);
    } finally {
      // A connection whose rollback failed is not given back to the pool.
      client.release(broken);
    }
  }

  /** Listens on this schema's channel (one dedicated connection); every write below notifies it when it commits. */
  async watch(events: StoreWatchEvents): Promise<StoreWatch> {
    if (this.closed) throw new StoreError('unavailable', 'watch: store is closed');
    // Named in pg_stat_activity, so an operator (or a test) can tell the listening line from the pool's connections.
    const connection = { ...this.connection, application_name: `gatehouse watch ${this.channel}` };
    const watch = await PostgresWatch.start(connection, this.channel, events, this.watchTiming);
    this.watches.add(watch);
    return {
      close: async () => {
        this.watches.delete(watch);
        await watch.close();
      },
    };
  }

  /** Inside a write's transaction: delivered to every listener when it commits, and never if it rolls back. */
  private async notify(c: pg.PoolClient, change: StoreChange): Promise<void> {
    await c.query('SELECT pg_notify($1, $2)', [this.channel, encodeChange(change)]);
  }

  // ---- Clients ----

  createClient(client: Client): Promise<void> {
    return this.tx(`createClient ${client.id}`, async (c) => {
      checkSecrets(client);
      const p = clientParams(client);
      await c.query(
        `INSERT INTO clients (id, name, scopes, audiences, enabled, tokens_not_before_s, access_token_ttl_s, require_dpop, tls_client_auth_subject, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
        [
          p.id,
          p.name,
          p.scopes,
          p.audiences,
          p.enabled,
          p.tokens_not_before_s,
          p.access_token_ttl_s,
          p.require_dpop,
          p.tls_client_auth_subject,
          p.created_at,
          p.updated_at,
        ],
      );
      await insertSecrets(c, client);
      await this.notify(c, CLIENTS);
    });
  }

  getClient(id: string): Promise<Client | undefined> {
    // REPEATABLE READ: the client row and its secrets come from one snapshot.
    return this.tx(`getClient ${id}`, (c) => readClient(c, id, false), 'REPEATABLE READ');
  }

  listClients(): Promise<readonly Client[]> {
    return this.tx('listClients', readAllClients, 'REPEATABLE READ');
  }

  updateClient(id: string, change: (current: Client) => Client): Promise<Client> {
    return this.tx(`updateClient ${id}`, async (c) => {
      // FOR UPDATE: no other writer changes the row between this read and the write.
      const current = await readClient(c, id, true);
      if (current === undefined) throw new StoreError('not_found', `client ${id} not found`);
      let changed: Client;
      try {
        changed = change(current);
      } catch (error) {
        throw new CallerError(error);
      }
      if (changed.id !== id) throw new StoreError('invalid', `updateClient ${id}: the id cannot change`);
      const next: Client = { ...changed, createdAt: current.createdAt, updatedAt: this.now() };
      checkSecrets(next);
      const p = clientParams(next);
      await c.query(
        `UPDATE clients SET name = $2, scopes = $3, audiences = $4, enabled = $5, tokens_not_before_s = $6, access_token_ttl_s = $7, require_dpop = $8, tls_client_auth_subject = $9, updated_at = $10
         WHERE id = $1`,
        [p.id, p.name, p.scopes, p.audiences, p.enabled, p.tokens_not_before_s, p.access_token_ttl_s, p.require_dpop, p.tls_client_auth_subject, p.updated_at],
      );
      await c.query('DELETE FROM client_secrets WHERE client_id = $1', [id]);
      await insertSecrets(c, next);
      await this.notify(c, CLIENTS);
      return next;
    });
  }

  async removeClient(id: string): Promise<boolean> {
    // Secrets go with it (ON DELETE CASCADE). One statement: the delete and, if it removed the client, the notification.
    const result = await this.run<{ removed: number }>(
      `removeClient ${id}`,
      `WITH removed AS (DELETE FROM clients WHERE id = $1 RETURNING 1)
       SELECT n AS removed, CASE WHEN n > 0 THEN pg_notify($2, $3) END FROM (SELECT count(*)::int AS n FROM removed) AS counted`,
      [id, this.channel, encodeChange(CLIENTS)],
    );
    return (result.rows[0]?.removed ?? 0) > 0;
  }

  // ---- Signing keys ----

  async addSigningKey(key: SigningKey): Promise<void> {
    await this.tx(`addSigningKey ${key.kid}`, async (c) => {
      await insertKey(c, keyParams(key));
      await this.notify(c, KEYS);
    });
  }

  listSigningKeys(): Promise<readonly SigningKey[]> {
    return this.tx('listSigningKeys', readSigningKeys, 'REPEATABLE READ');
  }

  changeSigningKeys(change: (current: readonly SigningKey[]) => SigningKeyChange): Promise<SigningKeyChange> {
    return this.tx('changeSigningKeys', async (c) => {
      // Key changes take turns (reads go on): the change is decided on the state it is written over.
      await c.query('LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE');
      let decided: SigningKeyChange;
      try {
        decided = change(await readSigningKeys(c));
      } catch (error) {
        throw new CallerError(error);
      }
      for (const key of decided.update) {
        const p = keyParams(key);
        const updated = await c.query(
          `UPDATE signing_keys SET created_at = $5, activates_at = $6, retired_at = $7, expires_at = $8, revoked_at = $9
           WHERE kid = $1 AND alg = $2 AND public_jwk = $3 AND encrypted_private_key = $4`,
          [p.kid, p.alg, p.public_jwk, p.encrypted_private_key, p.created_at, p.activates_at, p.retired_at, p.expires_at, p.revoked_at],
        );
        if ((updated.rowCount ?? 0) === 0) throw keyUpdateMissed(key.kid, await keyExists(c, key.kid));
      }
      for (const key of decided.insert) await insertKey(c, keyParams(key));
      if (decided.update.length + decided.insert.length > 0) await this.notify(c, KEYS);
      return decided;
    });
  }

  async rotateSigningKey(
    next: SigningKey,
    retire: { readonly kid: string; readonly retiredAt: number; readonly expiresAt: number } | undefined,
  ): Promise<void> {
    await this.tx(`rotateSigningKey ${next.kid}`, async (c) => {
      await c.query('LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE');
      await insertKey(c, keyParams(next));
      await this.notify(c, KEYS);
      if (retire === undefined) return;
      // Only a key nobody retired yet: two rotations racing from the same key must not both hand over from it.
      const retired = await c.query('UPDATE signing_keys SET retired_at = $1, expires_at = $2 WHERE kid = $3 AND retired_at IS NULL', [
        retire.retiredAt,
        retire.expiresAt,
        retire.kid,
      ]);
      if ((retired.rowCount ?? 0) === 0) throw retirementMissed(retire.kid, await keyExists(c, retire.kid));
    });
  }

  async purgeExpiredSigningKeys(now: number): Promise<number> {
    return (await this.run('purgeExpiredSigningKeys', 'DELETE FROM signing_keys WHERE expires_at IS NOT NULL AND expires_at <= $1', [now])).rowCount ?? 0;
  }

  // ---- Revocations ----

  async revoke(revocation: Revocation): Promise<void> {
    // Never shortened: revoking again keeps the later expiry. One statement (one round trip): the write and its notification.
    await this.run(
      'revoke',
      `WITH stored AS (
         INSERT INTO revocations (iss, jti, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (iss, jti) DO UPDATE SET expires_at = excluded.expires_at WHERE excluded.expires_at > revocations.expires_at
       )
       SELECT pg_notify($4, $5)`,
      [revocation.iss, revocation.jti, revocation.expiresAt, this.channel, encodeChange({ kind: 'revoked', revocation })],
    );
  }

  async listRevocations(now: number): Promise<readonly Revocation[]> {
    const result = await this.run('listRevocations', 'SELECT * FROM revocations WHERE expires_at > $1 ORDER BY expires_at, iss, jti', [now]);
    return result.rows.map(revocationFromRow);
  }

  async purgeExpiredRevocations(now: number): Promise<number> {
    return (await this.run('purgeExpiredRevocations', 'DELETE FROM revocations WHERE expires_at <= $1', [now])).rowCount ?? 0;
  }

  // ---- The client CA and its certificates ----

  async createClientCa(ca: ClientCa): Promise<void> {
    await this.tx('createClientCa', async (c) => {
      await c.query('INSERT INTO client_ca (id, cert_pem, encrypted_private_key, created_at) VALUES (1, $1, $2, $3)', [
        ca.certPem,
        ca.encryptedPrivateKey,
        ca.createdAt,
      ]);
      // Gateways trusting the store's CA (tls.store_client_ca) read it when this commits.
      await this.notify(c, CERTIFICATES);
    });
  }

  async getClientCa(): Promise<ClientCa | undefined> {
    const raw = (await this.run('getClientCa', 'SELECT * FROM client_ca WHERE id = 1')).rows[0] as unknown;
    return raw === undefined ? undefined : clientCaFromRow(raw);
  }

  async addIssuedCertificate(certificate: IssuedCertificate): Promise<void> {
    await this.tx(`addIssuedCertificate ${certificate.serial}`, (c) => insertCertificates(c, [certificate]));
  }

  async listIssuedCertificates(): Promise<readonly IssuedCertificate[]> {
    return (await this.run('listIssuedCertificates', 'SELECT * FROM client_certificates ORDER BY issued_at, serial')).rows.map(certificateFromRow);
  }

  async findIssuedCertificate(thumbprint: string): Promise<IssuedCertificate | undefined> {
    const raw = (await this.run('findIssuedCertificate', 'SELECT * FROM client_certificates WHERE thumbprint = $1', [thumbprint])).rows[0] as unknown;
    return raw === undefined ? undefined : certificateFromRow(raw);
  }

  revokeCertificate(serial: string, at: number): Promise<IssuedCertificate> {
    return this.tx(`revokeCertificate ${serial}`, async (c) => {
      const changed = await c.query('UPDATE client_certificates SET revoked_at = $1 WHERE serial = $2 AND revoked_at IS NULL', [at, serial]);
      const raw = (await c.query('SELECT * FROM client_certificates WHERE serial = $1', [serial])).rows[0] as unknown;
      if (raw === undefined) throw new StoreError('not_found', `certificate ${serial} not found`);
      // Every gateway watching re-reads the revoked certificates when this commits.
      if ((changed.rowCount ?? 0) > 0) await this.notify(c, CERTIFICATES);
      return certificateFromRow(raw);
    });
  }

  async listRevokedCertificates(now: number): Promise<readonly IssuedCertificate[]> {
    const result = await this.run(
      'listRevokedCertificates',
      'SELECT * FROM client_certificates WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY not_after, serial',
      [now],
    );
    return result.rows.map(certificateFromRow);
  }

  async purgeExpiredCertificates(before: number): Promise<number> {
    return (await this.run('purgeExpiredCertificates', 'DELETE FROM client_certificates WHERE not_after < $1', [before])).rowCount ?? 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.watches].map((watch) => watch.close()));
    this.watches.clear();
    await this.pool.end();
  }

  // ---- Copying a whole store ----

  exportSnapshot(at: number = this.now()): Promise<StoreSnapshot> {
    // One REPEATABLE READ READ ONLY transaction: every query in it reads the same snapshot, whatever commits meanwhile,
    // and it takes no lock a gateway's writes would wait for.
    return this.tx(
      'exportSnapshot',
      async (c): Promise<StoreSnapshot> => ({
        at,
        clients: await readAllClients(c),
        signingKeys: await readSigningKeys(c),
        revocations: await readRevocationsAt(c, at),
        clientCa: await readClientCa(c),
        certificates: (await c.query('SELECT * FROM client_certificates ORDER BY issued_at, serial')).rows.map(certificateFromRow),
      }),
      'REPEATABLE READ READ ONLY',
    );
  }

  importSnapshot(snapshot: StoreSnapshot): Promise<void> {
    return this.tx(`importSnapshot into ${this.where}`, async (c) => {
      for (const client of snapshot.clients) checkSecrets(client);
      // Every writer (another importer, a gateway, an admin command) waits from here until this commits; readers go on.
      // Under READ COMMITTED the check below then sees whatever an importer before this one committed.
      await c.query('LOCK TABLE clients, client_secrets, signing_keys, revocations, client_ca, client_certificates IN EXCLUSIVE MODE');
      const held = await c.query(
        `SELECT 1 WHERE EXISTS (SELECT 1 FROM clients) OR EXISTS (SELECT 1 FROM signing_keys) OR EXISTS (SELECT 1 FROM revocations)
                     OR EXISTS (SELECT 1 FROM client_ca) OR EXISTS (SELECT 1 FROM client_certificates)`,
      );
      if ((held.rowCount ?? 0) > 0) throw new StoreError('conflict', `importSnapshot: ${this.where} is not empty`);
      await insertSnapshot(c, snapshot);
      // Anything watching this schema re-reads it all.
      await this.notify(c, { kind: 'resync' });
    });
  }
}

async function readClient(c: pg.PoolClient, id: string, forUpdate: boolean): Promise<Client | undefined> {
  const raw = (await c.query(`SELECT * FROM clients WHERE id = $1${forUpdate ? ' FOR UPDATE' : ''}`, [id])).rows[0] as unknown;
  if (raw === undefined) return undefined;
  return clientFromRows(raw, (await c.query('SELECT * FROM client_secrets WHERE client_id = $1 ORDER BY slot', [id])).rows);
}

async function insertSecrets(c: pg.PoolClient, client: Client): Promise<void> {
  for (const [slot, secret] of client.secrets.entries()) {
    await c.query('INSERT INTO client_secrets (client_id, slot, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)', [
      client.id,
      slot,
      secret.hash,
      secret.createdAt,
      secret.expiresAt,
    ]);
  }
}

async function readSigningKeys(c: pg.PoolClient): Promise<SigningKey[]> {
  return (await c.query('SELECT * FROM signing_keys ORDER BY created_at, kid')).rows.map(signingKeyFromRow);
}

async function keyExists(c: pg.PoolClient, kid: string): Promise<boolean> {
  return ((await c.query('SELECT 1 FROM signing_keys WHERE kid = $1', [kid])).rowCount ?? 0) > 0;
}

async function insertKey(c: pg.PoolClient, p: KeyParams): Promise<void> {
  await c.query(
    `INSERT INTO signing_keys (kid, alg, public_jwk, encrypted_private_key, created_at, activates_at, retired_at, expires_at, revoked_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [p.kid, p.alg, p.public_jwk, p.encrypted_private_key, p.created_at, p.activates_at, p.retired_at, p.expires_at, p.revoked_at],
  );
}

// ---- Copying a whole store: one statement per table, whatever the number of rows ----

async function readAllClients(c: pg.PoolClient): Promise<Client[]> {
  const secrets = (await c.query('SELECT * FROM client_secrets ORDER BY client_id, slot')).rows;
  return clientsFromRows((await c.query('SELECT * FROM clients ORDER BY created_at, id')).rows, secrets);
}

async function readRevocationsAt(c: pg.PoolClient, at: number): Promise<Revocation[]> {
  return (await c.query('SELECT * FROM revocations WHERE expires_at > $1 ORDER BY expires_at, iss, jti', [at])).rows.map(revocationFromRow);
}

/** What the snapshot inserts, table by table: each column with its PostgreSQL type. */
const CLIENT_COLUMNS = {
  id: 'text',
  name: 'text',
  scopes: 'text',
  audiences: 'text',
  enabled: 'smallint',
  tokens_not_before_s: 'bigint',
  access_token_ttl_s: 'bigint',
  require_dpop: 'smallint',
  tls_client_auth_subject: 'text',
  created_at: 'bigint',
  updated_at: 'bigint',
} as const;
const SECRET_COLUMNS = { client_id: 'text', slot: 'smallint', hash: 'text', created_at: 'bigint', expires_at: 'bigint' } as const;
const KEY_COLUMNS = {
  kid: 'text',
  alg: 'text',
  public_jwk: 'text',
  encrypted_private_key: 'text',
  created_at: 'bigint',
  activates_at: 'bigint',
  retired_at: 'bigint',
  expires_at: 'bigint',
  revoked_at: 'bigint',
} as const;
const REVOCATION_COLUMNS = { iss: 'text', jti: 'text', expires_at: 'bigint' } as const;
const CERTIFICATE_COLUMNS = {
  serial: 'text',
  client_id: 'text',
  subject: 'text',
  thumbprint: 'text',
  not_before: 'bigint',
  not_after: 'bigint',
  issued_at: 'bigint',
  revoked_at: 'bigint',
} as const;

async function readClientCa(c: pg.PoolClient): Promise<ClientCa | null> {
  const raw = (await c.query('SELECT * FROM client_ca WHERE id = 1')).rows[0] as unknown;
  return raw === undefined ? null : clientCaFromRow(raw);
}

async function insertCertificates(c: pg.PoolClient, certificates: readonly IssuedCertificate[]): Promise<void> {
  await insertUnnested(c, 'client_certificates', CERTIFICATE_COLUMNS, certificates.map(certificateParams));
}

async function insertSnapshot(c: pg.PoolClient, snapshot: StoreSnapshot): Promise<void> {
  await insertUnnested(c, 'clients', CLIENT_COLUMNS, snapshot.clients.map(clientParams));
  const secrets = snapshot.clients.flatMap((client) =>
    client.secrets.map((secret, slot) => ({ client_id: client.id, slot, hash: secret.hash, created_at: secret.createdAt, expires_at: secret.expiresAt })),
  );
  await insertUnnested(c, 'client_secrets', SECRET_COLUMNS, secrets);
  await insertUnnested(c, 'signing_keys', KEY_COLUMNS, snapshot.signingKeys.map(keyParams));
  await insertUnnested(
    c,
    'revocations',
    REVOCATION_COLUMNS,
    snapshot.revocations.map((r) => ({ iss: r.iss, jti: r.jti, expires_at: r.expiresAt })),
  );
  const ca = snapshot.clientCa;
  if (ca !== null) {
    await c.query('INSERT INTO client_ca (id, cert_pem, encrypted_private_key, created_at) VALUES (1, $1, $2, $3)', [
      ca.certPem,
      ca.encryptedPrivateKey,
      ca.createdAt,
    ]);
  }
  await insertCertificates(c, snapshot.certificates);
}

/**
 * All `rows` in one statement, whatever their number: one array parameter per column, unnested into rows. Table and
 * column names are this module's constants; every value is a parameter, as in every other statement here.
 */
async function insertUnnested<Columns extends Readonly<Record<string, string>>>(
  c: pg.PoolClient,
  table: string,
  columns: Columns,
  rows: readonly { readonly [K in keyof Columns]: unknown }[],
): Promise<void> {
  if (rows.length === 0) return;
  const names = Object.keys(columns);
  const arrays = names.map((name, i) => `$${i + 1}::${columns[name]}[]`).join(', ');
  await c.query(
    `INSERT INTO ${table} (${names.join(', ')}) SELECT * FROM unnest(${arrays})`,
    names.map((name) => rows.map((row) => row[name as keyof Columns])),
  );
}
