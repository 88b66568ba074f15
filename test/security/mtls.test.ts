// Client-certificate authentication (SECURITY-MATRIX D: TLS-09, TLS-11, TLS-12; OA-18 header part): only a certificate the
// handshake verified counts, the identity comes from exactly one well-formed SAN (never the CN, never a header), and every
// decision is audited without certificate bytes. Real handshakes with certificates made by the gateway's own CA code.
import { route } from '../support/routes.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import type { AuditRecord } from '../../src/audit/event.js';
import { identityFromSubjectAltName, MtlsAuthenticator } from '../../src/authn/mtls.js';
import type { PeerCertificate, RequestContext } from '../../src/pipeline/stage.js';
import { issueClientCertificate, type CertificateAndKey } from '../../src/tls/ca.js';
import {
  h2Request,
  h2Session,
  openTls,
  problemCode,
  rawHttp1,
  startGateway,
  startUpstream,
  testCertificates,
  type TestCertificates,
  type TestGateway,
  type TestUpstream,
} from '../support/harness.js';

const DEV_SUBJECT = 'spiffe://gatehouse.local/dev-client';
const ADMIN_SUBJECT = 'spiffe://gatehouse.local/admin';

/** RFC 8705 x5t#S256, computed here independently of the gateway: base64url(SHA-256(DER)). */
function thumbprint(cert: CertificateAndKey): string {
  return createHash('sha256').update(new X509Certificate(cert.certPem).raw).digest('base64url');
}

interface EchoBody {
  readonly request_id: string;
  readonly principal: { readonly subject: string; readonly method: string; readonly certificate_thumbprint: string | null };
  readonly request: { readonly protocol: string };
}

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

async function call(gw: TestGateway, path: string, cert?: CertificateAndKey, headers: Record<string, string> = {}): Promise<Reply> {
  const res = await request(`${gw.origin}${path}`, { dispatcher: gw.agent(cert !== undefined ? { cert } : {}), headers });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
}

function requestId(reply: Reply): string {
  const id = reply.headers['x-request-id'];
  expect(typeof id).toBe('string');
  return String(id);
}

/** A stand-in for what the TLS layer reports, to drive the authenticator's own checks without OpenSSL in the way. */
function peer(overrides: Partial<PeerCertificate>): RequestContext {
  const certificate: PeerCertificate = {
    raw: Buffer.from('not-a-real-der'),
    authorized: true,
    authorizationError: undefined,
    subjectAltName: `URI:${DEV_SUBJECT}`,
    extKeyUsage: ['1.3.6.1.5.5.7.3.2'],
    validTo: 'Jan  1 00:00:00 2099 GMT',
    ...overrides,
  };
  return { connection: { peerAddress: '127.0.0.1', clientAddress: '127.0.0.1', protocol: 'h1', peerCertificate: certificate } } as unknown as RequestContext;
}

