// Built-in development certificate authority: issues the local CA, server and client certificates used for development and tests.
// reflect-metadata must be loaded before @peculiar/x509 evaluates (its ASN.1 schema decorators need it),
// so this module imports it itself instead of relying on every entry point to remember.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { makeDirectory } from '../lib/make-directory.js';

x509.cryptoProvider.set(webcrypto);

export interface CertificateAndKey {
  readonly certPem: string;
  /** PKCS#8 PEM. */
  readonly keyPem: string;
}

export interface DevCertificatePaths {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

const DAY_MS = 24 * 60 * 60 * 1000;
// Back-date notBefore so a peer whose clock runs a little behind ours does not reject a fresh certificate.
export const CLOCK_SKEW_MS = 5 * 60 * 1000;

const KEY_ALGORITHM: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING_ALGORITHM: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };

const DEV_CA_COMMON_NAME = 'Gatehouse Development CA';
const DEV_SERVER_DNS_NAMES: readonly string[] = ['localhost'];
const DEV_SERVER_IP_ADDRESSES: readonly string[] = ['127.0.0.1', '::1'];
const DEV_CLIENT_COMMON_NAME = 'dev-client';
const DEV_CLIENT_URI = 'spiffe://gatehouse.local/dev-client';

export async function createCertificateAuthority(opts: { commonName: string; validityDays?: number }): Promise<CertificateAndKey> {
  const commonName = requireNonEmpty(opts.commonName, 'commonName');
  const { notBefore, notAfter } = validityWindow(opts.validityDays ?? 3650);
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialNumber(),
    name: distinguishedName(commonName),
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      // pathLen 0: this CA only ever signs leaf certificates, so an intermediate it signed by mistake is still unusable.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportPrivateKeyPem(keys.privateKey) };
}

export async function issueServerCertificate(
  ca: CertificateAndKey,
  opts: { dnsNames: readonly string[]; ipAddresses: readonly string[]; validityDays?: number },
): Promise<CertificateAndKey> {
  const firstDnsName = opts.dnsNames[0];
  if (firstDnsName === undefined) {
    throw new Error('issueServerCertificate: at least one DNS name is required (it becomes the subject CN)');
  }
  const { notBefore, notAfter } = validityWindow(opts.validityDays ?? 90);
  return issueLeaf(ca, {
    commonName: firstDnsName,
    sans: [...dnsSans(opts.dnsNames), ...ipSans(opts.ipAddresses)],
    usage: x509.ExtendedKeyUsage.serverAuth,
    notBefore,
    notAfter,
  });
}

export async function issueClientCertificate(
  ca: CertificateAndKey,
  opts: {
    commonName?: string;
    uris?: readonly string[];
    dnsNames?: readonly string[];
    extendedKeyUsage?: 'clientAuth' | 'serverAuth';
    notBefore?: Date;
    notAfter?: Date;
    validityDays?: number;
  },
): Promise<CertificateAndKey> {
  const sans = [...uriSans(opts.uris ?? []), ...dnsSans(opts.dnsNames ?? [])];
  const commonName = opts.commonName === undefined ? undefined : requireNonEmpty(opts.commonName, 'commonName');
  if (commonName === undefined && sans.length === 0) {
    throw new Error('issueClientCertificate: give a commonName or at least one URI/DNS name, or the certificate identifies nobody');
  }
  const defaults = validityWindow(opts.validityDays ?? 90);
  const notBefore = opts.notBefore ?? defaults.notBefore;
  // An explicit notBefore without notAfter keeps the requested validity length rather than ending at "now + days".
  const notAfter =
    opts.notAfter ?? (opts.notBefore === undefined ? defaults.notAfter : new Date(opts.notBefore.getTime() + (opts.validityDays ?? 90) * DAY_MS));
  const usage = opts.extendedKeyUsage === 'serverAuth' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth;
  return issueLeaf(ca, { commonName, sans, usage, notBefore, notAfter });
}

export function devCertificatePaths(dir: string): DevCertificatePaths {
  const resolved = path.resolve(dir);
  return {
    dir: resolved,
    caCert: path.join(resolved, 'ca.pem'),
    caKey: path.join(resolved, 'ca-key.pem'),
    serverCert: path.join(resolved, 'server.pem'),
    serverKey: path.join(resolved, 'server-key.pem'),
    clientCert: path.join(resolved, 'client.pem'),
    clientKey: path.join(resolved, 'client-key.pem'),
  };
}

