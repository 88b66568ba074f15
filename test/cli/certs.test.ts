// `gatehouse ca …` and `gatehouse certs …` against a real store: the built CLI is spawned, the certificates it writes are
// checked with openssl (chain, SAN, key usage, validity), and the store and admin chain are read after it exited.
import { spawnSync } from 'node:child_process';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../../src/audit/read.js';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { adminCli, type CliResult } from '../support/cli.js';
import { opensslCsr } from '../support/csr.js';
import { initDevCertificates } from '../../src/tls/ca.js';

const work = mkdtempSync(join(tmpdir(), 'gatehouse-certs-'));
const dataDir = join(work, 'data');
const configFile = join(work, 'gatehouse.yaml');
const IDENTITY = 'spiffe://gatehouse.test/billing';
afterAll(() => rmSync(work, { recursive: true, force: true }));

beforeAll(async () => {
  const certs = join(work, 'certs');
  await initDevCertificates(certs);
  writeFileSync(
    configFile,
    `tls: { cert: ${certs}/server.pem, key: ${certs}/server-key.pem }\n` +
      'issuer: {}\n' +
      'routes:\n  - { id: p, match: { path_prefix: /p, methods: [GET] }, authn: [none], authz: { allow: anyone }, handler: { service: echo } }\n' +
      `data_dir: ${dataDir}\n`,
  );
  expect(run(['init']).status).toBe(0);
});

const { run, ok, json } = adminCli(configFile);

