// RFC 8705 (issue #11 item 3, SECURITY-MATRIX OA-18): tls_client_auth at the token endpoint, and certificate-bound access
// tokens — issued over a client-certificate connection with cnf.x5t#S256, then good only on a connection presenting that
// certificate. Real certificates, real handshakes; curl as an unmodified client.
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { promisify } from 'node:util';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { identityFromSubjectAltName } from '../../src/authn/mtls.js';
import { certificateThumbprintSha256 } from '../../src/lib/thumbprint.js';
import type { TestGateway } from '../support/harness.js';
import { addClient, basicAuth, send, startIssuerGateway, type OAuthResponse, type TestClient } from '../support/issuer.js';

const run = promisify(execFile);

let gw: TestGateway;
/** Registered for tls_client_auth with the SAN of the test client certificate; it has no secret. */
let certClient: TestClient;
let secretClient: TestClient;
let x5t: string;

beforeAll(async () => {
  gw = await startIssuerGateway();
  const san = identityFromSubjectAltName(new X509Certificate(gw.certs.client.certPem).subjectAltName);
  if (san === undefined) throw new Error('the test client certificate has no usable SAN');
  certClient = await addClient(gw, { scopes: ['echo:read'], tlsClientAuthSubject: san, secret: 'unused-secret-never-accepted-for-this-client-0' });
  secretClient = await addClient(gw, { scopes: ['echo:read'] });
  x5t = certificateThumbprintSha256(gw.certs.client.certPem);
});
afterAll(() => gw.stop());

type Cert = TestGateway['certs']['client'];

function tokenRequest(body: string, opts: { cert?: Cert; authorization?: string } = {}): Promise<OAuthResponse> {
  return send(gw, {
    method: 'POST',
    path: '/oauth2/token',
    body,
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(opts.authorization !== undefined ? { authorization: opts.authorization } : {}) },
    dispatcher: gw.agent(opts.cert !== undefined ? { cert: opts.cert } : {}),
  });
}

function callApi(token: string, cert?: Cert): Promise<OAuthResponse> {
  return send(gw, { path: '/api/x', headers: { authorization: `Bearer ${token}` }, dispatcher: gw.agent(cert !== undefined ? { cert } : {}) });
}

async function reasonOf(res: OAuthResponse): Promise<unknown> {
  return (await gw.auditRecords()).find((r) => r.request_id === res.headers['x-request-id'])?.['reason'];
}

describe('tls_client_auth (RFC 8705 §2)', () => {
  it('the client named in the body, proved by the certificate of the connection, gets a token bound to that certificate', async () => {
    const res = await tokenRequest(`grant_type=client_credentials&client_id=${certClient.id}`, { cert: gw.certs.client });
    expect(res.status, res.text).toBe(200);
    expect(res.json?.['token_type']).toBe('Bearer');
    expect(decodeJwt(String(res.json?.['access_token']))['cnf']).toEqual({ 'x5t#S256': x5t });
    const record = (await gw.auditRecords()).find((r) => r.request_id === res.headers['x-request-id']);
    expect(record).toMatchObject({ decision: 'allow', auth_method: 'tls_client_auth', client_id: certClient.id });
  });

  it('refused without a certificate, with a certificate of another identity, and by secret', async () => {
    const body = `grant_type=client_credentials&client_id=${certClient.id}`;
    const none = await tokenRequest(body);
    expect(none.status).toBe(401);
    expect(none.json?.['error']).toBe('invalid_client');
    const other = await tokenRequest(body, { cert: gw.certs.dnsClient });
    expect(other.status).toBe(401);
    expect(await reasonOf(other)).toBe('client certificate of another identity');
    // Its registration says certificate: even the right secret (it was given one here) is no credential.
    const bySecret = await tokenRequest('grant_type=client_credentials', {
      authorization: basicAuth(certClient.id, 'unused-secret-never-accepted-for-this-client-0'),
    });
    expect(bySecret.status).toBe(401);
    expect(await reasonOf(bySecret)).toBe('client authenticates with its certificate only');
    // A secret client cannot authenticate by certificate instead.
    const wrongMethod = await tokenRequest(`grant_type=client_credentials&client_id=${secretClient.id}`, { cert: gw.certs.client });
    expect(wrongMethod.status).toBe(401);
    expect(await reasonOf(wrongMethod)).toBe('client does not use tls_client_auth');
  });

  it('metadata offers tls_client_auth and certificate-bound tokens', async () => {
    const metadata = (await send(gw, { path: '/.well-known/oauth-authorization-server' })).json;
    expect(metadata?.['token_endpoint_auth_methods_supported']).toEqual(['client_secret_basic', 'client_secret_post', 'tls_client_auth']);
    expect(metadata?.['tls_client_certificate_bound_access_tokens']).toBe(true);
  });
});

describe('certificate-bound access tokens (RFC 8705 §3, OA-18)', () => {
  it('a secret client on a client-certificate connection gets a token bound to that certificate; without one, a bearer token', async () => {
    const bound = await tokenRequest('grant_type=client_credentials', {
      authorization: basicAuth(secretClient.id, secretClient.secret),
      cert: gw.certs.client,
    });
    expect(decodeJwt(String(bound.json?.['access_token']))['cnf']).toEqual({ 'x5t#S256': x5t });
    const plain = await tokenRequest('grant_type=client_credentials', { authorization: basicAuth(secretClient.id, secretClient.secret) });
    expect(decodeJwt(String(plain.json?.['access_token']))['cnf']).toBeUndefined();
  });

  it('the bound token works only over a connection presenting its certificate: another or none is 401 invalid_token', async () => {
    const res = await tokenRequest(`grant_type=client_credentials&client_id=${certClient.id}`, { cert: gw.certs.client });
    const token = String(res.json?.['access_token']);
    expect((await callApi(token, gw.certs.client)).status).toBe(200);
    for (const [label, cert] of [
      ['no certificate', undefined],
      ['another certificate', gw.certs.dnsClient],
    ] as const) {
      const refused = await callApi(token, cert);
      expect(refused.status, label).toBe(401);
      expect(refused.headers['www-authenticate'], label).toBe('Bearer error="invalid_token"');
      expect(await reasonOf(refused), label).toBe('certificate binding mismatch');
    }
  });

  it('curl with --cert/--key gets a certificate-bound token by tls_client_auth and calls the API with it', async () => {
    const { paths } = gw.certs;
    const tls = ['-s', '--cacert', paths.caCert, '--resolve', `localhost:${gw.port}:127.0.0.1`];
    const withCert = [...tls, '--cert', paths.clientCert, '--key', paths.clientKey];
    /** The status curl got from GET /api/x with the token, with or without the client certificate. */
    const apiStatus = async (args: readonly string[], token: string): Promise<string> =>
      (await run('curl', [...args, '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${token}`, `https://localhost:${gw.port}/api/x`]))
        .stdout;
    const { stdout: tokenJson } = await run('curl', [
      ...withCert,
      '-d',
      'grant_type=client_credentials',
      '-d',
      `client_id=${certClient.id}`,
      `https://localhost:${gw.port}/oauth2/token`,
    ]);
    const token = String((JSON.parse(tokenJson) as { access_token?: unknown }).access_token);
    expect(decodeJwt(token)['cnf']).toEqual({ 'x5t#S256': x5t });
    expect(await apiStatus(withCert, token)).toBe('200');
    // The same token without the certificate: refused.
    expect(await apiStatus(tls, token)).toBe('401');
  });
});
