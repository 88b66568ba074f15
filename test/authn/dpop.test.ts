// DPoP (RFC 9449, issue #11 items 1-2): DPoP-bound tokens from the token endpoint, and `dpop` routes that check every proof
// (SECURITY-MATRIX OA-19, OA-20) — real proofs signed with real keys, sent to a real gateway over HTTP/1.1 and HTTP/2.
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryProofReplayCache, ReplayCacheUnavailable } from '../../src/authn/dpop-replay.js';
import { normalizedUri } from '../../src/authn/dpop-proof.js';
import { createSecretKey, randomBytes } from 'node:crypto';
import { DpopNonces } from '../../src/authn/dpop-nonce.js';
import { closedPort, rawHttp1, startUpstream, type TestGateway, type TestUpstream } from '../support/harness.js';
import {
  addClient,
  basicAuth,
  forgeToken,
  getToken,
  send,
  startIssuerGateway,
  validClaims,
  withIssuer,
  type OAuthResponse,
  type TestClient,
} from '../support/issuer.js';
import { certificateThumbprintSha256 } from '../../src/lib/thumbprint.js';
import { route } from '../support/routes.js';

type ProofAlg = 'ES256' | 'ES384' | 'EdDSA' | 'PS256' | 'RS256';

interface ProofKey {
  readonly alg: ProofAlg;
  readonly privateKey: CryptoKey | KeyObject;
  readonly jwk: JWK;
  readonly jkt: string;
}

async function proofKey(alg: ProofAlg = 'ES256', modulusLength = 2048): Promise<ProofKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, modulusLength });
  const jwk = await exportJWK(publicKey);
  return { alg, privateKey, jwk, jkt: await calculateJwkThumbprint(jwk, 'sha256') };
}

interface ProofOptions {
  readonly htm: string;
  readonly htu: string;
  readonly token?: string;
  readonly claims?: Record<string, unknown>;
  readonly header?: Record<string, unknown>;
  /** Signs with this key while the header names `key`'s public key. */
  readonly signer?: ProofKey;
}

let jtis = 0;
async function proof(key: ProofKey, opts: ProofOptions): Promise<string> {
  const claims: Record<string, unknown> = {
    htm: opts.htm,
    htu: opts.htu,
    iat: Math.floor(Date.now() / 1000),
    jti: `jti-${++jtis}-${Math.random().toString(36).slice(2)}`,
    ...(opts.token !== undefined ? { ath: createHash('sha256').update(opts.token).digest('base64url') } : {}),
    ...opts.claims,
  };
  for (const [name, value] of Object.entries(claims)) if (value === undefined) delete claims[name];
  return new SignJWT(claims).setProtectedHeader({ typ: 'dpop+jwt', alg: key.alg, jwk: key.jwk, ...opts.header } as never).sign((opts.signer ?? key).privateKey);
}

let gw: TestGateway;
let upstream: TestUpstream;
let client: TestClient;

beforeAll(async () => {
  upstream = await startUpstream();
  gw = await startIssuerGateway((base) => ({
    // Many token requests from one address in this file: the per-IP client-authentication budget is raised.
    ...withIssuer(base, { client_auth: { per_ip: { points: 1000, duration_s: 60 } } }, [
      route('dpop', '/dpop', { methods: ['GET', 'POST'], authn: ['dpop'], authz: { allow: 'authenticated', scopes: { all_of: ['echo:read'] } } }),
      route('dpop-aud', '/elsewhere', { authn: ['dpop'], authz: { allow: 'authenticated', audience: 'https://other.example' } }),
      route('constrained', '/constrained', { authn: ['dpop', 'bearer'], authz: { allow: 'authenticated', require_sender_constraint: true } }),
      {
        id: 'dpop-up',
        match: { path_prefix: '/dpop-up', methods: ['GET'] },
        authn: ['dpop', 'bearer'],
        authz: { allow: 'authenticated' },
        handler: { proxy: { upstream: 'app' } },
      },
    ]),
    upstreams: { app: { url: upstream.url } },
  }));
  client = await addClient(gw, { scopes: ['echo:read'] });
});
afterAll(async () => {
  await gw.stop();
  await upstream.close();
});