function openssl(args: string[]): CliResult {
  const result = spawnSync('openssl', args, { encoding: 'utf8', timeout: 20_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

async function withStore<T>(fn: (store: SqliteCredentialStore) => Promise<T>): Promise<T> {
  const store = SqliteCredentialStore.open(join(dataDir, 'gatehouse.db'), { create: false });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

interface Issued {
  readonly serial: string;
  readonly client_id: string;
  readonly subject: string;
  readonly thumbprint: string;
  readonly not_before: string;
  readonly not_after: string;
  readonly files: readonly string[];
  readonly p12_password: string;
}

let clientId = '';
let plainClientId = '';

describe('gatehouse ca', () => {
  it('certs issue before ca init is refused (66) and writes nothing', () => {
    plainClientId = json<{ client_id: string }>(['clients', 'add', 'Plain', '--scope', 'read']).client_id;
    const out = join(work, 'before-init');
    const result = run(['certs', 'issue', '--client', plainClientId, '--out', out]);
    expect(result.status).toBe(66);
    expect(result.stderr).toMatch(/no client CA: run `gatehouse ca init` first/);
    expect(existsSync(out)).toBe(false);
    expect(run(['ca', 'cert']).status).toBe(66);
  });

  it('init makes the CA once, its key sealed in the store (never in clear), and ca cert prints it', async () => {
    const made = json<{ sha256_fingerprint: string; certificate: string }>(['ca', 'init', '--name', 'Billing Client CA']);
    const again = run(['ca', 'init']);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/has a client CA already/);
    const pem = ok(['ca', 'cert']);
    expect(pem).toBe(made.certificate);
    const ca = new X509Certificate(pem);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toBe('CN=Billing Client CA');
    expect(made.sha256_fingerprint).toBe(ca.fingerprint256);
    const stored = await withStore((store) => store.getClientCa());
    expect(stored?.certPem).toBe(pem);
    expect(stored?.encryptedPrivateKey).not.toMatch(/PRIVATE KEY/);
    const bytes = readdirSync(dataDir)
      .filter((name) => name.startsWith('gatehouse.db'))
      .map((name) => readFileSync(join(dataDir, name), 'latin1'))
      .join('');
    expect(bytes).not.toContain('PRIVATE KEY');
  });
});

describe('gatehouse certs issue', () => {
  it('refuses a client without a registered certificate identity, and an unknown client', () => {
    const refused = run(['certs', 'issue', '--client', plainClientId, '--out', join(work, 'plain')]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(`gatehouse clients update ${plainClientId} --tls-client-auth`);
    expect(existsSync(join(work, 'plain'))).toBe(false);
    expect(run(['certs', 'issue', '--client', 'AAAAAAAAAAAAAAAAAAAAAA', '--out', join(work, 'nobody')]).status).toBe(66);
  });

  it("issues a 24 h certificate and key with the client's identity, which openssl verifies against the CA", () => {
    clientId = json<{ client_id: string }>(['clients', 'add', 'Billing', '--scope', 'read', '--tls-client-auth', IDENTITY]).client_id;
    const out = join(work, 'billing');
    const issued = json<Issued>(['certs', 'issue', '--client', clientId, '--out', out]);
    expect(issued).toMatchObject({ client_id: clientId, subject: IDENTITY });
    expect(issued.files.map((file) => file.slice(out.length + 1)).sort()).toEqual(['ca.pem', 'cert.pem', 'client.p12', 'key.pem']);
    expect(statSync(join(out, 'key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(join(out, 'client.p12')).mode & 0o777).toBe(0o600);
    // The PKCS#12 file holds the same certificate and key, under the password printed once; another password fails its MAC.
    const p12 = openssl(['pkcs12', '-in', join(out, 'client.p12'), '-passin', `pass:${issued.p12_password}`, '-nodes']);
    expect(p12.status, p12.stderr).toBe(0);
    expect(new X509Certificate(p12.stdout).fingerprint256).toBe(new X509Certificate(readFileSync(join(out, 'cert.pem'))).fingerprint256);
    expect(createPublicKey(p12.stdout).export({ format: 'der', type: 'spki' })).toEqual(
      createPublicKey(readFileSync(join(out, 'key.pem'))).export({ format: 'der', type: 'spki' }),
    );
    expect(openssl(['pkcs12', '-in', join(out, 'client.p12'), '-passin', 'pass:wrong', '-nodes']).status).not.toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o700);
    expect(openssl(['verify', '-CAfile', join(out, 'ca.pem'), join(out, 'cert.pem')]).stdout).toBe(`${join(out, 'cert.pem')}: OK\n`);
    const cert = new X509Certificate(readFileSync(join(out, 'cert.pem')));
    expect(cert.subjectAltName).toBe(`URI:${IDENTITY}`);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(cert.ca).toBe(false);
    expect(cert.serialNumber.toLowerCase()).toBe(issued.serial);
    const lifetimeMs = Date.parse(cert.validTo) - Date.now();
    expect(lifetimeMs).toBeGreaterThan(86_400_000 - 120_000);
    expect(lifetimeMs).toBeLessThanOrEqual(86_400_000);
    // The key written is the certificate's.
    const key = createPublicKey(readFileSync(join(out, 'key.pem'))).export({ format: 'der', type: 'spki' });
    expect(Buffer.from(cert.publicKey.export({ format: 'der', type: 'spki' })).equals(key)).toBe(true);
  });

  it("with --csr, certifies the CSR's key under the client's identity (its requested subject and SANs ignored) and writes no key", async () => {
    const out = join(work, 'csr');
    mkdirSync(join(work, 'csr-input'));
    const { csrFile, keyFile } = await opensslCsr(join(work, 'csr-input'), 'req', {
      subject: '/CN=admin',
      extensions: ['subjectAltName=URI:spiffe://gatehouse.test/admin'],
    });
    const issued = json<Issued>(['certs', 'issue', '--client', clientId, '--out', out, '--csr', csrFile, '--ttl', '2h']);
    expect(issued.files.map((file) => file.slice(out.length + 1)).sort()).toEqual(['ca.pem', 'cert.pem', 'client.p12']);
    expect(existsSync(join(out, 'key.pem'))).toBe(false);
    // The PKCS#12 file holds the certificate alone: the key never left its holder.
    const p12 = openssl(['pkcs12', '-in', join(out, 'client.p12'), '-passin', `pass:${issued.p12_password}`, '-nodes']);
    expect(p12.status, p12.stderr).toBe(0);
    expect(p12.stdout).toContain('BEGIN CERTIFICATE');
    expect(p12.stdout).not.toContain('PRIVATE KEY');
    const cert = new X509Certificate(readFileSync(join(out, 'cert.pem')));
    expect(cert.subjectAltName).toBe(`URI:${IDENTITY}`);
    expect(cert.subject).not.toContain('admin');
    const csrKey = createPublicKey(readFileSync(keyFile)).export({ format: 'der', type: 'spki' });
    expect(Buffer.from(cert.publicKey.export({ format: 'der', type: 'spki' })).equals(csrKey)).toBe(true);
    expect(Date.parse(cert.validTo) - Date.now()).toBeLessThanOrEqual(2 * 3_600_000);
  });

  it('refuses what is not a CSR, a directory holding a certificate, and a bad --ttl; nothing is issued', async () => {
    const before = (await withStore((store) => store.listIssuedCertificates())).length;
    const forged = join(work, 'forged.pem');
    writeFileSync(forged, '-----BEGIN CERTIFICATE REQUEST-----\nMIIBAAAA\n-----END CERTIFICATE REQUEST-----\n');
    const bad = run(['certs', 'issue', '--client', clientId, '--out', join(work, 'forged'), '--csr', forged]);
    expect(bad.status).toBe(64);
    expect(bad.stderr).toMatch(/--csr: not a PEM PKCS#10 certificate request/);
    const taken = run(['certs', 'issue', '--client', clientId, '--out', join(work, 'billing')]);
    expect(taken.status).toBe(64);
    expect(taken.stderr).toMatch(/cert\.pem exists/);
    expect(run(['certs', 'issue', '--client', clientId, '--out', join(work, 'ttl'), '--ttl', '400d']).status).toBe(64);
    expect((await withStore((store) => store.listIssuedCertificates())).length).toBe(before);
  });
});

describe('gatehouse certs list and revoke', () => {
  it('lists the issued certificates; revoke marks one revoked once; an unknown serial is 66', async () => {
    const listed = json<{ serial: string; state: string; client_id: string }[]>(['certs', 'list', '--client', clientId]);
    expect(listed).toHaveLength(2);
    expect(listed.every((c) => c.state === 'valid' && c.client_id === clientId)).toBe(true);
    const serial = listed[0]?.serial ?? '';
    const upper = serial.toUpperCase().replace(/(..)(?!$)/g, '$1:');
    expect(ok(['certs', 'revoke', upper])).toMatch(new RegExp(`^certificate ${serial} \\(${IDENTITY}\\) revoked: every gateway refuses it within`));
    expect(ok(['certs', 'revoke', serial])).toMatch(/was revoked already at .*; nothing changed/);
    expect(run(['certs', 'revoke', 'abcdef']).status).toBe(66);
    expect(run(['certs', 'revoke', 'not-hex']).status).toBe(64);
    const after = json<{ serial: string; state: string }[]>(['certs', 'list']);
    expect(after.find((c) => c.serial === serial)?.state).toBe('revoked');
    const revoked = await withStore((store) => store.listRevokedCertificates(Date.now()));
    expect(revoked.map((c) => c.serial)).toEqual([serial]);
  });

  it('records ca.init, each issuance and the revocation in the admin chain, never a private key', () => {
    const auditDir = join(dataDir, 'audit');
    const records = readRecords(auditDir).filter((r) => r.type === 'admin');
    const actions = records.map((r) => r['action']).filter((a) => typeof a === 'string' && /^(ca|certificate)\./.test(a));
    expect(actions).toEqual(['ca.init', 'certificate.issue', 'certificate.issue', 'certificate.revoke']);
    const issue = records.find((r) => r['action'] === 'certificate.issue');
    expect(issue?.['changes']).toMatchObject({ client_id: clientId, subject: IDENTITY, key_from: 'made here' });
    const text = readdirSync(auditDir)
      .filter((name) => name.endsWith('.jsonl'))
      .map((name) => readFileSync(join(auditDir, name), 'utf8'))
      .join('');
    expect(text).not.toContain('PRIVATE KEY');
    const verified = run(['audit', 'verify', '--json']);
    expect(verified.status, verified.stdout).toBe(0);
  });
});