export async function initDevCertificates(dir: string, opts: { force?: boolean } = {}): Promise<{ created: boolean; paths: DevCertificatePaths }> {
  const paths = devCertificatePaths(dir);
  const files = [paths.caCert, paths.caKey, paths.serverCert, paths.serverKey, paths.clientCert, paths.clientKey];
  if (opts.force !== true) {
    const present = await Promise.all(files.map(pathExists));
    const missing = files.filter((_, i) => present[i] !== true);
    if (missing.length === 0) {
      return { created: false, paths };
    }
    if (missing.length < files.length) {
      // Filling in only the missing files would pair new keys with old certificates (or a new CA with old leaves),
      // which fails later in a confusing way; the operator has to decide to regenerate everything.
      throw new Error(
        `Development certificates in ${paths.dir} are incomplete; missing: ${missing.map((f) => path.basename(f)).join(', ')}. ` +
          'Use --force to regenerate all of them.',
      );
    }
  }

  // Generate everything before writing anything, so a failure here leaves the directory as it was.
  const ca = await createCertificateAuthority({ commonName: DEV_CA_COMMON_NAME });
  const server = await issueServerCertificate(ca, { dnsNames: DEV_SERVER_DNS_NAMES, ipAddresses: DEV_SERVER_IP_ADDRESSES });
  const client = await issueClientCertificate(ca, { commonName: DEV_CLIENT_COMMON_NAME, uris: [DEV_CLIENT_URI] });

  // The mode only applies to directories it creates, so an existing directory keeps the operator's permissions.
  // Not fsp.mkdir({ recursive: true }): under /proc and similar trees it retries forever instead of failing.
  makeDirectory(paths.dir, 0o700);
  // Keys first: a crash midway then leaves an incomplete set that the next run refuses, never a certificate whose key is missing silently.
  await writeFileAtomic(paths.caKey, ca.keyPem, 0o600);
  await writeFileAtomic(paths.serverKey, server.keyPem, 0o600);
  await writeFileAtomic(paths.clientKey, client.keyPem, 0o600);
  await writeFileAtomic(paths.caCert, ca.certPem, 0o644);
  await writeFileAtomic(paths.serverCert, server.certPem, 0o644);
  await writeFileAtomic(paths.clientCert, client.certPem, 0o644);
  await fsyncDirectory(paths.dir);
  return { created: true, paths };
}

// ---------------------------------------------------------------------------

export type Sans = x509.JsonGeneralName[];

async function issueLeaf(
  ca: CertificateAndKey,
  leaf: { commonName: string | undefined; sans: Sans; usage: x509.ExtendedKeyUsage; notBefore: Date; notAfter: Date },
): Promise<CertificateAndKey> {
  const keys = await generateKeyPair();
  const certPem = await signLeaf(ca, keys.publicKey, leaf);
  return { certPem, keyPem: await exportPrivateKeyPem(keys.privateKey) };
}

/** A leaf for `publicKey`, signed by the CA: the subject, SANs, usage and validity are the caller's, nothing else. */
export async function signLeaf(
  ca: CertificateAndKey,
  publicKey: webcrypto.CryptoKey | x509.PublicKey,
  leaf: { commonName: string | undefined; sans: Sans; usage: x509.ExtendedKeyUsage; notBefore: Date; notAfter: Date },
): Promise<string> {
  if (!(leaf.notAfter.getTime() > leaf.notBefore.getTime())) {
    throw new Error('certificate notAfter must be later than notBefore');
  }
  const { caCert, caKey } = await loadCa(ca);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([leaf.usage], false),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
    await authorityKeyIdentifier(caCert),
  ];
  if (leaf.sans.length > 0) {
    // RFC 5280 4.2.1.6: with an empty subject the SAN carries the identity and must be critical.
    extensions.push(new x509.SubjectAlternativeNameExtension(leaf.sans, leaf.commonName === undefined));
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialNumber(),
    subject: leaf.commonName === undefined ? [] : distinguishedName(leaf.commonName),
    // The CA's Name object, not its string form, so the issuer bytes match the CA subject exactly for chain building.
    issuer: caCert.subjectName,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    publicKey,
    signingKey: caKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions,
  });
  return cert.toString('pem');
}

