// SQLite credential store: CRUD, error codes, transactional writes, file permissions, migrations, corrupt rows, and
// crash safety against a real writer process killed with SIGKILL before and after COMMIT.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { StoreError, type Client } from '../../src/store/contract.js';
import { APPLICATION_ID, LATEST_VERSION, migrations } from '../../src/store/migrations.js';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { client, storeError } from '../support/store-fixtures.js';

const root = mkdtempSync(join(tmpdir(), 'gatehouse-store-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let dbCount = 0;
/** A fresh database path in a directory that does not exist yet (the store creates it). */
const freshFile = (): string => join(root, `db-${++dbCount}`, 'data', 'gatehouse.db');

function openError(file: string): StoreError {
  try {
    SqliteCredentialStore.open(file)
      .close()
      .catch(() => undefined);
  } catch (error) {
    expect(error).toBeInstanceOf(StoreError);
    return error as StoreError;
  }
  throw new Error('expected open to fail');
}

/** A raw connection, as another process or a hand edit would have. */
function raw(file: string): Database.Database {
  const db = new Database(file);
  db.pragma('busy_timeout = 5000');
  return db;
}

describe('SQLite credential store: files and durability settings', () => {
  it('creates the directory 0700 and the database, -wal and -shm 0600, in WAL mode with synchronous FULL', async () => {
    const file = freshFile();
    const store = SqliteCredentialStore.open(file);
    await store.createClient(client('perm'));
    expect(statSync(dirname(file)).mode & 0o777).toBe(0o700);
    for (const f of [file, `${file}-wal`, `${file}-shm`]) {
      expect(existsSync(f), f).toBe(true);
      expect(statSync(f).mode & 0o777, f).toBe(0o600);
    }
    const db = raw(file);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
    await store.close();
  });

  it('tightens an existing database file readable by others to 0600', async () => {
    const file = freshFile();
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, '');
    chmodSync(file, 0o644);
    const store = SqliteCredentialStore.open(file);
    await store.createClient(client('tight'));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(`${file}-wal`).mode & 0o777).toBe(0o600);
    await store.close();
  });

  it('turns SQLITE_BUSY into unavailable, and works again once the lock is released', async () => {
    const file = freshFile();
    const store = SqliteCredentialStore.open(file, { busyTimeoutMs: 20 });
    const other = raw(file);
    other.exec('BEGIN IMMEDIATE');
    const error = await storeError(store.revoke({ iss: 'i', jti: 'j', expiresAt: 10 }));
    expect(error.code).toBe('unavailable');
    // WAL: readers are not blocked by the writer.
    expect(await store.listClients()).toEqual([]);
    other.exec('ROLLBACK');
    other.close();
    await store.revoke({ iss: 'i', jti: 'j', expiresAt: 10 });
    expect(await store.listRevocations(0)).toEqual([{ iss: 'i', jti: 'j', expiresAt: 10 }]);
    await store.close();
  });

  it('answers unavailable after close', async () => {
    const store = SqliteCredentialStore.open(freshFile());
    await store.close();
    await store.close();
    expect((await storeError(store.getClient('x'))).code).toBe('unavailable');
    expect((await storeError(store.revoke({ iss: 'i', jti: 'j', expiresAt: 1 }))).code).toBe('unavailable');
  });
});

