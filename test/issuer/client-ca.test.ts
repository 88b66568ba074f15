// The client CA kept in the store, seen from the gateway (issue #11 item 4): a listener with tls.store_client_ca trusts the
// CA once `ca init` made it (picked up while running), certificates it issues authenticate at mtls routes and at the token
// endpoint (tls_client_auth) at once, and a revoked certificate is refused on its next request, inside its validity, on a
// connection that was already open too — at mtls routes, at the token endpoint, and as the key of a cert-bound token.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import { initClientCa, issueForClient, openClientCa } from '../../src/issuer/client-ca-store.js';
import { RENEWALS_PER_HOUR } from '../../src/issuer/renewal.js';
import { loadKeyEncryptionKey } from '../../src/lib/key-encryption.js';
import type { Client } from '../../src/store/contract.js';
import { type CertificateAndKey, issueClientCertificate } from '../../src/tls/ca.js';
import { certificateThumbprintSha256 } from '../../src/lib/thumbprint.js';
import { pkcs12 } from '../../src/tls/pkcs12.js';
import type { IssuedClientCertificate } from '../../src/tls/client-ca.js';
import type { TestGateway } from '../support/harness.js';
import { addClient, readClient, send, startIssuerGateway, withIssuer, withStore, type OAuthResponse, type TestClient } from '../support/issuer.js';
import { opensslCsr } from '../support/csr.js';
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
const work = mkdtempSync(join(tmpdir(), 'gatehouse-renewal-'));
afterAll(async () => {
  await gw.stop();
  rmSync(work, { recursive: true, force: true });
});

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

let csrCount = 0;
/** A fresh P-256 key and its CSR made by `openssl req` (as a client would), asking for `san` when given. */
async function clientCsr(san?: string): Promise<{ readonly csr: string; readonly keyPem: string }> {
  const made = await opensslCsr(work, `renewal-${++csrCount}`, {
    subject: '/CN=renewal',
    ...(san !== undefined ? { extensions: [`subjectAltName=${san}`] } : {}),
  });
  return { csr: made.csrPem, keyPem: made.keyPem };
}

function renew(cert: CertificateAndKey | undefined, csr: string, contentType = 'application/pkcs10'): Promise<OAuthResponse> {
  return send(gw, {
    method: 'POST',
    path: '/ca/renew',
    body: csr,
    headers: { 'content-type': contentType },
    dispatcher: gw.agent(cert !== undefined ? { cert } : {}),
  });
}

