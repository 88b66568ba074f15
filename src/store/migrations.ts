// Schema migrations of the SQLite credential store: an ordered, append-only list of steps; PRAGMA user_version counts
// the steps applied. Each step runs in its own IMMEDIATE transaction with the version bump, so a crash mid-migration
// leaves the previous version, and two processes opening a fresh file at once apply each step exactly once.
import type Database from 'better-sqlite3';
import { StoreError } from './contract.js';

export interface Migration {
  /** 1, 2, 3, … in order: the user_version the database has once this step is applied. */
  readonly version: number;
  readonly description: string;
  readonly sql: string;
}

/** 'GhSt': marks the file as ours, so a store never adopts (or migrates) some other application's SQLite database. */
export const APPLICATION_ID = 0x47685374;

// Never edit a step that has shipped: databases in the field already ran it. Change the schema with a new step.
export const migrations: readonly Migration[] = [
  {
    version: 1,
    description: 'clients, client secrets, signing keys, revocations',
    // STRICT tables: SQLite refuses a value of the wrong type instead of storing it, so a bad write fails at once
    // rather than becoming a row that every later read rejects.
    sql: `
      CREATE TABLE clients (
        id          TEXT    NOT NULL PRIMARY KEY,
        name        TEXT    NOT NULL,
        scopes      TEXT    NOT NULL,  -- JSON array of strings
        audiences   TEXT    NOT NULL,  -- JSON array of strings
        enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
      ) STRICT;

      -- slot 0 or 1: at most two secrets per client (old and new during a rotation), enforced by the primary key.
      CREATE TABLE client_secrets (
        client_id   TEXT    NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        slot        INTEGER NOT NULL CHECK (slot IN (0, 1)),
        hash        TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        PRIMARY KEY (client_id, slot)
      ) STRICT, WITHOUT ROWID;

      CREATE TABLE signing_keys (
        kid                    TEXT    NOT NULL PRIMARY KEY,
        alg                    TEXT    NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
        public_jwk             TEXT    NOT NULL,
        encrypted_private_key  TEXT    NOT NULL,
        created_at             INTEGER NOT NULL,
        activates_at           INTEGER NOT NULL,
        retired_at             INTEGER,
        expires_at             INTEGER
      ) STRICT;

      CREATE TABLE revocations (
        iss         TEXT    NOT NULL,
        jti         TEXT    NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (iss, jti)
      ) STRICT, WITHOUT ROWID;
      -- Purges and the start-up warm-up scan by expiry.
      CREATE INDEX revocations_by_expiry ON revocations (expires_at);

      PRAGMA application_id = ${APPLICATION_ID};
    `,
  },
  {
    version: 2,
    description: 'token cut-off and token lifetime per client; emergency revocation of signing keys',
    sql: `
      -- Epoch seconds: tokens of the client with an earlier iat are refused (set by a disable, kept by an enable).
      ALTER TABLE clients ADD COLUMN tokens_not_before_s INTEGER CHECK (tokens_not_before_s IS NULL OR tokens_not_before_s >= 0);
      -- Seconds; NULL = the issuer's access_token_ttl_s.
      ALTER TABLE clients ADD COLUMN access_token_ttl_s INTEGER CHECK (access_token_ttl_s IS NULL OR access_token_ttl_s > 0);
      ALTER TABLE signing_keys ADD COLUMN revoked_at INTEGER;
    `,
  },
  {
    version: 3,
    description: 'clients that must prove possession of a key (DPoP) for every token',
    sql: `
      ALTER TABLE clients ADD COLUMN require_dpop INTEGER NOT NULL DEFAULT 0 CHECK (require_dpop IN (0, 1));
    `,
  },
  {
    version: 4,
    description: 'clients that authenticate with a client certificate (RFC 8705 tls_client_auth)',
    sql: `
      ALTER TABLE clients ADD COLUMN tls_client_auth_subject TEXT CHECK (tls_client_auth_subject IS NULL OR length(tls_client_auth_subject) > 0);
    `,
  },
  {
    version: 5,
    description: 'the client-certificate authority and the certificates it issued',
    sql: `
      -- One row at most: the store has one client CA, never replaced in place.
      CREATE TABLE client_ca (
        id                     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        cert_pem               TEXT    NOT NULL,
        encrypted_private_key  TEXT    NOT NULL,
        created_at             INTEGER NOT NULL
      ) STRICT;
      -- No foreign key to clients: the record of what was issued outlives the client's removal.
      CREATE TABLE client_certificates (
        serial      TEXT    NOT NULL PRIMARY KEY,
        client_id   TEXT    NOT NULL,
        subject     TEXT    NOT NULL,
        thumbprint  TEXT    NOT NULL UNIQUE,
        not_before  INTEGER NOT NULL,
        not_after   INTEGER NOT NULL CHECK (not_after > not_before),
        issued_at   INTEGER NOT NULL,
        revoked_at  INTEGER
      ) STRICT;
      -- What every gateway re-reads: revoked certificates still valid.
      CREATE INDEX client_certificates_revoked ON client_certificates (not_after) WHERE revoked_at IS NOT NULL;
    `,
  },
];

export const LATEST_VERSION = migrations.length;

function userVersion(db: Database.Database): number {
  const version = db.pragma('user_version', { simple: true });
  if (typeof version !== 'number') throw new StoreError('invalid', 'unreadable schema version');
  return version;
}

/**
 * Refuses, before anything is written, a database this code must not touch: one written by newer code, or one that
 * belongs to another application. Returns its schema version.
 */
export function checkSchema(db: Database.Database, file: string): number {
  const found = userVersion(db);
  // A newer file was written by newer code: its meaning is unknown here, and writing to it could corrupt it for that code.
  if (found > LATEST_VERSION) {
    throw new StoreError('invalid', `${file}: schema version ${found} is newer than this Gatehouse knows (${LATEST_VERSION}); upgrade Gatehouse`);
  }
  if (found > 0) {
    const appId = db.pragma('application_id', { simple: true });
    if (appId !== APPLICATION_ID) throw new StoreError('invalid', `${file}: not a Gatehouse credential store (application_id ${String(appId)})`);
  } else if (db.prepare('SELECT count(*) FROM sqlite_schema').pluck().get() !== 0) {
    throw new StoreError('invalid', `${file}: not a Gatehouse credential store (has tables but no schema version)`);
  }
  return found;
}

/** Brings the database to LATEST_VERSION. Returns the version it had before. */
export function migrate(db: Database.Database, file: string): number {
  const found = checkSchema(db, file);
  for (const step of migrations) {
    if (step.version <= found) continue;
    db.transaction(() => {
      // Re-read under the write lock: another process may have applied this step since we looked.
      const current = userVersion(db);
      if (current >= step.version) return;
      if (current !== step.version - 1) throw new StoreError('invalid', `${file}: schema version ${current} cannot take step ${step.version}`);
      db.exec(step.sql);
      // user_version lives in the database header, which is written inside this transaction: step and bump commit together.
      db.pragma(`user_version = ${step.version}`);
    }).immediate();
  }
  return found;
}
