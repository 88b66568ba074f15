// The certificate renewal endpoint (issue #11 item 4): a client holding a valid, unrevoked certificate of the store's client
// CA posts a CSR over that mTLS connection and gets a fresh certificate with the same identity and lifetime, so services
// never need long-lived certificates. The connection's certificate is the only credential: it must be one this CA issued
// (its record is in the store), of a client that still exists, is enabled and is still registered with that identity; the
// CSR proves its key and may not ask for any other identity.
import { CLOCK_SKEW_MS } from '../tls/ca.js';
import { CsrError, csrPem, csrRequestedNames } from '../tls/client-ca.js';
import { GatewayError, type ErrorCode } from '../errors/catalogue.js';
import type { KeyEncryptionKey } from '../lib/key-encryption.js';
import type { AuthenticatedRequest, RequestBody, Service, ServiceResult } from '../pipeline/stage.js';
import { consumePoint } from '../quota/rate.js';
import type { Window } from '../quota/backend.js';
import type { CredentialStore } from '../store/contract.js';
import { issueForClient, openClientCa } from './client-ca-store.js';

/** Renewals one client may make per hour (counted where every instance counts, when limits are shared). */
export const RENEWALS_PER_HOUR = 6;
/** A PEM CSR of an RSA-4096 key is under 2 KiB; anything near this is not a CSR. */
export const RENEWAL_BODY_LIMIT_BYTES = 16_384;
const MIN_TTL_S = 300;
const MAX_TTL_S = 366 * 86_400;

export interface CertificateIssued {
  readonly type: 'client_certificate_issued';
  readonly serial: string;
  readonly client_id: string;
  readonly subject: string;
  readonly thumbprint: string;
  readonly not_after: string;
  /** The thumbprint of the certificate that was renewed. */
  readonly renewed_from: string;
}

function refused(code: ErrorCode, reason: string, unreadBody = false): ServiceResult {
  return { outcome: 'refused', error: new GatewayError(code, { reason }), ...(unreadBody ? { unreadBody } : {}) };
}

export class CertificateRenewalEndpoint implements Service {
  readonly kind = 'service';

  constructor(
    private readonly store: CredentialStore,
    private readonly kek: KeyEncryptionKey,
    private readonly report: (event: CertificateIssued) => void,
    private readonly now: () => number,
    /** Issuances per client (RENEWALS_PER_HOUR): a holder cannot make the CA sign, or the store grow, without end. */
    private readonly renewals: Window,
  ) {}

  async serve(request: AuthenticatedRequest, body: RequestBody): Promise<ServiceResult> {
    const { principal } = request;
    const presented = principal.certificateThumbprint;
    if (principal.method !== 'mtls' || presented === undefined) return refused('unauthenticated', 'renewal needs the client certificate it renews');
    const type = body.header('content-type')?.split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/pkcs10') return refused('unsupported_media_type', 'renewal takes an application/pkcs10 body', request.hasBody);
    const raw = await body.read(RENEWAL_BODY_LIMIT_BYTES);
    if (raw === 'too_large') return refused('payload_too_large', 'CSR over the renewal limit', true);
    if (raw === 'gone') return { outcome: 'gone', reason: 'client left before the CSR was complete' };

    const record = await this.store.findIssuedCertificate(presented);
    // A certificate of another CA (tls.client_ca) authenticates, but only this CA's own certificates are renewed here.
    if (record === undefined) return refused('forbidden', 'certificate not issued by the client CA');
    if (record.revokedAt !== null) return refused('invalid_credential', 'client certificate revoked');
    const client = await this.store.getClient(record.clientId);
    if (client === undefined || !client.enabled) return refused('forbidden', 'client disabled or removed');
    if (client.tlsClientAuthSubject !== record.subject || principal.subject !== record.subject) {
      return refused('forbidden', 'client identity changed since the certificate was issued');
    }

    let pem: string;
    try {
      pem = csrPem(raw.toString('latin1'));
      const asked = csrRequestedNames(pem);
      // The subject is the registered identity as the mtls authenticator reads it (checked against the principal above).
      if (asked.some((name) => name !== record.subject)) return refused('invalid_request', 'CSR asks for another identity');
    } catch {
      return refused('invalid_request', 'not a PKCS#10 certificate request');
    }
    // The same lifetime as the certificate renewed (its notBefore was back-dated by the clock skew allowance).
    const lifetimeS = Math.round((record.notAfter - record.notBefore - CLOCK_SKEW_MS) / 1000);
    const ttlS = Math.min(MAX_TTL_S, Math.max(MIN_TTL_S, lifetimeS));
    const budget = await consumePoint(this.renewals, client.id, 'certificate-renewals');
    if (!budget.allowed) return { outcome: 'refused', error: budget.error };
    const ca = await openClientCa(this.store, this.kek);
    let issued: Awaited<ReturnType<typeof issueForClient>>;
    try {
      issued = await issueForClient(this.store, ca, client, { ttlS, csrPem: pem, now: this.now() });
    } catch (error) {
      if (error instanceof CsrError) return refused('invalid_request', error.message);
      throw error;
    }
    this.report({
      type: 'client_certificate_issued',
      serial: issued.serial,
      client_id: client.id,
      subject: issued.identity.value,
      thumbprint: issued.thumbprint,
      not_after: issued.notAfter.toISOString(),
      renewed_from: presented,
    });
    return {
      outcome: 'answered',
      answer: {
        status: 200,
        headers: { 'cache-control': 'no-store' },
        body: {
          certificate: issued.certPem,
          ca_certificate: ca.certPem,
          serial: issued.serial,
          not_before: issued.notBefore.toISOString(),
          not_after: issued.notAfter.toISOString(),
        },
      },
      // The allow record names the certificate issued (the request's own certificate is in the operational event).
      credential: { method: 'mtls', subject: record.subject, clientId: client.id, certificateThumbprint: issued.thumbprint },
    };
  }
}