describe('certificate renewal (POST /ca/renew over mTLS with a CSR)', () => {
  it('gives a holder of a valid certificate a fresh one for its CSR key, with the same identity and lifetime, recorded and audited', async () => {
    const current = await issue();
    const { csr, keyPem } = await clientCsr(`URI:${IDENTITY}`);
    const res = await renew(current, csr);
    expect(res.status, res.text).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const renewed = new X509Certificate(String(res.json?.['certificate']));
    const ca = new X509Certificate(String(res.json?.['ca_certificate']));
    expect(renewed.verify(ca.publicKey)).toBe(true);
    expect(renewed.subjectAltName).toBe(`URI:${IDENTITY}`);
    expect(renewed.serialNumber.toLowerCase()).toBe(res.json?.['serial']);
    expect(
      Buffer.from(renewed.publicKey.export({ format: 'der', type: 'spki' })).equals(createPublicKey(keyPem).export({ format: 'der', type: 'spki' }) as Buffer),
    ).toBe(true);
    // The same lifetime as the certificate renewed (an hour here).
    expect(Date.parse(renewed.validTo) - Date.now()).toBeGreaterThan(3_600_000 - 120_000);
    expect(Date.parse(renewed.validTo) - Date.now()).toBeLessThanOrEqual(3_600_000);

    // The new certificate works at once; the store has its record.
    const next = { certPem: renewed.toString(), keyPem };
    expect((await whoami(next)).status).toBe(200);
    const thumbprint = certificateThumbprintSha256(renewed.raw);
    expect(await withStore(gw, (store) => store.findIssuedCertificate(thumbprint))).toMatchObject({ clientId: client.id, subject: IDENTITY, revokedAt: null });
    const records = await gw.auditRecords();
    expect(records.find((r) => r.request_id === res.headers['x-request-id'])).toMatchObject({
      decision: 'allow',
      route: 'certificate-renewal',
      cert_thumbprint: thumbprint,
    });
    await gw.gateway.audit.flush();
    const issuedEvent = readRecords(join(gw.dataDir, 'audit')).find((r) => r.type === 'client_certificate_issued' && r['thumbprint'] === thumbprint);
    expect(issuedEvent).toMatchObject({ client_id: client.id, subject: IDENTITY, renewed_from: current.thumbprint });
  });

  it('refuses a CSR asking for another identity (400), and anything but application/pkcs10 (415); nothing is issued', async () => {
    const current = await issue();
    const before = (await withStore(gw, (store) => store.listIssuedCertificates())).length;
    const other = await renew(current, (await clientCsr('URI:spiffe://gatehouse.test/admin')).csr);
    expect(other.status).toBe(400);
    expect(await reasonOf(other)).toBe('CSR asks for another identity');
    const twoNames = await renew(current, (await clientCsr(`URI:${IDENTITY},DNS:billing.example`)).csr);
    expect(twoNames.status).toBe(400);
    expect((await renew(current, 'not a csr')).status).toBe(400);
    expect((await renew(current, (await clientCsr()).csr, 'text/plain')).status).toBe(415);
    expect((await withStore(gw, (store) => store.listIssuedCertificates())).length).toBe(before);
  });

  it('refuses a revoked certificate, an expired one, one the CA signed but never recorded, no certificate, a client whose identity changed or that is disabled, and a body over the limit', async () => {
    const { csr } = await clientCsr();
    const revoked = await issue();
    await withStore(gw, (store) => store.revokeCertificate(revoked.serial.toLowerCase(), Date.now()));
    await expect.poll(async () => (await renew(revoked, csr)).status, { timeout: 10_000 }).toBe(401);
    expect(await reasonOf(await renew(revoked, csr))).toBe('client certificate revoked');

    // Expired an hour ago: TLS itself does not verify it, so it authenticates nobody.
    const ca = await withStore(gw, (store) => openClientCa(store, kek()));
    const expired = await issueClientCertificate(ca, {
      uris: [IDENTITY],
      notBefore: new Date(Date.now() - 7_200_000),
      notAfter: new Date(Date.now() - 3_600_000),
    });
    const late = await renew(expired, csr);
    expect(late.status).toBe(401);
    expect(String(await reasonOf(late))).toMatch(/^client certificate not verified: CERT_HAS_EXPIRED/);

    const unrecorded = await issueClientCertificate(ca, { uris: [IDENTITY], validityDays: 1 });
    const forged = await renew(unrecorded, csr);
    expect(forged.status).toBe(403);
    expect(await reasonOf(forged)).toBe('certificate not issued by the client CA');

    expect((await renew(undefined, csr)).status).toBe(401);

    const current = await issue();
    await withStore(gw, (store) => store.updateClient(client.id, (c) => ({ ...c, tlsClientAuthSubject: 'spiffe://gatehouse.test/moved' })));
    const moved = await renew(current, csr);
    expect(moved.status).toBe(403);
    expect(await reasonOf(moved)).toBe('client identity changed since the certificate was issued');
    await withStore(gw, (store) => store.updateClient(client.id, (c) => ({ ...c, tlsClientAuthSubject: IDENTITY })));

    // A disabled client's certificate still verifies (it is not revoked), but it renews nothing.
    await withStore(gw, (store) => store.updateClient(client.id, (c) => ({ ...c, enabled: false })));
    const disabled = await renew(current, csr);
    expect(disabled.status).toBe(403);
    expect(await reasonOf(disabled)).toBe('client disabled or removed');
    await withStore(gw, (store) => store.updateClient(client.id, (c) => ({ ...c, enabled: true })));

    // A body over the renewal limit is no CSR: refused while it streams (413), nothing issued.
    const huge = await renew(current, `-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(20_000)}\n-----END CERTIFICATE REQUEST-----\n`);
    expect(huge.status).toBe(413);
  });
});

