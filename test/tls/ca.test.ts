// Tests for the development CA: files on disk, openssl's view of the certificates, and real mTLS handshakes with node:tls.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { certificateThumbprintSha256 } from '../../src/lib/thumbprint.js';
import {
  createCertificateAuthority,
  devCertificatePaths,
  initDevCertificates,
  issueClientCertificate,
  issueServerCertificate,
  type CertificateAndKey,
  type DevCertificatePaths,
} from '../../src/tls/ca.js';

const DAY_MS = 24 * 60 * 60 * 1000;

function openssl(args: readonly string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function opensslExt(file: string, ext: string): string {
  return openssl(['x509', '-noout', '-in', file, '-ext', ext]);
}

async function mode(file: string): Promise<number> {
  return (await fsp.stat(file)).mode & 0o777;
}

async function readAll(paths: DevCertificatePaths): Promise<Buffer[]> {
  return Promise.all([paths.caCert, paths.caKey, paths.serverCert, paths.serverKey, paths.clientCert, paths.clientKey].map((f) => fsp.readFile(f)));
}

interface HandshakeResult {
  readonly serverAuthorized: boolean;
  readonly serverAuthorizationError: string | undefined;
  readonly clientAuthorized: boolean;
  readonly clientAuthorizationError: string | undefined;
}

// The server does not reject unauthorized clients by itself so the test can read socket.authorized for bad certificates
// instead of only seeing a reset connection.
async function handshake(server: CertificateAndKey, caPem: string, client: CertificateAndKey | undefined): Promise<HandshakeResult> {
  const tlsServer = tls.createServer({
    cert: server.certPem,
    key: server.keyPem,
    ca: caPem,
    requestCert: true,
    rejectUnauthorized: false,
  });
  const serverSeen = new Promise<{ authorized: boolean; error: string | undefined }>((resolve, reject) => {
    tlsServer.once('secureConnection', (socket: tls.TLSSocket) => {
      resolve({ authorized: socket.authorized, error: errorText(socket.authorizationError) });
      socket.end();
    });
    tlsServer.once('tlsClientError', reject);
  });
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  const { port } = tlsServer.address() as AddressInfo;
  try {
    const clientSide = await new Promise<{ authorized: boolean; error: string | undefined }>((resolve, reject) => {
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        ca: caPem,
        ...(client === undefined ? {} : { cert: client.certPem, key: client.keyPem }),
        // No servername: identity is checked against the 127.0.0.1 IP SAN, and rejectUnauthorized stays on.
        rejectUnauthorized: true,
      });
      socket.once('secureConnect', () => {
        resolve({ authorized: socket.authorized, error: errorText(socket.authorizationError) });
        socket.on('data', () => undefined);
        socket.on('end', () => socket.end());
      });
      socket.once('error', reject);
    });
    const serverSide = await serverSeen;
    return {
      serverAuthorized: serverSide.authorized,
      serverAuthorizationError: serverSide.error,
      clientAuthorized: clientSide.authorized,
      clientAuthorizationError: clientSide.error,
    };
  } finally {
    await new Promise<void>((resolve) => tlsServer.close(() => resolve()));
  }
}

function errorText(err: Error | string | null | undefined): string | undefined {
  if (err === null || err === undefined) return undefined;
  return typeof err === 'string' ? err : err.message;
}

