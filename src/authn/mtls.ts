// The `mtls` authenticator: the principal is the client certificate's SAN, and only when the handshake verified the chain.
// The CN is never an identity (RFC 9525); certificates without a clientAuth EKU or without a usable SAN are rejected (TLS-09, TLS-11).
import { certificateThumbprintSha256 } from '../lib/thumbprint.js';
import { GatewayError } from '../errors/catalogue.js';
import type { Authenticator, AuthnResult, PeerCertificate, PresentedCredential, RequestContext } from '../pipeline/stage.js';

const CLIENT_AUTH_OID = '1.3.6.1.5.5.7.3.2';

/**
 * An absolute URI of RFC 3986 characters only. A SAN is IA5String, so spaces, controls, quotes, backslashes and non-ASCII
 * mean a malformed certificate; such a subject would also be unsafe to forward as an identity header or to compare.
 */
const URI_IDENTITY = /^[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]+$/;
/** A host name of LDH labels (RFC 1123); no wildcard, no empty label, no trailing dot. */
const DNS_IDENTITY = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * The identity `identityFromSubjectAltName` would read from a certificate with this one SAN, or undefined when no
 * certificate could ever carry it: what a tls_client_auth client is registered with (a URI, or a DNS name, lower-cased).
 */
export function certificateIdentity(value: string): string | undefined {
  if (URI_IDENTITY.test(value) && value.includes(':')) return value;
  return DNS_IDENTITY.test(value) ? value.toLowerCase() : undefined;
}

/**
 * Picks the identity from a subjectAltName string as Node formats it (`URI:spiffe://x, DNS:a.example`).
 * A URI SAN wins over a DNS SAN; there must be exactly one of the chosen kind, so a certificate cannot be ambiguous,
 * and it must be well-formed (an empty or malformed value identifies nobody).
 */
export function identityFromSubjectAltName(san: string | undefined): string | undefined {
  if (san === undefined || san === '') return undefined;
  const uris: string[] = [];
  const dnsNames: string[] = [];
  const entries = splitSubjectAltName(san);
  if (entries === undefined) return undefined;
  for (const entry of entries) {
    if (entry.startsWith('URI:')) uris.push(entry.slice(4));
    else if (entry.startsWith('DNS:')) dnsNames.push(entry.slice(4));
  }
  if (uris.length > 0) {
    const uri = uris.length === 1 ? uris[0] : undefined;
    return uri !== undefined && URI_IDENTITY.test(uri) ? uri : undefined;
  }
  const dns = dnsNames.length === 1 ? dnsNames[0] : undefined;
  // DNS names compare case-insensitively (RFC 4343): one name, one subject string for authz, quotas and audit.
  return dns !== undefined && DNS_IDENTITY.test(dns) ? dns.toLowerCase() : undefined;
}

/**
 * Node quotes SAN entries containing ',' or '"' as JSON strings; a naive split(', ') would let a SAN forge a second entry.
 * Returns undefined for text Node would never produce (fail closed rather than guess where an entry ends).
 */
function splitSubjectAltName(san: string): string[] | undefined {
  const entries: string[] = [];
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(':', i);
    if (colon === -1) return undefined;
    const kind = san.slice(i, colon + 1);
    let value: string;
    let next: number;
    if (san[colon + 1] === '"') {
      let end = colon + 2;
      while (end < san.length && san[end] !== '"') end += san[end] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(san.slice(colon + 1, end + 1)) as string;
      } catch {
        return undefined;
      }
      next = end + 1;
      if (next !== san.length && !san.startsWith(', ', next)) return undefined;
    } else {
      const comma = san.indexOf(', ', colon + 1);
      next = comma === -1 ? san.length : comma;
      value = san.slice(colon + 1, next);
    }
    entries.push(kind + value);
    i = next;
    if (san.startsWith(', ', i)) i += 2;
  }
  return entries;
}

/** Certificates refused although the handshake verified them (`gatehouse certs revoke`), by RFC 8705 x5t#S256. */
export interface RevokedCertificates {
  isCertificateRevoked(thumbprint: string): boolean;
}

export class MtlsAuthenticator implements Authenticator {
  readonly id = 'mtls';
  /**
   * One verification per connection: the certificate cannot change on it (renegotiation is off), so the result is kept
   * with the connection's PeerCertificate. Only its expiry is re-checked per request, since a connection can outlive it.
   */
  private readonly verified = new WeakMap<PeerCertificate, { readonly result: AuthnResult; readonly notAfter: number; readonly thumbprint: string }>();

  constructor(
    private readonly now: () => number = Date.now,
    /** Asked on every request, not once per connection: a revoked certificate is refused from its connection's next request. */
    private readonly revoked?: RevokedCertificates,
  ) {}

  authenticate(request: RequestContext): AuthnResult {
    const certificate = request.connection.peerCertificate;
    if (certificate === undefined) return { outcome: 'not-applicable' };
    let entry = this.verified.get(certificate);
    if (entry === undefined) {
      const thumbprint = certificateThumbprintSha256(certificate.raw);
      entry = { result: this.verify(certificate, thumbprint), notAfter: Date.parse(certificate.validTo), thumbprint };
      this.verified.set(certificate, entry);
    }
    if (entry.result.outcome !== 'authenticated') return entry.result;
    // An unparsable date is NaN, and NaN comparisons are false: such a certificate is treated as expired.
    if (!(this.now() <= entry.notAfter)) return rejected('client certificate expired during the connection', entry.thumbprint);
    if (this.revoked?.isCertificateRevoked(entry.thumbprint) === true) return rejected('client certificate revoked', entry.thumbprint);
    return entry.result;
  }

  private verify(certificate: PeerCertificate, thumbprint: string): AuthnResult {
    // `authorized` is set by OpenSSL's chain verification against the configured client CA, validity dates included.
    if (!certificate.authorized) return rejected(`client certificate not verified: ${certificate.authorizationError ?? 'unknown'}`, thumbprint);
    if (certificate.extKeyUsage !== undefined && !certificate.extKeyUsage.includes(CLIENT_AUTH_OID)) {
      return rejected('client certificate lacks clientAuth usage', thumbprint);
    }
    const subject = identityFromSubjectAltName(certificate.subjectAltName);
    if (subject === undefined) return rejected('client certificate has no usable SAN identity', thumbprint);
    return { outcome: 'authenticated', principal: { subject, method: 'mtls', scopes: new Set(), certificateThumbprint: thumbprint } };
  }
}

/**
 * A refusal that names the certificate by its thumbprint (computed here from the presented bytes): an investigator can tie
 * the attempts of one certificate together, and the SAN of an unverified certificate is never recorded as anyone's name.
 */
function rejected(reason: string, thumbprint: string): AuthnResult {
  const presented: PresentedCredential = { method: 'mtls', certificateThumbprint: thumbprint };
  return { outcome: 'rejected', error: new GatewayError('invalid_credential', { reason }), presented };
}