describe('the renewal budget', () => {
  it('lets one client renew six times an hour, then answers 429 with Retry-After, and issues nothing more', async () => {
    const identity = 'spiffe://gatehouse.test/busy';
    const busy = await addClient(gw, { scopes: ['echo:read'], tlsClientAuthSubject: identity });
    const holder = await withStore(gw, async (store) => {
      const ca = await openClientCa(store, kek());
      const issued = await issueForClient(store, ca, (await readClient(gw, busy.id)) as Client, { ttlS: 3600, now: Date.now() });
      return { certPem: issued.certPem, keyPem: issued.keyPem ?? '' };
    });
    const { csr } = await clientCsr();
    for (let i = 0; i < RENEWALS_PER_HOUR; i++) expect((await renew(holder, csr)).status, `renewal ${i + 1}`).toBe(200);
    const records = async (): Promise<number> => (await withStore(gw, (store) => store.listIssuedCertificates())).filter((c) => c.clientId === busy.id).length;
    const before = await records();
    const refused = await renew(holder, csr);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    expect(await reasonOf(refused)).toBe('quota certificate-renewals');
    expect(await records()).toBe(before);
  });
});

describe('unmodified clients: curl and openssl', () => {
  it('curl presents an issued certificate as PKCS#12, renews with an openssl-made CSR, and gets and uses a token bound to the certificate', async () => {
    const current = await issue();
    const p12File = join(work, 'client.p12');
    writeFileSync(p12File, pkcs12(current.certPem, current.keyPem, 'p12-pass', 'billing'));
    const tls = ['-s', '--cacert', gw.certs.paths.caCert, '--resolve', `localhost:${gw.port}:127.0.0.1`];
    // Asynchronously: the gateway answers from this very process.
    const curl = promisify(execFile);
    const who = await curl('curl', [...tls, '--cert-type', 'P12', '--cert', `${p12File}:p12-pass`, `https://localhost:${gw.port}/m`], { timeout: 20_000 });
    expect((JSON.parse(who.stdout) as { principal: { subject: string } }).principal.subject).toBe(IDENTITY);

    writeFileSync(join(work, 'current.pem'), current.certPem);
    writeFileSync(join(work, 'current-key.pem'), current.keyPem);
    const { csr } = await clientCsr();
    writeFileSync(join(work, 'renew.csr'), csr);
    const renewed = await curl(
      'curl',
      [
        ...tls,
        '--cert',
        join(work, 'current.pem'),
        '--key',
        join(work, 'current-key.pem'),
        '-H',
        'content-type: application/pkcs10',
        '--data-binary',
        `@${join(work, 'renew.csr')}`,
        `https://localhost:${gw.port}/ca/renew`,
      ],
      { timeout: 20_000 },
    );
    const body = JSON.parse(renewed.stdout) as { certificate: string };
    expect(new X509Certificate(body.certificate).subjectAltName).toBe(`URI:${IDENTITY}`);

    // The issued certificate is the client's credential at the token endpoint (tls_client_auth), and its token is bound to it.
    const withCert = [...tls, '--cert', join(work, 'current.pem'), '--key', join(work, 'current-key.pem')];
    const granted = await curl(
      'curl',
      [...withCert, '-d', 'grant_type=client_credentials', '-d', `client_id=${client.id}`, `https://localhost:${gw.port}/oauth2/token`],
      {
        timeout: 20_000,
      },
    );
    const token = (JSON.parse(granted.stdout) as { access_token: string }).access_token;
    expect(decodeJwt(token)['cnf']).toEqual({ 'x5t#S256': current.thumbprint });
    const call = (args: readonly string[]) =>
      curl('curl', [...args, '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${token}`, `https://localhost:${gw.port}/api/x`], {
        timeout: 20_000,
      });
    expect((await call(withCert)).stdout).toBe('200');
    expect((await call(tls)).stdout).toBe('401');
  });
});
