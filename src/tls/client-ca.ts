// The client-certificate authority's issuing step (issue #11 item 4): a short-lived client certificate whose identity is
// the one the CA decides — a client's URI or DNS SAN — for a key the client holds (from its CSR) or one made here. A CSR
// contributes its public key and nothing else: its subject, requested SANs and extensions are ignored, so a client cannot
// ask for another identity, a CA certificate or a longer life; its self-signature must verify (it proves the key), and the
// key must be one the TLS listener accepts from clients (P-256, P-384, Ed25519, RSA of at least 2048 bits).
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPublicKey } from 'node:crypto';
import { certificateThumbprintSha256 } from '../lib/thumbprint.js';
// ca.js sets @peculiar/x509's crypto provider when it loads.
import { CLOCK_SKEW_MS, type CertificateAndKey, issueClientCertificate, signLeaf } from './ca.js';

/** Where the identity goes: a URI SAN (e.g. spiffe://…) or a DNS SAN; the mtls authenticator reads exactly this back. */
export interface CertificateIdentity {
  readonly kind: 'uri' | 'dns';
  readonly value: string;
}

export interface ClientCertificateRequest {
  readonly identity: CertificateIdentity;
  /** Lifetime in seconds from now (24 h by default at the CLI). */
  readonly ttlS: number;
  /** PEM PKCS#10 request: the certificate is for its key. Absent: a P-256 key is made here and returned with it. */
  readonly csrPem?: string;
  /** For people reading the certificate; never an identity (the mtls authenticator ignores the CN). */
  readonly commonName?: string;
}

export interface IssuedClientCertificate {
  readonly certPem: string;
  /** PKCS#8 PEM, only when no CSR was given. */
  readonly keyPem: string | undefined;
  /** Hex, lower case: the form the store records and `certs revoke` takes. */
  readonly serial: string;
  /** RFC 8705 x5t#S256 of the certificate: what cert-bound tokens and the audit name it by. */
  readonly thumbprint: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly identity: CertificateIdentity;
}

export class CsrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CsrError';
  }
}

const MAX_TTL_S = 366 * 86_400;
const MIN_RSA_BITS = 2048;
const MAX_CSR_BYTES = 16_384;

export async function issueClientCertificateFor(ca: CertificateAndKey, request: ClientCertificateRequest): Promise<IssuedClientCertificate> {
  if (!Number.isSafeInteger(request.ttlS) || request.ttlS < 60 || request.ttlS > MAX_TTL_S) {
    throw new RangeError(`ttl must be between 60 s and ${MAX_TTL_S} s`);
  }
  const now = Date.now();
  const notBefore = new Date(now - CLOCK_SKEW_MS);
  const notAfter = new Date(now + request.ttlS * 1000);
  const { identity } = request;
  let certPem: string;
  let keyPem: string | undefined;
  if (request.csrPem !== undefined) {
    const san: x509.JsonGeneralName = identity.kind === 'uri' ? { type: 'url', value: identity.value } : { type: 'dns', value: identity.value };
    const leaf = { commonName: request.commonName, sans: [san], usage: x509.ExtendedKeyUsage.clientAuth, notBefore, notAfter };
    certPem = await signLeaf(ca, await csrPublicKey(request.csrPem), leaf);
  } else {
    // The development CA's path: a P-256 key made here, returned once with its certificate.
    ({ certPem, keyPem } = await issueClientCertificate(ca, {
      ...(request.commonName !== undefined ? { commonName: request.commonName } : {}),
      ...(identity.kind === 'uri' ? { uris: [identity.value] } : { dnsNames: [identity.value] }),
      notBefore,
      notAfter,
    }));
  }
  const certificate = new x509.X509Certificate(certPem);
  return {
    certPem,
    keyPem,
    serial: certificate.serialNumber.toLowerCase(),
    thumbprint: certificateThumbprintSha256(Buffer.from(certificate.rawData)),
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
    identity: request.identity,
  };
}

/** The public key of a CSR whose self-signature verifies and whose key is acceptable; CsrError otherwise. */
export async function csrPublicKey(pem: string): Promise<x509.PublicKey> {
  if (pem.length > MAX_CSR_BYTES) throw new CsrError('the CSR is too large');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch {
    throw new CsrError('not a PEM PKCS#10 certificate request');
  }
  let verified = false;
  try {
    verified = await csr.verify();
  } catch {
    verified = false;
  }
  if (!verified) throw new CsrError('the CSR signature does not verify: it does not prove its key');
  const key = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  const details = key.asymmetricKeyDetails;
  const acceptable =
    (key.asymmetricKeyType === 'ec' && (details?.namedCurve === 'prime256v1' || details?.namedCurve === 'secp384r1')) ||
    key.asymmetricKeyType === 'ed25519' ||
    (key.asymmetricKeyType === 'rsa' && (details?.modulusLength ?? 0) >= MIN_RSA_BITS);
  if (!acceptable) throw new CsrError('the CSR key must be P-256, P-384, Ed25519 or RSA of at least 2048 bits');
  return csr.publicKey;
}

/**
 * The identities a CSR asks for in its subjectAltName extension (URIs as they are, DNS names lower-cased; any other kind
 * of name as `kind:value`), [] when it asks for none. The CA never grants them; the renewal endpoint refuses a CSR that
 * asks for an identity other than the one it renews.
 */
export function csrRequestedNames(pem: string): string[] {
  const csr = new x509.Pkcs10CertificateRequest(pem);
  const extension = csr.getExtension('2.5.29.17');
  if (extension === null) return [];
  return new x509.SubjectAlternativeNameExtension(extension.rawData).names.items.map((name) =>
    name.type === 'url' ? name.value : name.type === 'dns' ? name.value.toLowerCase() : `${name.type}:${name.value}`,
  );
}

/** A PKCS#10 request as PEM: given as PEM, or (RFC 5967 application/pkcs10) as base64 DER. CsrError for anything else. */
export function csrPem(body: string): string {
  const text = body.trim();
  if (text.startsWith('-----BEGIN CERTIFICATE REQUEST-----')) return text;
  if (!/^[A-Za-z0-9+/=\r\n]+$/.test(text)) throw new CsrError('not a PEM or base64 PKCS#10 certificate request');
  const base64 = text.replace(/[\r\n]/g, '');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${base64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE REQUEST-----\n`;
}
