// SQLite credential store (embedded default): one better-sqlite3 connection in WAL mode, every write one transaction,
// every row read validated before it becomes a Client, SigningKey or Revocation. File and -wal/-shm are mode 0600.
import { closeSync, constants, fchmodSync, fstatSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import {
  StoreError,
  type Client,
  type ClientCa,
  type CredentialStore,
  type IssuedCertificate,
  type Revocation,
  type SigningKey,
  type SigningKeyChange,
  type StoreSnapshot,
  type StoreWatch,
  type StoreWatchEvents,
} from './contract.js';

/** How often a watching gateway asks SQLite whether another process committed a change. */
export const SQLITE_WATCH_INTERVAL_MS = 250;
import { DirectoryError, makeDirectory } from '../lib/make-directory.js';
import { checkSchema, migrate } from './migrations.js';
import {
  certificateFromRow,
  certificateParams,
  checkSecrets,
  clientCaFromRow,
  clientCaParams,
  clientFromRows,
  clientParams,
  clientsFromRows,
  keyParams,
  keyUpdateMissed,
  retirementMissed,
  revocationFromRow,
  signingKeyFromRow,
  type CertificateParams,
  type ClientCaParams,
  type ClientParams,
  type KeyParams,
  type SecretParams,
} from './rows.js';

/** Secrets a client may hold at once: the current one and, during a rotation, the old one. */

export interface SqliteStoreOptions {
  /** Clock for `updatedAt`, which updateClient sets (whatever `change` returned). */
  readonly now?: () => number;
  /**
   * How long a write waits for another process's write lock. better-sqlite3 is synchronous, so this wait blocks the
   * event loop: keep it short. Writers (admin CLI, revocations) hold the lock for milliseconds; WAL readers never wait.
   */
  readonly busyTimeoutMs?: number;
  /**
   * Create the file (and its directory) when it does not exist: only `serve` and `gatehouse init` do. Admin commands open
   * an existing store, so a mistyped --data is an error instead of a new, empty store. Default true.
   */
  readonly create?: boolean;
}

// ---- SQLite errors → the contract's codes. ----

function toStoreError(error: unknown, doing: string): unknown {
  if (error instanceof StoreError) return error;
  if (error instanceof Database.SqliteError) {
    const code = error.code;
    if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') {
      return new StoreError('conflict', `${doing}: already exists`);
    }
    // A value the schema refuses (wrong type, failed CHECK, missing parent): the caller's data, not the database.
    if (code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG' || code === 'SQLITE_RANGE') {
      return new StoreError('invalid', `${doing}: ${error.message}`);
    }
    if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') {
      return new StoreError('invalid', `${doing}: database file is corrupt or not a database (${code})`);
    }
    // BUSY, LOCKED, FULL, READONLY, IOERR*, CANTOPEN, PERM, NOMEM, …: the store cannot serve right now.
    return new StoreError('unavailable', `${doing}: ${code}`);
  }
  return error;
}

/** With `create`, makes the parent directory (0700) and the database file (0600) before SQLite sees it. */
function prepareFile(file: string, create: boolean): void {
  let fd: number;
  if (create) {
    // Only directories created here get 0700; an existing data directory keeps the mode its owner chose.
    makeDirectory(dirname(file), 0o700);
    // Created by us rather than by SQLite so it never exists, even for an instant, with umask-derived permissions;
    // SQLite then gives -wal and -shm the database file's mode.
    fd = openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  } else {
    try {
      fd = openSync(file, constants.O_RDWR);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new StoreError('not_found', `no credential store at ${file}`);
      throw error;
    }
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new StoreError('invalid', `${file}: not a regular file`);
    // The file holds secret hashes and encrypted private keys: tighten a copy restored with looser permissions.
    if ((stat.mode & 0o077) !== 0) fchmodSync(fd, stat.mode & 0o700);
  } finally {
    closeSync(fd);
  }
}

