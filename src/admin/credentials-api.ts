// The admin API's signing keys and issued client certificates (issue #12 item 4): `gatehouse keys list|revoke` and
// `gatehouse certs list|revoke` as JSON, with the CLI's operations and views, each change an `admin` record naming the
// admin's credential.
//
//   GET  /v1/keys                          the signing keys and the state of each (exactly one signs)
//   POST /v1/keys/rotate                   publish a new key that signs after the publication delay ({"now": true}: at once)
//   POST /v1/keys/{kid}/revoke             emergency revocation: unpublished now, every token it signed refused
//   GET  /v1/ca                            the client CA's certificate and fingerprint
//   POST /v1/ca                            make the client CA once ({"common_name"}), its key sealed in the store
//   GET  /v1/certificates?client=&limit=&after=   issued certificates, by serial
//   POST /v1/certificates                  issue one for a client's registered identity ({"client_id", "ttl_s", "csr"})
//   POST /v1/certificates/{serial}/revoke  refused from the next request on, inside its validity too (idempotent)
import { z } from 'zod';
import { GatewayError } from '../errors/catalogue.js';
import {
  CERTIFICATE_TTL_S,
  caFingerprint,
  ClientCaError,
  DEFAULT_CA_NAME,
  DEFAULT_CLIENT_CERTIFICATE_TTL_S,
  issuedCertificateView,
  issuedFields,
  issuedView,
  normalSerial,
} from '../issuer/client-ca-store.js';
import { clientIdProblem, nameProblem } from '../issuer/client-rules.js';
import { signingKeyStates, signingKeyView, type SigningKeyRevocation } from '../issuer/key-schedule.js';
import type { RotationReport } from '../issuer/key-rotation.js';
import { KID_SHAPE, SIGNING_ALGORITHMS, type SigningAlgorithm } from '../issuer/signing-key.js';
import { isoTime } from '../lib/iso-time.js';
import type { AuthenticatedRequest, ServiceResult } from '../pipeline/stage.js';
import type { CertificateStore, Client, ClientCa, ClientStore, SigningKeyStore } from '../store/contract.js';
import { CsrError, type IssuedClientCertificate } from '../tls/client-ca.js';
import {
  answer,
  ApiResource,
  type ApiParts,
  badQuery,
  type JsonBody,
  methodOf,
  noSuch,
  notAllowed,
  pageOf,
  pageQuery,
  refused,
  rule,
  segmentsUnder,
} from './api.js';

export const KEYS_PATH = '/v1/keys';
export const CERTIFICATES_PATH = '/v1/certificates';

const NO_SETTINGS = z.strictObject({});

export interface KeysApiParts extends ApiParts {
  readonly store: SigningKeyStore;
  /** `keys revoke` with the issuer's master key and algorithm (issuer.revokeSigningKey). */
  readonly revoke: (kid: string) => Promise<SigningKeyRevocation>;
  /** `keys rotate [--now]` with the issuer's master key and settings (issuer.rotateSigningKeys). */
  readonly rotate: (opts: {
    readonly alg: SigningAlgorithm | undefined;
    readonly immediately: boolean;
  }) => Promise<{ readonly report: RotationReport; readonly changes: Readonly<Record<string, unknown>> }>;
}

const ROTATION = z.strictObject({ alg: z.enum(SIGNING_ALGORITHMS).optional(), now: z.boolean().optional() });

export class KeysApi extends ApiResource {
  constructor(private readonly keys: KeysApiParts) {
    super(keys, 'no such signing key');
  }

