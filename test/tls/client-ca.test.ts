// The client-certificate authority's issuing step (issue #11 item 4, first part): certificates for a CSR made by `openssl
// req` (only its key is used: never its subject, SANs or extensions) or for a key made here; refused CSRs; and an issued
// certificate authenticating at a real gateway that trusts the CA.
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCertificateAuthority, type CertificateAndKey } from '../../src/tls/ca.js';
import { CsrError, issueClientCertificateFor } from '../../src/tls/client-ca.js';
import { certificateThumbprintSha256 } from '../../src/lib/thumbprint.js';
import { removeDir, startGateway, type TestGateway } from '../support/harness.js';
import { opensslCsr, type MadeCsr } from '../support/csr.js';
import { route } from '../support/routes.js';

const work = mkdtempSync(join(tmpdir(), 'gatehouse-client-ca-'));
let ca: CertificateAndKey;
afterAll(() => removeDir(work));

beforeAll(async () => {
  ca = await createCertificateAuthority({ commonName: 'Gatehouse Client CA (test)' });
});

/** A CSR from `openssl req`: a fresh key, and the subject, SAN and CA flag an attacker would like to have. */
function attackerCsr(name: string, newkey: readonly string[]): Promise<MadeCsr> {
  return opensslCsr(work, name, {
    newkey,
    subject: '/CN=admin',
    extensions: ['subjectAltName=URI:spiffe://evil.example/admin', 'basicConstraints=critical,CA:TRUE'],
  });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];

describe('issuing client certificates', () => {
  it('for a CSR: only its key is used — the identity, usage, CA flag and lifetime are the CA’s', async () => {
    const { csrPem, keyPem } = await attackerCsr('ec', EC);
    const issued = await issueClientCertificateFor(ca, { identity: { kind: 'uri', value: 'spiffe://gatehouse.local/billing' }, ttlS: 86_400, csrPem });
    expect(issued.keyPem).toBeUndefined();
    const cert = new X509Certificate(issued.certPem);
    expect(cert.subjectAltName).toBe('URI:spiffe://gatehouse.local/billing');
    expect(cert.subject ?? '').not.toContain('admin');
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(cert.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    // The certificate is for the CSR's key.
    expect(
      cert.publicKey.export({ type: 'spki', format: 'der' }).equals(createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' })),
    ).toBe(true);
    const lifetimeMs = Date.parse(cert.validTo) - Date.now();
    expect(lifetimeMs).toBeGreaterThan(86_400_000 - 120_000);
    expect(lifetimeMs).toBeLessThanOrEqual(86_400_000);
    expect(issued.thumbprint).toBe(certificateThumbprintSha256(issued.certPem));
    expect(issued.serial).toMatch(/^[0-9A-F]+$/i);
  });

  it('without a CSR: a P-256 key is made and returned with the certificate; a DNS identity becomes a DNS SAN', async () => {
    const issued = await issueClientCertificateFor(ca, { identity: { kind: 'dns', value: 'reports.internal.example' }, ttlS: 3600 });
    expect(issued.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const cert = new X509Certificate(issued.certPem);
    expect(cert.subjectAltName).toBe('DNS:reports.internal.example');
    expect(cert.checkPrivateKey(createPrivateKey(issued.keyPem ?? ''))).toBe(true);
  });

  it('refuses a CSR whose signature does not verify, a weak key, garbage, and a lifetime out of range', async () => {
    const { csrPem } = await attackerCsr('tampered', EC);
    // One byte of the signed request changed: the self-signature no longer proves the key.
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    // A bit of the signature's last integer: the DER stays well-formed, the signature no longer matches.
    der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0x01;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE REQUEST-----\n`;
    const { csrPem: weak } = await attackerCsr('rsa1024', ['-newkey', 'rsa:1024']);
    const identity = { kind: 'uri', value: 'spiffe://gatehouse.local/x' } as const;
    for (const [label, bad] of [
      ['tampered', tampered],
      ['RSA-1024', weak],
      ['garbage', 'not a csr'],
    ] as const) {
      await expect(issueClientCertificateFor(ca, { identity, ttlS: 3600, csrPem: bad }), label).rejects.toBeInstanceOf(CsrError);
    }
    await expect(issueClientCertificateFor(ca, { identity, ttlS: 3600, csrPem: tampered })).rejects.toThrow(/does not verify/);
    await expect(issueClientCertificateFor(ca, { identity, ttlS: 3600, csrPem: weak })).rejects.toThrow(/at least 2048 bits/);
    await expect(issueClientCertificateFor(ca, { identity, ttlS: 10 })).rejects.toBeInstanceOf(RangeError);
  });
});

describe('an issued certificate at a gateway that trusts the CA', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    const caFile = join(work, 'client-ca.pem');
    writeFileSync(caFile, ca.certPem);
    gw = await startGateway((base) => ({
      ...base,
      tls: { ...base.tls, client_ca: caFile },
      routes: [...base.routes, route('who', '/who', { authn: ['mtls'], authz: { allow: 'authenticated' } })],
    }));
  });
  afterAll(() => gw.stop());

  it('authenticates with the identity the CA gave it, not the one its CSR asked for', async () => {
    const { csrPem, keyPem } = await attackerCsr('e2e', EC);
    const issued = await issueClientCertificateFor(ca, { identity: { kind: 'uri', value: 'spiffe://gatehouse.local/billing' }, ttlS: 3600, csrPem });
    const res = await gw
      .agent({ cert: { certPem: issued.certPem, keyPem } })
      .request({ origin: gw.origin, path: '/who', method: 'GET', headers: { host: 'localhost' } });
    const body = (await res.body.json()) as { principal?: { subject?: string; method?: string } };
    expect(res.statusCode).toBe(200);
    expect(body.principal).toMatchObject({ subject: 'spiffe://gatehouse.local/billing', method: 'mtls' });
  });
});
