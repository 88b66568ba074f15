// The admin API's clients resource (issue #12 item 4): what `gatehouse clients` does, as JSON on the admin listener, with
// real TLS clients. Every answer is checked against the OpenAPI 3.1 document the listener serves (ajv, JSON Schema
// 2020-12); every change must work at the real token endpoint and be on record in the audit chain with the admin who made
// it; every refusal path answers an RFC 9457 problem.
import { createPublicKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { type Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { identityFromSubjectAltName } from '../../src/authn/mtls.js';
import { readRecords } from '../../src/audit/read.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { startGateway, testAuditLog, type TestCertificates, type TestGateway } from '../support/harness.js';
import { opensslCsr } from '../support/csr.js';
import { eventually } from '../support/eventually.js';
import { addClient, basicAuth, postForm, send, startIssuerGateway, withIssuer, withStore, type TestClient } from '../support/issuer.js';
import { route } from '../support/routes.js';

let gw: TestGateway;
let adminPort: number;
let adminSubject: string;
let validate: (schema: string, value: unknown) => string | undefined;

function configure(base: ConfigInput, certs: TestCertificates): ConfigInput {
  adminSubject = identityFromSubjectAltName(new X509Certificate(certs.client.certPem).subjectAltName) ?? '';
  const scraper = identityFromSubjectAltName(new X509Certificate(certs.dnsClient.certPem).subjectAltName) ?? '';
  // The DNS-SAN client may scrape /metrics, and nothing else. The listeners trust the test CA and the store's client CA.
  const issuer = withIssuer(base, { access_token_ttl_s: 600 }, [route('whoami', '/m', { authn: ['mtls'], authz: { allow: 'authenticated' } })]);
  return { ...issuer, tls: { ...base.tls, store_client_ca: true }, admin: { port: 0, subjects: [adminSubject], metrics_subjects: [scraper] } };
}

interface Answer {
  readonly status: number;
  readonly type: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  readonly body: Record<string, unknown>;
}

type Cert = TestGateway['certs']['client'];

/**
 * One keep-alive agent per certificate (or none): the admin listener counts new connections per address
 * (limits.new_connections_per_ip), and a connection per call would spend that budget.
 */
const agents = new Map<string, Agent>();
function agentFor(cert: Cert | undefined): Agent {
  const key = cert?.certPem ?? '';
  let agent = agents.get(key);
  if (agent === undefined) {
    agent = gw.agent(cert !== undefined ? { cert } : {});
    agents.set(key, agent);
  }
  return agent;
}

/** One call to the admin listener: the admin certificate unless `cert` (or `token`, or `anonymous`) says otherwise. */
async function call(
  method: string,
  path: string,
  opts: { json?: unknown; raw?: string; type?: string; cert?: Cert; token?: string; anonymous?: boolean } = {},
): Promise<Answer> {
  const body = opts.raw ?? (opts.json !== undefined ? JSON.stringify(opts.json) : undefined);
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = opts.type ?? 'application/json';
  if (opts.token !== undefined) headers['authorization'] = `Bearer ${opts.token}`;
  const cert = opts.anonymous === true || opts.token !== undefined ? undefined : (opts.cert ?? gw.certs.client);
  const res = await request(`https://127.0.0.1:${adminPort}${path}`, {
    method: method as 'GET',
    dispatcher: agentFor(cert),
    headers,
    ...(body !== undefined ? { body } : {}),
  });
  const text = await res.body.text();
  return {
    status: res.statusCode,
    type: String(res.headers['content-type'] ?? ''),
    headers: res.headers,
    text,
    body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
  };
}

/** The answer, checked against the OpenAPI document's schema for it. */
function conforming(answer: Answer, schema: string): Record<string, unknown> {
  expect(validate(schema, answer.body), `${schema}: ${answer.text}`).toBeUndefined();
  return answer.body;
}

/** A refusal: a problem document with this status and code, conforming to the document's Problem schema. */
function expectProblem(answer: Answer, status: number, code: string): Record<string, unknown> {
  expect(answer.status, answer.text).toBe(status);
  expect(answer.type).toBe('application/problem+json');
  conforming(answer, 'Problem');
  expect(answer.body['code']).toBe(code);
  return answer.body;
}

async function tokenStatus(id: string, secret: string): Promise<number> {
  return (await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(id, secret) })).status;
}

async function tokenOf(client: TestClient): Promise<string> {
  const res = await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(client.id, client.secret) });
  return String(res.json?.['access_token']);
}