  protected async handle(request: AuthenticatedRequest, body: JsonBody): Promise<ServiceResult> {
    const segments = segmentsUnder(KEYS_PATH, request.path);
    const method = methodOf(request);
    if (segments === undefined) return refused(noSuch('no such admin resource'));
    const [kid, action] = segments;
    if (kid === undefined) {
      if (method !== 'GET') return notAllowed('GET, HEAD');
      const stored = await this.keys.store.listSigningKeys();
      const states = signingKeyStates(stored, this.parts.now());
      return answer(200, { keys: stored.map((key) => signingKeyView(key, states)) });
    }
    if (kid === 'rotate' && action === undefined) {
      if (method !== 'POST') return notAllowed('POST');
      const asked = await body.parse(ROTATION, true);
      this.auditable();
      const { report, changes } = await this.keys.rotate({ alg: asked.alg, immediately: asked.now === true });
      await this.recorded(request, 'key.rotate', report.kid, changes, true);
      return answer(200, report);
    }
    if (action !== 'revoke' || !KID_SHAPE.test(kid)) return refused(noSuch(action === 'revoke' ? 'no such signing key' : 'no such action'));
    if (method !== 'POST') return notAllowed('POST');
    await body.parse(NO_SETTINGS, true);
    this.auditable();
    const { revoked, succession, signer } = await this.keys.revoke(kid);
    if (revoked !== undefined) {
      await this.recorded(request, 'key.revoke', kid, { revoked_at: isoTime(revoked.revokedAt), succession, signer: signer?.kid ?? null }, true);
    }
    return answer(200, { kid, revoked: revoked !== undefined, revoked_at: isoTime(revoked?.revokedAt ?? null), succession, signer: signer?.kid ?? null });
  }
}

export const CA_PATH = '/v1/ca';

export interface CertificatesApiParts extends ApiParts {
  readonly store: CertificateStore & ClientStore;
  /** `ca init` with the issuer's master key. */
  readonly initClientCa: (commonName: string) => Promise<ClientCa>;
  /** `certs issue` with the issuer's master key. */
  readonly issueCertificate: (
    client: Client,
    opts: { readonly ttlS: number; readonly csrPem?: string },
  ) => Promise<{ readonly issued: IssuedClientCertificate; readonly caPem: string }>;
}

const ISSUE = z.strictObject({
  client_id: z.string(),
  ttl_s: z.int().min(CERTIFICATE_TTL_S.min).max(CERTIFICATE_TTL_S.max).optional(),
  csr: z.string().max(8192).optional(),
});
const CA_INIT = z.strictObject({ common_name: z.string().superRefine(rule(nameProblem)).optional() });

/** A client-CA refusal as the API answers it: the state that stands in the way, in `detail`. */
function caRefusal(error: unknown): never {
  if (error instanceof ClientCaError && error.code !== 'undecryptable_ca') {
    const detail = {
      no_ca: 'the store has no client CA: POST /v1/ca first',
      ca_exists: 'the store has a client CA already (it is never replaced in place)',
      no_identity: 'the client has no tls_client_auth_subject to put in a certificate',
      client_disabled: 'the client is disabled',
    }[error.code];
    throw new GatewayError('conflict', { reason: `client CA: ${error.code}`, detail });
  }
  if (error instanceof CsrError) throw new GatewayError('invalid_request', { reason: 'admin API CSR', detail: `csr: ${error.message}` });
  throw error;
}

/** `ca init` and `ca cert`: the client CA of the store. */
export class CaApi extends ApiResource {
  constructor(private readonly certificates: CertificatesApiParts) {
    super(certificates, 'no client CA');
  }

  protected async handle(request: AuthenticatedRequest, body: JsonBody): Promise<ServiceResult> {
    const segments = segmentsUnder(CA_PATH, request.path);
    if (segments === undefined || segments.length > 0) return refused(noSuch('no such admin resource'));
    const method = methodOf(request);
    if (method === 'GET') {
      const ca = await this.certificates.store.getClientCa();
      if (ca === undefined) return refused(noSuch('no client CA'));
      return answer(200, await caView(ca));
    }
    if (method !== 'POST') return notAllowed('GET, HEAD, POST');
    const asked = await body.parse(CA_INIT, true);
    this.auditable();
    const commonName = asked.common_name ?? DEFAULT_CA_NAME;
    const ca = await this.certificates.initClientCa(commonName).catch(caRefusal);
    const view = await caView(ca);
    await this.recorded(request, 'ca.init', 'client-ca', { sha256_fingerprint: view.sha256_fingerprint, common_name: commonName }, true);
    return answer(201, view, { location: CA_PATH });
  }
}