describe('SQLite credential store: migrations', () => {
  it('numbers its steps 1..n', () => {
    expect(migrations.map((m) => m.version)).toEqual(Array.from({ length: migrations.length }, (_, i) => i + 1));
    expect(LATEST_VERSION).toBe(migrations.length);
  });

  it('brings a fresh database to the latest version, and reopening changes nothing', async () => {
    const file = freshFile();
    await SqliteCredentialStore.open(file).close();
    let db = raw(file);
    expect(db.pragma('user_version', { simple: true })).toBe(LATEST_VERSION);
    expect(db.pragma('application_id', { simple: true })).toBe(APPLICATION_ID);
    const tables = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").pluck().all();
    expect(tables).toEqual(['client_ca', 'client_certificates', 'client_secrets', 'clients', 'revocations', 'signing_keys']);
    db.close();

    const store = SqliteCredentialStore.open(file);
    await store.createClient(client('kept'));
    await store.close();
    await SqliteCredentialStore.open(file).close();
    db = raw(file);
    expect(db.pragma('user_version', { simple: true })).toBe(LATEST_VERSION);
    db.close();
    const again = SqliteCredentialStore.open(file);
    expect(await again.getClient('kept')).toEqual(client('kept'));
    await again.close();
  });

  it('upgrades a version-1 store in place: its clients and keys keep their values, the new fields start empty', async () => {
    const file = freshFile();
    mkdirSync(dirname(file), { recursive: true });
    const db = raw(file);
    db.exec(migrations[0]!.sql);
    db.pragma('user_version = 1');
    db.prepare("INSERT INTO clients VALUES ('old', 'Old', '[\"read\"]', '[]', 1, 10, 20)").run();
    db.prepare("INSERT INTO signing_keys VALUES ('k', 'EdDSA', '{}', 'sealed', 1, 2, NULL, NULL)").run();
    db.close();
    const store = SqliteCredentialStore.open(file, { create: false });
    try {
      expect(await store.getClient('old')).toEqual({
        id: 'old',
        name: 'Old',
        secrets: [],
        scopes: ['read'],
        audiences: [],
        enabled: true,
        tokensNotBeforeS: null,
        accessTokenTtlS: null,
        requireDpop: false,
        tlsClientAuthSubject: null,
        createdAt: 10,
        updatedAt: 20,
      });
      expect((await store.listSigningKeys())[0]).toMatchObject({ kid: 'k', revokedAt: null, retiredAt: null });
    } finally {
      await store.close();
    }
  });

  it('refuses a token lifetime of zero and a negative cut-off (CHECK), whatever the caller sends', async () => {
    const store = SqliteCredentialStore.open(freshFile());
    try {
      expect((await storeError(store.createClient(client('z', { accessTokenTtlS: 0 })))).code).toBe('invalid');
      expect((await storeError(store.createClient(client('n', { tokensNotBeforeS: -1 })))).code).toBe('invalid');
      await store.createClient(client('ok', { accessTokenTtlS: 60, tokensNotBeforeS: 1_700_000_000 }));
      expect(await store.getClient('ok')).toMatchObject({ accessTokenTtlS: 60, tokensNotBeforeS: 1_700_000_000 });
    } finally {
      await store.close();
    }
  });

  it('opens only an existing file when told not to create one (admin commands)', () => {
    const file = freshFile();
    const error = (() => {
      try {
        SqliteCredentialStore.open(file, { create: false });
      } catch (e) {
        return e as StoreError;
      }
      throw new Error('opened a store that does not exist');
    })();
    expect(error).toBeInstanceOf(StoreError);
    expect(error.code).toBe('not_found');
    expect(existsSync(dirname(file))).toBe(false);
  });

  it('refuses a database written by a newer Gatehouse (user_version above the latest known)', async () => {
    const file = freshFile();
    await SqliteCredentialStore.open(file).close();
    const db = raw(file);
    db.pragma(`user_version = ${LATEST_VERSION + 1}`);
    db.close();
    expect(openError(file).code).toBe('invalid');
    // Refused without touching it.
    const check = raw(file);
    expect(check.pragma('user_version', { simple: true })).toBe(LATEST_VERSION + 1);
    check.close();
  });

  it("refuses a file that is another application's database, or not a database at all", () => {
    const foreign = freshFile();
    mkdirSync(dirname(foreign), { recursive: true });
    const db = new Database(foreign);
    db.exec('CREATE TABLE clients (whatever TEXT)');
    db.close();
    expect(openError(foreign).code).toBe('invalid');
    // Refused before anything persistent was changed (its journal mode stays as its owner set it).
    const after = raw(foreign);
    expect(after.pragma('journal_mode', { simple: true })).toBe('delete');
    after.close();

    const junk = freshFile();
    mkdirSync(dirname(junk), { recursive: true });
    writeFileSync(junk, 'this is not an SQLite database, but it is long enough to have a header of sorts...........', { mode: 0o600 });
    expect(openError(junk).code).toBe('invalid');
  });

  it('answers unavailable when the directory cannot be created', () => {
    const blocker = join(root, `blocker-${++dbCount}`);
    writeFileSync(blocker, '');
    expect(openError(join(blocker, 'sub', 'gatehouse.db')).code).toBe('unavailable');
  });
});