// Prepared once: statement compilation is most of the cost of a small query.
/**
 * better-sqlite3 12 on Node 24 aborts the process (`Assertion failed: (env) != nullptr` in RemoveEnvironmentCleanupHook)
 * when the garbage collector finalizes one of its Statement objects (WiseLibs/better-sqlite3#1515, closed unfixed; 13.x
 * does not run on Node 20). So no statement of a store may ever become garbage: every one this connection prepares is
 * kept for the life of the process, and so is the connection; pragma() (which would prepare a throwaway statement
 * natively) is rerouted through the retaining prepare. transaction() caches its statements on the connection. The cost
 * is bounded: a store prepares a fixed set of statements once.
 */
const RETAINED: unknown[] = [];

function retainStatements(db: Database.Database): void {
  RETAINED.push(db);
  const prepare = db.prepare.bind(db);
  const retainingPrepare = (source: string): Database.Statement => {
    const statement = prepare(source);
    RETAINED.push(statement);
    return statement;
  };
  // Own properties shadow the prototype methods for this connection only.
  Object.defineProperty(db, 'prepare', { value: retainingPrepare });
  Object.defineProperty(db, 'pragma', {
    value: (source: string, options?: { simple?: boolean }): unknown => {
      const statement = retainingPrepare(`PRAGMA ${source}`);
      if (!statement.reader) {
        statement.run();
        return options?.simple === true ? undefined : [];
      }
      return options?.simple === true ? statement.pluck().get() : statement.all();
    },
  });
}

