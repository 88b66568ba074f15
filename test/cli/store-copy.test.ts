// `gatehouse store copy` with the built command, on real stores: an embedded SQLite deployment (a client, the signing key
// `serve` made, a revoked token) moved to PostgreSQL, then `gatehouse serve` on the copy with the same master key issues a
// token to the ORIGINAL client secret, publishes the same kid, accepts a token the SQLite gateway issued and refuses the
// one revoked there. Also back to SQLite, the refusals (a target that is not empty: exit 1 and untouched; no source: 66;
// usage: 64; an unreachable server: 69 without printing the password) and the record in the admin audit chain.
// PostgreSQL tests are skipped with a visible message without GATEHOUSE_TEST_POSTGRES_URL.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import type { CredentialStore, StoreSnapshot } from '../../src/store/contract.js';
import { PostgresCredentialStore } from '../../src/store/postgres.js';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { initDevCertificates } from '../../src/tls/ca.js';
import { runCli, serveCli, type CliResult, type ServeProcess } from '../support/cli.js';
import { removeDir } from '../support/harness.js';
import { dropTestSchemas, POSTGRES_URL, testSchema } from '../support/services.js';
import { client as clientRow } from '../support/store-fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gatehouse-store-copy-'));
const certs = join(work, 'certs');
const masterKey = randomBytes(32).toString('base64url');
const servers: ServeProcess[] = [];
const agents: Agent[] = [];
let ca: Buffer;

/** One config for every deployment here: the store comes from --data (SQLite) or GATEHOUSE_DATABASE_URL and the schema. */
function writeConfig(name: string, schema?: string): string {
  const file = join(work, `${name}.yaml`);
  writeFileSync(
    file,
    `server: { host: 127.0.0.1, port: 0 }\n` +
      `tls: { cert: ${certs}/server.pem, key: ${certs}/server-key.pem }\n` +
      // A fixed issuer: tokens of the SQLite gateway are valid at the PostgreSQL one, as after a real move.
      `issuer: { issuer: 'https://gw.copy.test' }\n` +
      (schema !== undefined ? `store: { postgres_schema: ${schema} }\n` : '') +
      `routes:\n  - { id: api, match: { path_prefix: /api, methods: [GET] }, authn: [bearer], authz: { allow: authenticated, scopes: { all_of: [echo:read] } }, handler: { service: echo } }\n`,
  );
  return file;
}

/** The operator's environment: the master key (and a database URL when given), nothing of the test runner's own. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { GATEHOUSE_MASTER_KEY: _m, GATEHOUSE_DATABASE_URL: _d, ...inherited } = process.env;
  return { ...inherited, GATEHOUSE_MASTER_KEY: masterKey, ...extra };
}

const copy = (...args: string[]): CliResult => runCli(['store', 'copy', ...args], env());

function copied(...args: string[]): string {
  const result = copy(...args);
  expect(result.stderr, args.join(' ')).toBe('');
  expect(result.status, args.join(' ')).toBe(0);
  return result.stdout;
}

function ok(result: CliResult): string {
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  return result.stdout;
}

function agent(): Agent {
  const created = new Agent({ connect: { ca, servername: 'localhost' } });
  agents.push(created);
  return created;
}

async function serve(args: string[], extraEnv: Record<string, string> = {}): Promise<ServeProcess> {
  const server = await serveCli(args, env(extraEnv));
  servers.push(server);
  return server;
}

const basic = (c: { id: string; secret: string }): string => `Basic ${Buffer.from(`${c.id}:${c.secret}`).toString('base64')}`;

async function token(port: number, c: { id: string; secret: string }): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await request(`https://127.0.0.1:${port}/oauth2/token`, {
    method: 'POST',
    dispatcher: agent(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(c) },
    body: 'grant_type=client_credentials',
  });
  return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
}

async function revoke(port: number, c: { id: string; secret: string }, accessToken: string): Promise<number> {
  const response = await request(`https://127.0.0.1:${port}/oauth2/revoke`, {
    method: 'POST',
    dispatcher: agent(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(c) },
    body: `token=${accessToken}`,
  });
  await response.body.dump();
  return response.statusCode;
}

async function kids(port: number): Promise<string[]> {
  const response = await request(`https://127.0.0.1:${port}/.well-known/jwks.json`, { dispatcher: agent() });
  const body = (await response.body.json()) as { keys: { kid: string }[] };
  return body.keys.map((k) => k.kid).sort();
}

async function call(port: number, accessToken: string): Promise<number> {
  const response = await request(`https://127.0.0.1:${port}/api/x`, { dispatcher: agent(), headers: { authorization: `Bearer ${accessToken}` } });
  await response.body.dump();
  return response.statusCode;
}

async function snapshotOf(open: () => Promise<CredentialStore>): Promise<StoreSnapshot> {
  const store = await open();
  try {
    return await store.exportSnapshot(0);
  } finally {
    await store.close();
  }
}

/** Revocations are compared as sets: stores order rows with equal expiry by their own collation. */
function normalized(snapshot: StoreSnapshot): unknown {
  const by = <T>(rows: readonly T[], keyOf: (row: T) => string): T[] => [...rows].sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
  return {
    clients: by(snapshot.clients, (c) => c.id),
    signingKeys: by(snapshot.signingKeys, (k) => k.kid),
    revocations: by(snapshot.revocations, (r) => `${r.iss} ${r.jti}`),
  };
}