describe('SQLite credential store: corrupt rows', () => {
  it('answers invalid, naming the table and key, when a row holds bad JSON or the wrong shape', async () => {
    const file = freshFile();
    const store = SqliteCredentialStore.open(file);
    await store.createClient(client('c1'));
    await store.createClient(client('c2'));
    const db = raw(file);

    db.prepare("UPDATE clients SET scopes = '[\"echo:read\", ' WHERE id = 'c1'").run();
    const one = await storeError(store.getClient('c1'));
    expect(one.code).toBe('invalid');
    expect(one.message).toContain('clients');
    expect(one.message).toContain('c1');
    const all = await storeError(store.listClients());
    expect(all.code).toBe('invalid');
    expect(all.message).toContain('c1');
    // The other client is still readable on its own.
    expect(await store.getClient('c2')).toEqual(client('c2'));

    db.prepare("UPDATE clients SET scopes = '[1, 2]' WHERE id = 'c1'").run();
    expect((await storeError(store.getClient('c1'))).code).toBe('invalid');
    db.prepare("UPDATE clients SET scopes = '{\"a\": 1}' WHERE id = 'c1'").run();
    expect((await storeError(store.getClient('c1'))).code).toBe('invalid');

    db.prepare("UPDATE client_secrets SET hash = '' WHERE client_id = 'c2'").run();
    const secret = await storeError(store.getClient('c2'));
    expect(secret.code).toBe('invalid');
    expect(secret.message).toContain('client_secrets');

    // A corrupt row is refused, not rewritten: updateClient fails before its change runs.
    let called = false;
    expect(
      (
        await storeError(
          store.updateClient('c1', (c) => {
            called = true;
            return c;
          }),
        )
      ).code,
    ).toBe('invalid');
    expect(called).toBe(false);
    db.close();
    await store.close();
  });
});

// ---- Crash safety: a real writer process, killed with SIGKILL. ----

const sqliteModule = createRequire(import.meta.url).resolve('better-sqlite3');
const writerDir = mkdtempSync(join(root, 'writer-'));
const writerScript = join(writerDir, 'writer.mjs');
// Raw better-sqlite3, so the test does not depend on a build of the store; the SQL mirrors the schema.
writeFileSync(
  writerScript,
  `
import { pathToFileURL } from 'node:url';
const [modulePath, file, mode] = process.argv.slice(2);
const { default: Database } = await import(pathToFileURL(modulePath).href);
const db = new Database(file);
// Node 24 aborts when better-sqlite3 12 garbage-collects a statement: keep every statement alive (as the store does).
const keep = [];
const prepare = db.prepare.bind(db);
db.prepare = (...args) => { const statement = prepare(...args); keep.push(statement); return statement; };
db.prepare('PRAGMA busy_timeout = 5000').get();
db.prepare('PRAGMA synchronous = FULL').run();
db.prepare('PRAGMA foreign_keys = ON').run();
// A tiny page cache makes SQLite spill uncommitted pages into the WAL before COMMIT: the kill leaves partial frames on disk.
db.prepare('PRAGMA cache_size = 8').run();
process.stdout.write('STARTED\\n');
db.exec('BEGIN IMMEDIATE');
db.prepare("UPDATE clients SET name = 'new', scopes = '[\\"new\\"]', updated_at = 2000 WHERE id = 'c1'").run();
db.prepare("DELETE FROM client_secrets WHERE client_id = 'c1'").run();
db.prepare("INSERT INTO client_secrets (client_id, slot, hash, created_at, expires_at) VALUES ('c1', 0, 'new-hash-0', 2000, NULL), ('c1', 1, 'new-hash-1', 2000, 3000)").run();
const insert = db.prepare('INSERT INTO revocations (iss, jti, expires_at) VALUES (?, ?, ?)');
for (let i = 0; i < 10000; i++) insert.run('https://iss.example', 'jti-' + String(i).padStart(5, '0') + '-' + 'x'.repeat(40), 9000000000000 + i);
if (mode === 'commit') {
  db.exec('COMMIT');
  process.stdout.write('COMMITTED\\n');
} else if (mode === 'before-commit') {
  process.stdout.write('BEFORE_COMMIT\\n');
} else {
  db.exec('COMMIT');
  process.stdout.write('COMMITTED\\n');
}
// Wait to be killed; never exit on our own (an orderly exit could roll back or checkpoint).
setInterval(() => {}, 60_000);
`,
);

