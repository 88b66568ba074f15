// The admin listener and its Prometheus /metrics (issue #12, items 1 and 2 in part): its own port, admin credentials only
// (an admin certificate identity, a scraper identity, or a token with gatehouse:admin), every admin request on record;
// the scrape parsed with a Prometheus text-format parser after real traffic, counts matching what was sent, and labels
// bounded under a flood of random paths and subjects.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import parsePrometheusTextFormat, { type MetricFamily } from 'parse-prometheus-text-format';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { identityFromSubjectAltName } from '../../src/authn/mtls.js';
import { readRecords } from '../../src/audit/read.js';
import type { ConfigInput } from '../../src/config/schema.js';
import type { TestCertificates, TestGateway } from '../support/harness.js';
import { addClient, basicAuth, startIssuerGateway, withIssuer, type TestClient } from '../support/issuer.js';
import { route } from '../support/routes.js';

let gw: TestGateway;
let adminPort: number;
let admin: TestClient;
let reader: TestClient;

/** `/down` proxies to a port nothing listens on: every request there is answered by the gateway in the upstream's place. */
function configure(base: ConfigInput, certs: TestCertificates): ConfigInput {
  const subject = identityFromSubjectAltName(new X509Certificate(certs.client.certPem).subjectAltName) ?? '';
  return {
    ...withIssuer(base, {}, [route('down', '/down', { to: 'down' })]),
    upstreams: { down: { url: 'http://127.0.0.1:1' } },
    // A checkpoint every 20 records: the checkpoint gauge moves within the test's traffic.
    audit: { checkpoint_every_records: 20 },
    admin: { port: 0, subjects: [subject] },
  };
}

beforeAll(async () => {
  gw = await startIssuerGateway(configure);
  adminPort = gw.gateway.adminAddress?.port ?? 0;
  admin = await addClient(gw, { scopes: ['gatehouse:admin'] });
  reader = await addClient(gw, { scopes: ['echo:read'] });
});
afterAll(() => gw.stop());

type Cert = TestGateway['certs']['client'];

async function scrape(opts: { cert?: Cert; token?: string } = {}): Promise<{ status: number; type: string | undefined; text: string; requestId: string }> {
  const res = await request(`https://127.0.0.1:${adminPort}/metrics`, {
    dispatcher: gw.agent(opts.cert !== undefined ? { cert: opts.cert } : {}),
    headers: opts.token !== undefined ? { authorization: `Bearer ${opts.token}` } : {},
  });
  return {
    status: res.statusCode,
    type: res.headers['content-type'] as string | undefined,
    text: await res.body.text(),
    requestId: String(res.headers['x-request-id']),
  };
}

async function tokenOf(client: TestClient): Promise<string> {
  const res = await request(`${gw.origin}/oauth2/token`, {
    method: 'POST',
    dispatcher: gw.agent(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(client.id, client.secret) },
    body: 'grant_type=client_credentials',
  });
  return String(((await res.body.json()) as { access_token: string }).access_token);
}

async function get(path: string, headers: Record<string, string> = {}): Promise<number> {
  const res = await request(`${gw.origin}${path}`, { dispatcher: gw.agent(), headers });
  await res.body.dump();
  return res.statusCode;
}

function family(families: readonly MetricFamily[], name: string): MetricFamily {
  const found = families.find((f) => f.name === name);
  if (found === undefined) throw new Error(`no ${name} in the scrape`);
  return found;
}

/** The value of the sample of `name` whose labels include `labels` (0 when there is none). */
function sampleValue(families: readonly MetricFamily[], name: string, labels: Record<string, string>): number {
  const sample = family(families, name).metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return sample === undefined ? 0 : Number(sample.value ?? sample.count);
}

/**
 * The `_count` of a histogram's series for `route`, read from the text itself: the parser keeps the buckets of a labelled
 * histogram but drops its labels, sum and count.
 */
