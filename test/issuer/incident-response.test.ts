// Incident response with the real `gatehouse` command against running gateways on one store: a disable ends a client's
// tokens for good (enable, restart and a second instance do not bring them back), `clients update` changes what new
// tokens get, `keys revoke` and `keys rotate --now` take a key out of service without waiting, and the audit records say
// what happened (whose token, which token, why).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/event.js';
import { readRecords } from '../../src/audit/read.js';
import { removeDir, type TestGateway } from '../support/harness.js';
import {
  addClient,
  basicAuth,
  callWith,
  getToken,
  postForm,
  readClient,
  startIssuerGateway,
  updateClient,
  withIssuer,
  type TestClient,
} from '../support/issuer.js';

const CLI = join(import.meta.dirname, '../../dist/src/cli/main.js');
const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-incident-'));
const configFile = join(dataDir, 'cli.yaml');
afterAll(() => removeDir(dataDir));

// A fixed issuer, so tokens stay valid across a restart and between two instances on different ports.
const configure = (base: Parameters<typeof withIssuer>[0]) => withIssuer(base, { issuer: 'https://gw.incident.test', refresh_interval_ms: 60_000 });

/** Runs the built CLI against the gateways' store, as an operator would. */
function gatehouse(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const { GATEHOUSE_MASTER_KEY: _ignored, ...env } = process.env;
  const result = spawnSync(process.execPath, [CLI, ...args, '--config', configFile, '--data', dataDir], { encoding: 'utf8', timeout: 20_000, env });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function ok(...args: string[]): string {
  const result = gatehouse(...args);
  expect(result.stderr, args.join(' ')).toBe('');
  expect(result.status, args.join(' ')).toBe(0);
  return result.stdout;
}

async function status(gw: TestGateway, token: string): Promise<number> {
  return (await callWith(gw, '/api', `Bearer ${token}`)).status;
}

async function recordOf(gw: TestGateway, requestId: string | undefined): Promise<AuditRecord | undefined> {
  return (await gw.auditRecords()).find((record) => record.request_id === requestId);
}

let gw: TestGateway;
beforeAll(async () => {
  gw = await startIssuerGateway(configure, { dataDir });
  writeFileSync(
    configFile,
    `tls: { cert: ${gw.certs.paths.serverCert}, key: ${gw.certs.paths.serverKey} }\nissuer: { refresh_interval_ms: 60000 }\n` +
      `routes:\n  - { id: p, match: { path_prefix: /p, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n`,
  );
});
afterAll(() => gw.stop());

describe('a disable ends tokens for good', () => {
  let client: TestClient;
  let before = '';

  it('disable refuses the live token; enable lets the client in again but keeps the old token dead', async () => {
    client = await addClient(gw);
    before = await getToken(gw, client);
    expect(await status(gw, before)).toBe(200);

    expect(ok('clients', 'disable', client.id)).toMatch(/disabled.*also after an enable/);
    await gw.gateway.issuer!.refresh();
    expect(await status(gw, before)).toBe(401);

    expect(ok('clients', 'enable', client.id)).toMatch(/enabled.*no token issued before this enable is accepted/);
    await gw.gateway.issuer!.refresh();
    // The regression: the token issued before the disable worked again (200) after the enable.
    const res = await callWith(gw, '/api', `Bearer ${before}`);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    // The control: the client itself is back, and a token issued after the enable works at once.
    const after = await getToken(gw, client);
    expect(await status(gw, after)).toBe(200);
    // ...because it was issued at or after the cut-off the enable set (the second after the enable began).
    const cutOff = (await readClient(gw, client.id))?.tokensNotBeforeS ?? Number.POSITIVE_INFINITY;
    expect(cutOff).toBeGreaterThan(decodeJwt(before).iat ?? 0);
    expect(decodeJwt(after).iat).toBeGreaterThanOrEqual(cutOff);
  });

  it('the old token stays dead after a restart and on a second instance; the new one works on both', async () => {
    const after = await getToken(gw, client);
    await gw.stop();
    gw = await startIssuerGateway(configure, { dataDir });
    // Each gateway writing into one audit directory keeps its own chain.
    const second = await startIssuerGateway((base) => ({ ...configure(base), audit: { instance: 'second' } }), { dataDir });
    try {
      for (const instance of [gw, second]) {
        expect(await status(instance, before)).toBe(401);
        expect(await status(instance, after)).toBe(200);
      }
    } finally {
      await second.stop();
    }
  });

  it('the token endpoint never issues a token its own cut-off would refuse (a disable made on a machine whose clock runs ahead)', async () => {
    const client = await addClient(gw);
    const ahead = Math.floor(Date.now() / 1000) + 5;
    await updateClient(gw, client.id, (c) => ({ ...c, tokensNotBeforeS: ahead }));
    const res = await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(client.id, client.secret) });
    expect(res.status).toBe(503);
    expect(res.json?.['error']).toBe('temporarily_unavailable');
    expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(4);
    expect(Number(res.headers['retry-after'])).toBeLessThanOrEqual(5);
    expect(await recordOf(gw, res.headers['x-request-id'] as string)).toMatchObject({
      decision: 'deny',
      client_id: client.id,
      reason: 'token iat would precede the client token cut-off',
    });
    // The control: without the cut-off the same request gets a token.
    await updateClient(gw, client.id, (c) => ({ ...c, tokensNotBeforeS: null }));
    expect((await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(client.id, client.secret) })).status).toBe(200);
  });
});

