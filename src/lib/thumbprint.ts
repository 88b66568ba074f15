// RFC 8705 certificate thumbprints: what mTLS principals and certificate-bound tokens are keyed by.
import { createHash, X509Certificate } from 'node:crypto';

/** RFC 8705 `x5t#S256`: base64url (unpadded) SHA-256 of the certificate's DER. A Buffer is taken as DER as-is; a string must be PEM. */
export function certificateThumbprintSha256(derOrPem: Buffer | string): string {
  // Hashing a Buffer directly keeps the per-request path (socket.getPeerCertificate().raw) free of a re-parse.
  const der = typeof derOrPem === 'string' ? new X509Certificate(derOrPem).raw : derOrPem;
  return createHash('sha256').update(der).digest('base64url');
}