/** The SQLite source: a client, the signing key the first `serve` made, a token revoked there and one still good. */
const sourceData = join(work, 'source');
const sourceFile = join(sourceData, 'gatehouse.db');
const sqliteConfig = writeConfig('sqlite');
let original: { id: string; secret: string };
let sourceKids: string[];
let liveToken: string;
let revokedToken: string;

beforeAll(async () => {
  await initDevCertificates(certs);
  ca = readFileSync(join(certs, 'ca.pem'));
  ok(runCli(['init', '--config', sqliteConfig, '--data', sourceData], env()));
  const added = JSON.parse(
    ok(runCli(['clients', 'add', 'moving-client', '--scope', 'echo:read', '--json', '--config', sqliteConfig, '--data', sourceData], env())),
  ) as {
    client_id: string;
    client_secret: string;
  };
  original = { id: added.client_id, secret: added.client_secret };
  const gateway = await serve(['--config', sqliteConfig, '--data', sourceData]);
  const first = await token(gateway.port, original);
  const second = await token(gateway.port, original);
  expect(first.status).toBe(200);
  expect(second.status).toBe(200);
  revokedToken = first.body['access_token'] as string;
  liveToken = second.body['access_token'] as string;
  expect(await revoke(gateway.port, original, revokedToken)).toBe(200);
  expect(await call(gateway.port, revokedToken)).toBe(401);
  expect(await call(gateway.port, liveToken)).toBe(200);
  sourceKids = await kids(gateway.port);
  expect(sourceKids).toHaveLength(1);
  await gateway.stop();
}, 60_000);

afterAll(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  await Promise.all(agents.map((a) => a.close()));
  await dropTestSchemas();
  removeDir(work);
});