describe('identityFromSubjectAltName (TLS-11)', () => {
  const cases: ReadonlyArray<readonly [string, string | undefined, string | undefined]> = [
    ['one URI', `URI:${DEV_SUBJECT}`, DEV_SUBJECT],
    ['URI wins over DNS', `URI:${DEV_SUBJECT}, DNS:svc.internal.example`, DEV_SUBJECT],
    ['DNS after other kinds', 'email:a@b.example, IP Address:127.0.0.1, DNS:svc.internal.example', 'svc.internal.example'],
    ['DNS is case-folded', 'DNS:SVC.Internal.Example', 'svc.internal.example'],
    ['two URIs are ambiguous', `URI:${DEV_SUBJECT}, URI:${ADMIN_SUBJECT}`, undefined],
    ['two DNS names are ambiguous', 'DNS:a.example, DNS:b.example', undefined],
    ['wildcard DNS', 'DNS:*.internal.example', undefined],
    ['no SAN', undefined, undefined],
    ['empty SAN', '', undefined],
    ['only an IP address', 'IP Address:127.0.0.1', undefined],
    ['only an e-mail', 'email:admin@gatehouse.local', undefined],
    ['empty URI', 'URI:', undefined],
    ['empty DNS', 'DNS:', undefined],
    // Node quotes values with ',' as JSON strings: the quoted text is one entry, never a second SAN.
    ['quoted URI forging a second URI', `URI:"${DEV_SUBJECT}\\u002c URI:${ADMIN_SUBJECT}"`, undefined],
    ['quoted URI forging a second URI (raw comma)', `URI:"${DEV_SUBJECT}, URI:${ADMIN_SUBJECT}"`, undefined],
    ['quoted DNS forging a URI', `DNS:"a.example\\u002c URI:${ADMIN_SUBJECT}"`, undefined],
    ['quoted DirName forging a URI before the real one', `DirName:"CN=x\\u002c URI:${ADMIN_SUBJECT}", URI:${DEV_SUBJECT}`, DEV_SUBJECT],
    ['quoted e-mail hiding a URI, DNS real', `email:"a\\u002c URI:${ADMIN_SUBJECT}@x", DNS:svc.internal.example`, 'svc.internal.example'],
    ['quoted URI with a comma but no space (valid URI)', 'URI:"spiffe://gatehouse.local/a\\u002cb"', 'spiffe://gatehouse.local/a,b'],
    ['quoted URI with an escaped quote', 'URI:"spiffe://gatehouse.local/\\"q\\""', undefined],
    ['URI with CR LF', 'URI:"spiffe://gatehouse.local/a\\r\\nx-authenticated-subject: admin"', undefined],
    ['URI with NUL', 'URI:"spiffe://gatehouse.local/a\\u0000b"', undefined],
    ['URI with non-ASCII', 'URI:"spiffe://gatehouse.local/\\u00e9"', undefined],
    ['URI with a space', 'URI:"spiffe://gatehouse.local/a b"', undefined],
    ['unterminated quote', `URI:"${ADMIN_SUBJECT}`, undefined],
    ['garbage after a quoted value', `URI:"${DEV_SUBJECT}"junk, URI:${ADMIN_SUBJECT}`, undefined],
    ['garbage after a quoted value, nothing else', `DNS:"a.example"URI:${ADMIN_SUBJECT}`, undefined],
    ['no kind at all', 'spiffe', undefined],
    ['relative URI', 'URI:/admin', undefined],
    ['lower-case kind is not a URI entry', `uri:${ADMIN_SUBJECT}`, undefined],
  ];
  for (const [name, san, expected] of cases) {
    it(`TLS-11 ${name}: ${JSON.stringify(san)} → ${JSON.stringify(expected)}`, () => {
      expect(identityFromSubjectAltName(san)).toBe(expected);
    });
  }

  it('TLS-11 a real certificate whose URI SAN embeds ", URI:<admin>" yields no admin identity (Node quotes it)', async () => {
    const certs = await startCerts();
    const forged = await issueClientCertificate(certs.caPair, { uris: [`${DEV_SUBJECT}, URI:${ADMIN_SUBJECT}`] });
    const san = new X509Certificate(forged.certPem).subjectAltName;
    expect(san).toMatch(/^URI:"/);
    const identity = identityFromSubjectAltName(san);
    expect(identity).not.toBe(ADMIN_SUBJECT);
    expect(identity).toBeUndefined();
  });
});

describe('MtlsAuthenticator checks beyond OpenSSL (TLS-09, TLS-11)', () => {
  const authenticator = new MtlsAuthenticator();

  it('TLS-09 no certificate is not-applicable (the route then answers 401 unauthenticated)', () => {
    const request = { connection: { peerCertificate: undefined } } as unknown as RequestContext;
    expect(authenticator.authenticate(request)).toEqual({ outcome: 'not-applicable' });
  });

  it('TLS-09 a certificate the handshake did not verify is rejected whatever its SAN says', () => {
    const result = authenticator.authenticate(peer({ authorized: false, authorizationError: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' }));
    expect(result.outcome).toBe('rejected');
    if (result.outcome === 'rejected') {
      expect(result.error.code).toBe('invalid_credential');
      expect(result.error.reason).toMatch(/UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
    }
  });

  it('TLS-11 a verified certificate with only a serverAuth EKU is rejected by the authenticator itself', () => {
    const result = authenticator.authenticate(peer({ extKeyUsage: ['1.3.6.1.5.5.7.3.1'] }));
    expect(result.outcome).toBe('rejected');
    if (result.outcome === 'rejected') expect(result.error.code).toBe('invalid_credential');
  });

  it('TLS-11 a verified certificate without a SAN (CN only) is rejected', () => {
    const result = authenticator.authenticate(peer({ subjectAltName: undefined }));
    expect(result.outcome).toBe('rejected');
    if (result.outcome === 'rejected') expect(result.error.code).toBe('invalid_credential');
  });

  it('TLS-09 a verified clientAuth certificate with one URI SAN authenticates with its thumbprint', () => {
    const raw = Buffer.from('some-der-bytes');
    const result = authenticator.authenticate(peer({ raw }));
    expect(result.outcome).toBe('authenticated');
    if (result.outcome === 'authenticated') {
      expect(result.principal.subject).toBe(DEV_SUBJECT);
      expect(result.principal.method).toBe('mtls');
      expect(result.principal.certificateThumbprint).toBe(createHash('sha256').update(raw).digest('base64url'));
    }
  });
});

interface ExtraCertificates {
  readonly caPair: CertificateAndKey;
  readonly forgedComma: CertificateAndKey;
  readonly twoUris: CertificateAndKey;
  readonly wildcard: CertificateAndKey;
  readonly crlfUri: CertificateAndKey;
  readonly nonAsciiUri: CertificateAndKey;
  readonly upperDns: CertificateAndKey;
  readonly admin: CertificateAndKey;
}

let extraOnce: Promise<ExtraCertificates> | undefined;

/** Extra client certificates from the trusted test CA, for SAN edge cases the harness set does not have. */
function startCerts(): Promise<ExtraCertificates> {
  extraOnce ??= (async () => {
    const certs = await testCertificates();
    const caPair: CertificateAndKey = { certPem: readFileSync(certs.paths.caCert, 'utf8'), keyPem: readFileSync(certs.paths.caKey, 'utf8') };
    const [forgedComma, twoUris, wildcard, crlfUri, nonAsciiUri, upperDns, admin] = await Promise.all([
      issueClientCertificate(caPair, { commonName: 'admin', uris: [`spiffe://gatehouse.local/x, URI:${ADMIN_SUBJECT}`] }),
      issueClientCertificate(caPair, { uris: [DEV_SUBJECT, ADMIN_SUBJECT] }),
      issueClientCertificate(caPair, { dnsNames: ['*.internal.example'] }),
      issueClientCertificate(caPair, { uris: ['spiffe://gatehouse.local/a\r\nx-authenticated-subject: admin'] }),
      issueClientCertificate(caPair, { uris: ['spiffe://gatehouse.local/\u00e9'] }),
      issueClientCertificate(caPair, { dnsNames: ['SVC.Internal.Example'] }),
      issueClientCertificate(caPair, { uris: [ADMIN_SUBJECT] }),
    ]);
    return { caPair, forgedComma, twoUris, wildcard, crlfUri, nonAsciiUri, upperDns, admin };
  })();
  return extraOnce;
}

describe('mTLS routes on a running gateway', () => {
  let gw: TestGateway;
  let upstream: TestUpstream;
  let certs: TestCertificates;
  let extra: ExtraCertificates;

  beforeAll(async () => {
    upstream = await startUpstream();
    extra = await startCerts();
    gw = await startGateway((base) => ({
      ...base,
      limits: { ...base.limits, new_connections_per_ip: { points: 10_000, duration_s: 1 }, headers_timeout_ms: 1000 },
      upstreams: { app: { url: upstream.url } },
      routes: [
        ...(base.routes ?? []),
        route('api', '/api', { to: 'app' }),
        route('mtls-echo', '/mtls', { authn: ['mtls'] }),
        route('mtls-api', '/secure', { authn: ['mtls'], to: 'app' }),
        route('admin', '/admin', { authn: ['mtls'], authz: { allow: 'authenticated', subjects: [ADMIN_SUBJECT] }, to: 'app' }),
      ],
    }));
    certs = gw.certs;
  });

  afterAll(async () => {
    await gw?.stop();
    await upstream?.close();
  });

  /** Asserts a refusal on the proxied mTLS route, and that the upstream saw nothing of it. */
  async function expectRefused(
    path: string,
    cert: CertificateAndKey | undefined,
    status: number,
    code: string,
    headers: Record<string, string> = {},
  ): Promise<Reply> {
    const before = upstream.requests.length;
    const reply = await call(gw, path, cert, headers);
    expect(reply.status).toBe(status);
    expect(problemCode(reply.body)).toBe(code);
    expect(upstream.requests.length).toBe(before);
    return reply;
  }

  async function auditFor(reply: Reply): Promise<AuditRecord[]> {
    const id = requestId(reply);
    return (await gw.auditRecords()).filter((r) => r.request_id === id);
  }

  describe('TLS-09 verified certificates only', () => {
    it('TLS-09 no client certificate → 401 unauthenticated, upstream untouched', async () => {
      await expectRefused('/secure/x', undefined, 401, 'unauthenticated');
      const echo = await call(gw, '/mtls/x');
      expect(echo.status).toBe(401);
      expect(problemCode(echo.body)).toBe('unauthenticated');
    });

    it('TLS-09 certificate from an untrusted CA: the handshake completes, then 401 invalid_credential', async () => {
      const socket = await openTls(gw.port, certs, { cert: certs.untrustedClient.certPem, key: certs.untrustedClient.keyPem });
      expect(socket.authorized).toBe(true); // the client trusts the server; the server did not trust the client
      socket.destroy();
      const raw = await rawHttp1(gw.port, certs, 'GET /secure/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n', {
        tls: { cert: certs.untrustedClient.certPem, key: certs.untrustedClient.keyPem },
      });
      expect(raw.status).toBe(401);
      expect(problemCode(raw.text)).toBe('invalid_credential');
      await expectRefused('/secure/x', certs.untrustedClient, 401, 'invalid_credential');
    });

    it('TLS-09 expired certificate from the trusted CA → 401 invalid_credential', async () => {
      await expectRefused('/secure/x', certs.expiredClient, 401, 'invalid_credential');
    });

    it('TLS-09 valid certificate → 200; echo shows the SAN subject and the RFC 8705 thumbprint of the DER', async () => {
      const reply = await call(gw, '/mtls/who', certs.client);
      expect(reply.status).toBe(200);
      const body = JSON.parse(reply.body) as EchoBody;
      expect(body.principal.subject).toBe(DEV_SUBJECT);
      expect(body.principal.method).toBe('mtls');
      expect(body.principal.certificate_thumbprint).toBe(thumbprint(certs.client));
      expect(body.principal.certificate_thumbprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
    });

    it('TLS-09 valid certificate on the proxied route → upstream gets the gateway-set identity headers', async () => {
      const before = upstream.requests.length;
      const reply = await call(gw, '/secure/x', certs.client);
      expect(reply.status).toBe(200);
      expect(upstream.requests.length).toBe(before + 1);
      const seen = upstream.requests.at(-1);
      expect(seen?.headers['x-authenticated-subject']).toBe(DEV_SUBJECT);
      expect(seen?.headers['x-authenticated-method']).toBe('mtls');
      expect(seen?.headers['x-authenticated-cert-thumbprint']).toBe(thumbprint(certs.client));
    });
  });

  describe('TLS-09 audit', () => {
    it('TLS-09 an mTLS 401 writes exactly one deny record (stage authn, invalid_credential) naming the verify error, with no certificate bytes', async () => {
      const reply = await expectRefused('/secure/audit', certs.untrustedClient, 401, 'invalid_credential');
      const records = await auditFor(reply);
      expect(records).toHaveLength(1);
      const record = records[0];
      expect(record?.decision).toBe('deny');
      expect(record?.stage).toBe('authn');
      expect(record?.code).toBe('invalid_credential');
      expect(record?.status).toBe(401);
      expect(record?.route).toBe('mtls-api');
      // The SAN of an unverified certificate names nobody; its thumbprint ties the attempts of one certificate together.
      expect(record?.subject).toBeNull();
      expect(record?.cert_thumbprint).toBe(thumbprint(certs.untrustedClient));
      // Node's authorizationError is on record for the operator (TLS-09 "authorizationError audited").
      expect(record?.reason ?? '').toMatch(/UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/);
      const text = JSON.stringify(record);
      const der = new X509Certificate(certs.untrustedClient.certPem).raw;
      expect(text).not.toContain(der.toString('base64').slice(0, 32));
      expect(text).not.toContain(der.toString('base64').slice(-32, -2));
      expect(text).not.toContain(der.toString('hex').slice(0, 32));
      expect(text).not.toContain('BEGIN CERTIFICATE');
    });

    it('TLS-09 an expired certificate is audited with the verify error', async () => {
      const reply = await expectRefused('/secure/audit-expired', certs.expiredClient, 401, 'invalid_credential');
      const records = await auditFor(reply);
      expect(records).toHaveLength(1);
      expect(records[0]?.stage).toBe('authn');
      expect(records[0]?.reason ?? '').toMatch(/CERT_HAS_EXPIRED/);
    });

    it('TLS-09 an mTLS 200 writes one allow record with subject, auth method and cert_thumbprint', async () => {
      const reply = await call(gw, '/secure/audit-ok', certs.client);
      expect(reply.status).toBe(200);
      const records = await auditFor(reply);
      expect(records).toHaveLength(1);
      expect(records[0]?.decision).toBe('allow');
      expect(records[0]?.subject).toBe(DEV_SUBJECT);
      expect(records[0]?.auth_method).toBe('mtls');
      expect(records[0]?.cert_thumbprint).toBe(thumbprint(certs.client));
      expect(JSON.stringify(records[0])).not.toContain(new X509Certificate(certs.client.certPem).raw.toString('base64').slice(0, 32));
    });
  });

  describe('TLS-11 identity from SAN, never CN', () => {
    it('TLS-11 CN-only certificate (trusted CA, clientAuth) → 401 invalid_credential', async () => {
      await expectRefused('/secure/x', certs.cnOnlyClient, 401, 'invalid_credential');
    });

    it('TLS-11 serverAuth-only EKU certificate → 401 invalid_credential', async () => {
      await expectRefused('/secure/x', certs.serverAuthOnlyClient, 401, 'invalid_credential');
    });

    it('TLS-11 DNS SAN client → subject svc.internal.example', async () => {
      const reply = await call(gw, '/mtls/who', certs.dnsClient);
      expect(reply.status).toBe(200);
      const body = JSON.parse(reply.body) as EchoBody;
      expect(body.principal.subject).toBe('svc.internal.example');
      expect(body.principal.certificate_thumbprint).toBe(thumbprint(certs.dnsClient));
    });

    it('TLS-11 upper-case DNS SAN → the same lower-case subject', async () => {
      const reply = await call(gw, '/mtls/who', extra.upperDns);
      expect(reply.status).toBe(200);
      expect((JSON.parse(reply.body) as EchoBody).principal.subject).toBe('svc.internal.example');
    });

    it('TLS-11 two URI SANs (ambiguous) → 401 invalid_credential', async () => {
      await expectRefused('/secure/x', extra.twoUris, 401, 'invalid_credential');
    });

    it('TLS-11 wildcard DNS SAN → 401 invalid_credential', async () => {
      await expectRefused('/secure/x', extra.wildcard, 401, 'invalid_credential');
    });

    it('TLS-11 URI SAN with CR LF or non-ASCII → 401 invalid_credential, nothing forwarded', async () => {
      await expectRefused('/secure/x', extra.crlfUri, 401, 'invalid_credential');
      await expectRefused('/secure/x', extra.nonAsciiUri, 401, 'invalid_credential');
    });

    it('TLS-11 a URI SAN embedding ", URI:<admin>" (CN admin) never becomes the admin subject', async () => {
      await expectRefused('/admin/x', extra.forgedComma, 401, 'invalid_credential');
      await expectRefused('/secure/x', extra.forgedComma, 401, 'invalid_credential');
      // Control: the real admin certificate passes the admin route's subject allow-list.
      const before = upstream.requests.length;
      const ok = await call(gw, '/admin/x', extra.admin);
      expect(ok.status).toBe(200);
      expect(upstream.requests.length).toBe(before + 1);
      expect(upstream.requests.at(-1)?.headers['x-authenticated-subject']).toBe(ADMIN_SUBJECT);
      // And a valid non-admin subject is refused there (403), so the allow-list is what decides.
      await expectRefused('/admin/x', certs.client, 403, 'forbidden');
    });
  });

  describe('identity never comes from headers (TLS-09, OA-18)', () => {
    const spoofed = {
      'x-authenticated-subject': 'admin',
      'x-authenticated-method': 'mtls',
      'x-authenticated-cert-thumbprint': 'AAAA',
      'client-cert': ':MIIBfake:',
      'x-client-cert': 'MIIBfake',
      'x-ssl-client-verify': 'SUCCESS',
      'x-ssl-client-dn': 'CN=admin',
    };

    it('TLS-09 x-authenticated-subject: admin without a certificate on an mTLS route → 401 unauthenticated', async () => {
      await expectRefused('/secure/x', undefined, 401, 'unauthenticated', spoofed);
      const echo = await call(gw, '/mtls/x', undefined, spoofed);
      expect(echo.status).toBe(401);
      await expectRefused('/admin/x', undefined, 401, 'unauthenticated', spoofed);
    });

    it('TLS-09 x-authenticated-subject with an untrusted certificate is still 401 invalid_credential', async () => {
      await expectRefused('/secure/x', certs.untrustedClient, 401, 'invalid_credential', spoofed);
    });

    it('OA-18 on a public proxied route the upstream never sees the client-sent identity or client-cert headers', async () => {
      const before = upstream.requests.length;
      const reply = await call(gw, '/api/x', undefined, spoofed);
      expect(reply.status).toBe(200);
      expect(upstream.requests.length).toBe(before + 1);
      const seen = upstream.requests.at(-1);
      for (const name of Object.keys(spoofed)) expect(seen?.headers[name], name).toBeUndefined();
    });

    it('OA-18 with a valid certificate the upstream sees only the gateway-set subject, once', async () => {
      const reply = await call(gw, '/secure/x', certs.client, spoofed);
      expect(reply.status).toBe(200);
      const seen = upstream.requests.at(-1);
      expect(seen?.headers['x-authenticated-subject']).toBe(DEV_SUBJECT);
      expect(seen?.headers['x-authenticated-method']).toBe('mtls');
      expect(seen?.headers['x-authenticated-cert-thumbprint']).toBe(thumbprint(certs.client));
      const subjects = (seen?.rawHeaders ?? []).filter((_, i, all) => i % 2 === 0 && all[i]?.toLowerCase() === 'x-authenticated-subject');
      expect(subjects).toHaveLength(1);
      for (const name of ['client-cert', 'x-client-cert', 'x-ssl-client-verify', 'x-ssl-client-dn']) expect(seen?.headers[name], name).toBeUndefined();
    });
  });

  describe('TLS-12 mTLS over HTTP/2', () => {
    it('TLS-12 node:http2 client presenting the certificate → 200 over h2 with the SAN subject', async () => {
      const session = await h2Session(gw.port, certs, { cert: certs.client.certPem, key: certs.client.keyPem });
      try {
        const res = await h2Request(session, { ':method': 'GET', ':path': '/mtls/h2', ':authority': 'localhost', ':scheme': 'https' });
        expect(res.status).toBe(200);
        const body = JSON.parse(res.body) as EchoBody;
        expect(body.request.protocol).toBe('h2');
        expect(body.principal.subject).toBe(DEV_SUBJECT);
        expect(body.principal.certificate_thumbprint).toBe(thumbprint(certs.client));
        // A second stream on the same session is authenticated from the same handshake.
        const again = await h2Request(session, { ':method': 'GET', ':path': '/mtls/h2-again', ':authority': 'localhost', ':scheme': 'https' });
        expect(again.status).toBe(200);
      } finally {
        session.close();
      }
    });

    it('TLS-12 over h2 an untrusted certificate → 401 invalid_credential and no certificate → 401 unauthenticated, upstream untouched', async () => {
      const before = upstream.requests.length;
      const untrusted = await h2Session(gw.port, certs, { cert: certs.untrustedClient.certPem, key: certs.untrustedClient.keyPem });
      const anonymous = await h2Session(gw.port, certs);
      try {
        const bad = await h2Request(untrusted, { ':method': 'GET', ':path': '/secure/h2', ':authority': 'localhost', ':scheme': 'https' });
        expect(bad.status).toBe(401);
        expect(problemCode(bad.body)).toBe('invalid_credential');
        const none = await h2Request(anonymous, {
          ':method': 'GET',
          ':path': '/secure/h2',
          ':authority': 'localhost',
          ':scheme': 'https',
          'x-authenticated-subject': 'admin',
        });
        expect(none.status).toBe(401);
        expect(problemCode(none.body)).toBe('unauthenticated');
      } finally {
        untrusted.close();
        anonymous.close();
      }
      expect(upstream.requests.length).toBe(before);
    });
  });
});

describe('MtlsAuthenticator keeps a bounded result per connection', () => {
  it('a connection that outlives its client certificate stops authenticating at notAfter', () => {
    let now = Date.parse('2030-01-01T00:00:00Z');
    const authenticator = new MtlsAuthenticator(() => now);
    const request = peer({ validTo: 'Jan  1 00:00:10 2030 GMT' });
    expect(authenticator.authenticate(request).outcome).toBe('authenticated');
    now += 9_000;
    expect(authenticator.authenticate(request).outcome).toBe('authenticated');
    now += 2_000;
    const late = authenticator.authenticate(request);
    expect(late.outcome).toBe('rejected');
    if (late.outcome === 'rejected') expect(late.error.code).toBe('invalid_credential');
  });

  it('an unparsable notAfter is treated as expired', () => {
    const result = new MtlsAuthenticator().authenticate(peer({ validTo: 'not a date' }));
    expect(result.outcome).toBe('rejected');
  });
});