describe('development certificate authority', () => {
  let tmpRoot = '';
  let paths: DevCertificatePaths;
  let ca: CertificateAndKey;
  let server: CertificateAndKey;
  let client: CertificateAndKey;

  beforeAll(async () => {
    tmpRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'gatehouse-ca-test-'));
    const result = await initDevCertificates(path.join(tmpRoot, 'dev'));
    expect(result.created).toBe(true);
    paths = result.paths;
    const [caCert, caKey, serverCert, serverKey, clientCert, clientKey] = (await readAll(paths)).map((b) => b.toString('utf8'));
    if (
      caCert === undefined ||
      caKey === undefined ||
      serverCert === undefined ||
      serverKey === undefined ||
      clientCert === undefined ||
      clientKey === undefined
    ) {
      throw new Error('missing file contents');
    }
    ca = { certPem: caCert, keyPem: caKey };
    server = { certPem: serverCert, keyPem: serverKey };
    client = { certPem: clientCert, keyPem: clientKey };
  });

  afterAll(async () => {
    if (tmpRoot !== '') await fsp.rm(tmpRoot, { recursive: true, force: true });
  });

  it('lays out the six files with private keys at 0600 and a new directory at 0700', async () => {
    expect(paths).toEqual(devCertificatePaths(path.join(tmpRoot, 'dev')));
    expect(path.basename(paths.caCert)).toBe('ca.pem');
    expect(path.basename(paths.caKey)).toBe('ca-key.pem');
    expect(path.basename(paths.serverCert)).toBe('server.pem');
    expect(path.basename(paths.serverKey)).toBe('server-key.pem');
    expect(path.basename(paths.clientCert)).toBe('client.pem');
    expect(path.basename(paths.clientKey)).toBe('client-key.pem');
    expect(await mode(paths.dir)).toBe(0o700);
    for (const key of [paths.caKey, paths.serverKey, paths.clientKey]) {
      expect(await mode(key)).toBe(0o600);
    }
    for (const cert of [paths.caCert, paths.serverCert, paths.clientCert]) {
      const m = await mode(cert);
      // 0644 under the usual umask 022; never writable by anyone but the owner.
      expect(m & 0o600).toBe(0o600);
      expect(m & 0o022).toBe(0);
    }
    // No temporary files left behind by the atomic writes.
    expect((await fsp.readdir(paths.dir)).sort()).toEqual(['ca-key.pem', 'ca.pem', 'client-key.pem', 'client.pem', 'server-key.pem', 'server.pem']);
  });

  it('writes PKCS#8 P-256 private keys and ECDSA-with-SHA256 certificates', () => {
    for (const { certPem, keyPem } of [ca, server, client]) {
      expect(keyPem.startsWith('-----BEGIN PRIVATE KEY-----')).toBe(true);
      const key = createPrivateKey(keyPem);
      expect(key.asymmetricKeyType).toBe('ec');
      expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      const cert = new X509Certificate(certPem);
      expect(cert.checkPrivateKey(key)).toBe(true);
    }
    expect(openssl(['x509', '-noout', '-text', '-in', paths.serverCert])).toContain('ecdsa-with-SHA256');
  });

  it('makes a CA with critical CA:TRUE pathlen 0, critical keyCertSign+cRLSign and an SKI', () => {
    const out = opensslExt(paths.caCert, 'basicConstraints,keyUsage,subjectKeyIdentifier');
    expect(out).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(out).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    expect(out).toMatch(/Subject Key Identifier:\s+[0-9A-F:]+/);
    expect(openssl(['x509', '-noout', '-subject', '-in', paths.caCert]).trim()).toBe('subject=CN = Gatehouse Development CA');
  });

  it('issues certificates that openssl verifies against the CA for their purposes', () => {
    expect(openssl(['verify', '-CAfile', paths.caCert, paths.serverCert]).trim()).toBe(`${paths.serverCert}: OK`);
    expect(openssl(['verify', '-CAfile', paths.caCert, paths.clientCert]).trim()).toBe(`${paths.clientCert}: OK`);
    expect(openssl(['verify', '-purpose', 'sslserver', '-CAfile', paths.caCert, paths.serverCert])).toContain(': OK');
    expect(openssl(['verify', '-purpose', 'sslclient', '-CAfile', paths.caCert, paths.clientCert])).toContain(': OK');
    expect(() => openssl(['verify', '-purpose', 'sslclient', '-CAfile', paths.caCert, paths.serverCert])).toThrow();
  });

  it('gives the server certificate DNS and IP (v4 and v6) SANs, serverAuth, and the leaf constraints', () => {
    const out = opensslExt(paths.serverCert, 'subjectAltName,extendedKeyUsage,keyUsage,basicConstraints,authorityKeyIdentifier');
    expect(out).toMatch(/Subject Alternative Name:\s+DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1\s/);
    expect(out).toMatch(/Extended Key Usage:\s+TLS Web Server Authentication\n/);
    expect(out).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(out).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    const caSki = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(opensslExt(paths.caCert, 'subjectKeyIdentifier'))?.[1];
    expect(caSki).toBeDefined();
    expect(out).toContain(caSki);
    expect(openssl(['x509', '-noout', '-subject', '-in', paths.serverCert]).trim()).toBe('subject=CN = localhost');
    const cert = new X509Certificate(server.certPem);
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkHost('localhost')).toBe('localhost');
  });

  it('gives the client certificate its URI SAN, CN and clientAuth', () => {
    const out = opensslExt(paths.clientCert, 'subjectAltName,extendedKeyUsage');
    expect(out).toMatch(/Subject Alternative Name:\s+URI:spiffe:\/\/gatehouse\.local\/dev-client\s/);
    expect(out).toMatch(/Extended Key Usage:\s+TLS Web Client Authentication\n/);
    expect(openssl(['x509', '-noout', '-subject', '-in', paths.clientCert]).trim()).toBe('subject=CN = dev-client');
  });

  it('uses distinct random positive 128-bit serial numbers', () => {
    const serials = [paths.caCert, paths.serverCert, paths.clientCert].map((f) =>
      openssl(['x509', '-noout', '-serial', '-in', f])
        .trim()
        .replace(/^serial=/, ''),
    );
    for (const serial of serials) expect(serial).toMatch(/^[0-9A-F]{32}$/);
    expect(new Set(serials).size).toBe(3);
    // DER INTEGERs are signed; a serial whose top bit is set must carry a leading zero octet to stay positive.
    for (const pem of [ca.certPem, server.certPem, client.certPem]) {
      expect(new X509Certificate(pem).serialNumber).toMatch(/^[0-9A-F]+$/);
    }
  });

  it('completes an mTLS handshake that both sides authorize', async () => {
    const result = await handshake(server, ca.certPem, client);
    expect(result.clientAuthorized).toBe(true);
    expect(result.clientAuthorizationError).toBeUndefined();
    expect(result.serverAuthorized).toBe(true);
    expect(result.serverAuthorizationError).toBeUndefined();
  });

  it('does not authorize an expired client certificate', async () => {
    const now = Date.now();
    const expired = await issueClientCertificate(ca, {
      commonName: 'expired-client',
      uris: ['spiffe://gatehouse.local/expired'],
      notBefore: new Date(now - 10 * DAY_MS),
      notAfter: new Date(now - DAY_MS),
    });
    const result = await handshake(server, ca.certPem, expired);
    expect(result.clientAuthorized).toBe(true);
    expect(result.serverAuthorized).toBe(false);
    expect(result.serverAuthorizationError).toBe('CERT_HAS_EXPIRED');
  });

  it('does not authorize a client certificate that only has the serverAuth EKU', async () => {
    const wrongEku = await issueClientCertificate(ca, {
      commonName: 'server-only',
      uris: ['spiffe://gatehouse.local/server-only'],
      extendedKeyUsage: 'serverAuth',
    });
    const file = path.join(tmpRoot, 'server-only.pem');
    await fsp.writeFile(file, wrongEku.certPem);
    expect(opensslExt(file, 'extendedKeyUsage')).toMatch(/Extended Key Usage:\s+TLS Web Server Authentication\n/);
    const result = await handshake(server, ca.certPem, wrongEku);
    expect(result.serverAuthorized).toBe(false);
    expect(result.serverAuthorizationError).toBe('INVALID_PURPOSE');
  });

  it('does not authorize a client certificate from another CA, nor a missing one', async () => {
    const otherCa = await createCertificateAuthority({ commonName: 'Other CA', validityDays: 1 });
    const foreign = await issueClientCertificate(otherCa, { commonName: 'dev-client', uris: ['spiffe://gatehouse.local/dev-client'] });
    const foreignResult = await handshake(server, ca.certPem, foreign);
    expect(foreignResult.serverAuthorized).toBe(false);
    expect(foreignResult.serverAuthorizationError).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    const noCertResult = await handshake(server, ca.certPem, undefined);
    expect(noCertResult.serverAuthorized).toBe(false);
  });

  it('can issue a CN-only client certificate without a SAN extension', async () => {
    const cnOnly = await issueClientCertificate(ca, { commonName: 'cn-only' });
    const file = path.join(tmpRoot, 'cn-only.pem');
    await fsp.writeFile(file, cnOnly.certPem);
    expect(opensslExt(file, 'subjectAltName')).not.toContain('Subject Alternative Name');
    expect(opensslExt(file, 'extendedKeyUsage')).toContain('TLS Web Client Authentication');
    expect(openssl(['verify', '-CAfile', paths.caCert, file])).toContain(': OK');
    const result = await handshake(server, ca.certPem, cnOnly);
    expect(result.serverAuthorized).toBe(true);
  });

  it('refuses to issue from a certificate that is not a CA or with a mismatched key', async () => {
    await expect(issueServerCertificate(server, { dnsNames: ['x.test'], ipAddresses: [] })).rejects.toThrow(/not a CA/);
    await expect(issueServerCertificate({ certPem: ca.certPem, keyPem: server.keyPem }, { dnsNames: ['x.test'], ipAddresses: [] })).rejects.toThrow(
      /does not match/,
    );
    await expect(issueServerCertificate(ca, { dnsNames: [], ipAddresses: ['127.0.0.1'] })).rejects.toThrow(/DNS name/);
    await expect(issueServerCertificate(ca, { dnsNames: ['x.test'], ipAddresses: ['not-an-ip'] })).rejects.toThrow(/IP address/);
  });

  it('leaves an existing complete set untouched on a second call', async () => {
    const before = await readAll(paths);
    const inodesBefore = await Promise.all([paths.caCert, paths.caKey].map(async (f) => (await fsp.stat(f)).ino));
    const again = await initDevCertificates(paths.dir);
    expect(again.created).toBe(false);
    expect(again.paths).toEqual(paths);
    const after = await readAll(paths);
    expect(after.length).toBe(before.length);
    for (const [i, buf] of after.entries()) expect(buf.equals(before[i] ?? Buffer.alloc(0))).toBe(true);
    const inodesAfter = await Promise.all([paths.caCert, paths.caKey].map(async (f) => (await fsp.stat(f)).ino));
    expect(inodesAfter).toEqual(inodesBefore);
  });

  it('refuses a partial set without force, naming the missing files, and regenerates it with force', async () => {
    const partialDir = path.join(tmpRoot, 'partial');
    const first = await initDevCertificates(partialDir);
    expect(first.created).toBe(true);
    await fsp.rm(first.paths.serverCert);
    await fsp.rm(first.paths.clientKey);
    const remainingBefore = await fsp.readFile(first.paths.caCert);

    const attempt = initDevCertificates(partialDir);
    await expect(attempt).rejects.toThrow(/server\.pem/);
    await expect(initDevCertificates(partialDir)).rejects.toThrow(/client-key\.pem/);
    await expect(initDevCertificates(partialDir)).rejects.toThrow(/--force/);
    expect((await fsp.readFile(first.paths.caCert)).equals(remainingBefore)).toBe(true);
    expect((await fsp.readdir(partialDir)).length).toBe(4);

    const forced = await initDevCertificates(partialDir, { force: true });
    expect(forced.created).toBe(true);
    expect((await fsp.readdir(partialDir)).sort()).toEqual(['ca-key.pem', 'ca.pem', 'client-key.pem', 'client.pem', 'server-key.pem', 'server.pem']);
    expect((await fsp.readFile(forced.paths.caCert)).equals(remainingBefore)).toBe(false);
    expect(await mode(forced.paths.caKey)).toBe(0o600);
    expect(openssl(['verify', '-CAfile', forced.paths.caCert, forced.paths.serverCert, forced.paths.clientCert])).toMatch(/server\.pem: OK\n.*client\.pem: OK/);
  });

  it('computes the RFC 8705 x5t#S256 thumbprint of the DER encoding', () => {
    const der = execFileSync('openssl', ['x509', '-in', paths.clientCert, '-outform', 'DER']);
    const expected = createHash('sha256').update(der).digest('base64url');
    expect(expected).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(certificateThumbprintSha256(client.certPem)).toBe(expected);
    expect(certificateThumbprintSha256(der)).toBe(expected);
    expect(certificateThumbprintSha256(server.certPem)).not.toBe(expected);
  });
});