describe('gatehouse store copy: usage and missing stores (no server needed)', () => {
  it('missing --from or --to, a bad scheme, a bad path or schema, the same store twice: exit 64 with a specific message', () => {
    const target = `sqlite:${join(work, 'usage', 'gatehouse.db')}`;
    const cases: readonly [readonly string[], string][] = [
      [['--to', target], "required option '--from <store>' not specified"],
      [['--from', `sqlite:${sourceFile}`], "required option '--to <store>' not specified"],
      [
        ['--from', 'mysql://root:hunter2-secret@127.0.0.1/test', '--to', target],
        'gatehouse: --from: unsupported scheme "mysql"; give sqlite:PATH or a postgres:// URL\n',
      ],
      [['--from', sourceFile, '--to', target], 'gatehouse: --from: no scheme; give sqlite:PATH or a postgres:// URL\n'],
      [['--from', `sqlite:${sourceFile}`, '--to', 'sqlite:'], 'gatehouse: --to: give the database file, e.g. sqlite:data/gatehouse.db\n'],
      [['--from', `sqlite://${sourceFile}`, '--to', target], 'gatehouse: --from: sqlite:PATH takes a file path, not a URL'],
      [['--from', `sqlite:${sourceData}`, '--to', target], `gatehouse: --from: ${sourceData} is a directory; name the database file in it`],
      [['--from', `sqlite:${sourceFile}`, '--to', 'postgres://gate:hunter2-secret@'], 'gatehouse: --to: not a valid PostgreSQL URL'],
      [
        ['--from', `sqlite:${sourceFile}`, '--from-schema', 'x', '--to', target],
        'gatehouse: --from-schema is for a PostgreSQL store; --from is a SQLite file\n',
      ],
      [
        ['--from', `sqlite:${sourceFile}`, '--to', 'postgres://gate:hunter2-secret@127.0.0.1/test', '--to-schema', 'Bad-Name'],
        'gatehouse: --to-schema: "Bad-Name" is not a schema name',
      ],
      [
        ['--from', `sqlite:${sourceFile}`, '--to', `sqlite:${sourceFile}`],
        `gatehouse: --from and --to are the same store (sqlite:${sourceFile}); copy into another one\n`,
      ],
      [
        ['--from', 'postgres://gate:hunter2-secret@db.example:5432/gh', '--to', 'postgresql://other@DB.example/gh'],
        'gatehouse: --from and --to are the same store (postgres://gate@db.example:5432/gh (schema gatehouse)); copy into another one\n',
      ],
      [['--from', `sqlite:${sourceFile}`, '--to', target, '--data', work], 'gatehouse: --data needs --config'],
    ];
    for (const [args, message] of cases) {
      const result = copy(...args);
      expect(result.status, args.join(' ')).toBe(64);
      expect(result.stderr, args.join(' ')).toContain(message);
      expect(result.stderr).not.toContain('hunter2-secret');
      expect(result.stdout).toBe('');
    }
    // Through a symbolic link it is the same file too.
    const link = join(work, 'link.db');
    symlinkSync(sourceFile, link);
    expect(copy('--from', `sqlite:${sourceFile}`, '--to', `sqlite:${link}`).status).toBe(64);
    expect(existsSync(join(work, 'usage'))).toBe(false);
  });

  it('a source that does not exist: exit 66, and no target is created', () => {
    const missing = join(work, 'no-such', 'gatehouse.db');
    const target = join(work, 'never', 'gatehouse.db');
    const result = copy('--from', `sqlite:${missing}`, '--to', `sqlite:${target}`);
    expect(result.status).toBe(66);
    expect(result.stderr).toBe(`gatehouse: source: no credential store at ${missing}\n`);
    expect(existsSync(missing)).toBe(false);
    expect(existsSync(join(work, 'never'))).toBe(false);
  });

  it('sqlite → sqlite: the copy is identical; a second copy into it is refused (exit 1) and changes nothing', async () => {
    const target = join(work, 'sqlite-copy', 'gatehouse.db');
    const out = copied('--from', `sqlite:${sourceFile}`, '--to', `sqlite:${target}`);
    expect(out.split('\n')[0]).toBe(`copied 1 client, 1 signing key, 1 revocation from sqlite:${sourceFile} to sqlite:${target}`);
    expect(out).toContain('same master key');
    const source = await snapshotOf(async () => SqliteCredentialStore.open(sourceFile, { create: false }));
    const before = await snapshotOf(async () => SqliteCredentialStore.open(target, { create: false }));
    expect(before).toEqual(source);

    const again = copy('--from', `sqlite:${sourceFile}`, '--to', `sqlite:${target}`);
    expect(again.status).toBe(1);
    expect(again.stderr).toBe(
      `gatehouse: the target sqlite:${target} is not empty (it holds 1 client, 1 signing key, 1 revocation); ` +
        'store copy writes only into a store without clients, signing keys, revocations or a client CA. Nothing was changed.\n',
    );
    expect(again.stdout).toBe('');
    expect(await snapshotOf(async () => SqliteCredentialStore.open(target, { create: false }))).toEqual(before);
  });

  it('a target holding anything of its own is refused too, and keeps exactly what it held', async () => {
    const target = join(work, 'occupied', 'gatehouse.db');
    const store = SqliteCredentialStore.open(target);
    await store.createClient(clientRow('resident'));
    await store.close();
    const before = await snapshotOf(async () => SqliteCredentialStore.open(target, { create: false }));
    const result = copy('--from', `sqlite:${sourceFile}`, '--to', `sqlite:${target}`, '--json');
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('is not empty (it holds 1 client, 0 signing keys, 0 revocations)');
    expect(await snapshotOf(async () => SqliteCredentialStore.open(target, { create: false }))).toEqual(before);
  });
});

