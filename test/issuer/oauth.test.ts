// OAuth 2 token endpoint, client authentication and its guards, introspection, revocation, metadata and JWKS, against real
// gateways on ephemeral ports (SECURITY-MATRIX.md OA-01..OA-17, SEC-01..SEC-11). Every case sends real requests.
import { eventually } from '../support/eventually.js';
import { readFileSync, existsSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { once } from 'node:events';
import argon2 from 'argon2';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.js';
import { generateClientSecret, hashSecret } from '../../src/issuer/secrets.js';
import { rawHttp1, type TestGateway } from '../support/harness.js';
import {
  addClient,
  basicAuth,
  callWith,
  forgeToken,
  getToken,
  postForm,
  readClient,
  send as sendRequest,
  startIssuerGateway,
  updateClient,
  validClaims,
  withIssuer,
  type OAuthResponse,
  type TestClient,
} from '../support/issuer.js';

type IssuerInput = NonNullable<ConfigInput['issuer']>;

/** Limits high enough that the functional cases never trip them (the limit cases use their own gateways). */
const ROOMY: IssuerInput = {
  client_auth: { per_ip: { points: 100_000, duration_s: 60 }, max_consecutive_failures: 1000, max_daily_failures_per_ip: 100_000 },
};
const CC = 'grant_type=client_credentials';

/** The parameters of a PHC argon2 string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`, in whatever order they are written). */
function argon2Params(hash: string): { type: string; m: number; t: number; p: number } | undefined {
  const match = /^\$(argon2(?:id|i|d))\$v=19\$([a-z]=\d+(?:,[a-z]=\d+)*)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/.exec(hash);
  if (match === null) return undefined;
  const params = new Map((match[2] ?? '').split(',').map((kv) => [kv.slice(0, 1), Number(kv.slice(2))] as const));
  return { type: match[1] ?? '', m: params.get('m') ?? 0, t: params.get('t') ?? 0, p: params.get('p') ?? 0 };
}

/** SEC-01: argon2id at exactly the configured OWASP minimum. */
function isCurrentHash(hash: string): boolean {
  const params = argon2Params(hash);
  return params !== undefined && params.type === 'argon2id' && params.m === 19_456 && params.t === 2 && params.p === 1;
}

/** Every clear secret registered in this file: none may ever show up in a log line or an audit record (SEC-11). */
const secrets: string[] = [];
/** Logs and audit records of every gateway of this file, kept when it stops (its data dir is removed). */
const transcripts: string[] = [];

async function stopKeeping(gw: TestGateway): Promise<void> {
  transcripts.push(gw.logs.join('\n'), JSON.stringify(await gw.auditRecords()));
  await gw.stop();
}

async function client(gw: TestGateway, opts: Parameters<typeof addClient>[1] = {}): Promise<TestClient> {
  const c = await addClient(gw, opts);
  secrets.push(c.secret);
  return c;
}

function send(gw: TestGateway, opts: Parameters<typeof sendRequest>[1]): Promise<OAuthResponse> {
  return sendRequest(gw, { method: 'POST', ...opts });
}

function oauthError(res: OAuthResponse): unknown {
  return res.json?.['error'];
}

/** Header names and values, without the ones that differ per response by design. */
function stableHeaders(res: OAuthResponse): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(res.headers)) {
    if (name === 'date' || name === 'x-request-id') continue;
    out[name] = value;
  }
  return out;
}