async function caView(ca: ClientCa) {
  return { created_at: isoTime(ca.createdAt), sha256_fingerprint: await caFingerprint(ca.certPem), certificate: ca.certPem };
}

export class CertificatesApi extends ApiResource {
  constructor(private readonly certificates: CertificatesApiParts) {
    super(certificates, 'no such certificate');
  }

  protected async handle(request: AuthenticatedRequest, body: JsonBody): Promise<ServiceResult> {
    const segments = segmentsUnder(CERTIFICATES_PATH, request.path);
    const method = methodOf(request);
    if (segments === undefined) return refused(noSuch('no such admin resource'));
    const [serialText, action] = segments;
    const now = this.parts.now();
    if (serialText === undefined) {
      if (method === 'POST') return this.issue(request, await body.parse(ISSUE));
      if (method !== 'GET') return notAllowed('GET, HEAD, POST');
      const asked = pageQuery(request.query, (value) => normalSerial(value) === value, ['client']);
      const client = asked.filters.get('client');
      if (client !== undefined && clientIdProblem(client) !== undefined) throw badQuery('client: a client id');
      const all = await this.certificates.store.listIssuedCertificates();
      const page = pageOf(
        all.filter((certificate) => client === undefined || certificate.clientId === client),
        (certificate) => certificate.serial,
        asked,
      );
      return answer(200, { certificates: page.items.map((certificate) => issuedCertificateView(certificate, now)), next_after: page.nextAfter });
    }
    const serial = normalSerial(serialText);
    if (action !== 'revoke' || serial === undefined) return refused(noSuch(action === 'revoke' ? 'no such certificate' : 'no such action'));
    if (method !== 'POST') return notAllowed('POST');
    await body.parse(NO_SETTINGS, true);
    this.auditable();
    const revoked = await this.certificates.store.revokeCertificate(serial, now);
    const changed = revoked.revokedAt === now;
    if (changed) {
      await this.recorded(
        request,
        'certificate.revoke',
        serial,
        { client_id: revoked.clientId, subject: revoked.subject, thumbprint: revoked.thumbprint },
        true,
      );
    }
    return answer(200, { ...issuedCertificateView(revoked, now), changed });
  }

  /** `certs issue`: the client's registered identity; a CSR gives only its key (then no private key is in the answer). */
  private async issue(request: AuthenticatedRequest, asked: z.infer<typeof ISSUE>): Promise<ServiceResult> {
    if (clientIdProblem(asked.client_id) !== undefined) throw noSuch('no such client');
    const client = await this.certificates.store.getClient(asked.client_id);
    if (client === undefined) throw noSuch('no such client');
    this.auditable();
    const csrPem = asked.csr;
    const { issued, caPem } = await this.certificates
      .issueCertificate(client, { ttlS: asked.ttl_s ?? DEFAULT_CLIENT_CERTIFICATE_TTL_S, ...(csrPem !== undefined ? { csrPem } : {}) })
      .catch(caRefusal);
    await this.recorded(request, 'certificate.issue', issued.serial, issuedFields(issued, client, csrPem !== undefined), true);
    return answer(
      201,
      {
        ...issuedView(issued, client),
        certificate: issued.certPem,
        ca_certificate: caPem,
        // Made here: the only copy of the key, in this answer (no-store); Gatehouse keeps only the certificate record.
        ...(issued.keyPem !== undefined ? { private_key: issued.keyPem } : {}),
      },
      { location: `${CERTIFICATES_PATH}?client=${encodeURIComponent(client.id)}` },
    );
  }
}