if (POSTGRES_URL === undefined) {
  describe.skip('gatehouse store copy to and from PostgreSQL: SKIPPED (set GATEHOUSE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test)', () => {
    it('needs a PostgreSQL server', () => undefined);
  });
} else {
  const url = POSTGRES_URL;
  const shown = `${new URL(url).protocol}//${new URL(url).username}@${new URL(url).host}${new URL(url).pathname}`;
  const schema = testSchema();
  const pg = (s: string) => () => PostgresCredentialStore.open({ url, schema: s, create: false });

  describe('gatehouse store copy to and from PostgreSQL', () => {
    it('sqlite → postgres: served with the same master key, the copy issues a token to the original secret, with the same kid', async () => {
      const out = copied('--from', `sqlite:${sourceFile}`, '--to', url, '--to-schema', schema);
      expect(out).toBe(
        `copied 1 client, 1 signing key, 1 revocation from sqlite:${sourceFile} to ${shown} (schema ${schema})\n` +
          'verified: the target reads back exactly as the source was read\n' +
          'serve the target with the same master key as the source: the signing keys were copied still sealed under it ' +
          '(GATEHOUSE_MASTER_KEY, or the source data_dir/master.key copied into the new data_dir, mode 0600)\n',
      );
      expect(normalized(await snapshotOf(pg(schema)))).toEqual(
        normalized(await snapshotOf(async () => SqliteCredentialStore.open(sourceFile, { create: false }))),
      );

      // A fresh data directory: nothing of the SQLite deployment but the master key (here GATEHOUSE_MASTER_KEY).
      const gateway = await serve(['--config', writeConfig('pg', schema), '--data', join(work, 'pg-data')], { GATEHOUSE_DATABASE_URL: url });
      expect(await kids(gateway.port)).toEqual(sourceKids);
      const issued = await token(gateway.port, original);
      expect(issued.status).toBe(200);
      expect(await call(gateway.port, issued.body['access_token'] as string)).toBe(200);
      // Tokens of the old gateway: the one still good works, the one revoked there stays revoked.
      expect(await call(gateway.port, liveToken)).toBe(200);
      expect(await call(gateway.port, revokedToken)).toBe(401);
      expect((await token(gateway.port, { id: original.id, secret: 'not-the-secret' })).status).toBe(401);
      await gateway.stop();
    });

    it('into a PostgreSQL schema that is not empty: exit 1, nothing changed', async () => {
      const before = await snapshotOf(pg(schema));
      const result = copy('--from', `sqlite:${sourceFile}`, '--to', url, '--to-schema', schema);
      expect(result.status).toBe(1);
      expect(result.stderr).toBe(
        `gatehouse: the target ${shown} (schema ${schema}) is not empty (it holds 1 client, 1 signing key, 1 revocation); ` +
          'store copy writes only into a store without clients, signing keys, revocations or a client CA. Nothing was changed.\n',
      );
      expect(await snapshotOf(pg(schema))).toEqual(before);
    });

    it('postgres → sqlite and postgres → postgres, with --json: one JSON object, the copies identical', async () => {
      const file = join(work, 'back', 'gatehouse.db');
      const back = JSON.parse(copied('--from', url, '--from-schema', schema, '--to', `sqlite:${file}`, '--json')) as Record<string, unknown>;
      expect(back).toEqual({
        from: { backend: 'postgres', url: shown, schema },
        to: { backend: 'sqlite', path: file },
        clients: 1,
        signing_keys: 1,
        revocations: 1,
        client_ca: false,
        certificates: 0,
        verified: true,
        recorded_in: null,
        master_key: expect.stringContaining('same master key') as unknown,
      });
      expect(normalized(await snapshotOf(async () => SqliteCredentialStore.open(file, { create: false })))).toEqual(normalized(await snapshotOf(pg(schema))));

      const other = testSchema();
      const json = JSON.parse(copied('--from', url, '--from-schema', schema, '--to', url, '--to-schema', other, '--json')) as Record<string, unknown>;
      expect(json['to']).toEqual({ backend: 'postgres', url: shown, schema: other });
      expect(await snapshotOf(pg(other))).toEqual(await snapshotOf(pg(schema)));
    });

    it('a PostgreSQL source schema without a store: exit 66, and the target is not created', () => {
      const target = join(work, 'from-missing-schema', 'gatehouse.db');
      const missing = testSchema();
      const result = copy('--from', url, '--from-schema', missing, '--to', `sqlite:${target}`);
      expect(result.status).toBe(66);
      expect(result.stderr).toBe(`gatehouse: source: no credential store in schema ${missing} at ${shown}\n`);
      expect(existsSync(target)).toBe(false);
    });

    it("with --config, the copy is recorded in that deployment's admin audit chain", async () => {
      const target = testSchema();
      const data = join(work, 'recorded');
      const config = writeConfig('recorded', target);
      const result = runCli(
        ['store', 'copy', '--from', `sqlite:${sourceFile}`, '--to', url, '--to-schema', target, '--config', config, '--data', data],
        env({ GATEHOUSE_DATABASE_URL: url }),
      );
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expect(result.stdout).toContain(`recorded in the admin audit chain in ${join(data, 'audit')}\n`);
      const records = readRecords(join(data, 'audit')).filter((r) => r.type === 'admin');
      expect(records.map((r) => [r['action'], r['target']])).toEqual([['store.copy', `${shown} (schema ${target})`]]);
      expect(records[0]?.['changes']).toEqual({
        from: `sqlite:${sourceFile}`,
        to: `${shown} (schema ${target})`,
        clients: 1,
        signing_keys: 1,
        revocations: 1,
        client_ca: false,
        certificates: 0,
      });
    });
  });
}

describe('gatehouse store copy: a PostgreSQL server that cannot be reached', () => {
  it('exit 69 either way round, the password never printed, nothing created', () => {
    const refused = 'postgres://gate:hunter2-secret@127.0.0.1:1/test';
    const target = join(work, 'unreached', 'gatehouse.db');
    const to = copy('--from', `sqlite:${sourceFile}`, '--to', refused, '--to-schema', 'gh_copy');
    expect(to.status).toBe(69);
    expect(to.stderr).toBe('gatehouse: target: open schema gh_copy at postgres://gate@127.0.0.1:1/test: connect ECONNREFUSED 127.0.0.1:1\n');
    const from = copy('--from', refused, '--to', `sqlite:${target}`, '--json');
    expect(from.status).toBe(69);
    expect(from.stderr).toBe('gatehouse: source: open schema gatehouse at postgres://gate@127.0.0.1:1/test: connect ECONNREFUSED 127.0.0.1:1\n');
    for (const result of [to, from]) expect(result.stdout + result.stderr).not.toContain('hunter2');
    expect(existsSync(join(work, 'unreached'))).toBe(false);
  });
});