function header(res: OAuthResponse, name: string): string | undefined {
  const value = res.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** OA-05: every answer is a 401 invalid_client with the Basic challenge, byte-identical to the first. Returns the first. */
function expectIdenticalInvalidClient(answers: readonly OAuthResponse[]): OAuthResponse {
  const [first, ...rest] = answers;
  if (first === undefined) throw new Error('no answers');
  expect(first.status).toBe(401);
  expect(oauthError(first)).toBe('invalid_client');
  expect(header(first, 'www-authenticate')).toMatch(/^Basic\b/);
  for (const other of rest) {
    expect(other.status).toBe(401);
    expect(other.text).toBe(first.text);
    expect(stableHeaders(other)).toEqual(stableHeaders(first));
  }
  return first;
}

function randomId(): string {
  return `rnd${Math.random().toString(36).slice(2, 14)}`;
}

describe('OAuth token endpoint (functional)', () => {
  let gw: TestGateway;
  let agent: Agent;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) => withIssuer(base, ROOMY));
    agent = gw.agent();
  });
  afterAll(() => stopKeeping(gw));

  const token = (body: string, headers: Record<string, string> = {}): Promise<OAuthResponse> =>
    send(gw, { path: '/oauth2/token', body, headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, dispatcher: agent });

  it('OA-01 GET /oauth2/token is 405 with Allow: POST', async () => {
    const res = await send(gw, { method: 'GET', path: '/oauth2/token', dispatcher: agent });
    expect(res.status).toBe(405);
    expect(header(res, 'allow')).toMatch(/\bPOST\b/);
    expect(header(res, 'allow')).not.toMatch(/\bGET\b/);
  });

  it('OA-01 parameters in the query string are 400 invalid_request (even with valid Basic credentials)', async () => {
    const c = await client(gw);
    const res = await send(gw, {
      path: `/oauth2/token?${CC}`,
      body: CC,
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(c.id, c.secret) },
      dispatcher: agent,
    });
    expect(res.status).toBe(400);
    expect(oauthError(res)).toBe('invalid_request');
    expect(res.json?.['access_token']).toBeUndefined();
  });

  it('OA-01 only application/x-www-form-urlencoded (UTF-8) is accepted: JSON, text and other charsets are 415', async () => {
    const c = await client(gw);
    const auth = basicAuth(c.id, c.secret);
    const json = await token(JSON.stringify({ grant_type: 'client_credentials' }), { 'content-type': 'application/json', authorization: auth });
    expect(json.status).toBe(415);
    const text = await token(CC, { 'content-type': 'text/plain', authorization: auth });
    expect(text.status).toBe(415);
    const latin1 = await token(CC, { 'content-type': 'application/x-www-form-urlencoded; charset=iso-8859-1', authorization: auth });
    expect(latin1.status).toBe(415);
    // The same request with the right media type succeeds: the 415s were about the type only.
    const ok = await token(CC, { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8', authorization: auth });
    expect(ok.status).toBe(200);
  });

  it('OA-02 client_secret in the query string is 400 and the secret is in no log line or audit record', async () => {
    const c = await client(gw);
    const res = await send(gw, {
      path: `/oauth2/token?client_id=${c.id}&client_secret=${c.secret}`,
      body: CC,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      dispatcher: agent,
    });
    expect(res.status).toBe(400);
    expect(oauthError(res)).toBe('invalid_request');
    const records = await gw.auditRecords();
    // The refusal was audited (so the check below looks at a record that exists) ...
    expect(records.some((r) => r.path === '/oauth2/token' && r.code === 'invalid_request')).toBe(true);
    // ... and neither it nor any log line carries the secret.
    expect(JSON.stringify(records)).not.toContain(c.secret);
    expect(gw.logs.join('\n')).not.toContain(c.secret);
  });

  it('OA-03 Basic credentials and client_secret in the body together are 400 invalid_request', async () => {
    const c = await client(gw);
    const res = await token(`${CC}&client_secret=${c.secret}`, { authorization: basicAuth(c.id, c.secret) });
    expect(res.status).toBe(400);
    expect(oauthError(res)).toBe('invalid_request');
    const withId = await token(`${CC}&client_id=${c.id}&client_secret=${c.secret}`, { authorization: basicAuth(c.id, c.secret) });
    expect(withId.status).toBe(400);
    expect(oauthError(withId)).toBe('invalid_request');
  });

  it('OA-05 unknown client, wrong secret and disabled client get byte-identical 401 invalid_client answers (Basic)', async () => {
    const known = await client(gw);
    const disabled = await client(gw, { enabled: false });
    const answers = [
      await token(CC, { authorization: basicAuth(randomId(), generateClientSecret()) }),
      await token(CC, { authorization: basicAuth(known.id, generateClientSecret()) }),
      await token(CC, { authorization: basicAuth(disabled.id, disabled.secret) }),
      // A malformed id (not even looked up) looks the same too.
      await token(CC, { authorization: basicAuth('not!an!id', generateClientSecret()) }),
    ];
    expectIdenticalInvalidClient(answers);
  });

  it('OA-05 the same holds for client_secret_post (every 401 carries the Basic challenge, RFC 9110 §11.6.1)', async () => {
    const known = await client(gw);
    const disabled = await client(gw, { enabled: false });
    const answers = [
      await token(`${CC}&client_id=${randomId()}&client_secret=${generateClientSecret()}`),
      await token(`${CC}&client_id=${known.id}&client_secret=${generateClientSecret()}`),
      await token(`${CC}&client_id=${disabled.id}&client_secret=${disabled.secret}`),
    ];
    const first = expectIdenticalInvalidClient(answers);
    expect(Object.keys(first.json ?? {}).sort()).toEqual(['error', 'error_description']);
  });

  it('OA-06 grant_type missing, repeated or empty is 400 invalid_request; unknown extra parameters are ignored', async () => {
    const c = await client(gw);
    const auth = { authorization: basicAuth(c.id, c.secret) };
    for (const body of ['', 'scope=echo:read', `${CC}&${CC}`, 'grant_type=client_credentials&grant_type=password', 'grant_type=']) {
      const res = await token(body, auth);
      expect(res.status, body).toBe(400);
      expect(oauthError(res), body).toBe('invalid_request');
    }
    const extra = await token(`${CC}&foo=bar&x_custom=1&redirect_uri=https%3A%2F%2Fevil.example`, auth);
    expect(extra.status).toBe(200);
    expect(typeof extra.json?.['access_token']).toBe('string');
  });

  it('OA-07 password, authorization_code, refresh_token and unknown grants are 400 unsupported_grant_type', async () => {
    const c = await client(gw);
    for (const grant of ['password', 'authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:jwt-bearer', 'nonsense']) {
      const res = await token(`grant_type=${encodeURIComponent(grant)}&username=a&password=b&code=c`, { authorization: basicAuth(c.id, c.secret) });
      expect(res.status, grant).toBe(400);
      expect(oauthError(res), grant).toBe('unsupported_grant_type');
    }
  });

  it('OA-08 scope not registered, unknown or containing NUL is 400 invalid_scope; granted ⊆ registered; absent = all registered', async () => {
    const c = await client(gw, { scopes: ['echo:read', 'a:1'] });
    const auth = { authorization: basicAuth(c.id, c.secret) };
    for (const scope of ['a:2', 'echo:read%20a:2', 'totally:unknown', 'echo:read%00a:1', 'echo%00read', '%22quoted%22']) {
      const res = await token(`${CC}&scope=${scope}`, auth);
      expect(res.status, scope).toBe(400);
      expect(oauthError(res), scope).toBe('invalid_scope');
    }
    const subset = await token(`${CC}&scope=a:1`, auth);
    expect(subset.status).toBe(200);
    expect(subset.json?.['scope']).toBe('a:1');
    expect(decodeJwt(String(subset.json?.['access_token'])).scope).toBe('a:1');
    const all = await token(CC, auth);
    expect(all.status).toBe(200);
    expect(String(all.json?.['scope']).split(' ').sort()).toEqual(['a:1', 'echo:read']);
    expect(
      String(decodeJwt(String(all.json?.['access_token'])).scope)
        .split(' ')
        .sort(),
    ).toEqual(['a:1', 'echo:read']);
  });

  it('OA-08 a repeated scope parameter is 400 invalid_request', async () => {
    const c = await client(gw);
    const res = await token(`${CC}&scope=echo:read&scope=echo:read`, { authorization: basicAuth(c.id, c.secret) });
    expect(res.status).toBe(400);
    expect(oauthError(res)).toBe('invalid_request');
  });

  it('OA-09 success is 200 JSON Bearer with a short expires_in, no refresh_token, Cache-Control no-store, Pragma no-cache', async () => {
    const c = await client(gw);
    const res = await token(CC, { authorization: basicAuth(c.id, c.secret) });
    expect(res.status).toBe(200);
    expect(header(res, 'content-type')).toMatch(/^application\/json\b/);
    expect(res.json?.['token_type']).toBe('Bearer');
    expect(res.json?.['expires_in']).toBe(600);
    expect(res.json).not.toHaveProperty('refresh_token');
    expect(header(res, 'cache-control')).toBe('no-store');
    expect(header(res, 'pragma')).toBe('no-cache');
    const api = await callWith(gw, '/api', `Bearer ${String(res.json?.['access_token'])}`);
    expect(api.status).toBe(200);
  });

  it('OA-09 client_secret_post works as well as client_secret_basic', async () => {
    const c = await client(gw);
    const res = await token(`${CC}&client_id=${c.id}&client_secret=${encodeURIComponent(c.secret)}`);
    expect(res.status).toBe(200);
    expect(decodeJwt(String(res.json?.['access_token'])).client_id).toBe(c.id);
  });

  it('OA-10 the token is an RFC 9068 at+jwt signed with EdDSA, with iss/exp/aud/sub/client_id/iat and a unique jti', async () => {
    const c = await client(gw);
    const [one, two] = [await getToken(gw, c), await getToken(gw, c)];
    const head = decodeProtectedHeader(one);
    expect(head.typ).toBe('at+jwt');
    expect(head.alg).toBe('EdDSA');
    expect(typeof head.kid).toBe('string');
    expect(head.kid).not.toBe('');
    const claims = decodeJwt(one);
    const issuer = `https://localhost:${gw.port}`;
    expect(claims.iss).toBe(issuer);
    expect(claims.aud).toBe(issuer);
    expect(claims.sub).toBe(c.id);
    expect(claims['client_id']).toBe(c.id);
    expect(typeof claims.iat).toBe('number');
    expect(typeof claims.exp).toBe('number');
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(600);
    expect(Math.abs((claims.iat ?? 0) - Date.now() / 1000)).toBeLessThan(60);
    expect(typeof claims.jti).toBe('string');
    expect(String(claims.jti).length).toBeGreaterThanOrEqual(16);
    expect(decodeJwt(two).jti).not.toBe(claims.jti);
    // Signed by a key the JWKS publishes.
    const jwks = (await send(gw, { method: 'GET', path: '/.well-known/jwks.json', dispatcher: agent })).json as unknown as JSONWebKeySet;
    const verified = await jwtVerify(one, createLocalJWKSet(jwks), { issuer, typ: 'at+jwt', algorithms: ['EdDSA'] });
    expect(verified.payload.jti).toBe(claims.jti);
  });

  it('OA-10 resource (RFC 8707): a registered audience narrows aud; an unregistered one is 400 invalid_target', async () => {
    const A = 'https://a.example.test/api';
    const B = 'https://b.example.test/';
    const c = await client(gw, { audiences: [A, B] });
    const auth = { authorization: basicAuth(c.id, c.secret) };
    const narrowed = await token(`${CC}&resource=${encodeURIComponent(A)}`, auth);
    expect(narrowed.status).toBe(200);
    expect(decodeJwt(String(narrowed.json?.['access_token'])).aud).toBe(A);
    const both = await token(CC, auth);
    expect(both.status).toBe(200);
    expect(decodeJwt(String(both.json?.['access_token'])).aud).toEqual([A, B]);
    for (const resource of ['https://c.example.test/', `https://localhost:${gw.port}`, 'not a uri', 'https://a.example.test/api#frag']) {
      const res = await token(`${CC}&resource=${encodeURIComponent(resource)}`, auth);
      expect(res.status, resource).toBe(400);
      expect(oauthError(res), resource).toBe('invalid_target');
    }
  });

  it('OA-12 generated secrets carry ≥128 bits from the CSPRNG and are distinct', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const secret = generateClientSecret();
      expect(secret).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(Buffer.from(secret, 'base64url').length * 8).toBeGreaterThanOrEqual(128);
      seen.add(secret);
    }
    expect(seen.size).toBe(1000);
  });

  it('OA-12/SEC-01 the store holds only $argon2id$ hashes at m=19456,t=2,p=1 and no clear secret', async () => {
    const c = await client(gw);
    expect(await getToken(gw, c)).toMatch(/^ey/);
    const stored = await readClient(gw, c.id);
    expect(stored?.secrets.length).toBe(1);
    for (const entry of stored?.secrets ?? []) expect(isCurrentHash(entry.hash), entry.hash).toBe(true);
    // The raw database files (including the WAL) contain none of the clear secrets registered so far.
    const files = ['gatehouse.db', 'gatehouse.db-wal'].map((f) => join(gw.dataDir, f)).filter((f) => existsSync(f));
    expect(files.length).toBeGreaterThan(0);
    const dump = files.map((f) => readFileSync(f).toString('latin1')).join('');
    expect(dump).toContain('$argon2id$');
    expect(dump).not.toMatch(/\$argon2(i|d)\$/);
    for (const secret of secrets) expect(dump).not.toContain(secret);
  });

  it('SEC-02 a hash with weaker parameters verifies and is re-stored with m=19456,t=2,p=1', async () => {
    const secret = generateClientSecret();
    const weak = await argon2.hash(secret, { type: argon2.argon2id, memoryCost: 4096, timeCost: 1, parallelism: 1 });
    expect(argon2Params(weak)).toEqual({ type: 'argon2id', m: 4096, t: 1, p: 1 });
    expect(isCurrentHash(weak)).toBe(false);
    const c = await client(gw, { secret, hash: weak });
    expect(c.secret).toBe(secret);
    expect(await getToken(gw, c)).toMatch(/^ey/);
    await eventually(async () => isCurrentHash((await readClient(gw, c.id))?.secrets[0]?.hash ?? ''), 3000, 'the stored hash upgraded');
    const stored = await readClient(gw, c.id);
    expect(stored?.secrets.length).toBe(1);
    expect(stored?.secrets[0]?.hash).not.toBe(weak);
    expect(await argon2.verify(stored?.secrets[0]?.hash ?? '', secret)).toBe(true);
    // The upgraded hash still authenticates.
    expect(await getToken(gw, c)).toMatch(/^ey/);
  });

  it('SEC-04 unknown client, known client and a client with two secrets (mid-rotation) take the same time to refuse', async () => {
    const known = await client(gw);
    const rotating = await client(gw);
    const secondHash = await hashSecret(generateClientSecret());
    await updateClient(gw, rotating.id, (c) => ({ ...c, secrets: [...c.secrets, { hash: secondHash, createdAt: Date.now(), expiresAt: null }] }));
    const series: Record<'unknown' | 'wrong' | 'rotating', number[]> = { unknown: [], wrong: [], rotating: [] };
    const timed = async (auth: string): Promise<number> => {
      const start = process.hrtime.bigint();
      const res = await token(CC, { authorization: auth });
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      expect(res.status).toBe(401);
      return ms;
    };
    const round = async (record: boolean): Promise<void> => {
      // Interleaved so drift (GC, other files' load) hits every series alike.
      const unknown = await timed(basicAuth(randomId(), generateClientSecret()));
      const wrong = await timed(basicAuth(known.id, generateClientSecret()));
      const mid = await timed(basicAuth(rotating.id, generateClientSecret()));
      if (!record) return;
      series.unknown.push(unknown);
      series.wrong.push(wrong);
      series.rotating.push(mid);
    };
    // Warm-up: the connection, JIT.
    for (let i = 0; i < 3; i++) await round(false);
    for (let i = 0; i < 25; i++) await round(true);
    const [u, w, r] = [median(series.unknown), median(series.wrong), median(series.rotating)];
    // Every path really ran argon2 (a skipped verify would answer in well under 5 ms)...
    for (const m of [u, w, r]) expect(m).toBeGreaterThan(5);
    // ...and the same amount of it: one verification fewer would show as a whole argon2 run of difference. A run takes ≥ 20 ms
    // here and longer on a loaded machine (other test files in parallel), so the bound scales with the fastest
    // series: half an argon2 run, never under 15 ms.
    const bound = Math.max(15, 0.5 * Math.min(u, w, r));
    expect(Math.abs(u - w)).toBeLessThan(bound);
    expect(Math.abs(u - r)).toBeLessThan(bound);
  });

  it('SEC-11 two active secrets per client both authenticate (rotation); an expired one does not', async () => {
    const c = await client(gw);
    const [second, old] = [generateClientSecret(), generateClientSecret()];
    secrets.push(second, old);
    const [secondHash, oldHash] = [await hashSecret(second), await hashSecret(old)];
    await updateClient(gw, c.id, (current) => ({ ...current, secrets: [...current.secrets, { hash: oldHash, createdAt: 0, expiresAt: Date.now() - 1000 }] }));
    const expired = await token(CC, { authorization: basicAuth(c.id, old) });
    expect(expired.status).toBe(401);
    expect(oauthError(expired)).toBe('invalid_client');
    expect(await getToken(gw, c)).toMatch(/^ey/);
    await updateClient(gw, c.id, (current) => ({
      ...current,
      secrets: [...current.secrets.filter((s) => s.hash !== oldHash), { hash: secondHash, createdAt: Date.now(), expiresAt: null }],
    }));
    expect(await getToken(gw, c)).toMatch(/^ey/);
    expect(await getToken(gw, { id: c.id, secret: second })).toMatch(/^ey/);
  });

  it('OA-13 plain HTTP to the TLS port gets no HTTP answer and no redirect', async () => {
    const socket = netConnect({ host: '127.0.0.1', port: gw.port });
    await once(socket, 'connect');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.write(
      `POST /oauth2/token HTTP/1.1\r\nHost: localhost:${gw.port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${CC.length}\r\n\r\n${CC}`,
    );
    const closed = await Promise.race([once(socket, 'close').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3000))]);
    socket.destroy();
    const text = Buffer.concat(chunks).toString('latin1');
    expect(closed).toBe(true);
    expect(text).not.toMatch(/HTTP\/1\.[01]/);
    expect(text.toLowerCase()).not.toContain('location');
    expect(text).not.toContain('access_token');
  });

  it('OA-14 a 2 MB body is 413 (declared length and chunked), before it is read', async () => {
    const c = await client(gw);
    const big = `${CC}&pad=${'x'.repeat(2 * 1024 * 1024)}`;
    const head = (framing: string): string =>
      `POST /oauth2/token HTTP/1.1\r\nHost: localhost:${gw.port}\r\nAuthorization: ${basicAuth(c.id, c.secret)}\r\nContent-Type: application/x-www-form-urlencoded\r\n${framing}\r\n`;
    // Declared: only the first 64 KiB are sent; the answer must not wait for the rest.
    const declared = await rawHttp1(gw.port, gw.certs, head(`Content-Length: ${big.length}\r\n`) + big.slice(0, 65_536), { waitMs: 3000 });
    expect(declared.status).toBe(413);
    // Chunked, no length: the limit is enforced while reading.
    const chunk = big.slice(0, 65_536);
    const chunked = await rawHttp1(gw.port, gw.certs, `${head('Transfer-Encoding: chunked\r\n')}${chunk.length.toString(16)}\r\n${chunk}\r\n`, {
      waitMs: 3000,
    });
    expect(chunked.status).toBe(413);
    expect(chunked.text).not.toContain('access_token');
  });

  it('OA-14 thousands of parameters within 8 KB are 400 invalid_request; a 10 000-parameter body is refused', async () => {
    const c = await client(gw);
    const auth = { authorization: basicAuth(c.id, c.secret) };
    const ampersands = await token(`${CC}${'&'.repeat(8000)}`, auth);
    expect(ampersands.status).toBe(400);
    expect(oauthError(ampersands)).toBe('invalid_request');
    const pairs = await token(`${CC}&${'a=1&'.repeat(2000)}`, auth);
    expect(pairs.status).toBe(400);
    expect(oauthError(pairs)).toBe('invalid_request');
    const repeated = await token(`${CC}&${'client_id=x&'.repeat(600)}`, auth);
    expect(repeated.status).toBe(400);
    const tenThousand = await token(`${CC}&${Array.from({ length: 10_000 }, (_, i) => `p${i}=1`).join('&')}`, auth);
    expect([400, 413]).toContain(tenThousand.status);
    // Still answering normally afterwards.
    expect((await token(CC, auth)).status).toBe(200);
  });

  describe('OA-15 revocation', () => {
    const revoke = (body: string, headers: Record<string, string> = {}): Promise<OAuthResponse> =>
      send(gw, { path: '/oauth2/revoke', body, headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, dispatcher: agent });

    it('OA-15 without client authentication is 401 invalid_client and the token stays valid', async () => {
      const a = await client(gw);
      const t = await getToken(gw, a);
      const none = await revoke(`token=${t}`);
      expect(none.status).toBe(401);
      expect(oauthError(none)).toBe('invalid_client');
      expect(header(none, 'www-authenticate')).toMatch(/^Basic\b/);
      const bad = await revoke(`token=${t}`, { authorization: basicAuth(a.id, generateClientSecret()) });
      expect(bad.status).toBe(401);
      expect(header(bad, 'www-authenticate')).toMatch(/^Basic\b/);
      const bearerAuth = await revoke(`token=${t}`, { authorization: `Bearer ${t}` });
      expect(bearerAuth.status).toBe(401);
      expect((await callWith(gw, '/api', `Bearer ${t}`)).status).toBe(200);
    });

    it("OA-15 client A revoking client B's token is 400 unauthorized_client and B's token keeps working", async () => {
      const [a, b] = [await client(gw), await client(gw)];
      const tb = await getToken(gw, b);
      const res = await revoke(`token=${tb}`, { authorization: basicAuth(a.id, a.secret) });
      expect(res.status).toBe(400);
      expect(oauthError(res)).toBe('unauthorized_client');
      expect((await callWith(gw, '/api', `Bearer ${tb}`)).status).toBe(200);
    });

    it('OA-15 unknown or garbage tokens are 200; an unknown token_type_hint is ignored', async () => {
      const a = await client(gw);
      const auth = { authorization: basicAuth(a.id, a.secret) };
      for (const t of ['garbage', 'eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.', generateClientSecret()]) {
        const res = await revoke(`token=${encodeURIComponent(t)}`, auth);
        expect(res.status, t).toBe(200);
        expect(res.text).toBe('');
      }
      const own = await getToken(gw, a);
      const hinted = await revoke(`token=${own}&token_type_hint=not_a_type`, auth);
      expect(hinted.status).toBe(200);
      // The hint did not stop the revocation.
      expect((await callWith(gw, '/api', `Bearer ${own}`)).status).toBe(401);
    });

    it('OA-15 a client revokes its own token: 200, then the token is refused on /api; other tokens are untouched', async () => {
      const a = await client(gw);
      const [t1, t2] = [await getToken(gw, a), await getToken(gw, a)];
      expect((await callWith(gw, '/api', `Bearer ${t1}`)).status).toBe(200);
      const res = await revoke(`token=${t1}&token_type_hint=access_token`, { authorization: basicAuth(a.id, a.secret) });
      expect(res.status).toBe(200);
      expect(header(res, 'cache-control')).toBe('no-store');
      const after = await callWith(gw, '/api', `Bearer ${t1}`);
      expect(after.status).toBe(401);
      expect(header(after, 'www-authenticate')).toMatch(/invalid_token/);
      expect((await callWith(gw, '/api', `Bearer ${t2}`)).status).toBe(200);
      // Revoking again is still 200.
      expect((await revoke(`token=${t1}`, { authorization: basicAuth(a.id, a.secret) })).status).toBe(200);
    });
  });

  describe('OA-16 introspection', () => {
    const introspect = (body: string, headers: Record<string, string> = {}): Promise<OAuthResponse> =>
      send(gw, { path: '/oauth2/introspect', body, headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, dispatcher: agent });

    it('OA-16 without or with bad client authentication is 401 and reveals nothing', async () => {
      const a = await client(gw);
      const t = await getToken(gw, a);
      for (const headers of [{}, { authorization: basicAuth(a.id, generateClientSecret()) }, { authorization: `Bearer ${t}` }]) {
        const res = await introspect(`token=${t}`, headers);
        expect(res.status).toBe(401);
        expect(oauthError(res)).toBe('invalid_client');
        expect(res.text).not.toContain('active');
      }
    });

    it('OA-16 random, expired, revoked and other clients\' tokens are exactly {"active":false}', async () => {
      const [a, b] = [await client(gw), await client(gw)];
      const auth = { authorization: basicAuth(a.id, a.secret) };
      const now = Math.floor(Date.now() / 1000);
      const expired = await forgeToken(gw, { ...validClaims(gw, a.id), iat: now - 1200, exp: now - 600 });
      const revoked = await getToken(gw, a);
      const revokeRes = await send(gw, {
        path: '/oauth2/revoke',
        body: `token=${revoked}`,
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth },
        dispatcher: agent,
      });
      expect(revokeRes.status).toBe(200);
      const foreign = await getToken(gw, b);
      for (const [name, t] of [
        ['random', generateClientSecret()],
        ['garbage jwt', 'eyJhbGciOiJFZERTQSJ9.e30.AAAA'],
        ['expired', expired],
        ['revoked', revoked],
        ['foreign', foreign],
      ] as const) {
        const res = await introspect(`token=${encodeURIComponent(t)}`, auth);
        expect(res.status, name).toBe(200);
        expect(res.text, name).toBe('{"active":false}');
        expect(header(res, 'cache-control'), name).toBe('no-store');
      }
      // The foreign token is genuinely active (its owner sees it so): the false above was about visibility.
      const own = await introspect(`token=${foreign}`, { authorization: basicAuth(b.id, b.secret) });
      expect(own.json?.['active']).toBe(true);
    });

    it('OA-16 a client sees its own valid token as active with its claims', async () => {
      const a = await client(gw, { scopes: ['echo:read', 'a:1'] });
      const t = await getToken(gw, a, '&scope=a:1');
      const res = await introspect(`token=${t}&token_type_hint=access_token`, { authorization: basicAuth(a.id, a.secret) });
      expect(res.status).toBe(200);
      const claims = decodeJwt(t);
      expect(res.json).toMatchObject({
        active: true,
        client_id: a.id,
        sub: a.id,
        scope: 'a:1',
        iss: `https://localhost:${gw.port}`,
        aud: claims.aud,
        exp: claims.exp,
        iat: claims.iat,
        jti: claims.jti,
        token_type: 'Bearer',
      });
    });

    it("OA-16 a client registered with gatehouse:introspect sees other clients' tokens", async () => {
      const [rs, b] = [await client(gw, { scopes: ['gatehouse:introspect'] }), await client(gw)];
      const t = await getToken(gw, b);
      const res = await introspect(`token=${t}`, { authorization: basicAuth(rs.id, rs.secret) });
      expect(res.status).toBe(200);
      expect(res.json?.['active']).toBe(true);
      expect(res.json?.['client_id']).toBe(b.id);
      // It still learns nothing about tokens that are not active.
      const random = await introspect(`token=${generateClientSecret()}`, { authorization: basicAuth(rs.id, rs.secret) });
      expect(random.text).toBe('{"active":false}');
    });
  });

  describe('OA-17 metadata and JWKS', () => {
    it('OA-17 issuer is byte-equal to the iss of issued tokens; endpoints are https; no alg "none"', async () => {
      const res = await send(gw, { method: 'GET', path: '/.well-known/oauth-authorization-server', dispatcher: agent });
      expect(res.status).toBe(200);
      expect(header(res, 'content-type')).toMatch(/^application\/json\b/);
      const meta = res.json ?? {};
      const c = await client(gw);
      expect(meta['issuer']).toBe(decodeJwt(await getToken(gw, c)).iss);
      expect(meta['issuer']).toBe(`https://localhost:${gw.port}`);
      for (const name of ['token_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint']) {
        expect(String(meta[name]), name).toMatch(/^https:\/\//);
      }
      expect(meta['token_endpoint']).toBe(`https://localhost:${gw.port}/oauth2/token`);
      expect(meta['grant_types_supported']).toEqual(['client_credentials']);
      const algLists = Object.entries(meta).filter(([name]) => name.endsWith('_alg_values_supported'));
      expect(algLists.length).toBeGreaterThan(0);
      for (const [name, values] of algLists) {
        expect(Array.isArray(values), name).toBe(true);
        expect(
          (values as string[]).map((v) => v.toLowerCase()),
          name,
        ).not.toContain('none');
      }
      const authMethods = meta['token_endpoint_auth_methods_supported'] as string[];
      expect(authMethods).toEqual(expect.arrayContaining(['client_secret_basic', 'client_secret_post']));
      expect(authMethods).not.toContain('none');
    });

    it('OA-17 JWKS is application/jwk-set+json with public members only, and holds the signing key', async () => {
      const res = await send(gw, { method: 'GET', path: '/.well-known/jwks.json', dispatcher: agent });
      expect(res.status).toBe(200);
      expect(header(res, 'content-type')).toBe('application/jwk-set+json');
      const keys = (res.json?.['keys'] ?? []) as Array<Record<string, unknown>>;
      expect(keys.length).toBeGreaterThan(0);
      for (const key of keys) {
        for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) expect(key, secret).not.toHaveProperty(secret);
        expect(typeof key['kid']).toBe('string');
      }
      const c = await client(gw);
      const kid = decodeProtectedHeader(await getToken(gw, c)).kid;
      expect(keys.map((k) => k['kid'])).toContain(kid);
    });
  });
});

