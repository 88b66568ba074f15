// Hardened TLS settings for the listener (Mozilla "intermediate" profile, SECURITY-MATRIX D) and loading of cert files.
// Used at start and on SIGHUP reload, so a reloaded certificate can never come with weaker settings.
import { constants, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { SecureContextOptions } from 'node:tls';
import type { Config } from '../config/schema.js';

/** TLS 1.2 AEAD suites with forward secrecy only, then the three TLS 1.3 suites (TLS-02). No CBC, no RSA key exchange. */
export const CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Node's default adds secp521r1, X448 and finite-field groups (TLS-03). */
export const GROUPS = 'X25519:prime256v1:secp384r1';

/** node:http2 offers exactly this itself (h2, plus http/1.1 with allowHTTP1) and refuses others with no_application_protocol (TLS-08). */
export const ALPN = ['h2', 'http/1.1'];

/**
 * OpenSSL answers a renegotiation ClientHello with a no_renegotiation alert but leaves the connection open; the
 * disableRenegotiation() call on each socket is what closes it at the first attempt (TLS-04). Both stay.
 */
export const SECURE_OPTIONS = constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_NO_COMPRESSION;

export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer | undefined;
}

/** A TLS file that cannot be used, named with its config key and path: an operator's problem, said in one line. */
export class TlsFileError extends Error {
  constructor(
    readonly key: string,
    readonly file: string,
    problem: string,
  ) {
    super(`${key} ${file}: ${problem}`);
    this.name = 'TlsFileError';
  }
}

/**
 * The certificate, key and client CA, each read and parsed on its own: OpenSSL's errors for a bad file ("PEM routines::no
 * start line") name no file, so each is checked here first, and the key against the certificate.
 */
export function readTlsMaterial(tls: Config['tls']): TlsMaterial {
  const cert = readTlsFile('tls.cert', tls.cert);
  const key = readTlsFile('tls.key', tls.key);
  const ca = tls.client_ca === undefined ? undefined : readTlsFile('tls.client_ca', tls.client_ca);
  const leaf = parseCertificates('tls.cert', tls.cert, cert)[0] as X509Certificate;
  const privateKey = parsePrivateKey(tls.key, key);
  if (!leaf.checkPrivateKey(privateKey)) throw new TlsFileError('tls.key', tls.key, `is not the private key of the certificate in ${tls.cert}`);
  if (ca !== undefined && tls.client_ca !== undefined) parseCertificates('tls.client_ca', tls.client_ca, ca);
  return { cert, key, ca };
}

const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory, not a file',
  ENOTDIR: 'a part of the path is not a directory',
  ELOOP: 'too many symbolic links',
};

function readTlsFile(key: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const text = code === undefined ? String((error as Error).message) : `${ERRNO_TEXT[code] ?? 'cannot be read'} (${code})`;
    throw new TlsFileError(key, file, `cannot read the file: ${text}`);
  }
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

function parseCertificates(key: string, file: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new TlsFileError(key, file, 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new TlsFileError(key, file, `certificate ${index + 1} of ${blocks.length} is not a valid X.509 certificate`);
    }
  });
}

function parsePrivateKey(file: string, pem: Buffer): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (error) {
    // Never the key's bytes; OpenSSL's reason says enough (no start line, bad decrypt, unsupported).
    const reason = (error as Error).message.replace(/^error:[0-9A-F]+:/, '');
    throw new TlsFileError('tls.key', file, `is not a usable unencrypted PEM private key (${reason})`);
  }
}

/**
 * The secure-context part of the listener options: identical at start and on reload. `clientCas`: the CA certificates
 * client certificates must chain to (tls.client_ca's file, the store's client CA), or undefined when none are asked for.
 * An empty list trusts nothing — never Node's default public roots, which a list left out would mean.
 */
export function secureContextOptions(material: TlsMaterial, clientCas: readonly (Buffer | string)[] | undefined): SecureContextOptions {
  return {
    cert: material.cert,
    key: material.key,
    ...(clientCas !== undefined ? { ca: [...clientCas] } : {}),
    minVersion: 'TLSv1.2',
    ciphers: CIPHERS,
    ecdhCurve: GROUPS,
    // Mozilla intermediate: let the client pick among equally strong suites (mobile clients prefer ChaCha20).
    honorCipherOrder: false,
    secureOptions: SECURE_OPTIONS,
  };
}