/** The admin records in the gateway's chain (every type but decisions and completions are left out by auditRecords()). */
async function adminRecords(): Promise<Array<Record<string, unknown>>> {
  await gw.gateway.audit.flush();
  return readRecords(join(gw.dataDir, 'audit')).filter((record) => record.type === 'admin') as Array<Record<string, unknown>>;
}

beforeAll(async () => {
  gw = await startIssuerGateway(configure);
  adminPort = gw.gateway.adminAddress?.port ?? 0;
  const document = await call('GET', '/openapi.json');
  expect(document.status).toBe(200);
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  ajv.addFormat('uri', /^[a-z][a-z0-9+.-]*:/i);
  ajv.addSchema({ ...document.body, $id: 'gatehouse-admin' });
  validate = (schema, value) => {
    const check = ajv.getSchema(`gatehouse-admin#/components/schemas/${schema}`);
    if (check === undefined) return `no schema ${schema}`;
    return check(value) ? undefined : ajv.errorsText(check.errors);
  };
});
afterAll(async () => {
  await Promise.all([...agents.values()].map((agent) => agent.close()));
  await gw.stop();
});

describe('the admin API: clients', () => {
  it('serves its OpenAPI 3.1 document, whose paths are the ones the API answers', async () => {
    const document = await call('GET', '/openapi.json');
    expect(document.type).toMatch(/^application\/json/);
    expect(document.body['openapi']).toBe('3.1.0');
    expect(Object.keys(document.body['paths'] as object).sort()).toEqual([
      '/v1/audit/records',
      '/v1/audit/verify',
      '/v1/ca',
      '/v1/certificates',
      '/v1/certificates/{serial}/revoke',
      '/v1/clients',
      '/v1/clients/{id}',
      '/v1/clients/{id}/disable',
      '/v1/clients/{id}/enable',
      '/v1/clients/{id}/rotate-secret',
      '/v1/keys',
      '/v1/keys/rotate',
      '/v1/keys/{kid}/revoke',
    ]);
  });

  it('registers a client whose secret works at the token endpoint at once, and is shown only in that answer', async () => {
    const created = await call('POST', '/v1/clients', { json: { name: 'billing ci', scopes: ['echo:read', 'echo:read'], access_token_ttl_s: 120 } });
    expect(created.status, created.text).toBe(201);
    expect(created.headers['cache-control']).toBe('no-store');
    const client = conforming(created, 'NewClientCreated');
    expect(client).toMatchObject({ name: 'billing ci', scopes: ['echo:read'], enabled: true, access_token_ttl_s: 120, active_secrets: 1 });
    const id = String(client['client_id']);
    const secret = String(client['client_secret']);
    expect(created.headers['location']).toBe(`/v1/clients/${id}`);
    expect(await tokenStatus(id, secret)).toBe(200);
    // Shown once: never again by the API, never in the audit chain.
    const shown = await call('GET', `/v1/clients/${id}`);
    expect(conforming(shown, 'ClientDetail')).toMatchObject({ client_id: id, secrets: [{ active: true, expires_at: null }] });
    expect(shown.text).not.toContain(secret);
    await gw.gateway.audit.flush();
    const audit = join(gw.dataDir, 'audit');
    const segments = readdirSync(audit).filter((name) => name.endsWith('.jsonl'));
    expect(segments.length).toBeGreaterThan(0);
    const chain = segments.map((file) => readFileSync(join(audit, file), 'utf8')).join('');
    expect(chain).toContain(`"target":"${id}"`);
    expect(chain).not.toContain(secret);
    expect(gw.logs.join('')).not.toContain(secret);
  });

  it('records each change in the audit chain with the admin who made it, linked to the request allowed', async () => {
    const created = await call('POST', '/v1/clients', { json: { name: 'recorded', scopes: ['echo:read'] } });
    const id = String(created.body['client_id']);
    const requestId = String(created.headers['x-request-id']);
    const record = (await adminRecords()).find((r) => r['target'] === id && r['action'] === 'client.add');
    expect(record).toMatchObject({
      actor: { via: 'api', subject: adminSubject, auth_method: 'mtls', request_id: requestId, jti: null },
      changes: { name: 'recorded', scopes: ['echo:read'], require_dpop: false },
    });
    expect(record?.['actor']).toMatchObject({ cert_thumbprint: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    const allow = (await gw.auditRecords()).find((r) => r.request_id === requestId);
    expect(allow).toMatchObject({ route: 'admin-clients', decision: 'allow', subject: adminSubject });
  });

  it('lists clients a page at a time, by id, until next_after is null', async () => {
    for (let i = 0; i < 3; i++) expect((await call('POST', '/v1/clients', { json: { name: `paged ${i}`, scopes: ['echo:read'] } })).status).toBe(201);
    const all = conforming(await call('GET', '/v1/clients?limit=200'), 'ClientPage');
    const ids = (all['clients'] as Array<{ client_id: string }>).map((c) => c.client_id);
    expect(ids.length).toBeGreaterThanOrEqual(5);
    expect(ids).toEqual([...ids].sort());
    expect(all['next_after']).toBeNull();
    const paged: string[] = [];
    let after: string | null = null;
    do {
      const page = conforming(await call('GET', `/v1/clients?limit=2${after === null ? '' : `&after=${after}`}`), 'ClientPage');
      const clients = page['clients'] as Array<{ client_id: string }>;
      expect(clients.length).toBeLessThanOrEqual(2);
      paged.push(...clients.map((c) => c.client_id));
      after = page['next_after'] as string | null;
    } while (after !== null);
    expect(paged).toEqual(ids);
    expect(expectProblem(await call('GET', '/v1/clients?limit=0'), 400, 'invalid_request')['detail']).toMatch(/^limit:/);
    expect(expectProblem(await call('GET', '/v1/clients?limit=1e3'), 400, 'invalid_request')['detail']).toMatch(/^limit:/);
    expect(expectProblem(await call('GET', '/v1/clients?page=2'), 400, 'invalid_request')['detail']).toMatch(/^page:/);
    expect(expectProblem(await call('GET', '/v1/clients?after=..%2F'), 400, 'invalid_request')['detail']).toMatch(/^after:/);
  });

  it('changes settings with PATCH, says what changed, and the token endpoint follows', async () => {
    const created = await call('POST', '/v1/clients', { json: { name: 'patched', scopes: ['echo:read'] } });
    const id = String(created.body['client_id']);
    const secret = String(created.body['client_secret']);
    const patched = await call('PATCH', `/v1/clients/${id}`, { json: { scopes: ['echo:read', 'echo:write'], require_dpop: true } });
    expect(patched.status, patched.text).toBe(200);
    expect(conforming(patched, 'ClientChanged')).toMatchObject({
      client: { scopes: ['echo:read', 'echo:write'], require_dpop: true },
      changes: { scopes: { from: ['echo:read'], to: ['echo:read', 'echo:write'] }, require_dpop: { from: false, to: true } },
    });
    // Now only DPoP-bound tokens: a plain token request is refused.
    expect(await tokenStatus(id, secret)).toBe(400);
    const again = await call('PATCH', `/v1/clients/${id}`, { json: { require_dpop: true } });
    expect(conforming(again, 'ClientChanged')['changes']).toEqual({});
    const records = (await adminRecords()).filter((r) => r['target'] === id && r['action'] === 'client.update');
    expect(records).toHaveLength(1);
  });

  it('refuses a body it cannot take, naming the field, and changes nothing', async () => {
    const created = await call('POST', '/v1/clients', { json: { name: 'unchanged', scopes: ['echo:read'] } });
    const id = String(created.body['client_id']);
    const cases: Array<[unknown, RegExp]> = [
      [{}, /^body:/],
      [{ nmae: 'typo' }, /nmae|body/],
      [{ scopes: [] }, /^scopes:/],
      [{ scopes: ['has space'] }, /^scopes:/],
      [{ name: 'bell\u0007' }, /^name:/],
      [{ audiences: ['not a uri'] }, /^audiences\.0:/],
      [{ access_token_ttl_s: 601 }, /^access_token_ttl_s:.*600/],
      [{ access_token_ttl_s: 10 }, /^access_token_ttl_s:/],
      [{ tls_client_auth_subject: 'not an identity!' }, /^tls_client_auth_subject:/],
      [['a list'], /^body:/],
    ];
    for (const [json, detail] of cases) {
      const refused = expectProblem(await call('PATCH', `/v1/clients/${id}`, { json }), 400, 'invalid_request');
      expect(refused['detail'], JSON.stringify(json)).toMatch(detail);
    }
    expectProblem(await call('PATCH', `/v1/clients/${id}`, { raw: '{"name":' }), 400, 'invalid_request');
    expectProblem(await call('PATCH', `/v1/clients/${id}`, { raw: 'name=x', type: 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
    expectProblem(await call('POST', '/v1/clients', { json: { name: 'x'.repeat(20_000), scopes: ['a'] } }), 413, 'payload_too_large');
    expectProblem(await call('POST', '/v1/clients', { json: { name: 'no scopes' } }), 400, 'invalid_request');
    const after = conforming(await call('GET', `/v1/clients/${id}`), 'ClientDetail');
    expect(after).toMatchObject({ name: 'unchanged', scopes: ['echo:read'], require_dpop: false, access_token_ttl_s: null });
    expect((await adminRecords()).filter((r) => r['target'] === id && r['action'] !== 'client.add')).toEqual([]);
  });

  it('disables a client (its tokens end, it cannot authenticate) and enables it again; repeating either changes nothing', async () => {
    const created = await call('POST', '/v1/clients', { json: { name: 'toggled', scopes: ['gatehouse:admin'] } });
    const client = { id: String(created.body['client_id']), secret: String(created.body['client_secret']) };
    const token = await tokenOf(client);
    expect((await call('GET', '/v1/clients?limit=1', { token })).status).toBe(200);
    const disabled = await call('POST', `/v1/clients/${client.id}/disable`);
    expect(conforming(disabled, 'ClientToggled')).toMatchObject({ client: { enabled: false }, changed: true });
    expect((await call('POST', `/v1/clients/${client.id}/disable`)).body['changed']).toBe(false);
    expect(await tokenStatus(client.id, client.secret)).toBe(401);
    expectProblem(await call('GET', '/v1/clients?limit=1', { token }), 401, 'invalid_token');
    const enabled = await call('POST', `/v1/clients/${client.id}/enable`);
    expect(conforming(enabled, 'ClientToggled')).toMatchObject({ client: { enabled: true }, changed: true });
    expect(await tokenStatus(client.id, client.secret)).toBe(200);
    const actions = (await adminRecords()).filter((r) => r['target'] === client.id).map((r) => r['action']);
    expect(actions).toEqual(['client.add', 'client.disable', 'client.enable']);
    expectProblem(await call('POST', `/v1/clients/${client.id}/disable`, { json: { now: true } }), 400, 'invalid_request');
  });

  it('rotates a secret, keeping the old one for keep_old_for_s; removes a client, whose secret then stops working', async () => {
    const created = await call('POST', '/v1/clients', { json: { name: 'rotated', scopes: ['echo:read'] } });
    const id = String(created.body['client_id']);
    const old = String(created.body['client_secret']);
    const rotated = await call('POST', `/v1/clients/${id}/rotate-secret`, { json: { keep_old_for_s: 300 } });
    const body = conforming(rotated, 'SecretRotated');
    expect(body['old_secret_expires_at']).not.toBeNull();
    expect(await tokenStatus(id, String(body['client_secret']))).toBe(200);
    expect(await tokenStatus(id, old)).toBe(200);
    const now = conforming(await call('POST', `/v1/clients/${id}/rotate-secret`), 'SecretRotated');
    expect(now['old_secret_expires_at']).toBeNull();
    expect(await tokenStatus(id, String(body['client_secret']))).toBe(401);
    expect(await tokenStatus(id, String(now['client_secret']))).toBe(200);
    expectProblem(await call('POST', `/v1/clients/${id}/rotate-secret`, { json: { keep_old_for_s: 31 * 86_400 } }), 400, 'invalid_request');

    const removed = await call('DELETE', `/v1/clients/${id}`);
    expect(removed.status).toBe(204);
    expect(removed.text).toBe('');
    expect(await tokenStatus(id, String(now['client_secret']))).toBe(401);
    expectProblem(await call('GET', `/v1/clients/${id}`), 404, 'no_such_resource');
    expectProblem(await call('DELETE', `/v1/clients/${id}`), 404, 'no_such_resource');
    const actions = (await adminRecords()).filter((r) => r['target'] === id).map((r) => r['action']);
    expect(actions).toEqual(['client.add', 'client.rotate_secret', 'client.rotate_secret', 'client.remove']);
  });

  it('answers unknown clients, actions and methods with problems', async () => {
    expectProblem(await call('GET', '/v1/clients/no-such-client'), 404, 'no_such_resource');
    expectProblem(await call('PATCH', '/v1/clients/no-such-client', { json: { name: 'x' } }), 404, 'no_such_resource');
    expectProblem(await call('POST', '/v1/clients/no-such-client/disable'), 404, 'no_such_resource');
    expectProblem(await call('POST', '/v1/clients/x/explode'), 404, 'no_such_resource');
    expectProblem(await call('GET', '/v1/clients/x/disable/more'), 404, 'no_such_resource');
    const put = expectProblem(await call('PUT', '/v1/clients'), 405, 'method_not_allowed');
    expect(put).toBeDefined();
    const wrong = await call('POST', '/v1/clients/some-id');
    expectProblem(wrong, 405, 'method_not_allowed');
    expect(wrong.headers['allow']).toBe('GET, HEAD, PATCH, DELETE');
    expect((await call('GET', '/v1/clients/some-id/disable')).headers['allow']).toBe('POST');
  });

  it('refuses callers who are not administrators, and records the refusals', async () => {
    const anonymous = expectProblem(await call('GET', '/v1/clients', { anonymous: true }), 401, 'unauthenticated');
    // The metrics scraper's identity reads /metrics only.
    expectProblem(await call('GET', '/v1/clients', { cert: gw.certs.dnsClient }), 403, 'forbidden');
    expectProblem(await call('POST', '/v1/clients', { cert: gw.certs.dnsClient, json: { name: 'x', scopes: ['a'] } }), 403, 'forbidden');
    expectProblem(await call('GET', '/openapi.json', { cert: gw.certs.dnsClient }), 403, 'forbidden');
    const reader = await addClient(gw, { scopes: ['echo:read'] });
    expectProblem(await call('GET', '/v1/clients', { token: await tokenOf(reader) }), 403, 'forbidden');
    // A token with gatehouse:admin is an administrator too, named in the record by its client and token id.
    const tokenAdmin = await addClient(gw, { scopes: ['gatehouse:admin'] });
    const byToken = await call('POST', '/v1/clients', { token: await tokenOf(tokenAdmin), json: { name: 'by token', scopes: ['echo:read'] } });
    expect(byToken.status).toBe(201);
    const record = (await adminRecords()).find((r) => r['target'] === byToken.body['client_id']);
    expect(record?.['actor']).toMatchObject({ via: 'api', auth_method: 'bearer', client_id: tokenAdmin.id });
    expect(record?.['actor']).toMatchObject({ jti: expect.any(String) });
    const denied = (await gw.auditRecords()).find((r) => r.request_id === anonymous['request_id']);
    expect(denied).toMatchObject({ route: 'admin-clients', decision: 'deny', code: 'unauthenticated' });
  });
});

describe('the admin API: issued certificates and signing keys', () => {
  const IDENTITY = 'spiffe://gatehouse.test/api-billing';
  let holder: TestClient;
  let issued: { serial: string; certPem: string; keyPem: string };

  beforeAll(async () => {
    holder = await addClient(gw, { scopes: ['echo:read'], tlsClientAuthSubject: IDENTITY });
  });

  it('makes the client CA once, shows it, and issues a certificate the gateway accepts at once', async () => {
    expectProblem(await call('GET', '/v1/ca'), 404, 'no_such_resource');
    expect(expectProblem(await call('POST', '/v1/certificates', { json: { client_id: holder.id } }), 409, 'conflict')['detail']).toMatch(/POST \/v1\/ca/);
    const made = await call('POST', '/v1/ca', { json: { common_name: 'API Test Client CA' } });
    expect(made.status, made.text).toBe(201);
    const ca = conforming(made, 'ClientCa');
    expect(new X509Certificate(String(ca['certificate'])).subject).toContain('API Test Client CA');
    expect(conforming(await call('GET', '/v1/ca'), 'ClientCa')).toEqual(ca);
    expect(expectProblem(await call('POST', '/v1/ca'), 409, 'conflict')['detail']).toMatch(/already/);

    const created = await call('POST', '/v1/certificates', { json: { client_id: holder.id, ttl_s: 3600 } });
    expect(created.status, created.text).toBe(201);
    const cert = conforming(created, 'CertificateIssued');
    expect(cert).toMatchObject({ client_id: holder.id, subject: IDENTITY, ca_certificate: ca['certificate'] });
    issued = { serial: String(cert['serial']), certPem: String(cert['certificate']), keyPem: String(cert['private_key']) };
    const x509 = new X509Certificate(issued.certPem);
    expect(x509.subjectAltName).toContain(IDENTITY);
    expect(x509.checkIssued(new X509Certificate(String(ca['certificate'])))).toBe(true);
    // The listeners trust the store's CA from the refresh the change made.
    await eventually(
      async () => (await send(gw, { path: '/m', dispatcher: gw.agent({ cert: issued }) })).status === 200,
      5000,
      'the issued certificate accepted',
    );
    // The key never reaches the chain or the logs.
    await gw.gateway.audit.flush();
    const audit = join(gw.dataDir, 'audit');
    const chain = readdirSync(audit)
      .filter((name) => name.endsWith('.jsonl'))
      .map((file) => readFileSync(join(audit, file), 'utf8'))
      .join('');
    const keyBody = issued.keyPem.split('\n')[1] ?? 'missing';
    expect(chain).not.toContain(keyBody);
    expect(gw.logs.join('')).not.toContain(keyBody);
    const actions = (await adminRecords()).filter((r) => r['action'] === 'ca.init' || r['action'] === 'certificate.issue').map((r) => r['action']);
    expect(actions).toEqual(['ca.init', 'certificate.issue']);
  });

  it('issues from a CSR (its key only: no private key in the answer); refuses what it cannot issue', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-api-csr-'));
    try {
      const csr = await opensslCsr(dir, 'holder', { subject: '/CN=someone-else', extensions: ['subjectAltName=URI:spiffe://evil.test/x'] });
      const res = await call('POST', '/v1/certificates', { json: { client_id: holder.id, csr: csr.csrPem } });
      const cert = conforming(res, 'CertificateIssued');
      expect(cert['private_key']).toBeUndefined();
      const x509 = new X509Certificate(String(cert['certificate']));
      // The registered identity, never the CSR's names; the CSR's key.
      expect(x509.subjectAltName).toBe(`URI:${IDENTITY}`);
      expect(x509.publicKey.export({ format: 'pem', type: 'spki' })).toBe(createPublicKey(csr.keyPem).export({ format: 'pem', type: 'spki' }));
      expect(
        expectProblem(await call('POST', '/v1/certificates', { json: { client_id: holder.id, csr: 'not a csr' } }), 400, 'invalid_request')['detail'],
      ).toMatch(/^csr:/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const plain = await addClient(gw, { scopes: ['echo:read'] });
    expect(expectProblem(await call('POST', '/v1/certificates', { json: { client_id: plain.id } }), 409, 'conflict')['detail']).toMatch(
      /tls_client_auth_subject/,
    );
    expectProblem(await call('POST', '/v1/certificates', { json: { client_id: 'no-such-client' } }), 404, 'no_such_resource');
    expect(expectProblem(await call('POST', '/v1/certificates', { json: { client_id: holder.id, ttl_s: 60 } }), 400, 'invalid_request')['detail']).toMatch(
      /^ttl_s:/,
    );
  });

  it('lists issued certificates by serial, for one client too, and refuses a bad filter', async () => {
    const all = conforming(await call('GET', '/v1/certificates'), 'CertificatePage');
    expect(all['certificates']).toContainEqual(expect.objectContaining({ serial: issued.serial, client_id: holder.id, subject: IDENTITY, state: 'valid' }));
    expect((all['certificates'] as unknown[]).length).toBe(2);
    expect(all['next_after']).toBeNull();
    const mine = conforming(await call('GET', `/v1/certificates?client=${holder.id}&limit=1`), 'CertificatePage');
    expect((mine['certificates'] as unknown[]).length).toBe(1);
    expect(mine['next_after']).not.toBeNull();
    const none = conforming(await call('GET', '/v1/certificates?client=someone-else'), 'CertificatePage');
    expect(none['certificates']).toEqual([]);
    expect(expectProblem(await call('GET', '/v1/certificates?client=no%20such'), 400, 'invalid_request')['detail']).toMatch(/^client:/);
    expect(expectProblem(await call('GET', '/v1/certificates?client=a&client=b'), 400, 'invalid_request')['detail']).toMatch(/^client: given twice/);
  });

  it('revokes a certificate: the gateway refuses it at once, inside its validity; again changes nothing', async () => {
    const revoked = await call('POST', `/v1/certificates/${issued.serial.toUpperCase()}/revoke`);
    expect(conforming(revoked, 'CertificateRevoked')).toMatchObject({ serial: issued.serial, state: 'revoked', changed: true });
    expect((await send(gw, { path: '/m', dispatcher: gw.agent({ cert: issued }) })).status).toBe(401);
    expect(conforming(await call('POST', `/v1/certificates/${issued.serial}/revoke`), 'CertificateRevoked')['changed']).toBe(false);
    const records = (await adminRecords()).filter((r) => r['target'] === issued.serial && r['action'] === 'certificate.revoke');
    expect(records).toEqual([
      expect.objectContaining({
        action: 'certificate.revoke',
        actor: expect.objectContaining({ via: 'api', subject: adminSubject }),
        changes: expect.objectContaining({ client_id: holder.id, subject: IDENTITY }),
      }),
    ]);
    expectProblem(await call('POST', '/v1/certificates/abcdef0123/revoke'), 404, 'no_such_resource');
    expectProblem(await call('POST', '/v1/certificates/not-hex/revoke'), 404, 'no_such_resource');
    expectProblem(await call('POST', `/v1/certificates/${issued.serial}/unrevoke`), 404, 'no_such_resource');
    expect((await call('GET', `/v1/certificates/${issued.serial}/revoke`)).headers['allow']).toBe('POST');
    expectProblem(await call('POST', `/v1/certificates/${issued.serial}/revoke`, { cert: gw.certs.dnsClient }), 403, 'forbidden');
  });

  it('lists the signing keys; revoking the signing key refuses its tokens at once and a new key signs', async () => {
    const before = conforming(await call('GET', '/v1/keys'), 'SigningKeyList')['keys'] as Array<{ kid: string; state: string }>;
    const signing = before.find((key) => key.state === 'signing');
    expect(signing).toBeDefined();
    const admin = await addClient(gw, { scopes: ['gatehouse:admin'] });
    const oldToken = await tokenOf(admin);
    expect((await call('GET', '/v1/keys', { token: oldToken })).status).toBe(200);
    const revoked = conforming(await call('POST', `/v1/keys/${signing?.kid}/revoke`), 'SigningKeyRevoked');
    expect(revoked).toMatchObject({ kid: signing?.kid, revoked: true, succession: 'created' });
    expect(revoked['signer']).not.toBe(signing?.kid);
    expectProblem(await call('GET', '/v1/keys', { token: oldToken }), 401, 'invalid_token');
    const newToken = await tokenOf(admin);
    expect((await call('GET', '/v1/keys', { token: newToken })).status).toBe(200);
    const after = conforming(await call('GET', '/v1/keys'), 'SigningKeyList')['keys'] as Array<{ kid: string; state: string }>;
    expect(after.find((key) => key.kid === signing?.kid)?.state).toBe('revoked');
    expect(after.find((key) => key.kid === revoked['signer'])?.state).toBe('signing');
    expect(conforming(await call('POST', `/v1/keys/${signing?.kid}/revoke`), 'SigningKeyRevoked')['revoked']).toBe(false);
    const records = (await adminRecords()).filter((r) => r['action'] === 'key.revoke');
    expect(records).toEqual([expect.objectContaining({ target: signing?.kid, actor: expect.objectContaining({ via: 'api', subject: adminSubject }) })]);
    expectProblem(await call('POST', `/v1/keys/${'A'.repeat(43)}/revoke`), 404, 'no_such_resource');
    expectProblem(await call('POST', '/v1/keys'), 405, 'method_not_allowed');
  });
});

describe('the admin API: key rotation', () => {
  it('rotates publish-first (the new key waits out the publication delay), then at once; tokens follow the signer', async () => {
    const signer = (): Promise<string | undefined> =>
      call('GET', '/v1/keys').then((res) => (res.body['keys'] as Array<{ kid: string; state: string }>).find((key) => key.state === 'signing')?.kid);
    const before = await signer();
    const published = conforming(await call('POST', '/v1/keys/rotate'), 'KeyRotated');
    expect(published).toMatchObject({ retires: { kid: before }, stopped: [], without_publication_delay: false });
    const keys = conforming(await call('GET', '/v1/keys'), 'SigningKeyList')['keys'] as Array<{ kid: string; state: string }>;
    expect(keys.find((key) => key.kid === published['kid'])?.state).toBe('pending');
    expect(await signer()).toBe(before);

    const now = conforming(await call('POST', '/v1/keys/rotate', { json: { now: true, alg: 'ES256' } }), 'KeyRotated');
    expect(now).toMatchObject({ alg: 'ES256', retires: null, without_publication_delay: true });
    expect((now['stopped'] as Array<{ kid: string; signed: boolean }>).map((key) => [key.kid, key.signed]).sort()).toEqual(
      [
        [before, true],
        [published['kid'], false],
      ].sort(),
    );
    expect(await signer()).toBe(now['kid']);
    const admin = await addClient(gw, { scopes: ['gatehouse:admin'] });
    expect((await call('GET', '/v1/keys', { token: await tokenOf(admin) })).status).toBe(200);
    const rotations = (await adminRecords()).filter((r) => r['action'] === 'key.rotate').map((r) => r['target']);
    expect(rotations).toEqual([published['kid'], now['kid']]);
    expect(expectProblem(await call('POST', '/v1/keys/rotate', { json: { alg: 'RS256' } }), 400, 'invalid_request')['detail']).toMatch(/^alg:/);
    expect((await call('GET', '/v1/keys/rotate')).headers['allow']).toBe('POST');
  });
});

describe('the admin API: audit query and verify (the CLI commands, run in a process of their own)', () => {
  it('finds a request by id, with its completion, and an admin change by the client it was made to', async () => {
    const created = await call('POST', '/v1/clients', { json: { name: 'audited', scopes: ['echo:read'] } });
    const requestId = String(created.headers['x-request-id']);
    const id = String(created.body['client_id']);
    await gw.gateway.audit.flush();
    const found = conforming(await call('GET', `/v1/audit/records?request_id=${requestId}`), 'AuditRecords');
    expect(found['truncated']).toBe(false);
    expect(found['records']).toEqual([
      expect.objectContaining({ type: 'decision', request_id: requestId, route: 'admin-clients', decision: 'allow', subject: adminSubject }),
      expect.objectContaining({ type: 'completion', request_id: requestId, status: 201 }),
    ]);
    const changes = conforming(await call('GET', `/v1/audit/records?type=admin&client=${id}`), 'AuditRecords');
    expect(changes['records']).toEqual([
      expect.objectContaining({ type: 'admin', action: 'client.add', target: id, actor: expect.objectContaining({ via: 'api' }) }),
    ]);
  });

  it('stops at limit and says so; refuses a filter it does not know or cannot read, naming it', async () => {
    const page = conforming(await call('GET', '/v1/audit/records?type=all&limit=3'), 'AuditRecords');
    expect(page['records']).toHaveLength(3);
    expect(page['truncated']).toBe(true);
    expect(expectProblem(await call('GET', '/v1/audit/records?status=999'), 400, 'invalid_request')['detail']).toMatch(/^status:/);
    expect(expectProblem(await call('GET', '/v1/audit/records?since=yesterday'), 400, 'invalid_request')['detail']).toMatch(/^since:/);
    expect(expectProblem(await call('GET', '/v1/audit/records?verbose=1'), 400, 'invalid_request')['detail']).toMatch(/^verbose:/);
    expect(expectProblem(await call('GET', '/v1/audit/records?limit=5000'), 400, 'invalid_request')['detail']).toMatch(/^limit:/);
    // A value that looks like an option is a value: no record has this client.
    expect(conforming(await call('GET', '/v1/audit/records?client=--json'), 'AuditRecords')['records']).toEqual([]);
    expectProblem(await call('GET', '/v1/audit/records', { cert: gw.certs.dnsClient }), 403, 'forbidden');
    expectProblem(await call('GET', '/v1/audit/elsewhere'), 404, 'no_such_resource');
  });

  it('verifies every chain with the audit key, and reports a record modified behind the gateway', async () => {
    await gw.gateway.audit.flush();
    const intact = conforming(await call('POST', '/v1/audit/verify'), 'AuditVerification');
    expect(intact).toMatchObject({ intact: true, signatures_checked: true });
    expectProblem(await call('GET', '/v1/audit/verify'), 405, 'method_not_allowed');
    // Tamper with a record in the gateway's chain: its hash no longer matches.
    const audit = join(gw.dataDir, 'audit');
    const segment = readdirSync(audit).find((name) => name.endsWith('.jsonl') && !name.startsWith('_'));
    expect(segment).toBeDefined();
    const file = join(audit, segment as string);
    const text = readFileSync(file, 'utf8');
    const tampered = text.replace('"decision":"deny"', '"decision":"allow"');
    expect(tampered).not.toBe(text);
    // The last test of the file: the chain stays broken (the gateway appends after the edit, as it would in a real attack).
    writeFileSync(file, tampered);
    const broken = conforming(await call('POST', '/v1/audit/verify'), 'AuditVerification');
    expect(broken['intact']).toBe(false);
    expect(JSON.stringify(broken['report'])).toContain('modified');
  });
});

describe('the admin API when the audit log cannot take records (LOG-07)', () => {
  it('refuses a change with 503 before the store is touched, and still answers reads', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-api-auditgone-'));
    const audit = testAuditLog(join(dir, 'audit'));
    const failing = await startGateway(configure, { audit });
    const port = failing.gateway.adminAddress?.port ?? 0;
    const agent = failing.agent({ cert: failing.certs.client });
    const send = async (method: string, path: string, json?: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
      const res = await request(`https://127.0.0.1:${port}${path}`, {
        method: method as 'GET',
        dispatcher: agent,
        ...(json !== undefined ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(json) } : {}),
      });
      const text = await res.body.text();
      return { status: res.statusCode, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
    };
    try {
      const before = (await send('GET', '/v1/clients')).body['clients'] as unknown[];
      // The directory vanishes: the next batch cannot be written, and the log knows it from then on.
      rmSync(join(dir, 'audit'), { recursive: true, force: true });
      await send('GET', '/v1/clients');
      expect(audit.ready).toBe(false);
      const refused = await send('POST', '/v1/clients', { name: 'unrecorded', scopes: ['echo:read'] });
      expect(refused.status).toBe(503);
      expect(refused.body['code']).toBe('service_unavailable');
      const stored = await withStore(failing, (store) => store.listClients());
      expect(stored.map((client) => client.name)).not.toContain('unrecorded');
      expect(stored).toHaveLength(before.length);
    } finally {
      await agent.close();
      await failing.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