describe('OAuth issuer with a configured identifier', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) => withIssuer(base, { ...ROOMY, issuer: 'https://gw.example.test' }));
  });
  afterAll(() => stopKeeping(gw));

  it('OA-17 a configured issuer is reflected exactly in metadata and in the iss of issued tokens', async () => {
    const res = await send(gw, { method: 'GET', path: '/.well-known/oauth-authorization-server' });
    expect(res.status).toBe(200);
    expect(res.json?.['issuer']).toBe('https://gw.example.test');
    expect(res.json?.['token_endpoint']).toBe('https://gw.example.test/oauth2/token');
    expect(res.json?.['jwks_uri']).toBe('https://gw.example.test/.well-known/jwks.json');
    const c = await client(gw);
    const t = await getToken(gw, c);
    expect(decodeJwt(t).iss).toBe('https://gw.example.test');
    expect((await callWith(gw, '/api', `Bearer ${t}`)).status).toBe(200);
  });
});

describe('client authentication guards (per IP via a trusted proxy header)', () => {
  let gw: TestGateway;
  let agent: Agent;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) =>
      withIssuer(
        { ...base, server: { ...base.server, trusted_proxies: ['127.0.0.1'] } },
        {
          client_auth: {
            per_ip: { points: 40, duration_s: 60 },
            max_consecutive_failures: 3,
            failure_block_s: 600,
            max_daily_failures_per_ip: 8,
            // One verification at a time and no queue: anything that reached argon2 concurrently would get a 503.
            max_concurrent_hashes: 1,
            max_queued_hashes: 0,
          },
        },
      ),
    );
    agent = gw.agent();
  });
  afterAll(() => stopKeeping(gw));

  const from = (ip: string, auth: string, path = '/oauth2/token', body = CC): Promise<OAuthResponse> =>
    send(gw, { path, body, headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth, 'x-forwarded-for': ip }, dispatcher: agent });

  it('OA-11/SEC-05 consecutive wrong secrets for one (client, IP) → 429 with Retry-After, even for the right secret; logged', async () => {
    const c = await client(gw);
    const ip = '198.51.100.1';
    for (let i = 0; i < 3; i++) {
      const res = await from(ip, basicAuth(c.id, generateClientSecret()));
      expect(res.status, `failure ${i + 1}`).toBe(401);
    }
    const blocked = await from(ip, basicAuth(c.id, generateClientSecret()));
    expect(blocked.status).toBe(429);
    expect(oauthError(blocked)).toBe('slow_down');
    const retryAfter = Number(header(blocked, 'retry-after'));
    expect(retryAfter).toBeGreaterThan(500);
    expect(retryAfter).toBeLessThanOrEqual(600);
    // The block is checked before the secret: the right one is refused too while it lasts.
    const right = await from(ip, basicAuth(c.id, c.secret));
    expect(right.status).toBe(429);
    expect(right.json?.['access_token']).toBeUndefined();
    const line = gw.logs.find((l) => l.includes('blocked') && l.includes(c.id));
    expect(line).toBeDefined();
    const records = await gw.auditRecords();
    expect(records.some((r) => r.subject === c.id && r.status === 429 && r.client_ip === ip)).toBe(true);
  });

  it('OA-05 a locked pair looks the same whether the client exists or not (the lock is no existence oracle)', async () => {
    const known = await client(gw);
    const lockOut = async (ip: string, id: string): Promise<OAuthResponse> => {
      for (let i = 0; i < 3; i++) expect((await from(ip, basicAuth(id, generateClientSecret()))).status).toBe(401);
      return from(ip, basicAuth(id, generateClientSecret()));
    };
    const [forKnown, forUnknown] = [await lockOut('198.51.100.20', known.id), await lockOut('198.51.100.21', randomId())];
    expect(forKnown.status).toBe(429);
    expect(forUnknown.status).toBe(429);
    expect(forUnknown.text).toBe(forKnown.text);
    const { 'retry-after': knownRetry, ...knownRest } = stableHeaders(forKnown);
    const { 'retry-after': unknownRetry, ...unknownRest } = stableHeaders(forUnknown);
    expect(unknownRest).toEqual(knownRest);
    expect(Math.abs(Number(knownRetry) - Number(unknownRetry))).toBeLessThanOrEqual(1);
  });

  it('SEC-05 a success resets the consecutive-failure count', async () => {
    const c = await client(gw);
    const ip = '198.51.100.2';
    const wrong = (): Promise<OAuthResponse> => from(ip, basicAuth(c.id, generateClientSecret()));
    expect((await wrong()).status).toBe(401);
    expect((await wrong()).status).toBe(401);
    expect((await from(ip, basicAuth(c.id, c.secret))).status).toBe(200);
    // Without the reset the second of these would be the third consecutive failure and the next request a 429.
    expect((await wrong()).status).toBe(401);
    expect((await wrong()).status).toBe(401);
    expect((await from(ip, basicAuth(c.id, c.secret))).status).toBe(200);
    // Counting still works after a reset: three in a row block.
    for (let i = 0; i < 3; i++) expect((await wrong()).status).toBe(401);
    expect((await wrong()).status).toBe(429);
  });

  it('SEC-06 an IP over its daily failure budget is blocked for a day, before any argon2 work', async () => {
    const ip = '198.51.100.3';
    const good = await client(gw);
    // Failures spread over many ids (never 3 on one pair) still count against the IP's day.
    for (let i = 0; i < 8; i++) expect((await from(ip, basicAuth(randomId(), generateClientSecret()))).status).toBe(401);
    const blocked = await from(ip, basicAuth(good.id, good.secret));
    expect(blocked.status).toBe(429);
    const retryAfter = Number(header(blocked, 'retry-after'));
    expect(retryAfter).toBeGreaterThan(86_000);
    expect(retryAfter).toBeLessThanOrEqual(86_400);
    // Concurrent attempts from the blocked IP: with one argon2 slot and no queue, any that reached argon2 would be a 503.
    const burst = await Promise.all(Array.from({ length: 10 }, () => from(ip, basicAuth(good.id, good.secret))));
    expect(burst.map((r) => r.status)).toEqual(Array.from({ length: 10 }, () => 429));
    // Another IP is unaffected.
    expect((await from('198.51.100.4', basicAuth(good.id, good.secret))).status).toBe(200);
  });

  it('SEC-07 spraying one try per client id from one IP trips the per-IP limits', async () => {
    const ip = '198.51.100.5';
    const statuses: number[] = [];
    for (let i = 0; i < 15; i++) statuses.push((await from(ip, basicAuth(randomId(), generateClientSecret()))).status);
    expect(statuses.slice(0, 8)).toEqual(Array.from({ length: 8 }, () => 401));
    expect(statuses.slice(8)).toEqual(Array.from({ length: 7 }, () => 429));
    expect(gw.logs.some((l) => l.includes('blocked') && l.includes(ip))).toBe(true);
  });

  it('SEC-07/OA-16 per-IP attempt limit: even valid introspection calls (token scanning) are cut off at per_ip', async () => {
    const ip = '198.51.100.6';
    const c = await client(gw);
    const t = await getToken(gw, c);
    const statuses: number[] = [];
    for (let i = 0; i < 42; i++) statuses.push((await from(ip, basicAuth(c.id, c.secret), '/oauth2/introspect', `token=${t}`)).status);
    expect(statuses.slice(0, 40)).toEqual(Array.from({ length: 40 }, () => 200));
    expect(statuses.slice(40)).toEqual([429, 429]);
  });

  it('SEC-08 a client locked out from an attacker IP is still served from its own IP; the lockout is logged', async () => {
    const victim = await client(gw);
    const attacker = '203.0.113.66';
    for (let i = 0; i < 3; i++) expect((await from(attacker, basicAuth(victim.id, generateClientSecret()))).status).toBe(401);
    expect((await from(attacker, basicAuth(victim.id, victim.secret))).status).toBe(429);
    const own = await from('192.0.2.10', basicAuth(victim.id, victim.secret));
    expect(own.status).toBe(200);
    expect(typeof own.json?.['access_token']).toBe('string');
    const line = gw.logs.find((l) => l.includes('blocked') && l.includes(victim.id));
    expect(line).toBeDefined();
    expect(line).toContain(attacker);
    expect(line).not.toContain(victim.secret);
  });
});