describe('clients update', () => {
  it('changes scopes, audiences and token lifetime for new tokens, and records who changed what', async () => {
    const client = await addClient(gw, { scopes: ['echo:read'] });
    const out = ok('clients', 'update', client.id, '--scope', 'echo:read a:1', '--token-ttl', '2m', '--name', 'renamed');
    expect(out).toMatch(/scopes: \["echo:read"\] -> \["echo:read","a:1"\]/);
    const res = await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(client.id, client.secret) });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ expires_in: 120, scope: 'echo:read a:1' });
    const claims = decodeJwt(String(res.json?.['access_token']));
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(120);
    expect((await callWith(gw, '/any', `Bearer ${String(res.json?.['access_token'])}`)).status).toBe(200);
    // "default" goes back to the issuer's lifetime (stored as null), for update and add alike.
    expect(ok('clients', 'update', client.id, '--token-ttl', 'default')).toMatch(/access_token_ttl_s: 120 -> null/);
    expect((await readClient(gw, client.id))?.accessTokenTtlS).toBeNull();
    const added = JSON.parse(ok('clients', 'add', 'default-ttl', '--scope', 'echo:read', '--token-ttl', 'default', '--json')) as {
      access_token_ttl_s: unknown;
    };
    expect(added.access_token_ttl_s).toBeNull();

    const lines = readRecords(join(dataDir, 'audit')).filter((record) => record.type === 'admin');
    const update = lines.find((line) => line['action'] === 'client.update' && line['target'] === client.id);
    expect(update).toMatchObject({
      instance: '_admin',
      changes: { name: { to: 'renamed' }, scopes: { from: ['echo:read'], to: ['echo:read', 'a:1'] }, access_token_ttl_s: { from: null, to: 120 } },
      actor: { uid: process.getuid?.() },
    });
    expect(typeof (update?.['actor'] as Record<string, unknown> | undefined)?.['os_user']).toBe('string');
  });

  it("refuses a lifetime above the issuer's, no change at all, and conflicting audience options (64)", async () => {
    const client = await addClient(gw);
    for (const [args, message] of [
      [['--token-ttl', '11m'], /at most the issuer's access_token_ttl_s \(600s\)/],
      [['--token-ttl', '10s'], /at least 30s/],
      [[], /nothing to change/],
      [['--audience', 'https://a.example', '--clear-audiences'], /cannot be combined/],
      [['--scope', 'bad"scope'], /not a scope token/],
    ] as const) {
      const result = gatehouse('clients', 'update', client.id, ...args);
      expect(result.status, args.join(' ')).toBe(64);
      expect(result.stderr).toMatch(message);
    }
  });

  it('warns that scopes are space-separated when one contains a comma, and still applies it', () => {
    const id = JSON.parse(ok('clients', 'add', 'commas', '--scope', 'echo:read', '--json')).client_id as string;
    const result = gatehouse('clients', 'update', id, '--scope', 'a,b');
    expect(result.status).toBe(0);
    expect(result.stderr).toBe('gatehouse: warning: scope "a,b" contains a comma: scopes are separated by spaces (--scope "a b")\n');
  });
});