interface Writer {
  /** Resolves with the first line equal to `line`; rejects if the writer exits first. */
  waitFor(line: string): Promise<void>;
  kill(): Promise<NodeJS.Signals | null>;
}

function startWriter(file: string, mode: 'before-commit' | 'commit' | 'free-run'): Writer {
  const child = spawn(process.execPath, [writerScript, sqliteModule, file, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  return {
    waitFor: (line) =>
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (out.split('\n').includes(line)) {
            child.stdout.off('data', check);
            resolve();
          }
        };
        child.stdout.on('data', check);
        check();
        void exited.then(() => reject(new Error(`writer exited before ${line}: ${err}`)));
      }),
    kill: async () => {
      child.kill('SIGKILL');
      return exited;
    },
  };
}

const OLD_REVOCATION = { iss: 'https://iss.example', jti: 'old-jti', expiresAt: 8_000_000_000_000 };

async function seed(file: string): Promise<Client> {
  const store = SqliteCredentialStore.open(file);
  const old = client('c1', { name: 'old', scopes: ['old'], secrets: [{ hash: 'old-hash', createdAt: 1_000, expiresAt: null }] });
  await store.createClient(old);
  await store.revoke(OLD_REVOCATION);
  await store.close();
  return old;
}

type Observed = 'old' | 'new';

/** Reopens with the real store and checks the state is exactly the old one or exactly the new one. */
async function observe(file: string, old: Client): Promise<Observed> {
  const check = raw(file);
  expect(check.pragma('integrity_check', { simple: true })).toBe('ok');
  check.close();
  const store = SqliteCredentialStore.open(file);
  try {
    const c1 = await store.getClient('c1');
    const revocations = await store.listRevocations(0);
    if (c1?.name === 'old') {
      expect(c1).toEqual(old);
      expect(revocations).toEqual([OLD_REVOCATION]);
      return 'old';
    }
    expect(c1).toEqual({
      ...old,
      name: 'new',
      scopes: ['new'],
      updatedAt: 2_000,
      secrets: [
        { hash: 'new-hash-0', createdAt: 2_000, expiresAt: null },
        { hash: 'new-hash-1', createdAt: 2_000, expiresAt: 3_000 },
      ],
    });
    expect(revocations).toHaveLength(10_001);
    expect(revocations[0]).toEqual(OLD_REVOCATION);
    expect(revocations[10_000]).toEqual({ iss: 'https://iss.example', jti: `jti-09999-${'x'.repeat(40)}`, expiresAt: 9_000_000_009_999 });
    return 'new';
  } finally {
    await store.close();
  }
}

describe('SQLite credential store: crash safety', () => {
  it('a writer killed right before COMMIT leaves exactly the old state, with no partial rows', async () => {
    const file = freshFile();
    const old = await seed(file);
    const writer = startWriter(file, 'before-commit');
    await writer.waitFor('BEFORE_COMMIT');
    // Uncommitted pages really reached the disk (spilled into the WAL) before the kill.
    expect(statSync(`${file}-wal`).size).toBeGreaterThan(0);
    expect(await writer.kill()).toBe('SIGKILL');
    expect(await observe(file, old)).toBe('old');
  });

  it('a writer killed right after COMMIT leaves exactly the new state', async () => {
    const file = freshFile();
    const old = await seed(file);
    const writer = startWriter(file, 'commit');
    await writer.waitFor('COMMITTED');
    expect(await writer.kill()).toBe('SIGKILL');
    expect(await observe(file, old)).toBe('new');
  });

  it('a writer killed at arbitrary moments always leaves the old or the new state, never a mix', async () => {
    for (let round = 0; round < 6; round++) {
      const file = freshFile();
      const old = await seed(file);
      const writer = startWriter(file, 'free-run');
      await writer.waitFor('STARTED');
      await new Promise((r) => setTimeout(r, round * 15));
      expect(await writer.kill()).toBe('SIGKILL');
      expect(['old', 'new']).toContain(await observe(file, old));
    }
  });
});