describe('guessing one client id from rotating IPs (OA-11, SEC-07 per id, SEC-08)', () => {
  let gw: TestGateway;
  let agent: Agent;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) =>
      withIssuer(
        { ...base, server: { ...base.server, trusted_proxies: ['127.0.0.1'] } },
        // Per-pair and per-IP limits out of the way: only the per-client count can trip here.
        {
          client_auth: {
            per_ip: { points: 1000, duration_s: 60 },
            max_consecutive_failures: 100,
            max_daily_failures_per_ip: 1000,
            max_hourly_failures_per_client: 5,
          },
        },
      ),
    );
    agent = gw.agent();
  });
  afterAll(() => stopKeeping(gw));

  const from = (ip: string, auth: string): Promise<OAuthResponse> =>
    send(gw, {
      path: '/oauth2/token',
      body: CC,
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth, 'x-forwarded-for': ip },
      dispatcher: agent,
    });

  it('OA-11/SEC-07 once one id failed from many IPs, each unfamiliar IP gets a single guess; the client is never locked out (SEC-08)', async () => {
    const victim = await client(gw);
    const home = '192.0.2.50';
    expect((await from(home, basicAuth(victim.id, victim.secret))).status).toBe(200);
    // One wrong guess from each of five addresses: no pair and no IP comes near its own limit, but the id is now under attack.
    for (let i = 1; i <= 5; i++) expect((await from(`203.0.113.${i}`, basicAuth(victim.id, generateClientSecret()))).status).toBe(401);
    // An attacking address that already failed is refused before argon2 (without the per-id count it would get a 401).
    const again = await from('203.0.113.1', basicAuth(victim.id, generateClientSecret()));
    expect(again.status).toBe(429);
    expect(Number(header(again, 'retry-after'))).toBeGreaterThan(3000);
    // A new address gets exactly one guess...
    expect((await from('203.0.113.50', basicAuth(victim.id, generateClientSecret()))).status).toBe(401);
    expect((await from('203.0.113.50', basicAuth(victim.id, generateClientSecret()))).status).toBe(429);
    // ...so the real client is served from its own address and from a new one alike.
    expect((await from(home, basicAuth(victim.id, victim.secret))).status).toBe(200);
    expect((await from('192.0.2.51', basicAuth(victim.id, victim.secret))).status).toBe(200);
    expect(gw.logs.some((l) => l.includes('client-from-unfamiliar-ips') && l.includes(victim.id))).toBe(true);
    // Other clients are untouched from an address the attack used.
    const other = await client(gw);
    expect((await from('203.0.113.1', basicAuth(other.id, other.secret))).status).toBe(200);
  });

  it('OA-11 the single try of a fresh IP holds against concurrent guesses too', async () => {
    const victim = await client(gw);
    for (let i = 1; i <= 5; i++) expect((await from(`203.0.114.${i}`, basicAuth(victim.id, generateClientSecret()))).status).toBe(401);
    const burst = await Promise.all(Array.from({ length: 10 }, () => from('203.0.114.77', basicAuth(victim.id, generateClientSecret()))));
    const statuses = burst.map((r) => r.status).sort();
    expect(statuses).toEqual([401, ...Array.from({ length: 9 }, () => 429)]);
  });

  it('OA-05 the per-id rule looks the same for an id that does not exist', async () => {
    const ghost = randomId();
    const real = await client(gw);
    for (let i = 1; i <= 5; i++) expect((await from(`198.18.0.${i}`, basicAuth(ghost, generateClientSecret()))).status).toBe(401);
    for (let i = 1; i <= 5; i++) expect((await from(`198.18.1.${i}`, basicAuth(real.id, generateClientSecret()))).status).toBe(401);
    const [forGhost, forReal] = [
      await from('198.18.0.1', basicAuth(ghost, generateClientSecret())),
      await from('198.18.1.1', basicAuth(real.id, generateClientSecret())),
    ];
    expect(forGhost.status).toBe(429);
    expect(forReal.status).toBe(429);
    expect(forGhost.text).toBe(forReal.text);
  });
});

