// The client-certificate authority as the store keeps it (issue #11 item 4): made once by `gatehouse ca init`, its private
// key sealed under the key-encryption key (AAD `client-ca`), so every instance and admin command sharing the store and the
// master key issues under the same CA and trusts it. Every certificate issued is recorded (serial, client, identity,
// validity, thumbprint) before it is handed out, so a certificate the store does not know was never issued here.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { KeyDecryptionError, type KeyEncryptionKey } from '../lib/key-encryption.js';
import type { Client, ClientCa, CredentialStore, IssuedCertificate } from '../store/contract.js';
import { type CertificateAndKey, createCertificateAuthority } from '../tls/ca.js';
import { type CertificateIdentity, type IssuedClientCertificate, issueClientCertificateFor } from '../tls/client-ca.js';
import { isoTime } from '../lib/iso-time.js';

/** The additional data the CA key is sealed with: a ciphertext moved to another column does not open. */
const CA_KEY_AAD = 'client-ca';
const DEFAULT_CA_VALIDITY_DAYS = 5 * 365;
/** What certs issue gives by default: a day, so a client renews daily and a lost certificate is soon worthless. */
export const DEFAULT_CLIENT_CERTIFICATE_TTL_S = 86_400;

export class ClientCaError extends Error {
  constructor(
    readonly code: 'no_ca' | 'ca_exists' | 'undecryptable_ca' | 'no_identity' | 'client_disabled',
    message: string,
  ) {
    super(message);
    this.name = 'ClientCaError';
  }
}

/** Makes the client CA and stores it; ClientCaError('ca_exists') when the store has one (it is never replaced here). */
export async function initClientCa(
  store: CredentialStore,
  kek: KeyEncryptionKey,
  opts: { readonly commonName: string; readonly validityDays?: number; readonly now: number },
): Promise<ClientCa> {
  if ((await store.getClientCa()) !== undefined) throw new ClientCaError('ca_exists', 'the store has a client CA already');
  const made = await createCertificateAuthority({ commonName: opts.commonName, validityDays: opts.validityDays ?? DEFAULT_CA_VALIDITY_DAYS });
  const ca: ClientCa = { certPem: made.certPem, encryptedPrivateKey: kek.encrypt(Buffer.from(made.keyPem), CA_KEY_AAD), createdAt: opts.now };
  // Two inits at once: the store's single-row table lets one win; the other is refused with conflict.
  await store.createClientCa(ca);
  return ca;
}

/** The CA with its key opened; ClientCaError('no_ca') when `gatehouse ca init` has not run. */
export async function openClientCa(store: CredentialStore, kek: KeyEncryptionKey): Promise<CertificateAndKey> {
  const ca = await store.getClientCa();
  if (ca === undefined) throw new ClientCaError('no_ca', 'the store has no client CA: run `gatehouse ca init` first');
  let keyPem: string;
  try {
    keyPem = kek.decrypt(ca.encryptedPrivateKey, CA_KEY_AAD).toString();
  } catch (error) {
    if (!(error instanceof KeyDecryptionError)) throw error;
    throw new ClientCaError('undecryptable_ca', 'the master key does not open the client CA: it was sealed under another master key');
  }
  return { certPem: ca.certPem, keyPem };
}

/** Where a registered tls_client_auth identity goes in a certificate: a URI SAN when it has a scheme, else a DNS SAN. */
export function identityOf(subject: string): CertificateIdentity {
  return subject.includes(':') ? { kind: 'uri', value: subject } : { kind: 'dns', value: subject };
}

/**
 * Issues a certificate for `client` with the identity it is registered with (`tls_client_auth`), so it authenticates at
 * the token endpoint with it at once and at mtls routes as that subject, and records it in the store before returning it.
 */
