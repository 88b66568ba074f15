// The client CA kept in the store, seen from the gateway (issue #11 item 4): a listener with tls.store_client_ca trusts the
// CA once `ca init` made it (picked up while running), certificates it issues authenticate at mtls routes and at the token
// endpoint (tls_client_auth) at once, and a revoked certificate is refused on its next request, inside its validity, on a
// connection that was already open too — at mtls routes, at the token endpoint, and as the key of a cert-bound token.
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initClientCa, issueForClient, openClientCa } from '../../src/issuer/client-ca-store.js';
import { loadKeyEncryptionKey } from '../../src/lib/key-encryption.js';
import type { Client } from '../../src/store/contract.js';
import type { CertificateAndKey } from '../../src/tls/ca.js';
import type { IssuedClientCertificate } from '../../src/tls/client-ca.js';
import type { TestGateway } from '../support/harness.js';
import { addClient, readClient, send, startIssuerGateway, withIssuer, withStore, type OAuthResponse, type TestClient } from '../support/issuer.js';
import { route } from '../support/routes.js';

const IDENTITY = 'spiffe://gatehouse.test/billing';
let gw: TestGateway;
let client: TestClient;

beforeAll(async () => {
  gw = await startIssuerGateway((base) => ({
    ...withIssuer(base, {}, [route('whoami', '/m', { authn: ['mtls'], authz: { allow: 'authenticated' } })]),
    // Only the store's CA: the test CA of tls.client_ca is not trusted here.
    tls: { cert: base.tls.cert, key: base.tls.key, store_client_ca: true },
  }));
  client = await addClient(gw, { scopes: ['echo:read'], tlsClientAuthSubject: IDENTITY });
});
afterAll(() => gw.stop());

function kek() {
  return loadKeyEncryptionKey({ masterKey: undefined, file: join(gw.dataDir, 'master.key') });
}

async function issue(): Promise<IssuedClientCertificate & CertificateAndKey> {
  return withStore(gw, async (store) => {
    const ca = await openClientCa(store, kek());
    const registered = (await readClient(gw, client.id)) as Client;
    const issued = await issueForClient(store, ca, registered, { ttlS: 3600, now: Date.now() });
    return { ...issued, keyPem: issued.keyPem ?? '' };
  });
}

function whoami(cert: CertificateAndKey | undefined, dispatcher = gw.agent(cert !== undefined ? { cert } : {})): Promise<OAuthResponse> {
  return send(gw, { path: '/m', dispatcher });
}

function tokenFor(cert: CertificateAndKey): Promise<OAuthResponse> {
  return send(gw, {
    method: 'POST',
    path: '/oauth2/token',
    body: `grant_type=client_credentials&client_id=${client.id}`,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    dispatcher: gw.agent({ cert }),
  });
}

async function reasonOf(res: OAuthResponse): Promise<unknown> {
  return (await gw.auditRecords()).find((r) => r.request_id === res.headers['x-request-id'])?.['reason'];
}

let first: IssuedClientCertificate & CertificateAndKey;

describe('a listener trusting the store client CA', () => {
  it('verifies no client certificate while the store has no CA: not even one of the test CA', async () => {
    const res = await whoami(gw.certs.client);
    expect(res.status).toBe(401);
    expect(String(await reasonOf(res))).toMatch(/^client certificate not verified/);
  });

  it('trusts the CA once ca init made it, without a restart: an issued certificate authenticates at mtls routes as its identity', async () => {
    await withStore(gw, (store) => initClientCa(store, kek(), { commonName: 'Test Client CA', now: Date.now() }));
    first = await issue();
    await expect.poll(async () => (await whoami(first)).status, { timeout: 10_000 }).toBe(200);
    const res = await whoami(first);
    expect(res.json?.['principal']).toMatchObject({ subject: IDENTITY, method: 'mtls' });
    // The test CA stays untrusted: only tls.client_ca would add it.
    expect((await whoami(gw.certs.client)).status).toBe(401);
  });

  it('the certificate authenticates its client at the token endpoint at once (tls_client_auth), for a token bound to it', async () => {
    const res = await tokenFor(first);
    expect(res.status, res.text).toBe(200);
    expect(decodeJwt(String(res.json?.['access_token']))['cnf']).toEqual({ 'x5t#S256': first.thumbprint });
  });
});

describe('a revoked certificate (certs revoke)', () => {
  it('is refused on its next request, on an open connection too, at mtls routes, at the token endpoint and under its bound token', async () => {
    const token = String((await tokenFor(first)).json?.['access_token']);
    const kept = gw.agent({ cert: first });
    expect((await whoami(first, kept)).status).toBe(200);
    const api = (cert: CertificateAndKey) => send(gw, { path: '/api/x', headers: { authorization: `Bearer ${token}` }, dispatcher: gw.agent({ cert }) });
    expect((await api(first)).status).toBe(200);
    const second = await issue();

    await withStore(gw, (store) => store.revokeCertificate(first.serial.toLowerCase(), Date.now()));
    await expect.poll(async () => (await whoami(first, kept)).status, { timeout: 10_000 }).toBe(401);
    const refused = await whoami(first, kept);
    expect(await reasonOf(refused)).toBe('client certificate revoked');
    expect(refused.headers['www-authenticate']).toBeUndefined();

    const tokenRefused = await tokenFor(first);
    expect(tokenRefused.status).toBe(401);
    expect(tokenRefused.json?.['error']).toBe('invalid_client');

    const bound = await api(first);
    expect(bound.status).toBe(401);
    expect(bound.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    expect(await reasonOf(bound)).toBe('bound certificate revoked');

    // Another certificate of the same client is not revoked with it.
    expect((await whoami(second)).status).toBe(200);
    expect((await tokenFor(second)).status).toBe(200);
    await kept.close();
  });
});