describe('emergency key changes', () => {
  it('keys rotate --now signs with the new key at once and says the publication delay was skipped', async () => {
    const client = await addClient(gw);
    const oldKid = decodeProtectedHeader(await getToken(gw, client)).kid;
    const out = JSON.parse(ok('keys', 'rotate', '--now', '--json')) as {
      kid: string;
      without_publication_delay: boolean;
      stopped: Array<{ kid: string; signed: boolean }>;
    };
    expect(out).toMatchObject({ without_publication_delay: true, stopped: [{ kid: oldKid, signed: true }] });
    await gw.gateway.issuer!.refresh();
    expect(decodeProtectedHeader(await getToken(gw, client)).kid).toBe(out.kid);
    expect(ok('keys', 'list')).toMatch(new RegExp(`${out.kid}\\s+EdDSA\\s+signing`));
    // In text form the skipped delay is a warning on stderr; stdout stays the report.
    const text = gatehouse('keys', 'rotate', '--now');
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`key ${out.kid} stops signing now; it only verifies until`));
    expect(text.stderr).toMatch(/^gatehouse: warning: the new key signs without the 600s publication delay\./);
    await gw.gateway.issuer!.refresh();
    await gw.gateway.audit.flush();
    // Each switch of the key this gateway signs with is in its chain, once, naming both keys.
    const changes = readRecords(join(dataDir, 'audit')).filter((r) => r.type === 'signing_key_changed');
    expect(changes.map((r) => [r['previous_kid'], r['kid']])).toEqual([
      [oldKid, out.kid],
      [out.kid, gw.gateway.issuer!.currentSigningKid()],
    ]);
  });

  it('issue #22 item 9: after keys rotate then keys rotate --now, keys list shows exactly one key signing, and keys revoke of it says what signs next', async () => {
    ok('keys', 'rotate');
    const now = JSON.parse(ok('keys', 'rotate', '--now', '--json')) as { kid: string; stopped: Array<{ kid: string; signed: boolean }> };
    // The key that was signing stops now; the pending one from the first rotation never signs.
    expect(now.stopped.map((k) => k.signed).sort()).toEqual([false, true]);
    type Listed = { kid: string; state: string; retired_at: string | null; expires_at: string | null };
    const listed = JSON.parse(ok('keys', 'list', '--json')) as Listed[];
    expect(listed.filter((k) => k.state === 'signing').map((k) => k.kid)).toEqual([now.kid]);
    expect(listed.filter((k) => k.state === 'pending')).toEqual([]);
    const at = Date.now();
    // Nothing that is not signing carries a retirement still to come.
    for (const key of listed.filter((k) => k.state !== 'signing')) expect(Date.parse(key.retired_at ?? '0')).toBeLessThanOrEqual(at);
    await gw.gateway.issuer!.refresh();
    expect(gw.gateway.issuer!.currentSigningKid()).toBe(now.kid);

    const revoked = gatehouse('keys', 'revoke', now.kid);
    expect(revoked.status).toBe(0);
    // No key had a handover to keep: a new key signs; nothing is said to "go on signing".
    expect(revoked.stdout).not.toMatch(/goes on signing/);
    expect(revoked.stdout).toMatch(/new key \S+ \(EdDSA\) signs now/);
    const after = JSON.parse(ok('keys', 'list', '--json')) as Listed[];
    expect(after.filter((k) => k.state === 'signing')).toHaveLength(1);
    expect(after.find((k) => k.kid === now.kid)?.state).toBe('revoked');
    await gw.gateway.issuer!.refresh();
    expect(gw.gateway.issuer!.currentSigningKid()).toBe(after.find((k) => k.state === 'signing')?.kid);
  });

  it('keys revoke unpublishes the signing key, refuses its tokens at once, and another key signs immediately', async () => {
    const client = await addClient(gw);
    const token = await getToken(gw, client);
    const kid = decodeProtectedHeader(token).kid ?? '';
    expect(await status(gw, token)).toBe(200);

    const revoked = gatehouse('keys', 'revoke', kid);
    expect(revoked.status).toBe(0);
    expect(revoked.stdout).toContain(`key ${kid} revoked`);
    expect(revoked.stdout).toMatch(/new key \S+ \(EdDSA\) signs now/);
    expect(revoked.stderr).toMatch(/^gatehouse: warning: the new key signs without the 600s publication delay\./);
    await gw.gateway.issuer!.refresh();

    const refused = await callWith(gw, '/api', `Bearer ${token}`);
    expect(refused.status).toBe(401);
    const record = await recordOf(gw, refused.headers['x-request-id'] as string | undefined);
    // A revoked key may be in other hands, so its tokens name nobody in the record.
    expect(record).toMatchObject({ decision: 'deny', reason: 'signing key no longer published', subject: null });
    const jwks = await callWith(gw, '/.well-known/jwks.json', undefined);
    expect(((jwks.json?.['keys'] ?? []) as { kid: string }[]).map((k) => k.kid)).not.toContain(kid);

    const fresh = await getToken(gw, client);
    expect(decodeProtectedHeader(fresh).kid).not.toBe(kid);
    expect(await status(gw, fresh)).toBe(200);
    expect(ok('keys', 'list', '--json')).toContain('"state": "revoked"');
    expect(ok('keys', 'revoke', kid)).toMatch(/already revoked/);
  });

  it('keys revoke of an unknown kid exits 66 and changes nothing', () => {
    const before = ok('keys', 'list', '--json');
    const result = gatehouse('keys', 'revoke', 'no-such-kid');
    expect(result.status).toBe(66);
    expect(result.stderr).toBe('gatehouse: no signing key with kid no-such-kid\n');
    expect(ok('keys', 'list', '--json')).toBe(before);
  });
});

