// Hardened TLS settings for the listener (Mozilla "intermediate" profile, SECURITY-MATRIX D) and loading of cert files.
// Used at start and on SIGHUP reload, so a reloaded certificate can never come with weaker settings.
import { constants } from 'node:crypto';
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

export function readTlsMaterial(tls: Config['tls']): TlsMaterial {
  return {
    cert: readFileSync(tls.cert),
    key: readFileSync(tls.key),
    ca: tls.client_ca === undefined ? undefined : readFileSync(tls.client_ca),
  };
}

/** The secure-context part of the listener options: identical at start and on reload. */
export function secureContextOptions(material: TlsMaterial): SecureContextOptions {
  return {
    cert: material.cert,
    key: material.key,
    ...(material.ca !== undefined ? { ca: material.ca } : {}),
    minVersion: 'TLSv1.2',
    ciphers: CIPHERS,
    ecdhCurve: GROUPS,
    // Mozilla intermediate: let the client pick among equally strong suites (mobile clients prefer ChaCha20).
    honorCipherOrder: false,
    secureOptions: SECURE_OPTIONS,
  };
}
