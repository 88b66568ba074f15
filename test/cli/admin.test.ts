// `gatehouse clients …` and `gatehouse keys …` against a real store: the built CLI is spawned; the store file is opened
// directly only after the CLI process has exited.
import { client as clientRow } from '../support/store-fixtures.js';
import { adminCli } from '../support/cli.js';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import type { Client } from '../../src/store/contract.js';
import { generateClientId } from '../../src/issuer/secrets.js';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { initDevCertificates } from '../../src/tls/ca.js';

const ROOT = join(import.meta.dirname, '../..');
const CLI = join(ROOT, 'dist/src/cli/main.js');
const work = mkdtempSync(join(tmpdir(), 'gatehouse-admin-'));
const dataDir = join(work, 'data');
const dbFile = join(dataDir, 'gatehouse.db');
const configFile = join(work, 'gatehouse.yaml');
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** argon2id v=19 with m=19456, t=2, p=1 (the argon2 package writes the parameters in the order m, p, t). */
function isExpectedHash(hash: string): boolean {
  const match = /^\$argon2id\$v=19\$([a-z0-9=,]+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/.exec(hash);
  return match?.[1]?.split(',').sort().join(',') === 'm=19456,p=1,t=2';
}
const SECRET = /^[A-Za-z0-9_-]{43}$/;

beforeAll(async () => {
  const certs = join(work, 'certs');
  await initDevCertificates(certs);
  writeFileSync(
    configFile,
    `tls: { cert: ${certs}/server.pem, key: ${certs}/server-key.pem }\n` +
      `issuer: {}\n` +
      `routes:\n  - { id: p, match: { path_prefix: /p, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n` +
      `data_dir: ${dataDir}\n`,
  );
});

describe('gatehouse init, and admin commands on a store that does not exist', () => {
  it('admin commands refuse a data directory without a store (66) and create nothing there', () => {
    const missing = join(work, 'no', 'such', 'dir');
    for (const args of [
      ['clients', 'list'],
      ['clients', 'add', 'x', '--scope', 'read'],
      ['keys', 'list'],
      ['clients', 'show', 'AAAAAAAAAAAAAAAAAAAAAA'],
    ]) {
      const result = run([...args, '--data', missing]);
      expect(result.status, args.join(' ')).toBe(66);
      expect(result.stderr).toBe(`gatehouse: no credential store at ${join(missing, 'gatehouse.db')}\n`);
      expect(result.stdout).toBe('');
      expect(existsSync(join(work, 'no'))).toBe(false);
    }
  });

  it('init creates the store (0600) once; a second init changes nothing', () => {
    expect(ok(['init'])).toBe(`created credential store ${dbFile}\n`);
    expect(statSync(dbFile).mode & 0o777).toBe(0o600);
    expect(ok(['init'])).toMatch(/already exists; nothing to do/);
    expect(ok(['clients', 'list'])).toBe('no clients\n');
  });
});

const { run, ok, json } = adminCli(configFile);

async function storedClient(id: string): Promise<Client | undefined> {
  const store = SqliteCredentialStore.open(dbFile);
  try {
    return await store.getClient(id);
  } finally {
    await store.close();
  }
}

/** The store's bytes: the database file and, if one is left, its WAL. */
function storeBytes(): string {
  const wal = `${dbFile}-wal`;
  return readFileSync(dbFile, 'latin1') + (existsSync(wal) ? readFileSync(wal, 'latin1') : '');
}

function expectSecret(secret: string): void {
  expect(secret).toMatch(SECRET);
  expect(Buffer.from(secret, 'base64url')).toHaveLength(32);
}

interface Added {
  client_id: string;
  client_secret: string;
  name: string;
  scopes: string[];
  audiences: string[];
}

describe('gatehouse clients', () => {
  let textId = '';
  let textSecret = '';
  let added: Added;

  it('add prints the id and the secret once, and the store holds only argon2id hashes (0600)', () => {
    const text = ok(['clients', 'add', 'Billing service', '--scope', 'read write read']);
    textId = /^client_id: +(\S+)$/m.exec(text)?.[1] ?? '';
    textSecret = /^client_secret: +(\S+)$/m.exec(text)?.[1] ?? '';
    expect(textId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expectSecret(textSecret);
    expect(text).toMatch(/shown only now/);

    added = json<Added>(['clients', 'add', 'Reports', '--scope', 'reports:read', '--audience', 'https://api.example.com', '--audience', 'urn:example:reports']);
    expect(Object.keys(added).sort()).toEqual(['access_token_ttl_s', 'audiences', 'client_id', 'client_secret', 'name', 'require_dpop', 'scopes']);
    expect(added).toMatchObject({ require_dpop: false });
    expect(added).toMatchObject({ name: 'Reports', scopes: ['reports:read'], audiences: ['https://api.example.com', 'urn:example:reports'] });
    expectSecret(added.client_secret);

    const bytes = storeBytes();
    expect(bytes).not.toContain(textSecret);
    expect(bytes).not.toContain(added.client_secret);
    // Every argon2 PHC string in the file, whatever its variant or parameters: all must be argon2id at the set cost.
    const hashes = bytes.match(/\$argon2[a-z]*\$[^$]*\$[^$]*\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+/g) ?? [];
    expect(hashes.length).toBeGreaterThanOrEqual(2);
    for (const hash of hashes) expect(isExpectedHash(hash), hash).toBe(true);
    expect(statSync(dbFile).mode & 0o777).toBe(0o600);
  });

  it('stores the client as given: scopes de-duplicated, enabled, one secret without expiry', async () => {
    const client = await storedClient(textId);
    expect(client).toMatchObject({ name: 'Billing service', scopes: ['read', 'write'], audiences: [], enabled: true });
    expect(client?.secrets).toHaveLength(1);
    expect(isExpectedHash(client?.secrets[0]?.hash ?? '')).toBe(true);
    expect(client?.secrets[0]?.expiresAt).toBeNull();
  });

  it('list and show never print hashes or secrets', () => {
    const table = ok(['clients', 'list']);
    const list = json<Array<Record<string, unknown>>>(['clients', 'list']);
    const details = ok(['clients', 'show', textId]);
    const shown = json<Record<string, unknown>>(['clients', 'show', added.client_id]);
    for (const output of [table, JSON.stringify(list), details, JSON.stringify(shown)]) {
      expect(output).not.toContain('$argon2');
      expect(output).not.toContain(textSecret);
      expect(output).not.toContain(added.client_secret);
    }
    expect(table).toContain(textId);
    expect(table).toContain('Billing service');
    expect(list.map((c) => c['client_id'])).toEqual([textId, added.client_id]);
    expect(list[0]).toMatchObject({ name: 'Billing service', enabled: true, scopes: ['read', 'write'], active_secrets: 1 });
    expect(details).toMatch(/read write/);
    expect(shown).toMatchObject({ client_id: added.client_id, audiences: ['https://api.example.com', 'urn:example:reports'] });
    expect(shown['secrets']).toEqual([{ created_at: expect.any(String), expires_at: null, active: true }]);
  });

  it('--require-dpop: set at add, shown, turned off and on by update, each change recorded as a field change', async () => {
    const dpop = json<Added & { require_dpop: boolean }>(['clients', 'add', 'Keyholder', '--scope', 'read', '--require-dpop']);
    expect(dpop.require_dpop).toBe(true);
    expect((await storedClient(dpop.client_id))?.requireDpop).toBe(true);
    expect(ok(['clients', 'show', dpop.client_id])).toMatch(/^dpop: +required/m);
    const off = json<{ require_dpop: boolean; changes: Record<string, unknown> }>(['clients', 'update', dpop.client_id, '--no-require-dpop']);
    expect(off.require_dpop).toBe(false);
    expect(off.changes).toEqual({ require_dpop: { from: true, to: false } });
    expect((await storedClient(dpop.client_id))?.requireDpop).toBe(false);
    expect(ok(['clients', 'update', dpop.client_id, '--require-dpop'])).toMatch(/require_dpop: false -> true/);
    expect((await storedClient(dpop.client_id))?.requireDpop).toBe(true);
    expect(ok(['clients', 'remove', dpop.client_id])).toMatch(/removed/);
  });

  it('--tls-client-auth: the client gets no secret, authenticates by certificate, and a malformed SAN is a usage error', async () => {
    const added = json<Record<string, unknown>>(['clients', 'add', 'Svc', '--scope', 'read', '--tls-client-auth', 'spiffe://example.org/svc']);
    expect(added['client_secret']).toBeUndefined();
    expect(added['tls_client_auth_subject']).toBe('spiffe://example.org/svc');
    const id = String(added['client_id']);
    expect((await storedClient(id))?.secrets).toEqual([]);
    expect(ok(['clients', 'show', id])).toMatch(/^auth: +client certificate for spiffe:\/\/example\.org\/svc/m);
    expect(ok(['clients', 'update', id, '--tls-client-auth', 'Billing.Example.COM'])).toMatch(
      /tls_client_auth_subject: "spiffe:\/\/example\.org\/svc" -> "billing\.example\.com"/,
    );
    const bad = run(['clients', 'add', 'Bad', '--scope', 'read', '--tls-client-auth', 'not a san']);
    expect(bad.status).toBe(64);
    expect(bad.stderr).toMatch(/--tls-client-auth/);
    expect(ok(['clients', 'remove', id])).toMatch(/removed/);
  });

  it('disable and enable are idempotent', async () => {
    expect(ok(['clients', 'disable', textId])).toMatch(/disabled/);
    expect((await storedClient(textId))?.enabled).toBe(false);
    expect(ok(['clients', 'disable', textId])).toMatch(/already disabled/);
    expect(ok(['clients', 'enable', textId])).toMatch(/enabled/);
    expect((await storedClient(textId))?.enabled).toBe(true);
  });

  it('rotate-secret without --keep-old-for ends every old secret at once', async () => {
    const before = await storedClient(textId);
    const text = ok(['clients', 'rotate-secret', textId]);
    const secret = /^client_secret: +(\S+)$/m.exec(text)?.[1] ?? '';
    expectSecret(secret);
    expect(secret).not.toBe(textSecret);
    const after = await storedClient(textId);
    expect(after?.secrets).toHaveLength(1);
    expect(after?.secrets[0]?.hash).not.toBe(before?.secrets[0]?.hash);
    expect(after?.secrets[0]?.expiresAt).toBeNull();
    expect(storeBytes()).not.toContain(secret);
  });

  it('rotate-secret --keep-old-for keeps only the newest old secret, until now + duration', async () => {
    const start = Date.now();
    const first = json<{ client_id: string; client_secret: string; old_secret_expires_at: string | null }>([
      'clients',
      'rotate-secret',
      textId,
      '--keep-old-for',
      '1h',
    ]);
    expectSecret(first.client_secret);
    const expiry = Date.parse(first.old_secret_expires_at ?? '');
    expect(expiry).toBeGreaterThanOrEqual(start + 3_600_000);
    expect(expiry).toBeLessThanOrEqual(Date.now() + 3_600_000);
    const middle = await storedClient(textId);
    expect(middle?.secrets.map((s) => s.expiresAt).sort()).toEqual([expiry, null].sort());

    // A second rotation: still two secrets at most; the previous newest is kept (for 7 d), the 1 h one is dropped.
    const second = json<{ old_secret_expires_at: string | null }>(['clients', 'rotate-secret', textId, '--keep-old-for', '7d']);
    const after = await storedClient(textId);
    expect(after?.secrets).toHaveLength(2);
    const previousNewest = middle?.secrets.find((s) => s.expiresAt === null);
    const kept = after?.secrets.find((s) => s.expiresAt !== null);
    expect(kept?.hash).toBe(previousNewest?.hash);
    expect(Date.parse(second.old_secret_expires_at ?? '')).toBe(kept?.expiresAt);
    expect(kept?.expiresAt).toBeGreaterThan(start + 7 * 86_400_000 - 1);
    expect(ok(['clients', 'show', textId])).toMatch(/2 active/);
  });

  it('remove deletes the client; unknown ids exit 66 with a clear message', async () => {
    expect(ok(['clients', 'remove', added.client_id])).toMatch(/removed/);
    expect(await storedClient(added.client_id)).toBeUndefined();
    for (const args of [
      ['clients', 'remove', added.client_id],
      ['clients', 'show', added.client_id],
      ['clients', 'rotate-secret', added.client_id],
    ]) {
      const result = run(args);
      expect(result.status).toBe(66);
      expect(result.stderr).toBe(`gatehouse: no client with id ${added.client_id}\n`);
      expect(result.stdout).toBe('');
    }
  });

  it('exits 64 for a malformed id and for bad arguments', () => {
    const cases: Array<[string[], RegExp]> = [
      [['clients', 'show', 'not/an id'], /not a client id/],
      [['clients', 'add', 'x', '--scope', 'read "write"'], /not a scope token/],
      [['clients', 'add', 'x', '--scope', '  '], /at least one scope/],
      [['clients', 'add', 'x'], /--scope/],
      [['clients', 'add', 'x', '--scope', 'read', '--audience', 'api.example.com'], /absolute URI/],
      [['clients', 'add', 'bad\u0007name', '--scope', 'read'], /control/],
      [['clients', 'rotate-secret', textId, '--keep-old-for', '31d'], /30d/],
      [['clients', 'rotate-secret', textId, '--keep-old-for', '10'], /unit/],
    ];
    for (const [args, message] of cases) {
      const result = run(args);
      expect(result.status, args.join(' ')).toBe(64);
      expect(result.stderr).toMatch(message);
    }
  });

  it('exits 78 for an invalid config file', () => {
    const result = spawnSync(process.execPath, [CLI, 'clients', 'list', '--config', join(work, 'missing.yaml')], { encoding: 'utf8' });
    expect(result.status).toBe(78);
    expect(result.stderr).toMatch(/cannot read file/);
  });

  it("exits 1 with the store's message, not a stack, when the store cannot be opened (-d overrides data_dir)", () => {
    const notADir = join(work, 'plain-file');
    writeFileSync(notADir, '');
    const result = run(['clients', 'list', '-d', notADir]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^gatehouse: open .*plain-file.*gatehouse\.db: E[A-Z]+\n$/);
  });
});

interface KeyView {
  kid: string;
  alg: string;
  state: string;
  created_at: string;
  activates_at: string;
  retired_at: string | null;
  expires_at: string | null;
}

describe('client ids that begin with "-"', () => {
  // The shape of an id issued before generated ids were kept from starting with "-" (one in 64 of them).
  const dashId = '-nQndXb2kQ3dY5wJmT8pAw';

  it('are never generated any more', () => {
    for (let i = 0; i < 20_000; i++) {
      const id = generateClientId();
      if (id.startsWith('-') || !/^[A-Za-z0-9_-]{22}$/.test(id)) throw new Error(`bad id ${id}`);
    }
  });

  it('that exist can be shown, disabled, enabled, updated and removed, as given or after --', async () => {
    const store = SqliteCredentialStore.open(dbFile, { create: false });
    try {
      const now = Date.now();
      await store.createClient(clientRow(dashId, { name: 'legacy', secrets: [], scopes: ['read'], audiences: [], createdAt: now, updatedAt: now }));
    } finally {
      await store.close();
    }
    expect(ok(['clients', 'show', dashId])).toContain(`client_id:  ${dashId}`);
    expect(ok(['clients', 'show', '--json', dashId])).toContain(`"client_id": "${dashId}"`);
    // With "--" (the documented spelling): everything after it is the id.
    const separated = spawnSync(process.execPath, [CLI, 'clients', 'disable', '--config', configFile, '--', dashId], { encoding: 'utf8', timeout: 20_000 });
    expect(separated.stderr).toBe('');
    expect(separated.stdout).toMatch(/disabled/);
    expect((await storedClient(dashId))?.enabled).toBe(false);
    expect(ok(['clients', 'enable', dashId])).toMatch(/enabled/);
    expect(ok(['clients', 'update', dashId, '--name', 'legacy 2'])).toMatch(/updated/);
    expect(ok(['clients', 'rotate-secret', dashId, '--keep-old-for', '1h'])).toMatch(/^client_id: +-nQnd/m);
    expect(ok(['clients', 'remove', dashId])).toBe(`client ${dashId} removed\n`);
    expect(await storedClient(dashId)).toBeUndefined();
    // Options keep their meaning, and an id in the wrong place is still no option.
    expect(run(['clients', 'show', dashId]).status).toBe(66);
    expect(run(['clients', 'show', '-nQnd']).status).toBe(64);
  });
});

describe('the admin audit chain', () => {
  const auditDir = join(dataDir, 'audit');
  const adminLines = (): string =>
    readdirSync(auditDir)
      .filter((name) => name.startsWith('_admin.') && name.endsWith('.jsonl'))
      .map((name) => readFileSync(join(auditDir, name), 'utf8'))
      .join('');

  it('records every change with the OS user who made it, in a chain that verifies, and never a secret or a hash', () => {
    const added = json<Added>(['clients', 'add', 'Logged', '--scope', 'read']);
    ok(['clients', 'disable', added.client_id]);
    const rotated = json<{ client_secret: string }>(['clients', 'rotate-secret', added.client_id]);
    ok(['clients', 'remove', added.client_id]);
    const records = readRecords(auditDir).filter((r) => r.instance === '_admin');
    const mine = records.filter((r) => r.type === 'admin' && r['target'] === added.client_id);
    expect(mine.map((r) => r['action'])).toEqual(['client.add', 'client.disable', 'client.rotate_secret', 'client.remove']);
    for (const record of mine) expect(record['actor']).toMatchObject({ os_user: userInfo().username, uid: userInfo().uid, pid: expect.any(Number) });
    // Each command's records are covered by a signed checkpoint, so a cut tail is detectable like a gateway's.
    expect(records.at(-1)?.type).toBe('checkpoint');
    const text = adminLines();
    expect(text).not.toContain(added.client_secret);
    expect(text).not.toContain(rotated.client_secret);
    expect(text).not.toContain('$argon2');
    const verified = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--config', configFile, '--json'], { encoding: 'utf8', timeout: 20_000 });
    expect(verified.status, verified.stdout).toBe(0);
    // Who changed this client, from the query a user would type.
    const query = spawnSync(process.execPath, [CLI, 'audit', 'query', '--config', configFile, '--type', 'admin', '--client', added.client_id, '--json'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(query.status, query.stderr).toBe(0);
    expect(
      query.stdout
        .trim()
        .split('\n')
        .map((line) => (JSON.parse(line) as { action: string }).action),
    ).toEqual(['client.add', 'client.disable', 'client.rotate_secret', 'client.remove']);
  });

  it('an edited admin record is found by verify', () => {
    const added = json<Added>(['clients', 'add', 'Edited', '--scope', 'read']);
    const name =
      readdirSync(auditDir)
        .filter((n) => n.startsWith('_admin.') && n.endsWith('.jsonl'))
        .sort()
        .at(-1) ?? '';
    const copy = join(work, 'edited-audit');
    mkdirSync(copy, { recursive: true });
    for (const n of readdirSync(auditDir).filter((n) => n.endsWith('.jsonl'))) writeFileSync(join(copy, n), readFileSync(join(auditDir, n)));
    writeFileSync(join(copy, name), readFileSync(join(auditDir, name), 'utf8').replace(`"target":"${added.client_id}"`, `"target":"someone-else"`));
    const verified = spawnSync(process.execPath, [CLI, 'audit', 'verify', '--dir', copy, '--json'], { encoding: 'utf8', timeout: 20_000 });
    expect(verified.status).toBe(1);
    expect(JSON.parse(verified.stdout)).toMatchObject({
      ok: false,
      chains: expect.arrayContaining([expect.objectContaining({ instance: '_admin', break: expect.objectContaining({ kind: 'modified', segment: name }) })]),
    });
  });

  it('a change that cannot be recorded is still reported (the secret is not lost), then exits 1 naming the log', async () => {
    // The audit directory is a file here: no account, root included, can create a segment in it.
    const brokenAudit = join(work, 'broken-audit');
    writeFileSync(brokenAudit, 'not a directory\n');
    const brokenConfig = join(work, 'broken-audit.yaml');
    writeFileSync(brokenConfig, `${readFileSync(configFile, 'utf8')}audit: { dir: ${brokenAudit} }\n`);
    const result = spawnSync(process.execPath, [CLI, 'clients', 'add', 'Unlogged', '--scope', 'read', '--config', brokenConfig], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(result.status).toBe(1);
    const id = /^client_id: +(\S+)$/m.exec(result.stdout)?.[1] ?? '';
    expect(result.stdout).toMatch(/^client_secret: +\S{43}$/m);
    expect(result.stderr).toMatch(new RegExp(`^gatehouse: client.add ${id} was made but could not be recorded in the admin audit chain in ${brokenAudit}: `));
    expect(await storedClient(id)).toMatchObject({ name: 'Unlogged' });
  });

  it('two commands at once take turns on the chain: both are recorded', async () => {
    const { spawn } = await import('node:child_process');
    const run = (name: string): Promise<number | null> =>
      new Promise((resolve) =>
        spawn(process.execPath, [CLI, 'clients', 'add', name, '--scope', 'read', '--config', configFile], { stdio: 'ignore' }).on('exit', resolve),
      );
    expect(await Promise.all([run('Concurrent-1'), run('Concurrent-2'), run('Concurrent-3')])).toEqual([0, 0, 0]);
    const names = readRecords(auditDir)
      .filter((r) => r.type === 'admin' && r['action'] === 'client.add')
      .map((r) => (r['changes'] as { name: string }).name);
    expect(names).toEqual(expect.arrayContaining(['Concurrent-1', 'Concurrent-2', 'Concurrent-3']));
  });
});

describe('gatehouse keys', () => {
  it('rotate twice: the first key signs at once, the second is pending and retires the first', () => {
    const first = json<{ kid: string; alg: string; retires: unknown }>(['keys', 'rotate']);
    expect(first).toMatchObject({ alg: 'EdDSA', retires: null });
    const second = ok(['keys', 'rotate', '--alg', 'ES256']);
    expect(second).toMatch(/ES256/);
    expect(second).toContain(`key ${first.kid} stops signing at`);
    expect(statSync(join(dataDir, 'master.key')).mode & 0o777).toBe(0o600);

    const table = ok(['keys', 'list']);
    expect(table).toMatch(new RegExp(`${first.kid}\\s+EdDSA\\s+signing`));
    expect(table).toMatch(/ES256\s+pending/);

    const text = ok(['keys', 'list', '--json']);
    expect(text).not.toMatch(/"d"|PRIVATE KEY|encrypted/i);
    const keys = JSON.parse(text) as KeyView[];
    expect(keys.map((k) => [k.alg, k.state])).toEqual([
      ['EdDSA', 'signing'],
      ['ES256', 'pending'],
    ]);
    const [old, next] = keys;
    // Default issuer timings: 600 s activation delay; the old key stays published 600 s (token TTL) + 60 s after that.
    expect(Date.parse(next?.activates_at ?? '') - Date.parse(next?.created_at ?? '')).toBe(600_000);
    expect(old?.retired_at).toBe(next?.activates_at);
    expect(Date.parse(old?.expires_at ?? '') - Date.parse(old?.retired_at ?? '')).toBe(660_000);
    for (const key of keys)
      expect(Object.keys(key).sort()).toEqual(['activates_at', 'alg', 'created_at', 'expires_at', 'kid', 'retired_at', 'revoked_at', 'state']);
  });

  it('exits 78 for an invalid GATEHOUSE_MASTER_KEY, naming the variable but not its value', () => {
    const result = run(['keys', 'rotate'], { GATEHOUSE_MASTER_KEY: 'not-a-key-value' });
    expect(result.status).toBe(78);
    expect(result.stderr).toMatch(/GATEHOUSE_MASTER_KEY/);
    expect(result.stderr).not.toContain('not-a-key-value');
  });

  it('exits 64 for an unknown algorithm', () => {
    expect(run(['keys', 'rotate', '--alg', 'RS256']).status).toBe(64);
  });

  it('refuses to rotate under a master key that does not open the stored keys (78), and leaves the store as it was', () => {
    // The keys above were sealed with data_dir/master.key; a shell with another GATEHOUSE_MASTER_KEY must not add a key
    // the gateway could never open.
    const before = ok(['keys', 'list', '--json']);
    const wrong = run(['keys', 'rotate'], { GATEHOUSE_MASTER_KEY: Buffer.alloc(32, 9).toString('base64url') });
    expect(wrong.status).toBe(78);
    expect(wrong.stderr).toMatch(/does not decrypt/);
    expect(ok(['keys', 'list', '--json'])).toBe(before);

    // Without the key file (and without the variable) nothing is created and nothing is rotated.
    const keyFile = join(dataDir, 'master.key');
    const saved = readFileSync(keyFile);
    rmSync(keyFile);
    try {
      const missing = run(['keys', 'rotate']);
      expect(missing.status).toBe(78);
      expect(missing.stderr).toMatch(/GATEHOUSE_MASTER_KEY/);
      expect(existsSync(keyFile)).toBe(false);
    } finally {
      writeFileSync(keyFile, saved, { mode: 0o600 });
    }
    expect(ok(['keys', 'list', '--json'])).toBe(before);
  });
});