function histogramCount(text: string, name: string, route: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}_count{route="${route}"}`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

describe('the admin listener', () => {
  it('listens on a port of its own, and refuses without a credential (401), with a non-admin certificate or token (403)', async () => {
    expect(adminPort).toBeGreaterThan(0);
    expect(adminPort).not.toBe(gw.port);
    const none = await scrape();
    expect(none.status).toBe(401);
    expect((await scrape({ cert: gw.certs.dnsClient })).status).toBe(403);
    expect((await scrape({ token: await tokenOf(reader) })).status).toBe(403);
    expect((await scrape({ token: 'not.a.token' })).status).toBe(401);
    // Only admin routes: the public ones are not served here.
    const elsewhere = await request(`https://127.0.0.1:${adminPort}/public/x`, { dispatcher: gw.agent({ cert: gw.certs.client }) });
    await elsewhere.body.dump();
    expect(elsewhere.statusCode).toBe(404);
    const records = await gw.auditRecords();
    expect(records.find((r) => r.request_id === none.requestId)).toMatchObject({ route: 'admin-metrics', decision: 'deny', code: 'unauthenticated' });
  });

  it('serves /metrics to the admin certificate and to a token with gatehouse:admin, in the Prometheus text format', async () => {
    const byCert = await scrape({ cert: gw.certs.client });
    expect(byCert.status).toBe(200);
    expect(byCert.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const byToken = await scrape({ token: await tokenOf(admin) });
    expect(byToken.status).toBe(200);
    const families = parsePrometheusTextFormat(byToken.text);
    expect(family(families, 'gatehouse_requests_total').type).toBe('COUNTER');
    expect(family(families, 'gatehouse_request_duration_seconds').type).toBe('HISTOGRAM');
    expect(family(families, 'process_cpu_seconds_total').type).toBe('COUNTER');
    const records = await gw.auditRecords();
    expect(records.find((r) => r.request_id === byCert.requestId)).toMatchObject({ route: 'admin-metrics', decision: 'allow', auth_method: 'mtls' });
  });
});

describe('gatehouse_requests_total and the latency histogram', () => {
  it('count exactly the requests sent, by route, decision, stage and code', async () => {
    const beforeText = (await scrape({ cert: gw.certs.client })).text;
    const before = parsePrometheusTextFormat(beforeText);
    const allowBefore = sampleValue(before, 'gatehouse_requests_total', { route: 'public', decision: 'allow' });
    const denyBefore = sampleValue(before, 'gatehouse_requests_total', { route: 'api', decision: 'deny', stage: 'authn', code: 'unauthenticated' });
    const durationBefore = histogramCount(beforeText, 'gatehouse_request_duration_seconds', 'public');
    for (let i = 0; i < 7; i++) expect(await get(`/public/${i}`)).toBe(200);
    for (let i = 0; i < 3; i++) expect(await get('/api/x')).toBe(401);
    const afterText = (await scrape({ cert: gw.certs.client })).text;
    const after = parsePrometheusTextFormat(afterText);
    expect(sampleValue(after, 'gatehouse_requests_total', { route: 'public', decision: 'allow' }) - allowBefore).toBe(7);
    expect(sampleValue(after, 'gatehouse_requests_total', { route: 'api', decision: 'deny', stage: 'authn', code: 'unauthenticated' }) - denyBefore).toBe(3);
    expect(histogramCount(afterText, 'gatehouse_request_duration_seconds', 'public') - durationBefore).toBe(7);
  });

  it('keeps its labels bounded under a flood of random paths and subjects', async () => {
    const series = (families: readonly MetricFamily[]): number => family(families, 'gatehouse_requests_total').metrics.length;
    const before = series(parsePrometheusTextFormat((await scrape({ cert: gw.certs.client })).text));
    // One connection for the flood: the per-address limit on new connections is not what this test is about.
    const agent = gw.agent();
    for (let i = 0; i < 100; i++) {
      const random = Math.random().toString(36).slice(2);
      for (const [path, headers] of [
        [`/${random}/${i}`, {}],
        ['/api/x', { authorization: `Bearer ${random}.${random}.${random}` }],
      ] as const) {
        const res = await request(`${gw.origin}${path}`, { dispatcher: agent, headers });
        await res.body.dump();
      }
    }
    const text = (await scrape({ cert: gw.certs.client })).text;
    // Two new series at most: the unmatched route's 404, and the bearer refusals.
    expect(series(parsePrometheusTextFormat(text)) - before).toBeLessThanOrEqual(2);
    expect(text).not.toMatch(/path=|subject=|client_ip=/);
  });
});