describe('audit records say what happened', () => {
  it("every decision names the configuration that decided it, as the boot's gateway_start does in full", async () => {
    const call = await callWith(gw, '/api', undefined);
    const record = await recordOf(gw, call.headers['x-request-id'] as string);
    const start = readRecords(join(dataDir, 'audit')).findLast((r) => r.type === 'gateway_start' && r.boot_id === record?.boot_id);
    expect(record?.config).toMatch(/^[0-9a-f]{16}$/);
    expect(String(start?.['config_sha256']).slice(0, 16)).toBe(record?.config);
    expect(start?.['signing_kid']).toEqual(expect.any(String));
  });

  it('LOG-11: the store failing and recovering is on record once each, with what failed', async () => {
    const db = new Database(join(dataDir, 'gatehouse.db'));
    const kid = gw.gateway.issuer!.currentSigningKid() ?? '';
    const saved = db.prepare('SELECT encrypted_private_key AS k FROM signing_keys WHERE kid = ?').get(kid) as { k: string };
    try {
      // A row the ring refuses: the refresh fails, and keeps failing, until it is put back.
      db.prepare('UPDATE signing_keys SET encrypted_private_key = ? WHERE kid = ?').run('not-a-sealed-key', kid);
      await gw.gateway.issuer!.refresh();
      await gw.gateway.issuer!.refresh();
    } finally {
      db.prepare('UPDATE signing_keys SET encrypted_private_key = ? WHERE kid = ?').run(saved.k, kid);
      db.close();
    }
    await gw.gateway.issuer!.refresh();
    await gw.gateway.audit.flush();
    const events = readRecords(join(dataDir, 'audit')).filter((r) => r.type === 'store_unavailable' || r.type === 'store_recovered');
    expect(events.map((r) => r.type)).toEqual(['store_unavailable', 'store_recovered']);
    expect(events[0]?.['error']).toEqual(expect.stringContaining(kid));
    expect(events[1]?.['unavailable_ms']).toEqual(expect.any(Number));
  });

  it("a token request records the issued token's jti and scopes; a bearer request records the same jti", async () => {
    const client = await addClient(gw, { scopes: ['echo:read', 'a:1'] });
    const res = await postForm(gw, '/oauth2/token', 'grant_type=client_credentials&scope=echo:read', { authorization: basicAuth(client.id, client.secret) });
    const token = String(res.json?.['access_token']);
    const jti = decodeJwt(token).jti;
    expect(await recordOf(gw, res.headers['x-request-id'] as string)).toMatchObject({ decision: 'allow', client_id: client.id, jti, scopes: ['echo:read'] });
    const call = await callWith(gw, '/api', `Bearer ${token}`);
    expect(await recordOf(gw, call.headers['x-request-id'] as string)).toMatchObject({
      decision: 'allow',
      subject: client.id,
      client_id: client.id,
      jti,
      scopes: ['echo:read'],
    });
  });

  it('an invalid resource is recorded as invalid_target, the error the client received', async () => {
    const client = await addClient(gw);
    for (const resource of ['not-a-uri', 'https://elsewhere.example']) {
      const res = await postForm(gw, '/oauth2/token', `grant_type=client_credentials&resource=${encodeURIComponent(resource)}`, {
        authorization: basicAuth(client.id, client.secret),
      });
      expect(res.json?.['error']).toBe('invalid_target');
      expect(await recordOf(gw, res.headers['x-request-id'] as string)).toMatchObject({ decision: 'deny', code: 'invalid_target', status: 400 });
    }
  });

  it('a disabled client and a wrong secret get identical answers but records that say why', async () => {
    const disabled = await addClient(gw, { enabled: false });
    const known = await addClient(gw);
    const answers = [
      await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(disabled.id, disabled.secret) }),
      await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(known.id, `${known.secret}x`) }),
      await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth('AAAAAAAAAAAAAAAAAAAAAA', known.secret) }),
    ];
    expect(new Set(answers.map((a) => a.text)).size).toBe(1);
    const reasons = await Promise.all(answers.map(async (a) => (await recordOf(gw, a.headers['x-request-id'] as string))?.reason));
    expect(reasons).toEqual(['client disabled', 'wrong secret', 'unknown client']);
    // The id tried is the subject; `client_id` names only a client that authenticated (anyone can present any id).
    const records = await Promise.all(answers.map((a) => recordOf(gw, a.headers['x-request-id'] as string)));
    expect(records.map((r) => [r?.subject, r?.client_id])).toEqual([
      [disabled.id, null],
      [known.id, null],
      ['AAAAAAAAAAAAAAAAAAAAAA', null],
    ]);
  });
});