function prepareStatements(db: Database.Database) {
  return {
    insertClient: db.prepare<ClientParams>(
      `INSERT INTO clients (id, name, scopes, audiences, enabled, tokens_not_before_s, access_token_ttl_s, require_dpop, tls_client_auth_subject, created_at, updated_at)
       VALUES (@id, @name, @scopes, @audiences, @enabled, @tokens_not_before_s, @access_token_ttl_s, @require_dpop, @tls_client_auth_subject, @created_at, @updated_at)`,
    ),
    updateClient: db.prepare<ClientParams>(
      `UPDATE clients SET name = @name, scopes = @scopes, audiences = @audiences, enabled = @enabled,
              tokens_not_before_s = @tokens_not_before_s, access_token_ttl_s = @access_token_ttl_s, require_dpop = @require_dpop, tls_client_auth_subject = @tls_client_auth_subject, updated_at = @updated_at
       WHERE id = @id`,
    ),
    getClient: db.prepare<[string]>('SELECT * FROM clients WHERE id = ?'),
    listClients: db.prepare<[]>('SELECT * FROM clients ORDER BY created_at, id'),
    removeClient: db.prepare<[string]>('DELETE FROM clients WHERE id = ?'),
    insertSecret: db.prepare<SecretParams>(
      `INSERT INTO client_secrets (client_id, slot, hash, created_at, expires_at)
       VALUES (@client_id, @slot, @hash, @created_at, @expires_at)`,
    ),
    deleteSecrets: db.prepare<[string]>('DELETE FROM client_secrets WHERE client_id = ?'),
    getSecrets: db.prepare<[string]>('SELECT * FROM client_secrets WHERE client_id = ? ORDER BY slot'),
    listSecrets: db.prepare<[]>('SELECT * FROM client_secrets ORDER BY client_id, slot'),
    insertKey: db.prepare<KeyParams>(
      `INSERT INTO signing_keys (kid, alg, public_jwk, encrypted_private_key, created_at, activates_at, retired_at, expires_at, revoked_at)
       VALUES (@kid, @alg, @public_jwk, @encrypted_private_key, @created_at, @activates_at, @retired_at, @expires_at, @revoked_at)`,
    ),
    // The key material never changes after insertion: only its schedule does (publication, signing, retirement, revocation).
    updateKeySchedule: db.prepare<KeyParams>(
      `UPDATE signing_keys SET created_at = @created_at, activates_at = @activates_at, retired_at = @retired_at, expires_at = @expires_at,
              revoked_at = @revoked_at
       WHERE kid = @kid AND alg = @alg AND public_jwk = @public_jwk AND encrypted_private_key = @encrypted_private_key`,
    ),
    // Only a key nobody retired yet: two concurrent rotations must not both hand over from the same key (the loser's
    // new key would then never be retired and stay published forever).
    retireKey: db.prepare<[number, number, string]>('UPDATE signing_keys SET retired_at = ?, expires_at = ? WHERE kid = ? AND retired_at IS NULL'),
    keyExists: db.prepare<[string]>('SELECT 1 FROM signing_keys WHERE kid = ?'),
    listKeys: db.prepare<[]>('SELECT * FROM signing_keys ORDER BY created_at, kid'),
    purgeKeys: db.prepare<[number]>('DELETE FROM signing_keys WHERE expires_at IS NOT NULL AND expires_at <= ?'),
    // A revocation is never shortened: revoking again keeps the later expiry (normally the same token, so no change).
    revoke: db.prepare<[string, string, number]>(
      `INSERT INTO revocations (iss, jti, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (iss, jti) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)
       WHERE excluded.expires_at > expires_at`,
    ),
    listRevocations: db.prepare<[number]>('SELECT * FROM revocations WHERE expires_at > ? ORDER BY expires_at, iss, jti'),
    purgeRevocations: db.prepare<[number]>('DELETE FROM revocations WHERE expires_at <= ?'),
    insertClientCa: db.prepare<ClientCaParams>(
      'INSERT INTO client_ca (id, cert_pem, encrypted_private_key, created_at) VALUES (1, @cert_pem, @encrypted_private_key, @created_at)',
    ),
    getClientCa: db.prepare<[]>('SELECT * FROM client_ca WHERE id = 1'),
    insertCertificate: db.prepare<CertificateParams>(
      `INSERT INTO client_certificates (serial, client_id, subject, thumbprint, not_before, not_after, issued_at, revoked_at)
       VALUES (@serial, @client_id, @subject, @thumbprint, @not_before, @not_after, @issued_at, @revoked_at)`,
    ),
    listCertificates: db.prepare<[]>('SELECT * FROM client_certificates ORDER BY issued_at, serial'),
    getCertificate: db.prepare<[string]>('SELECT * FROM client_certificates WHERE serial = ?'),
    findCertificate: db.prepare<[string]>('SELECT * FROM client_certificates WHERE thumbprint = ?'),
    // The first revocation's time stays: revoking again changes nothing.
    revokeCertificate: db.prepare<[number, string]>('UPDATE client_certificates SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL'),
    listRevokedCertificates: db.prepare<[number]>(
      'SELECT * FROM client_certificates WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY not_after, serial',
    ),
    purgeCertificates: db.prepare<[number]>('DELETE FROM client_certificates WHERE not_after < ?'),
    // importSnapshot: only into a store holding nothing (a secret without its client cannot exist: foreign key).
    holdsAnything: db.prepare<[]>(
      `SELECT 1 WHERE EXISTS (SELECT 1 FROM clients) OR EXISTS (SELECT 1 FROM signing_keys) OR EXISTS (SELECT 1 FROM revocations)
                   OR EXISTS (SELECT 1 FROM client_ca) OR EXISTS (SELECT 1 FROM client_certificates)`,
    ),
    insertRevocation: db.prepare<[string, string, number]>('INSERT INTO revocations (iss, jti, expires_at) VALUES (?, ?, ?)'),
    // watch(): moves whenever another connection (the CLI, another process) commits; this connection's own writes do not.
    dataVersion: db.prepare<[]>('PRAGMA data_version').pluck(),
  };
}

export class SqliteCredentialStore implements CredentialStore {
  readonly file: string;
  private readonly db: Database.Database;
  private readonly now: () => number;
  private readonly q: ReturnType<typeof prepareStatements>;
  private readonly watches = new Set<NodeJS.Timeout>();

  private constructor(file: string, db: Database.Database, now: () => number) {
    this.file = file;
    this.db = db;
    this.now = now;
    this.q = prepareStatements(db);
  }