export async function issueForClient(
  store: CredentialStore,
  ca: CertificateAndKey,
  client: Client,
  opts: { readonly ttlS: number; readonly csrPem?: string; readonly now: number },
): Promise<IssuedClientCertificate> {
  if (!client.enabled) throw new ClientCaError('client_disabled', `client ${client.id} is disabled`);
  const subject = client.tlsClientAuthSubject;
  if (subject === null) {
    throw new ClientCaError(
      'no_identity',
      `client ${client.id} has no certificate identity: register one with \`gatehouse clients update ${client.id} --tls-client-auth <URI or DNS name>\``,
    );
  }
  const issued = await issueClientCertificateFor(ca, {
    identity: identityOf(subject),
    ttlS: opts.ttlS,
    commonName: client.id,
    ...(opts.csrPem !== undefined ? { csrPem: opts.csrPem } : {}),
  });
  await store.addIssuedCertificate(certificateRecord(client.id, issued, opts.now));
  return issued;
}

export function certificateRecord(clientId: string, issued: IssuedClientCertificate, now: number): IssuedCertificate {
  return {
    serial: issued.serial,
    clientId,
    subject: issued.identity.value,
    thumbprint: issued.thumbprint,
    notBefore: issued.notBefore.getTime(),
    notAfter: issued.notAfter.getTime(),
    issuedAt: now,
    revokedAt: null,
  };
}

/** The CA certificate's SHA-256 fingerprint as OpenSSL prints it (AB:CD:…), for an operator to compare. */
export async function caFingerprint(certPem: string): Promise<string> {
  const hex = Buffer.from(await new x509.X509Certificate(certPem).getThumbprint('SHA-256'))
    .toString('hex')
    .toUpperCase();
  return hex.replace(/(..)(?!$)/g, '$1:');
}

/** An issued certificate's state at `now`: revoked wins over expired. */
export function issuedCertificateState(certificate: IssuedCertificate, now: number): 'valid' | 'expired' | 'revoked' {
  if (certificate.revokedAt !== null) return 'revoked';
  return certificate.notAfter <= now ? 'expired' : 'valid';
}

/** An issued certificate as `certs list --json` and the admin API show it. */
export function issuedCertificateView(certificate: IssuedCertificate, now: number) {
  return {
    serial: certificate.serial,
    client_id: certificate.clientId,
    subject: certificate.subject,
    state: issuedCertificateState(certificate, now),
    thumbprint: certificate.thumbprint,
    not_before: isoTime(certificate.notBefore),
    not_after: isoTime(certificate.notAfter),
    issued_at: isoTime(certificate.issuedAt),
    revoked_at: isoTime(certificate.revokedAt),
  };
}

/** A certificate serial as `certs list` and OpenSSL print it (hex, colons allowed), in the store's lower-case form; undefined if it is none. */
export function normalSerial(value: string): string | undefined {
  const serial = value.replaceAll(':', '').toLowerCase();
  return /^[0-9a-f]{1,64}$/.test(serial) ? serial : undefined;
}

/** How long an issued client certificate may be valid: 5 minutes to 366 days. */
export const CERTIFICATE_TTL_S = { min: 5 * 60, max: 366 * 86_400 } as const;

/** The common name `ca init` gives the client CA unless told otherwise. */
export const DEFAULT_CA_NAME = 'Gatehouse Client CA';

/** A certificate just issued, as `certs issue --json` and POST /v1/certificates show it (before what each adds). */
export function issuedView(issued: IssuedClientCertificate, client: Client) {
  return {
    serial: issued.serial,
    client_id: client.id,
    subject: issued.identity.value,
    thumbprint: issued.thumbprint,
    not_before: issued.notBefore.toISOString(),
    not_after: issued.notAfter.toISOString(),
  };
}

/** What the admin record of an issued certificate says (never the key). */
export function issuedFields(issued: IssuedClientCertificate, client: Client, fromCsr: boolean): Readonly<Record<string, unknown>> {
  return {
    client_id: client.id,
    subject: issued.identity.value,
    thumbprint: issued.thumbprint,
    not_after: issued.notAfter.toISOString(),
    key_from: fromCsr ? 'csr' : 'made here',
  };
}