describe('connections, handshakes and tokens', () => {
  it('count TLS handshakes by version and protocol, failed handshakes by reason, open connections and tokens issued', async () => {
    const before = parsePrometheusTextFormat((await scrape({ cert: gw.certs.client })).text);
    const handshakesBefore = sampleValue(before, 'gatehouse_tls_handshakes_total', { listener: 'public', version: 'TLSv1.3', protocol: 'http/1.1' });
    const failuresBefore = family(before, 'gatehouse_tls_handshake_failures_total').metrics.reduce((n, m) => n + Number(m.value), 0);
    const tokensBefore = sampleValue(before, 'gatehouse_tokens_issued_total', {});

    // One new connection (a new agent), one token, and a client that offers only TLS 1.1.
    expect(await get('/public/x')).toBe(200);
    await tokenOf(reader);
    const old = connect({ host: '127.0.0.1', port: gw.port, maxVersion: 'TLSv1.1', minVersion: 'TLSv1', ca: gw.certs.ca, servername: 'localhost' });
    // events.once would reject on the 'error' the refused handshake emits: the close is what is awaited.
    await new Promise<void>((resolve) => {
      old.on('error', () => undefined);
      old.once('close', () => resolve());
    });

    const kept = gw.agent();
    const open = await request(`${gw.origin}/public/kept`, { dispatcher: kept });
    await open.body.dump();
    const after = parsePrometheusTextFormat((await scrape({ cert: gw.certs.client })).text);
    // The /public request, the token request and the kept connection: three handshakes at least (the scrapes are on the admin listener).
    expect(
      sampleValue(after, 'gatehouse_tls_handshakes_total', { listener: 'public', version: 'TLSv1.3', protocol: 'http/1.1' }) - handshakesBefore,
    ).toBeGreaterThanOrEqual(3);
    const failures = family(after, 'gatehouse_tls_handshake_failures_total').metrics;
    expect(failures.reduce((n, m) => n + Number(m.value), 0) - failuresBefore).toBeGreaterThanOrEqual(1);
    expect(failures.every((m) => m.labels?.['listener'] === 'public' && /^([A-Z][A-Z0-9_]+|other)$/.test(m.labels?.['reason'] ?? ''))).toBe(true);
    expect(sampleValue(after, 'gatehouse_tokens_issued_total', {}) - tokensBefore).toBe(1);
    expect(sampleValue(after, 'gatehouse_open_connections', { listener: 'public' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(after, 'gatehouse_open_connections', { listener: 'admin' })).toBeGreaterThanOrEqual(1);
    await kept.close();
  });
});

describe('client authentication', () => {
  it('counts failed client authentications, and the attempts the brute-force limits then refuse unchecked', async () => {
    const read = async (name: string): Promise<number> =>
      sampleValue(parsePrometheusTextFormat((await scrape({ cert: gw.certs.client })).text), name, { route: 'oauth-token' });
    const [failures, blocks] = [await read('gatehouse_client_auth_failures_total'), await read('gatehouse_client_auth_blocks_total')];
    const codes: unknown[] = [];
    // One (client id, address) pair: ten failures in a row, then the pair is blocked (issuer.client_auth defaults).
    for (let i = 0; i < 12; i++) {
      const res = await request(`${gw.origin}/oauth2/token`, {
        method: 'POST',
        dispatcher: gw.agent(),
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('metrics-nobody', 'wrong-secret') },
        body: 'grant_type=client_credentials',
      });
      codes.push(((await res.body.json()) as { error?: unknown }).error);
    }
    expect(codes.filter((code) => code === 'invalid_client')).toHaveLength(10);
    expect(codes.filter((code) => code === 'slow_down')).toHaveLength(2);
    expect((await read('gatehouse_client_auth_failures_total')) - failures).toBe(10);
    expect((await read('gatehouse_client_auth_blocks_total')) - blocks).toBe(2);
  });
});

describe('the audit chain, certificates, stores and upstream failures', () => {
  it("report the chain head, certificate expiry, store health and the requests answered in the upstream's place", async () => {
    const before = parsePrometheusTextFormat((await scrape({ cert: gw.certs.client })).text);
    const seqBefore = sampleValue(before, 'gatehouse_audit_chain_seq', {});
    expect(await get('/down/x')).toBe(502);
    const after = parsePrometheusTextFormat((await scrape({ cert: gw.certs.client })).text);
    // The scrape itself, the /down allow and its completion: the chain moved on.
    expect(sampleValue(after, 'gatehouse_audit_chain_seq', {})).toBeGreaterThan(seqBefore);
    expect(sampleValue(after, 'gatehouse_audit_dropped_records', {})).toBe(0);
    // Earlier tests sent far more than 20 records: a checkpoint covers some of them, never more than the chain holds.
    const checkpointSeq = sampleValue(after, 'gatehouse_audit_checkpoint_seq', {});
    expect(checkpointSeq).toBeGreaterThan(0);
    expect(checkpointSeq).toBeLessThanOrEqual(sampleValue(after, 'gatehouse_audit_chain_seq', {}));
    expect(sampleValue(after, 'gatehouse_upstream_failures_total', { route: 'down', code: 'upstream_unavailable' })).toBe(1);
    const notAfter = Math.floor(Date.parse(new X509Certificate(readFileSync(gw.certs.paths.serverCert)).validTo) / 1000);
    expect(sampleValue(after, 'gatehouse_certificate_expiry_timestamp_seconds', { certificate: 'server' })).toBe(notAfter);
    expect(sampleValue(after, 'gatehouse_store_up', { store: 'credentials' })).toBe(1);
  });
});

describe('upstream latency and capacity', () => {
  it("split a forwarded request's time into the upstream's and the gateway's, and show each upstream's use of its capacity", async () => {
    const text = async (): Promise<string> => (await scrape({ cert: gw.certs.client })).text;
    const before = await text();
    const upstreamBefore = histogramCount(before, 'gatehouse_upstream_duration_seconds', 'down');
    const addedBefore = histogramCount(before, 'gatehouse_gateway_added_duration_seconds', 'down');
    const sent: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await request(`${gw.origin}/down/latency`, { dispatcher: gw.agent() });
      await res.body.dump();
      expect(res.statusCode).toBe(502);
      sent.push(String(res.headers['x-request-id']));
    }
    const after = await text();
    expect(histogramCount(after, 'gatehouse_upstream_duration_seconds', 'down') - upstreamBefore).toBe(3);
    expect(histogramCount(after, 'gatehouse_gateway_added_duration_seconds', 'down') - addedBefore).toBe(3);
    const families = parsePrometheusTextFormat(after);
    expect(sampleValue(families, 'gatehouse_upstream_in_flight', { upstream: 'down' })).toBe(0);
    expect(sampleValue(families, 'gatehouse_upstream_capacity', { upstream: 'down' })).toBeGreaterThan(0);
    // The split is on record too: each completion names the upstream's milliseconds, never more than the whole.
    await gw.gateway.audit.flush();
    const completions = readRecords(join(gw.dataDir, 'audit')).filter((r) => r.type === 'completion' && sent.includes(String(r['request_id'])));
    expect(completions).toHaveLength(3);
    for (const completion of completions) {
      expect(completion['upstream_ms']).toEqual(expect.any(Number));
      expect(Number(completion['upstream_ms'])).toBeLessThanOrEqual(Number(completion['duration_ms']));
    }
    // A built-in service sent nothing upstream.
    const scrapeCompletion = readRecords(join(gw.dataDir, 'audit')).find((r) => r.type === 'completion' && r['route'] === 'admin-metrics');
    expect(scrapeCompletion?.['upstream_ms']).toBeNull();
  });
});