const tokenUri = (): string => `${gw.origin}/oauth2/token`;

/** A DPoP-bound token for `key`, from the real token endpoint. */
async function dpopToken(key: ProofKey, dispatcher?: ReturnType<TestGateway['agent']>): Promise<OAuthResponse> {
  return send(gw, {
    method: 'POST',
    path: '/oauth2/token',
    body: 'grant_type=client_credentials',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: basicAuth(client.id, client.secret),
      dpop: await proof(key, { htm: 'POST', htu: tokenUri() }),
    },
    ...(dispatcher !== undefined ? { dispatcher } : {}),
  });
}

async function boundToken(key: ProofKey): Promise<string> {
  const res = await dpopToken(key);
  if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${res.text}`);
  return String(res.json?.['access_token']);
}

function call(path: string, headers: Record<string, string>, dispatcher?: ReturnType<TestGateway['agent']>): Promise<OAuthResponse> {
  return send(gw, { path, headers, ...(dispatcher !== undefined ? { dispatcher } : {}) });
}

function challenge(res: OAuthResponse): string {
  return String(res.headers['www-authenticate'] ?? '');
}

function expectProofRefused(res: OAuthResponse, label: string): void {
  expect(res.status, label).toBe(401);
  expect(challenge(res), label).toMatch(/^DPoP error="invalid_dpop_proof", algs="[A-Za-z0-9 ]+"$/);
}

describe('DPoP at the token endpoint (RFC 9449 §5)', () => {
  it('a valid proof gets token_type DPoP and a token bound by cnf.jkt to the proof key; metadata lists asymmetric algs only', async () => {
    const key = await proofKey();
    const res = await dpopToken(key);
    expect(res.status).toBe(200);
    expect(res.json?.['token_type']).toBe('DPoP');
    expect(decodeJwt(String(res.json?.['access_token']))['cnf']).toEqual({ jkt: key.jkt });
    // Without a proof the same client still gets a bearer token.
    expect(decodeJwt(await getToken(gw, client))['cnf']).toBeUndefined();

    const metadata = await send(gw, { path: '/.well-known/oauth-authorization-server' });
    const algs = metadata.json?.['dpop_signing_alg_values_supported'];
    expect(algs).toEqual(expect.arrayContaining(['ES256', 'EdDSA']));
    expect((algs as string[]).some((alg) => alg === 'none' || alg.startsWith('HS'))).toBe(false);
  });

  it('a client registered as DPoP-required gets no token without a proof, and a DPoP-bound one with it', async () => {
    const keyholder = await addClient(gw, { scopes: ['echo:read'], requireDpop: true });
    const form = { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(keyholder.id, keyholder.secret) };
    const without = await send(gw, { method: 'POST', path: '/oauth2/token', body: 'grant_type=client_credentials', headers: form });
    expect(without.status).toBe(400);
    expect(without.json).toMatchObject({ error: 'invalid_dpop_proof' });
    expect(without.json?.['access_token']).toBeUndefined();
    const key = await proofKey();
    const dpop = await proof(key, { htm: 'POST', htu: tokenUri() });
    const withProof = await send(gw, { method: 'POST', path: '/oauth2/token', body: 'grant_type=client_credentials', headers: { ...form, dpop } });
    expect(withProof.json).toMatchObject({ token_type: 'DPoP' });
    expect(decodeJwt(String(withProof.json?.['access_token']))['cnf']).toEqual({ jkt: key.jkt });
  });

  it('every allowed algorithm is verified (ES256, ES384, EdDSA, PS256, RS256), and the token is bound to that key', async () => {
    for (const alg of ['ES256', 'ES384', 'EdDSA', 'PS256', 'RS256'] as const) {
      const key = await proofKey(alg);
      const res = await dpopToken(key);
      expect(res.status, alg).toBe(200);
      expect(decodeJwt(String(res.json?.['access_token']))['cnf'], alg).toEqual({ jkt: key.jkt });
    }
  });

  it('unusable keys and signatures are refused: RSA under 2048 bits, a point off the curve, a truncated signature', async () => {
    const htu = tokenUri();
    const form = { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(client.id, client.secret) };
    const post = (dpop: string): Promise<OAuthResponse> =>
      send(gw, { method: 'POST', path: '/oauth2/token', body: 'grant_type=client_credentials', headers: { ...form, dpop } });
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const smallJwk = small.publicKey.export({ format: 'jwk' });
    // jose will not sign with a key this small: the proof is put together by hand.
    const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
    const smallInput = `${b64({ typ: 'dpop+jwt', alg: 'RS256', jwk: smallJwk })}.${b64({ htm: 'POST', htu, iat: Math.floor(Date.now() / 1000), jti: 'small-rsa' })}`;
    const smallProof = `${smallInput}.${sign('sha256', Buffer.from(smallInput), small.privateKey).toString('base64url')}`;
    const key = await proofKey();
    const offCurve = await proof(key, { htm: 'POST', htu, header: { jwk: { ...key.jwk, y: key.jwk.x } } });
    const good = await proof(key, { htm: 'POST', htu });
    const truncated = good.slice(0, -10);
    for (const [label, dpop, reason] of [
      ['RSA-1024', smallProof, 'jwk unusable'],
      ['point off the curve', offCurve, 'jwk unusable'],
      ['truncated signature', truncated, 'signature invalid'],
    ] as const) {
      const res = await post(dpop);
      expect(res.status, label).toBe(400);
      const record = (await gw.auditRecords()).find((r) => r.request_id === res.headers['x-request-id']);
      expect(record?.['reason'], label).toBe(reason);
    }
  });

  it('a bad, replayed or misdirected proof gets no token: 400 invalid_dpop_proof', async () => {
    const key = await proofKey();
    const form = { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(client.id, client.secret) };
    const post = (dpop: string): Promise<OAuthResponse> =>
      send(gw, { method: 'POST', path: '/oauth2/token', body: 'grant_type=client_credentials', headers: { ...form, dpop } });
    const good = await proof(key, { htm: 'POST', htu: tokenUri() });
    expect((await post(good)).status).toBe(200);
    for (const [label, dpop] of [
      ['replayed', good],
      ['wrong htm', await proof(key, { htm: 'GET', htu: tokenUri() })],
      ['wrong htu', await proof(key, { htm: 'POST', htu: `${gw.origin}/oauth2/revoke` })],
      ['not a JWT', 'not-a-proof'],
      ['typ jwt', await proof(key, { htm: 'POST', htu: tokenUri(), header: { typ: 'JWT' } })],
    ] as const) {
      const res = await post(dpop);
      expect(res.status, label).toBe(400);
      expect(res.json?.['error'], label).toBe('invalid_dpop_proof');
      expect(res.json?.['access_token'], label).toBeUndefined();
    }
  });
});

describe('DPoP at resource routes (OA-19)', () => {
  for (const h2 of [false, true]) {
    const protocol = h2 ? 'HTTP/2' : 'HTTP/1.1';

    it(`${protocol}: a DPoP-bound token with a fresh proof of its key is admitted; the audit names the dpop principal`, async () => {
      const key = await proofKey(h2 ? 'EdDSA' : 'ES256');
      const dispatcher = gw.agent({ allowH2: h2 });
      const token = await boundToken(key);
      const htu = `${gw.origin}/dpop/things`;
      const res = await call('/dpop/things?page=2', { authorization: `DPoP ${token}`, dpop: await proof(key, { htm: 'GET', htu, token }) }, dispatcher);
      expect(res.status, res.text).toBe(200);
      const id = String(res.headers['x-request-id']);
      const record = (await gw.auditRecords()).find((r) => r.request_id === id);
      expect(record).toMatchObject({ decision: 'allow', auth_method: 'dpop', client_id: client.id });
    });

    it(`${protocol}: every failed proof check is a 401 with the DPoP invalid_dpop_proof challenge`, async () => {
      const key = await proofKey();
      const other = await proofKey();
      const dispatcher = gw.agent({ allowH2: h2 });
      const token = await boundToken(key);
      const htu = `${gw.origin}/dpop/x`;
      const auth = `DPoP ${token}`;
      const nowS = Math.floor(Date.now() / 1000);
      const hmac = await new SignJWT({ htm: 'GET', htu, iat: nowS, jti: 'hs', ath: createHash('sha256').update(token).digest('base64url') })
        .setProtectedHeader({ typ: 'dpop+jwt', alg: 'HS256', jwk: { kty: 'oct', k: 'c2VjcmV0' } } as never)
        .sign(new TextEncoder().encode('a-shared-secret-of-32-bytes-long'));
      const privateJwk = await exportJWK(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
      // Each case is refused by the check it is about: the audit's reason says which.
      const cases: Array<[string, string | undefined, string]> = [
        ['no proof', undefined, 'no DPoP proof'],
        ['not a JWT', 'abc.def', 'not a compact JWS'],
        ['typ JWT', await proof(key, { htm: 'GET', htu, token, header: { typ: 'JWT' } }), 'typ is not dpop+jwt'],
        ['alg HS256', hmac, 'alg not allowed'],
        [
          'alg none',
          `${Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg: 'none', jwk: key.jwk })).toString('base64url')}.${Buffer.from(JSON.stringify({ htm: 'GET', htu, iat: nowS, jti: 'n' })).toString('base64url')}.AAAA`,
          'alg not allowed',
        ],
        ['bad signature', await proof(key, { htm: 'GET', htu, token, signer: other }), 'signature invalid'],
        ['private jwk', await proof(key, { htm: 'GET', htu, token, header: { jwk: privateJwk } }), 'jwk is not a public key'],
        ['wrong htm', await proof(key, { htm: 'POST', htu, token }), 'htm does not match the request method'],
        ['wrong htu path', await proof(key, { htm: 'GET', htu: `${gw.origin}/dpop/y`, token }), 'htu does not match the request URI'],
        ['wrong htu host', await proof(key, { htm: 'GET', htu: htu.replace('127.0.0.1', 'localhost'), token }), 'htu does not match the request URI'],
        ['iat too old', await proof(key, { htm: 'GET', htu, token, claims: { iat: nowS - 600 } }), 'proof too old'],
        ['iat in the future', await proof(key, { htm: 'GET', htu, token, claims: { iat: nowS + 600 } }), 'iat in the future'],
        ['no jti', await proof(key, { htm: 'GET', htu, token, claims: { jti: undefined } }), 'jti missing or malformed'],
        ['no ath', await proof(key, { htm: 'GET', htu }), 'ath does not match the access token'],
        ['ath of another token', await proof(key, { htm: 'GET', htu, token: `${token}x` }), 'ath does not match the access token'],
        ['key is not the bound one', await proof(other, { htm: 'GET', htu, token }), 'proof key does not match the token binding'],
      ];
      const ids = new Map<string, string>();
      for (const [label, dpop, reason] of cases) {
        const res = await call('/dpop/x', { authorization: auth, ...(dpop !== undefined ? { dpop } : {}) }, dispatcher);
        expectProofRefused(res, label);
        ids.set(String(res.headers['x-request-id']), reason);
      }
      const records = await gw.auditRecords();
      for (const [id, reason] of ids) {
        expect(records.find((r) => r.request_id === id)).toMatchObject({
          decision: 'deny',
          stage: 'authn',
          code: 'invalid_dpop_proof',
          reason,
          client_id: client.id,
        });
      }
      // htu compares as a URI: scheme and host case, the query and the fragment do not matter.
      const loose = htu.replace('https://', 'HTTPS://').concat('?q=1#frag');
      expect((await call('/dpop/x', { authorization: auth, dpop: await proof(key, { htm: 'GET', htu: loose, token }) }, dispatcher)).status).toBe(200);
    });
  }

  it('two DPoP headers are refused (HTTP/1.1 bytes on the wire)', async () => {
    const key = await proofKey();
    const token = await boundToken(key);
    const htu = `${gw.origin}/dpop/x`;
    const [a, b] = [await proof(key, { htm: 'GET', htu, token }), await proof(key, { htm: 'GET', htu, token })];
    const res = await rawHttp1(
      gw.port,
      gw.certs,
      `GET /dpop/x HTTP/1.1\r\nHost: 127.0.0.1:${gw.port}\r\nAuthorization: DPoP ${token}\r\nDPoP: ${a}\r\nDPoP: ${b}\r\nConnection: close\r\n\r\n`,
    );
    expect(res.status).toBe(401);
    expect(res.text).toMatch(/www-authenticate: DPoP error="invalid_dpop_proof"/i);
  });

  it('OA-20: a proof is good once — the same proof again is refused', async () => {
    const key = await proofKey();
    const token = await boundToken(key);
    const dpop = await proof(key, { htm: 'GET', htu: `${gw.origin}/dpop/once`, token });
    expect((await call('/dpop/once', { authorization: `DPoP ${token}`, dpop })).status).toBe(200);
    expectProofRefused(await call('/dpop/once', { authorization: `DPoP ${token}`, dpop }), 'replayed');
  });

  it('a DPoP-bound token sent as Bearer is refused, and a bearer token sent as DPoP', async () => {
    const key = await proofKey();
    const bound = await boundToken(key);
    const asBearer = await call('/api/x', { authorization: `Bearer ${bound}` });
    expect(asBearer.status).toBe(401);
    expect(challenge(asBearer)).toBe('Bearer error="invalid_token"');

    const plain = await getToken(gw, client);
    const asDpop = await call('/dpop/x', { authorization: `DPoP ${plain}`, dpop: await proof(key, { htm: 'GET', htu: `${gw.origin}/dpop/x`, token: plain }) });
    expect(asDpop.status).toBe(401);
    expect(challenge(asDpop)).toMatch(/^DPoP error="invalid_token", algs="/);
  });

  it('malformed DPoP credentials and a token in the query are 400 invalid_request with the DPoP challenge', async () => {
    for (const authorization of ['DPoP', 'DPoP\ttab']) {
      const res = await call('/dpop/x', { authorization });
      expect(res.status, authorization).toBe(400);
      expect(challenge(res), authorization).toMatch(/^DPoP error="invalid_request", algs="/);
    }
    // One space, then a token that starts with another: no token at all.
    const twoSpaces = await call('/dpop/x', { authorization: 'DPoP  two-spaces' });
    expect(twoSpaces.status).toBe(401);
    expect(challenge(twoSpaces)).toMatch(/^DPoP error="invalid_token", algs="/);
    const key = await proofKey();
    const token = await boundToken(key);
    const inQuery = await call(`/dpop/x?access_token=${token}`, {
      authorization: `DPoP ${token}`,
      dpop: await proof(key, { htm: 'GET', htu: `${gw.origin}/dpop/x`, token }),
    });
    expect(inQuery.status).toBe(400);
  });

  it('authorization refusals of a DPoP token carry the DPoP challenge: a missing scope (403), another audience (401)', async () => {
    const narrow = await addClient(gw, { scopes: ['other:read'] });
    const key = await proofKey();
    const res = await send(gw, {
      method: 'POST',
      path: '/oauth2/token',
      body: 'grant_type=client_credentials',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: basicAuth(narrow.id, narrow.secret),
        dpop: await proof(key, { htm: 'POST', htu: tokenUri() }),
      },
    });
    const token = String(res.json?.['access_token']);
    const noScope = await call('/dpop/x', { authorization: `DPoP ${token}`, dpop: await proof(key, { htm: 'GET', htu: `${gw.origin}/dpop/x`, token }) });
    expect(noScope.status).toBe(403);
    expect(challenge(noScope)).toMatch(/^DPoP error="insufficient_scope", scope="echo:read", algs="[A-Za-z0-9 ]+"$/);

    const wide = await boundToken(key);
    const otherAudience = await call('/elsewhere/x', {
      authorization: `DPoP ${wide}`,
      dpop: await proof(key, { htm: 'GET', htu: `${gw.origin}/elsewhere/x`, token: wide }),
    });
    expect(otherAudience.status).toBe(401);
    expect(challenge(otherAudience)).toMatch(/^DPoP error="invalid_token", algs="/);
    const record = (await gw.auditRecords()).find((r) => r.request_id === otherAudience.headers['x-request-id']);
    expect(record).toMatchObject({ stage: 'authz', reason: 'audience mismatch' });
  });

  it('no credential: 401 with a DPoP challenge naming the algorithms; a route taking both schemes offers both', async () => {
    const none = await call('/dpop/x', {});
    expect(none.status).toBe(401);
    expect(challenge(none)).toMatch(/^DPoP algs="[^"]*ES256[^"]*"$/);
    const both = await call('/dpop-up/x', {});
    expect(challenge(both)).toMatch(/^Bearer realm="gatehouse", DPoP algs="/);
  });

  it('neither the DPoP token nor its proof is forwarded upstream; introspection reports the binding', async () => {
    const key = await proofKey();
    const token = await boundToken(key);
    const res = await call('/dpop-up/z', { authorization: `DPoP ${token}`, dpop: await proof(key, { htm: 'GET', htu: `${gw.origin}/dpop-up/z`, token }) });
    expect(res.status, res.text).toBe(200);
    const seen = upstream.requests.at(-1);
    expect(seen?.headers['authorization']).toBeUndefined();
    expect(seen?.headers['dpop']).toBeUndefined();
    expect(seen?.headers['x-authenticated-method']).toBe('dpop');

    const introspection = await send(gw, {
      method: 'POST',
      path: '/oauth2/introspect',
      body: `token=${token}`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(client.id, client.secret) },
    });
    expect(introspection.json).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: key.jkt } });
  });
});

describe('authz.require_sender_constraint', () => {
  it('admits DPoP-bound tokens and certificate-bound ones on their certificate; refuses plain bearer tokens', async () => {
    const plain = await call('/constrained/x', { authorization: `Bearer ${await getToken(gw, client)}` });
    expect(plain.status).toBe(401);
    expect(challenge(plain)).toBe('Bearer error="invalid_token"');
    const record = (await gw.auditRecords()).find((r) => r.request_id === plain.headers['x-request-id']);
    expect(record).toMatchObject({ stage: 'authz', reason: 'token is not sender-constrained' });

    const key = await proofKey();
    const token = await boundToken(key);
    const dpop = await proof(key, { htm: 'GET', htu: `${gw.origin}/constrained/x`, token });
    expect((await call('/constrained/x', { authorization: `DPoP ${token}`, dpop })).status).toBe(200);

    const x5t = certificateThumbprintSha256(gw.certs.client.certPem);
    const certBound = await forgeToken(gw, { ...validClaims(gw, client.id), cnf: { 'x5t#S256': x5t } });
    expect((await call('/constrained/x', { authorization: `Bearer ${certBound}` }, gw.agent({ cert: gw.certs.client }))).status).toBe(200);
    expect((await call('/constrained/x', { authorization: `Bearer ${certBound}` })).status).toBe(401);
  });
});

describe('DPoP replay cache', () => {
  it('remembers a proof until it expires, then forgets it; full of live proofs, it refuses to answer', () => {
    let now = 1_000_000;
    const cache = new MemoryProofReplayCache(2, () => now);
    expect(cache.firstUse('k', 'a', now + 1000)).toBe(true);
    expect(cache.firstUse('k', 'a', now + 1000)).toBe(false);
    expect(cache.firstUse('other-key', 'a', now + 1000)).toBe(true);
    expect(() => cache.firstUse('k', 'b', now + 1000)).toThrow(ReplayCacheUnavailable);
    now += 1001;
    expect(cache.firstUse('k', 'b', now + 1000)).toBe(true);
    expect(cache.size).toBe(1);
  });

  it('a gateway whose replay cache is full fails closed: 503, not an unchecked proof', async () => {
    const small = await startIssuerGateway((base) =>
      withIssuer(base, { dpop: { replay_cache_entries: 1 } }, [route('dpop', '/dpop', { authn: ['dpop'], authz: { allow: 'authenticated' } })]),
    );
    try {
      const smallClient = await addClient(small, { scopes: ['echo:read'] });
      const key = await proofKey();
      const origin = small.origin;
      const tokenRes = await send(small, {
        method: 'POST',
        path: '/oauth2/token',
        body: 'grant_type=client_credentials',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: basicAuth(smallClient.id, smallClient.secret),
          dpop: await proof(key, { htm: 'POST', htu: `${origin}/oauth2/token` }),
        },
      });
      expect(tokenRes.status).toBe(200);
      const token = String(tokenRes.json?.['access_token']);
      const res = await send(small, {
        path: '/dpop/x',
        headers: { authorization: `DPoP ${token}`, dpop: await proof(key, { htm: 'GET', htu: `${origin}/dpop/x`, token }) },
      });
      expect(res.status).toBe(503);
    } finally {
      await small.stop();
    }
  });
});

const REDIS_URL = process.env['GATEHOUSE_TEST_REDIS_URL'] || undefined;
if (process.env['GATEHOUSE_REQUIRE_SERVICES'] === '1' && REDIS_URL === undefined)
  throw new Error('GATEHOUSE_REQUIRE_SERVICES=1 but GATEHOUSE_TEST_REDIS_URL is not set');

/** A token request with `dpop` to `target`, naming `authority` as its Host (the authority a balancer's instances share). */
async function tokenRequest(target: TestGateway, who: TestClient, dpop: string, authority?: string): Promise<OAuthResponse> {
  return send(target, {
    method: 'POST',
    path: '/oauth2/token',
    body: 'grant_type=client_credentials',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: basicAuth(who.id, who.secret),
      dpop,
      ...(authority !== undefined ? { host: authority } : {}),
    },
  });
}

describe.skipIf(REDIS_URL === undefined)('DPoP replay across instances sharing Redis (OA-20)', () => {
  it('a proof accepted by one instance is refused by another; a fresh one is not', async () => {
    const keyPrefix = `gh-test-${randomBytes(6).toString('hex')}`;
    const withRedis = (url: string) => (base: Parameters<typeof withIssuer>[0]) => ({ ...withIssuer(base), redis: { url, key_prefix: keyPrefix } });
    const a = await startIssuerGateway(withRedis(REDIS_URL ?? ''));
    const b = await startIssuerGateway(withRedis(REDIS_URL ?? ''));
    try {
      const [clientA, clientB] = [await addClient(a), await addClient(b)];
      const authority = `127.0.0.1:${a.port}`;
      const key = await proofKey();
      const htu = `https://${authority}/oauth2/token`;
      const used = await proof(key, { htm: 'POST', htu });
      expect((await tokenRequest(a, clientA, used)).status).toBe(200);
      const replayed = await tokenRequest(b, clientB, used, authority);
      expect(replayed.status).toBe(400);
      expect(replayed.json?.['error']).toBe('invalid_dpop_proof');
      const record = (await b.auditRecords()).find((r) => r.request_id === replayed.headers['x-request-id']);
      expect(record).toMatchObject({ code: 'invalid_dpop_proof', reason: 'proof replayed' });
      // The same Host with a proof nobody used: instance b issues.
      expect((await tokenRequest(b, clientB, await proof(key, { htm: 'POST', htu }), authority)).status).toBe(200);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it('Redis unreachable: DPoP fails closed (503) while a plain token request is still served', async () => {
    const down = `redis://127.0.0.1:${await closedPort()}`;
    const gateway = await startIssuerGateway((base) => ({ ...withIssuer(base), redis: { url: down, key_prefix: 'gh-test-down', timeout_ms: 100 } }));
    try {
      const who = await addClient(gateway);
      const res = await tokenRequest(gateway, who, await proof(await proofKey(), { htm: 'POST', htu: `${gateway.origin}/oauth2/token` }));
      expect(res.status).toBe(503);
      expect(res.json?.['access_token']).toBeUndefined();
      expect((await getToken(gateway, who)).length).toBeGreaterThan(0);
    } finally {
      await gateway.stop();
    }
  });
});