  /** Opens (creating if needed) the database at `file` and migrates it to the latest schema. Throws StoreError. */
  static open(file: string, opts: SqliteStoreOptions = {}): SqliteCredentialStore {
    let db: Database.Database | undefined;
    try {
      prepareFile(file, opts.create ?? true);
      db = new Database(file, { fileMustExist: true });
      retainStatements(db);
      db.pragma(`busy_timeout = ${Math.max(0, Math.trunc(opts.busyTimeoutMs ?? 2000))}`);
      // Before any setting that persists in the file (journal mode): never alter a database we are going to refuse.
      checkSchema(db, file);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new StoreError('unavailable', `${file}: cannot use WAL journal (got ${String(mode)})`);
      // FULL, not NORMAL: with WAL, NORMAL survives a process crash but a power loss can drop the last commits. Here a
      // dropped commit is a revocation that silently un-happens or a removed client that comes back; writes are rare
      // (admin commands, revocations), so one fsync per commit costs nothing that matters.
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      // Deleted secret hashes and key material are overwritten, not left in free pages of the file.
      db.pragma('secure_delete = ON');
      // The schema is ours alone: no SQL functions with side effects run from views or triggers found in the file.
      db.pragma('trusted_schema = OFF');
      migrate(db, file);
      return new SqliteCredentialStore(file, db, opts.now ?? Date.now);
    } catch (error) {
      db?.close();
      if (error instanceof DirectoryError) throw new StoreError('unavailable', error.message);
      // Creating the directory or file failed (EACCES, ENOTDIR, EROFS, …): the store cannot serve.
      const errno = error instanceof Error ? (error as NodeJS.ErrnoException).code : undefined;
      if (typeof errno === 'string' && !(error instanceof StoreError) && !(error instanceof Database.SqliteError)) {
        throw new StoreError('unavailable', `open ${file}: ${errno}`);
      }
      throw toStoreError(error, `open ${file}`);
    }
  }

  /** Runs `fn` on an open connection and turns SQLite faults into StoreErrors; other errors (a caller's) pass through. */
  private guard<T>(doing: string, fn: () => T): Promise<T> {
    try {
      if (!this.db.open) throw new StoreError('unavailable', `${doing}: store is closed`);
      return Promise.resolve(fn());
    } catch (error) {
      return Promise.reject(toStoreError(error, doing));
    }
  }

  // ---- Clients ----

  createClient(client: Client): Promise<void> {
    return this.guard(`createClient ${client.id}`, () => {
      checkSecrets(client);
      this.db
        .transaction(() => {
          this.q.insertClient.run(clientParams(client));
          this.insertSecrets(client);
        })
        .immediate();
    });
  }

  getClient(id: string): Promise<Client | undefined> {
    // Deferred read transaction: the client row and its secrets come from one snapshot.
    return this.guard(`getClient ${id}`, () => this.db.transaction(() => this.readClient(id)).deferred());
  }

  listClients(): Promise<readonly Client[]> {
    return this.guard('listClients', () => this.db.transaction(() => this.readClients()).deferred());
  }

  private readClients(): Client[] {
    return clientsFromRows(this.q.listClients.all(), this.q.listSecrets.all());
  }

  updateClient(id: string, change: (current: Client) => Client): Promise<Client> {
    // IMMEDIATE: the write lock is taken before the read, so no other writer can slip in between read and write.
    return this.guard(`updateClient ${id}`, () =>
      this.db
        .transaction(() => {
          const current = this.readClient(id);
          if (current === undefined) throw new StoreError('not_found', `client ${id} not found`);
          const changed = change(current);
          if (changed.id !== id) throw new StoreError('invalid', `updateClient ${id}: the id cannot change`);
          // The store keeps the timestamps: creation time is a fact, not something an update may rewrite.
          const next: Client = { ...changed, createdAt: current.createdAt, updatedAt: this.now() };
          checkSecrets(next);
          this.q.updateClient.run(clientParams(next));
          this.q.deleteSecrets.run(id);
          this.insertSecrets(next);
          return next;
        })
        .immediate(),
    );
  }

  removeClient(id: string): Promise<boolean> {
    // Secrets go with it (ON DELETE CASCADE, foreign_keys on).
    return this.guard(`removeClient ${id}`, () => this.db.transaction(() => this.q.removeClient.run(id).changes > 0).immediate());
  }

  private readClient(id: string): Client | undefined {
    const raw = this.q.getClient.get(id);
    if (raw === undefined) return undefined;
    return clientFromRows(raw, this.q.getSecrets.all(id));
  }