describe('the signing key', () => {
  it('shows when the signing key was made, and when a scheduled rotation retires it', async () => {
    const read = async (): Promise<MetricFamily[]> => parsePrometheusTextFormat((await scrape({ cert: gw.certs.client })).text);
    const before = await read();
    const created = sampleValue(before, 'gatehouse_signing_key_created_timestamp_seconds', {});
    expect(created).toBeGreaterThan(Date.now() / 1000 - 3600);
    expect(created).toBeLessThanOrEqual(Date.now() / 1000);
    expect(sampleValue(before, 'gatehouse_signing_key_retirement_timestamp_seconds', {})).toBe(0);
    // A publish-first rotation (admin API) schedules the signing key's retirement for when the new key activates.
    const res = await request(`https://127.0.0.1:${adminPort}/v1/keys/rotate`, { method: 'POST', dispatcher: gw.agent({ cert: gw.certs.client }) });
    const rotated = (await res.body.json()) as { activates_at: string };
    expect(res.statusCode).toBe(200);
    const after = await read();
    expect(sampleValue(after, 'gatehouse_signing_key_created_timestamp_seconds', {})).toBe(created);
    expect(sampleValue(after, 'gatehouse_signing_key_retirement_timestamp_seconds', {})).toBe(Math.floor(Date.parse(rotated.activates_at) / 1000));
  });
});