describe('SEC-10 argon2 flood', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) =>
      withIssuer(
        {
          ...base,
          limits: {
            pre_auth_per_ip: { points: 100_000, duration_s: 10 },
            new_connections_per_ip: { points: 100_000, duration_s: 10 },
            max_connections_per_ip: 10_000,
          },
        },
        {
          client_auth: {
            per_ip: { points: 100_000, duration_s: 60 },
            max_consecutive_failures: 1000,
            max_daily_failures_per_ip: 100_000,
            max_concurrent_hashes: 2,
            max_queued_hashes: 16,
          },
        },
      ),
    );
  });
  afterAll(() => stopKeeping(gw));

  it('SEC-10 200 concurrent token requests with random ids: queue overflow is 503 + Retry-After, nothing hangs, /healthz stays 200', async () => {
    const flood = new Agent({
      connect: { ca: gw.certs.ca, servername: 'localhost' },
      connections: 100,
      pipelining: 1,
      headersTimeout: 15_000,
      bodyTimeout: 15_000,
    });
    const probe = gw.agent();
    let flooding = true;
    const health: number[] = [];
    const baselineRss = process.memoryUsage.rss();
    let peakRss = baselineRss;
    const poller = (async () => {
      while (flooding) {
        peakRss = Math.max(peakRss, process.memoryUsage.rss());
        const res = await request(`${gw.origin}/healthz`, { dispatcher: probe, headersTimeout: 5000 });
        await res.body.dump();
        health.push(res.statusCode);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      const results = await Promise.all(
        Array.from({ length: 200 }, () =>
          send(gw, {
            path: '/oauth2/token',
            body: CC,
            headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(randomId(), generateClientSecret()) },
            dispatcher: flood,
          }),
        ),
      );
      const statuses = results.map((r) => r.status);
      expect(statuses.every((s) => s === 401 || s === 503)).toBe(true);
      const shed = results.filter((r) => r.status === 503);
      expect(shed.length).toBeGreaterThan(0);
      expect(statuses.filter((s) => s === 401).length).toBeGreaterThanOrEqual(18);
      for (const r of shed) {
        expect(header(r, 'retry-after')).toBe('1');
        expect(oauthError(r)).toBe('temporarily_unavailable');
      }
    } finally {
      flooding = false;
      await poller;
      await flood.close();
    }
    expect(health.length).toBeGreaterThan(0);
    expect(health.every((s) => s === 200)).toBe(true);
    // Memory stays within 64 MiB per concurrent hash (2 here): the queue, not the flood, decides how much argon2 runs.
    expect(peakRss - baselineRss).toBeLessThan(2 * 64 * 1024 * 1024);
    // The gateway recovered: a real client authenticates right after.
    const c = await client(gw);
    expect(await getToken(gw, c)).toMatch(/^ey/);
  });
});

