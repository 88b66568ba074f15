// The issuer over time: key rotation without a restart, revocations and keys that survive a restart, clients removed
// while their tokens live, and the audit trail of token decisions.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rotateSigningKey } from '../../src/issuer/key-rotation.js';
import { loadKeyEncryptionKey } from '../../src/lib/key-encryption.js';
import Database from 'better-sqlite3';
import { removeDir, type TestGateway } from '../support/harness.js';
import { RawConnection } from '../security/raw-client.js';
import { addClient, basicAuth, callWith, getToken, postForm, startIssuerGateway, withIssuer, withStore } from '../support/issuer.js';

async function rotate(gw: TestGateway, activationDelayS: number): Promise<string> {
  const kek = loadKeyEncryptionKey({ file: join(gw.dataDir, 'master.key') });
  const key = await withStore(gw, (store) => rotateSigningKey(store, kek, { alg: 'EdDSA', now: Date.now(), activationDelayS, maxTokenLifetimeS: 600 }));
  return key.kid;
}

async function jwksKids(gw: TestGateway): Promise<string[]> {
  const res = await callWith(gw, '/.well-known/jwks.json', undefined);
  expect(res.status).toBe(200);
  return ((res.json?.['keys'] ?? []) as { kid: string }[]).map((key) => key.kid);
}

describe('signing-key rotation without a restart', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway();
  });
  afterAll(() => gw.stop());

  it('publishes a rotated key first, signs with it only once active, and keeps old tokens valid', async () => {
    const client = await addClient(gw);
    const before = await getToken(gw, client);
    const oldKid = decodeProtectedHeader(before).kid;
    expect(await jwksKids(gw)).toEqual([oldKid]);

    // Publish-first: a key that activates in an hour is in the JWKS at once, but tokens are still signed with the old one.
    const pending = await rotate(gw, 3600);
    await gw.gateway.issuer!.refresh();
    expect(new Set(await jwksKids(gw))).toEqual(new Set([oldKid, pending]));
    expect(decodeProtectedHeader(await getToken(gw, client)).kid).toBe(oldKid);

    // A second rotation that activates at once hands over from the pending key; new tokens carry the new kid.
    const active = await rotate(gw, 0);
    await gw.gateway.issuer!.refresh();
    const after = await getToken(gw, client);
    expect(decodeProtectedHeader(after).kid).toBe(active);
    expect(await jwksKids(gw)).toContain(active);

    // Tokens signed by the retired key verify until they expire: its key stays published.
    expect((await callWith(gw, '/api', `Bearer ${before}`)).status).toBe(200);
    expect((await callWith(gw, '/api', `Bearer ${after}`)).status).toBe(200);
  });
});

describe('state that survives a restart', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-restart-'));
  afterAll(() => removeDir(dataDir));
  // A fixed issuer: with port 0 the default issuer (https://localhost:<port>) would change with the restart.
  const configure = (base: Parameters<typeof withIssuer>[0]) => withIssuer(base, { issuer: 'https://gw.restart.test' });

  it('keeps signing keys, clients and revocations; a revoked token stays refused after the restart', async () => {
    const first = await startIssuerGateway(configure, { dataDir });
    const client = await addClient(first);
    const kept = await getToken(first, client);
    const revoked = await getToken(first, client);
    const revocation = await postForm(first, '/oauth2/revoke', `token=${revoked}`, { authorization: basicAuth(client.id, client.secret) });
    expect(revocation.status).toBe(200);
    expect((await callWith(first, '/api', `Bearer ${revoked}`)).status).toBe(401);
    await first.stop();

    const second = await startIssuerGateway(configure, { dataDir });
    try {
      // The control: the same key, client and issuer are back, so the unrevoked token still works...
      expect((await callWith(second, '/api', `Bearer ${kept}`)).status).toBe(200);
      // ...and the revoked one is refused for being revoked, not for anything else.
      const res = await callWith(second, '/api', `Bearer ${revoked}`);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
      const records = await second.auditRecords();
      expect(records.filter((r) => r.route === 'api' && r.decision === 'deny').map((r) => r.reason)).toContain('token revoked');
    } finally {
      await second.stop();
    }
  });
});