describe('admin.metrics_networks', () => {
  it('opens /metrics, and nothing else, to callers from the configured networks without a credential', async () => {
    const open = await startIssuerGateway((base, certs) => ({
      ...configure(base, certs),
      admin: { port: 0, subjects: [], metrics_networks: ['127.0.0.0/8'] },
    }));
    try {
      const port = open.gateway.adminAddress?.port ?? 0;
      const get = async (path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> => {
        const res = await request(`https://127.0.0.1:${port}${path}`, { dispatcher: open.agent(), headers });
        return { status: res.statusCode, text: await res.body.text() };
      };
      const scraped = await get('/metrics');
      expect(scraped.status).toBe(200);
      expect(parsePrometheusTextFormat(scraped.text).some((f) => f.name === 'gatehouse_requests_total')).toBe(true);
      // A credential that is presented is still checked: a bad token is refused, not ignored for the network's sake.
      expect((await get('/metrics', { authorization: 'Bearer not.a.token' })).status).toBe(401);
      // The admin API stays closed to the network.
      expect((await get('/v1/clients')).status).toBe(401);
      expect((await get('/openapi.json')).status).toBe(401);
    } finally {
      await open.stop();
    }
  });

  it('does not open /metrics to an address outside them', async () => {
    const closed = await startIssuerGateway((base, certs) => ({
      ...configure(base, certs),
      admin: { port: 0, subjects: [], metrics_networks: ['10.0.0.0/8', '::1/128'] },
    }));
    try {
      const res = await request(`https://127.0.0.1:${closed.gateway.adminAddress?.port ?? 0}/metrics`, { dispatcher: closed.agent() });
      await res.body.dump();
      expect(res.statusCode).toBe(401);
    } finally {
      await closed.stop();
    }
  });
});

describe('configuration reloads', () => {
  it('are counted by outcome: reloaded, and refused (a change only a restart can make)', async () => {
    const count = async (outcome: string): Promise<number> =>
      sampleValue(parsePrometheusTextFormat((await scrape({ cert: gw.certs.client })).text), 'gatehouse_config_reloads_total', { outcome });
    const [reloaded, refused] = [await count('reloaded'), await count('refused')];
    expect(await gw.reload(configure)).toBeDefined();
    expect(await gw.reload((base, certs) => ({ ...configure(base, certs), limits: { ...base.limits, max_connections: 5 } }))).toBeUndefined();
    expect((await count('reloaded')) - reloaded).toBe(1);
    expect((await count('refused')) - refused).toBe(1);
  });
});