describe('SEC-11 no secrets in logs or audit', () => {
  it('SEC-11 no clear client secret registered in this file appears in any log line or audit record', async () => {
    // Runs last: every gateway above has already written its logs; this re-checks one live gateway end to end.
    const gw = await startIssuerGateway((base) => withIssuer(base, ROOMY));
    try {
      const c = await client(gw);
      await getToken(gw, c);
      await postForm(gw, '/oauth2/token', `${CC}&client_id=${c.id}&client_secret=${c.secret}`);
      await postForm(gw, '/oauth2/token', `${CC}&client_id=${c.id}&client_secret=${c.secret}x`);
      await postForm(gw, '/oauth2/token', CC, { authorization: basicAuth(c.id, `${c.secret}y`) });
      const records = await gw.auditRecords();
      expect(records.length).toBeGreaterThanOrEqual(4);
      expect(gw.logs.length).toBeGreaterThan(0);
      const everything = `${gw.logs.join('\n')}\n${JSON.stringify(records)}`;
      expect(everything).toContain(c.id);
      expect(everything).not.toContain(c.secret);
      expect(everything).not.toContain(basicAuth(c.id, c.secret).slice(6));
    } finally {
      await stopKeeping(gw);
    }
    // And every gateway of this file: hundreds of failed and successful authentications, none logged a secret.
    expect(transcripts.length).toBeGreaterThanOrEqual(10);
    const all = transcripts.join('\n');
    expect(secrets.length).toBeGreaterThan(30);
    for (const secret of secrets) expect(all).not.toContain(secret);
  });
});