describe('clients and the audit trail', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway();
  });
  afterAll(() => gw.stop());

  it('a removed client loses its live tokens at the next refresh', async () => {
    const client = await addClient(gw);
    const token = await getToken(gw, client);
    expect((await callWith(gw, '/api', `Bearer ${token}`)).status).toBe(200);
    expect(await withStore(gw, (store) => store.removeClient(client.id))).toBe(true);
    await gw.gateway.issuer!.refresh();
    const res = await callWith(gw, '/api', `Bearer ${token}`);
    expect(res.status).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
  });

  it('records every token decision with the client as subject, never the secret or the token', async () => {
    const client = await addClient(gw);
    const token = await getToken(gw, client);
    const refused = await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(client.id, `${client.secret}x`) });
    expect(refused.status).toBe(401);

    const records = (await gw.auditRecords()).filter((r) => r.stage === 'issuer' && r.subject === client.id);
    expect(records.map((r) => [r.decision, r.code, r.auth_method])).toEqual([
      ['allow', null, 'client_secret_basic'],
      ['deny', 'invalid_client', null],
    ]);
    // One record per request: the endpoint's own, never an anonymous allow beside it.
    const tokenRecords = (await gw.auditRecords()).filter((r) => r.route === 'oauth-token');
    expect(new Set(tokenRecords.map((r) => r.request_id)).size).toBe(tokenRecords.length);
    expect(tokenRecords.filter((r) => r.subject === 'anonymous')).toEqual([]);
    const auditDir = join(gw.dataDir, 'audit');
    const everything =
      readdirSync(auditDir)
        .map((name) => readFileSync(join(auditDir, name), 'utf8'))
        .join('') + gw.logs.join('');
    expect(everything).not.toContain(client.secret);
    expect(everything).not.toContain(token);
    expect(everything).not.toContain(token.split('.')[2]);
  });
});

describe('a fault inside an OAuth endpoint', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway();
  });
  afterAll(() => gw.stop());

  it('fails closed with 500 and is recorded as a deny (no token, no silent gap in the audit log)', async () => {
    const client = await addClient(gw);
    // No signing key at all: an operator deleted the rows behind the gateway's back.
    const db = new Database(join(gw.dataDir, 'gatehouse.db'));
    try {
      db.prepare('DELETE FROM signing_keys').run();
    } finally {
      db.close();
    }
    await gw.gateway.issuer!.refresh();
    const res = await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(client.id, client.secret) });
    expect(res.status).toBe(500);
    expect(res.text).not.toContain('access_token');
    const requestId = res.headers['x-request-id'];
    const records = (await gw.auditRecords()).filter((r) => r.request_id === requestId);
    expect(records.map((r) => [r.decision, r.stage, r.code])).toEqual([['deny', 'handler', 'internal_error']]);
  });
});

describe('a client that leaves while the token endpoint reads its form', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway();
  });
  afterAll(() => gw.stop());

  it('is on record as a deny with no status (nothing was answered), at stage issuer', async () => {
    const connection = await RawConnection.open(gw.port, gw.certs);
    connection.write(
      'POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=',
    );
    // Let the gateway start reading the body, then leave without the rest.
    await new Promise((resolve) => setTimeout(resolve, 100));
    connection.socket.destroy();
    let record: Awaited<ReturnType<TestGateway['auditRecords']>>[number] | undefined;
    for (let i = 0; i < 50 && record === undefined; i++) {
      record = (await gw.auditRecords()).find((r) => r.route === 'oauth-token' && r.reason === 'client left before the body was complete');
      if (record === undefined) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(record).toMatchObject({ decision: 'deny', stage: 'issuer', code: 'bad_request', status: null, subject: null });
  });
});