  private insertSecrets(client: Client): void {
    client.secrets.forEach((secret, slot) => {
      this.q.insertSecret.run({ client_id: client.id, slot, hash: secret.hash, created_at: secret.createdAt, expires_at: secret.expiresAt });
    });
  }

  // ---- Signing keys ----

  addSigningKey(key: SigningKey): Promise<void> {
    return this.guard(`addSigningKey ${key.kid}`, () => {
      this.db.transaction(() => this.q.insertKey.run(keyParams(key))).immediate();
    });
  }

  listSigningKeys(): Promise<readonly SigningKey[]> {
    return this.guard('listSigningKeys', () => this.readSigningKeys());
  }

  private readSigningKeys(): SigningKey[] {
    return this.q.listKeys.all().map(signingKeyFromRow);
  }

  changeSigningKeys(change: (current: readonly SigningKey[]) => SigningKeyChange): Promise<SigningKeyChange> {
    // IMMEDIATE: the keys are read under the write lock, so the change is decided on the state it is written over.
    return this.guard('changeSigningKeys', () =>
      this.db
        .transaction(() => {
          const decided = change(this.readSigningKeys());
          for (const key of decided.update) {
            if (this.q.updateKeySchedule.run(keyParams(key)).changes === 0) throw keyUpdateMissed(key.kid, this.q.keyExists.get(key.kid) !== undefined);
          }
          for (const key of decided.insert) this.q.insertKey.run(keyParams(key));
          return decided;
        })
        .immediate(),
    );
  }

  rotateSigningKey(next: SigningKey, retire: { readonly kid: string; readonly retiredAt: number; readonly expiresAt: number } | undefined): Promise<void> {
    return this.guard(`rotateSigningKey ${next.kid}`, () => {
      this.db
        .transaction(() => {
          this.q.insertKey.run(keyParams(next));
          if (retire !== undefined && this.q.retireKey.run(retire.retiredAt, retire.expiresAt, retire.kid).changes === 0)
            throw retirementMissed(retire.kid, this.q.keyExists.get(retire.kid) !== undefined);
        })
        .immediate();
    });
  }

  purgeExpiredSigningKeys(now: number): Promise<number> {
    return this.guard('purgeExpiredSigningKeys', () => this.db.transaction(() => this.q.purgeKeys.run(now).changes).immediate());
  }

  // ---- Revocations ----

  revoke(revocation: Revocation): Promise<void> {
    return this.guard('revoke', () => {
      this.db.transaction(() => this.q.revoke.run(revocation.iss, revocation.jti, revocation.expiresAt)).immediate();
    });
  }

  listRevocations(now: number): Promise<readonly Revocation[]> {
    return this.guard('listRevocations', () => this.readRevocations(now));
  }

  private readRevocations(now: number): Revocation[] {
    return this.q.listRevocations.all(now).map(revocationFromRow);
  }

  purgeExpiredRevocations(now: number): Promise<number> {
    return this.guard('purgeExpiredRevocations', () => this.db.transaction(() => this.q.purgeRevocations.run(now).changes).immediate());
  }

  // ---- The client CA and its certificates ----

  createClientCa(ca: ClientCa): Promise<void> {
    return this.guard('createClientCa', () => {
      this.db.transaction(() => this.q.insertClientCa.run(clientCaParams(ca))).immediate();
    });
  }

  getClientCa(): Promise<ClientCa | undefined> {
    return this.guard('getClientCa', () => this.readClientCa());
  }

  private readClientCa(): ClientCa | undefined {
    const raw = this.q.getClientCa.get();
    return raw === undefined ? undefined : clientCaFromRow(raw);
  }

  addIssuedCertificate(certificate: IssuedCertificate): Promise<void> {
    return this.guard(`addIssuedCertificate ${certificate.serial}`, () => {
      this.db.transaction(() => this.q.insertCertificate.run(certificateParams(certificate))).immediate();
    });
  }

  listIssuedCertificates(): Promise<readonly IssuedCertificate[]> {
    return this.guard('listIssuedCertificates', () => this.readCertificates());
  }

  private readCertificates(): IssuedCertificate[] {
    return this.q.listCertificates.all().map(certificateFromRow);
  }

