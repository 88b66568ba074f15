// The admin API's signing keys and issued client certificates (issue #12 item 4): `gatehouse keys list|revoke` and
// `gatehouse certs list|revoke` as JSON, with the CLI's operations and views, each change an `admin` record naming the
// admin's credential.
//
//   GET  /v1/keys                          the signing keys and the state of each (exactly one signs)
//   POST /v1/keys/rotate                   publish a new key that signs after the publication delay ({"now": true}: at once)
//   POST /v1/keys/{kid}/revoke             emergency revocation: unpublished now, every token it signed refused
//   GET  /v1/certificates?client=&limit=&after=   issued certificates, by serial
//   POST /v1/certificates/{serial}/revoke  refused from the next request on, inside its validity too (idempotent)
import { z } from 'zod';
import { issuedCertificateView, normalSerial } from '../issuer/client-ca-store.js';
import { clientIdProblem } from '../issuer/client-rules.js';
import { signingKeyStates, signingKeyView, type SigningKeyRevocation } from '../issuer/key-schedule.js';
import type { RotationReport } from '../issuer/key-rotation.js';
import { KID_SHAPE, SIGNING_ALGORITHMS, type SigningAlgorithm } from '../issuer/signing-key.js';
import { isoTime } from '../lib/iso-time.js';
import type { AuthenticatedRequest, ServiceResult } from '../pipeline/stage.js';
import type { CertificateStore, SigningKeyStore } from '../store/contract.js';
import { answer, ApiResource, type ApiParts, badQuery, type JsonBody, methodOf, noSuch, notAllowed, pageOf, pageQuery, refused, segmentsUnder } from './api.js';

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

export interface CertificatesApiParts extends ApiParts {
  readonly store: CertificateStore;
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
      if (method !== 'GET') return notAllowed('GET, HEAD');
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
}