async function loadCa(ca: CertificateAndKey): Promise<{ caCert: x509.X509Certificate; caKey: webcrypto.CryptoKey }> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const constraints = caCert.getExtension(x509.BasicConstraintsExtension);
  if (constraints?.ca !== true) {
    throw new Error('the issuing certificate is not a CA (basicConstraints CA:true missing)');
  }
  // A mismatched cert/key pair would produce leaves that verify against nothing; catch it at issue time instead.
  const keyObject = createPrivateKey(ca.keyPem);
  const derivedSpki = createPublicKey(keyObject).export({ type: 'spki', format: 'der' });
  if (!derivedSpki.equals(Buffer.from(caCert.publicKey.rawData))) {
    throw new Error('the CA private key does not match the CA certificate');
  }
  const pkcs8 = keyObject.export({ type: 'pkcs8', format: 'der' });
  const caKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, KEY_ALGORITHM, false, ['sign']);
  return { caCert, caKey };
}

async function authorityKeyIdentifier(caCert: x509.X509Certificate): Promise<x509.AuthorityKeyIdentifierExtension> {
  // Reuse the CA's own SKI when present: recomputing could differ if the CA was made by another tool's method.
  const ski = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski !== null) {
    return new x509.AuthorityKeyIdentifierExtension(ski.keyId, false);
  }
  return x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey, false);
}

async function generateKeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify']);
}

async function exportPrivateKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', key);
  return createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' })
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

function randomSerialNumber(): string {
  // 128 random bits; the generator prepends 0x00 when the top bit is set, so the DER INTEGER stays positive.
  const bytes = randomBytes(16);
  // An all-zero serial would be replaced by the library; a leading non-zero byte keeps exactly our 16 bytes.
  if (bytes[0] === 0) bytes[0] = 1;
  return bytes.toString('hex');
}

function validityWindow(validityDays: number): { notBefore: Date; notAfter: Date } {
  if (!Number.isFinite(validityDays) || validityDays <= 0) {
    throw new Error(`validityDays must be a positive number, got ${String(validityDays)}`);
  }
  const now = Date.now();
  return { notBefore: new Date(now - CLOCK_SKEW_MS), notAfter: new Date(now + validityDays * DAY_MS) };
}

function distinguishedName(commonName: string): x509.JsonName {
  // JSON form, not "CN=..." text, so commas or '+' in a name cannot inject extra RDNs.
  return [{ CN: [commonName] }];
}

function requireNonEmpty(value: string, what: string): string {
  if (value.trim() === '') {
    throw new Error(`${what} must not be empty`);
  }
  return value;
}

function dnsSans(names: readonly string[]): Sans {
  return names.map((name) => {
    if (name === '' || /[\s/:@]/.test(name)) {
      throw new Error(`invalid DNS name for subjectAltName: ${JSON.stringify(name)}`);
    }
    return { type: 'dns', value: name };
  });
}

function ipSans(addresses: readonly string[]): Sans {
  return addresses.map((address) => {
    const family = isIP(address);
    // The library's IPv6 parser does not understand embedded dotted-quad forms such as ::ffff:1.2.3.4 and would encode garbage.
    if (family === 0 || (family === 6 && address.includes('.'))) {
      throw new Error(`invalid or unsupported IP address for subjectAltName: ${JSON.stringify(address)}`);
    }
    return { type: 'ip', value: address };
  });
}

function uriSans(uris: readonly string[]): Sans {
  return uris.map((uri) => {
    if (!URL.canParse(uri)) {
      throw new Error(`invalid URI for subjectAltName: ${JSON.stringify(uri)}`);
    }
    return { type: 'url', value: uri };
  });
}

async function pathExists(file: string): Promise<boolean> {
  try {
    await fsp.lstat(file);
    return true;
  } catch (err: unknown) {
    // ENOTDIR: a parent is a file; makeDirectory then reports that parent by name.
    if (isErrnoException(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return false;
    throw err;
  }
}

async function writeFileAtomic(file: string, contents: string, mode: number): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(8).toString('hex')}.tmp`);
  // O_EXCL|O_NOFOLLOW: never write through a planted file or symlink; the mode is set at creation so a key is never readable by others, even briefly.
  const handle = await fsp.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, mode);
  let renamed = false;
  try {
    await handle.writeFile(contents, 'utf8');
    await handle.sync();
    await handle.close();
    await fsp.rename(tmp, file);
    renamed = true;
  } finally {
    if (!renamed) {
      await handle.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
    }
  }
}

async function fsyncDirectory(dir: string): Promise<void> {
  // Makes the renames themselves durable; without it a power loss can leave the old (or no) directory entries.
  const handle = await fsp.open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isErrnoException(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && 'code' in err;
}