describe('server nonces (issuer.dpop.require_nonce, RFC 9449 §8-9)', () => {
  let nonced: TestGateway;
  let holder: TestClient;
  beforeAll(async () => {
    nonced = await startIssuerGateway((base) =>
      withIssuer(base, { dpop: { require_nonce: true } }, [route('dpop', '/dpop', { authn: ['dpop'], authz: { allow: 'authenticated' } })]),
    );
    holder = await addClient(nonced, { scopes: ['echo:read'] });
  });
  afterAll(() => nonced.stop());

  const tokenAt = (dpop: string): Promise<OAuthResponse> => tokenRequest(nonced, holder, dpop);

  it('the token endpoint answers a proof without a nonce with use_dpop_nonce and a DPoP-Nonce; the retry with it gets a token', async () => {
    const key = await proofKey();
    const htu = `${nonced.origin}/oauth2/token`;
    const first = await tokenAt(await proof(key, { htm: 'POST', htu }));
    expect(first.status).toBe(400);
    expect(first.json).toMatchObject({ error: 'use_dpop_nonce' });
    const nonce = String(first.headers['dpop-nonce'] ?? '');
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{30}$/);
    const retry = await tokenAt(await proof(key, { htm: 'POST', htu, claims: { nonce } }));
    expect(retry.status).toBe(200);
    expect(retry.json?.['token_type']).toBe('DPoP');
    // A nonce not made by this gateway's key is no nonce.
    const forged = `${nonce.slice(0, -2)}${nonce.endsWith('AA') ? 'BB' : 'AA'}`;
    const refused = await tokenAt(await proof(key, { htm: 'POST', htu, claims: { nonce: forged } }));
    expect(refused.json).toMatchObject({ error: 'use_dpop_nonce' });
  });

  it('a dpop route answers 401 use_dpop_nonce with a DPoP-Nonce; the proof with it is admitted', async () => {
    const key = await proofKey();
    const first = await tokenAt(await proof(key, { htm: 'POST', htu: `${nonced.origin}/oauth2/token` }));
    const nonce = String(first.headers['dpop-nonce'] ?? '');
    const token = String((await tokenAt(await proof(key, { htm: 'POST', htu: `${nonced.origin}/oauth2/token`, claims: { nonce } }))).json?.['access_token']);
    const htu = `${nonced.origin}/dpop/x`;
    const without = await send(nonced, { path: '/dpop/x', headers: { authorization: `DPoP ${token}`, dpop: await proof(key, { htm: 'GET', htu, token }) } });
    expect(without.status).toBe(401);
    expect(String(without.headers['www-authenticate'])).toMatch(/^DPoP error="use_dpop_nonce", algs="/);
    const fresh = String(without.headers['dpop-nonce'] ?? '');
    expect(fresh).toMatch(/^[A-Za-z0-9_-]{30}$/);
    const withNonce = await send(nonced, {
      path: '/dpop/x',
      headers: { authorization: `DPoP ${token}`, dpop: await proof(key, { htm: 'GET', htu, token, claims: { nonce: fresh } }) },
    });
    expect(withNonce.status).toBe(200);
  });

  it('nonces expire: accepted within their lifetime, refused after it, and only from the key that made them', () => {
    let now = 1_800_000_000_000;
    const key = createSecretKey(randomBytes(32));
    const nonces = new DpopNonces(key, 300, () => now);
    const nonce = nonces.issue();
    expect(nonces.accepts(nonce)).toBe(true);
    now += 300_000;
    expect(nonces.accepts(nonce)).toBe(true);
    now += 1000;
    expect(nonces.accepts(nonce)).toBe(false);
    expect(new DpopNonces(createSecretKey(randomBytes(32)), 300, () => now).accepts(nonces.issue())).toBe(false);
    for (const junk of [undefined, 42, '', 'x'.repeat(30), `${nonce}A`]) expect(nonces.accepts(junk)).toBe(false);
  });
});

describe('htu normalization', () => {
  it('lower-cases scheme and host, drops the default port, query and fragment, resolves dot segments; refuses non-https', () => {
    expect(normalizedUri('HTTPS://Example.COM:443/a/./b/../c?x=1#f')).toBe('https://example.com/a/c');
    expect(normalizedUri('https://example.com:8443/a')).toBe('https://example.com:8443/a');
    expect(normalizedUri('http://example.com/a')).toBeUndefined();
    expect(normalizedUri('https://user:pw@example.com/a')).toBeUndefined();
    expect(normalizedUri('not a uri')).toBeUndefined();
  });
});