  findIssuedCertificate(thumbprint: string): Promise<IssuedCertificate | undefined> {
    return this.guard('findIssuedCertificate', () => {
      const raw = this.q.findCertificate.get(thumbprint);
      return raw === undefined ? undefined : certificateFromRow(raw);
    });
  }

  revokeCertificate(serial: string, at: number): Promise<IssuedCertificate> {
    return this.guard(`revokeCertificate ${serial}`, () =>
      this.db
        .transaction(() => {
          this.q.revokeCertificate.run(at, serial);
          const raw = this.q.getCertificate.get(serial);
          if (raw === undefined) throw new StoreError('not_found', `certificate ${serial} not found`);
          return certificateFromRow(raw);
        })
        .immediate(),
    );
  }

  listRevokedCertificates(now: number): Promise<readonly IssuedCertificate[]> {
    return this.guard('listRevokedCertificates', () => this.q.listRevokedCertificates.all(now).map(certificateFromRow));
  }

  purgeExpiredCertificates(before: number): Promise<number> {
    return this.guard('purgeExpiredCertificates', () => this.db.transaction(() => this.q.purgeCertificates.run(before).changes).immediate());
  }

  // ---- Copying a whole store ----

  exportSnapshot(at: number = this.now()): Promise<StoreSnapshot> {
    // One deferred read transaction: in WAL mode every read in it sees the same commit, whatever writers do meanwhile.
    return this.guard('exportSnapshot', () =>
      this.db
        .transaction(
          (): StoreSnapshot => ({
            at,
            clients: this.readClients(),
            signingKeys: this.readSigningKeys(),
            revocations: this.readRevocations(at),
            clientCa: this.readClientCa() ?? null,
            certificates: this.readCertificates(),
          }),
        )
        .deferred(),
    );
  }

  importSnapshot(snapshot: StoreSnapshot): Promise<void> {
    return this.guard('importSnapshot', () => {
      for (const client of snapshot.clients) checkSecrets(client);
      // IMMEDIATE: the write lock is held from before the emptiness check, so of two importers only the first finds the
      // store empty; any failure rolls back every row written.
      this.db
        .transaction(() => {
          if (this.q.holdsAnything.get() !== undefined) throw new StoreError('conflict', `importSnapshot: ${this.file} is not empty`);
          for (const client of snapshot.clients) {
            this.q.insertClient.run(clientParams(client));
            this.insertSecrets(client);
          }
          for (const key of snapshot.signingKeys) this.q.insertKey.run(keyParams(key));
          for (const revocation of snapshot.revocations) this.q.insertRevocation.run(revocation.iss, revocation.jti, revocation.expiresAt);
          if (snapshot.clientCa !== null) this.q.insertClientCa.run(clientCaParams(snapshot.clientCa));
          for (const certificate of snapshot.certificates) this.q.insertCertificate.run(certificateParams(certificate));
        })
        .immediate();
    });
  }

  /**
   * Changes other processes commit (the CLI, another gateway on this host), noticed within SQLITE_WATCH_INTERVAL_MS by
   * `PRAGMA data_version` — a read of the shared WAL index, no query of the data — and reported as a `resync` (SQLite
   * says that something changed, not what). This connection's own writes are not reported: the caller made them.
   */
  watch(events: StoreWatchEvents): Promise<StoreWatch> {
    let seen = this.dataVersion();
    const timer = setInterval(() => {
      let now: number;
      try {
        now = this.dataVersion();
      } catch {
        return; // Closed or failing: the periodic refresh reports store failures.
      }
      if (now === seen) return;
      seen = now;
      events.onChange({ kind: 'resync' });
    }, SQLITE_WATCH_INTERVAL_MS);
    timer.unref();
    this.watches.add(timer);
    return Promise.resolve({
      close: () => {
        clearInterval(timer);
        this.watches.delete(timer);
        return Promise.resolve();
      },
    });
  }

  private dataVersion(): number {
    return Number(this.q.dataVersion.get());
  }

  close(): Promise<void> {
    for (const timer of this.watches) clearInterval(timer);
    this.watches.clear();
    // Closing twice is harmless; the last connection to close checkpoints the WAL into the main file.
    try {
      if (this.db.open) this.db.close();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(toStoreError(error, 'close'));
    }
  }
}
