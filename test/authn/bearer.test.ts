// Bearer access-token authentication (SECURITY-MATRIX A: JWT-01..JWT-27, resource-server side; OA-18 binding part).
// Real Ed25519 and P-256 keys made with jose, tokens signed with jose's SignJWT, and hand-crafted malformed tokens signed
// with node:crypto so the header and payload bytes are exactly what each case needs. The authenticator is driven directly
// with minimal RequestContext objects and an injected clock; route audience checks belong to authorization, not here.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createHash, createHmac, KeyObject, randomUUID, sign as nodeSign } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import {
  BearerAuthenticator,
  hasQueryAccessToken,
  type BearerOptions,
  type RevocationList,
  type VerificationKey,
  type VerificationKeys,
} from '../../src/authn/bearer.js';
import type { AuthnResult, PeerCertificate, Principal, RequestContext } from '../../src/pipeline/stage.js';

const ISSUER = 'https://issuer.gatehouse.test';
const AUDIENCE = 'https://api.gatehouse.test';
const TOLERANCE_S = 30;
const MAX_AGE_S = 3600;
const START_MS = Date.UTC(2030, 0, 1, 12, 0, 0);

let nowMs = START_MS;
const nowS = (): number => Math.floor(nowMs / 1000);

interface Signer {
  readonly kid: string;
  readonly alg: 'EdDSA' | 'ES256';
  readonly privateKey: KeyObject;
  readonly privateCryptoKey: CryptoKey;
  readonly published: VerificationKey;
}

/** A Map-backed key set that records every kid it is asked about (JWT-08: the only place a kid ever goes). */
class SpyKeys implements VerificationKeys {
  readonly map = new Map<string, VerificationKey>();
  readonly lookups: unknown[] = [];
  verificationKey(kid: string): VerificationKey | undefined {
    this.lookups.push(kid);
    return this.map.get(kid);
  }
}

class Revocations implements RevocationList {
  readonly revoked = new Set<string>();
  isRevoked(iss: string, jti: string): boolean {
    return this.revoked.has(`${iss}\n${jti}`);
  }
}

let ed: Signer;
let es: Signer;
let attacker: Signer;
let keys: SpyKeys;
let revocations: Revocations;
let bearer: BearerAuthenticator;

async function makeSigner(kid: string, alg: 'EdDSA' | 'ES256', publicAsKeyObject: boolean): Promise<Signer> {
  const pair = alg === 'EdDSA' ? await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true }) : await generateKeyPair('ES256', { extractable: true });
  const privateKey = KeyObject.from(pair.privateKey as unknown as Parameters<typeof KeyObject.from>[0]);
  const publicKey = publicAsKeyObject ? KeyObject.from(pair.publicKey as unknown as Parameters<typeof KeyObject.from>[0]) : pair.publicKey;
  return { kid, alg, privateKey, privateCryptoKey: pair.privateKey, published: { key: publicKey, alg } };
}

function options(overrides: Partial<BearerOptions> = {}): BearerOptions {
  return {
    issuer: ISSUER,
    clockToleranceS: TOLERANCE_S,
    maxTokenAgeS: MAX_AGE_S,
    maxTokenBytes: 8192,
    cacheEntries: 10_000,
    now: () => nowMs,
    ...overrides,
  };
}

function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: ISSUER,
    sub: 'client-1',
    client_id: 'client-1',
    aud: AUDIENCE,
    scope: 'echo:read echo:write',
    iat: nowS(),
    exp: nowS() + 600,
    jti: randomUUID(),
    ...overrides,
  };
}

/** The normal way: jose's SignJWT, header typ at+jwt and kid. */
async function token(signer: Signer = ed, overrides: Record<string, unknown> = {}, typ = 'at+jwt'): Promise<string> {
  return new SignJWT(claims(overrides) as JWTPayload).setProtectedHeader({ alg: signer.alg, typ, kid: signer.kid }).sign(signer.privateCryptoKey);
}

const b64u = (value: string | Buffer): string => Buffer.from(value).toString('base64url');

/** Hand-signs exact header and payload text (objects are JSON-encoded; strings are used byte for byte). */
function craft(header: object | string, payload: object | string, signer: Signer = ed, der = false): string {
  const input = `${b64u(typeof header === 'string' ? header : JSON.stringify(header))}.${b64u(typeof payload === 'string' ? payload : JSON.stringify(payload))}`;
  const signature =
    signer.alg === 'EdDSA'
      ? nodeSign(null, Buffer.from(input), signer.privateKey)
      : nodeSign('sha256', Buffer.from(input), { key: signer.privateKey, dsaEncoding: der ? 'der' : 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

function hs256(header: object, payload: object, secret: string | Buffer): string {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

function unsigned(header: object, payload: object, signature = ''): string {
  return `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}.${signature}`;
}

const edHeader = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ alg: 'EdDSA', typ: 'at+jwt', kid: ed.kid, ...extra });

function request(authorization: string | undefined, query = '', peerCertificate?: PeerCertificate): RequestContext {
  return {
    id: 'req-1',
    method: 'GET',
    path: '/echo',
    query,
    authorization,
    connection: { peerAddress: '127.0.0.1', clientAddress: '127.0.0.1', protocol: 'h1', peerCertificate },
  } as unknown as RequestContext;
}

async function authn(authorization: string | undefined, query = '', authenticator = bearer, peer?: PeerCertificate): Promise<AuthnResult> {
  return authenticator.authenticate(request(authorization, query, peer));
}

async function authnToken(jwt: string, authenticator = bearer): Promise<AuthnResult> {
  return authn(`Bearer ${jwt}`, '', authenticator);
}

function expectRefused(result: AuthnResult, code: 'invalid_token' | 'invalid_request' = 'invalid_token'): void {
  expect(result.outcome).toBe('rejected');
  if (result.outcome !== 'rejected') return;
  expect(result.error.code).toBe(code);
  expect(result.error.status).toBe(code === 'invalid_token' ? 401 : 400);
  expect(result.error.headers['www-authenticate']).toBe(`Bearer error="${code}"`);
}

function expectPrincipal(result: AuthnResult): Principal {
  expect(result.outcome).toBe('authenticated');
  if (result.outcome !== 'authenticated') throw new Error(`not authenticated: ${result.outcome === 'rejected' ? result.error.reason : result.outcome}`);
  return result.principal;
}

beforeAll(async () => {
  ed = await makeSigner('ed-2030-01', 'EdDSA', false);
  es = await makeSigner('es-2030-01', 'ES256', true);
  attacker = await makeSigner('attacker', 'EdDSA', false);
});

beforeEach(() => {
  nowMs = START_MS;
  keys = new SpyKeys();
  keys.map.set(ed.kid, ed.published);
  keys.map.set(es.kid, es.published);
  revocations = new Revocations();
  bearer = new BearerAuthenticator(keys, revocations, options());
});

describe('valid tokens', () => {
  it('authenticates an Ed25519 token (CryptoKey) with the right principal', async () => {
    const jti = randomUUID();
    const principal = expectPrincipal(await authnToken(await token(ed, { jti, aud: [AUDIENCE, 'https://other.test'] })));
    expect(principal.subject).toBe('client-1');
    expect(principal.method).toBe('bearer');
    expect([...principal.scopes]).toEqual(['echo:read', 'echo:write']);
    expect(principal.clientId).toBe('client-1');
    expect(principal.tokenId).toBe(jti);
    expect(principal.audiences).toEqual([AUDIENCE, 'https://other.test']);
    expect(principal.expiresAt).toBe((nowS() + 600) * 1000);
    expect(principal.certificateThumbprint).toBeUndefined();
  });

  it('authenticates an ES256 token (KeyObject); aud string becomes a one-element array; no scope → no scopes', async () => {
    const principal = expectPrincipal(await authnToken(await token(es, { scope: undefined })));
    expect(principal.audiences).toEqual([AUDIENCE]);
    expect(principal.scopes.size).toBe(0);
  });

  it('scope is split on spaces into exact tokens', async () => {
    const principal = expectPrincipal(await authnToken(await token(ed, { scope: ' a  b:c  a ' })));
    expect([...principal.scopes]).toEqual(['a', 'b:c']);
  });
});

describe('JWT-01 alg none', () => {
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    it(`alg ${alg} with an empty signature → invalid_token`, async () => {
      expectRefused(await authnToken(unsigned(edHeader({ alg }), claims())));
    });
    it(`alg ${alg} with a signature → invalid_token`, async () => {
      expectRefused(await authnToken(unsigned(edHeader({ alg }), claims(), 'AAAA')));
    });
  }
  it('alg none without a kid → invalid_token', async () => {
    expectRefused(await authnToken(unsigned({ alg: 'none', typ: 'at+jwt' }, claims())));
  });
});

describe('JWT-02 broken signatures', () => {
  it('null signature, truncated and altered signatures → invalid_token; a valid token still works afterwards', async () => {
    const good = await token();
    const [h, p, s] = good.split('.') as [string, string, string];
    const flipped = (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
    for (const bad of [`${h}.${p}.`, `${h}.${p}.${s.slice(0, -4)}`, `${h}.${p}.${s.slice(0, 10)}`, `${h}.${p}.${flipped}`, `${h}.${p}.${s}A`]) {
      expectRefused(await authnToken(bad));
    }
    for (let i = 0; i < 20; i++) expectRefused(await authnToken(`${h}.${p}.${flipped}`));
    expectPrincipal(await authnToken(good));
  });
});

describe('JWT-03 / JWT-04 HMAC with public key bytes or weak secrets', () => {
  it('HS256 MACed with the public key PEM, JWK bytes and common secrets → invalid_token, never verified', async () => {
    const pem = (
      ed.published.key instanceof KeyObject ? ed.published.key : KeyObject.from(ed.published.key as unknown as Parameters<typeof KeyObject.from>[0])
    ).export({ type: 'spki', format: 'pem' });
    const jwk = JSON.stringify(await exportJWK(ed.published.key));
    const esPem = (es.published.key as KeyObject).export({ type: 'spki', format: 'pem' });
    for (const secret of [pem, jwk, esPem, '', 'secret', 'your-256-bit-secret']) {
      for (const kid of [ed.kid, es.kid]) {
        expectRefused(await authnToken(hs256({ alg: 'HS256', typ: 'at+jwt', kid }, claims(), secret)));
      }
      expectRefused(await authnToken(hs256({ alg: 'HS256', typ: 'at+jwt' }, claims(), secret)));
    }
    expect(bearer.stats.verifications).toBe(0);
  });

  it('alg pinned per key: ES256 header on the Ed25519 kid (and the reverse), EdDSA/Ed25519 aliases → invalid_token', async () => {
    expectRefused(await authnToken(craft({ alg: 'ES256', typ: 'at+jwt', kid: ed.kid }, claims(), es)));
    expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt', kid: es.kid }, claims(), ed)));
    expectRefused(await authnToken(craft({ alg: 'Ed25519', typ: 'at+jwt', kid: ed.kid }, claims(), ed)));
    expectRefused(await authnToken(craft({ alg: 'eddsa', typ: 'at+jwt', kid: ed.kid }, claims(), ed)));
    expect(bearer.stats.verifications).toBe(0);
  });
});

describe('JWT-05 / JWT-06 / JWT-07 key-selecting headers', () => {
  let server: Server;
  let hits = 0;
  let origin = '';
  beforeAll(async () => {
    server = createServer((_req, res) => {
      hits++;
      res.end('{"keys":[]}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('JWT-05 embedded jwk header, attacker-signed (own kid or ours) → invalid_token', async () => {
    const jwk = await exportJWK(attacker.published.key);
    expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt', kid: attacker.kid, jwk }, claims(), attacker)));
    expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt', kid: ed.kid, jwk }, claims(), attacker)));
    expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt', jwk }, claims(), attacker)));
    // Even when our own key signed it: the parameter's presence alone refuses the token.
    expectRefused(await authnToken(craft(edHeader({ jwk: await exportJWK(ed.published.key) }), claims())));
  });

  it('JWT-06 jku / x5u to an attacker or internal URL → invalid_token and zero outbound fetches', async () => {
    for (const url of [`${origin}/jwks.json`, 'http://169.254.169.254/latest/meta-data/', 'http://localhost/jwks']) {
      expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt', kid: attacker.kid, jku: url }, claims(), attacker)));
      expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt', kid: attacker.kid, x5u: url }, claims(), attacker)));
      expectRefused(await authnToken(craft(edHeader({ jku: url }), claims())));
      expectRefused(await authnToken(craft(edHeader({ x5u: url }), claims())));
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(hits).toBe(0);
  });

  it('JWT-07 x5c chain in the header → invalid_token', async () => {
    const fakeChain = [Buffer.from('attacker certificate DER').toString('base64')];
    expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt', kid: attacker.kid, x5c: fakeChain }, claims(), attacker)));
    expectRefused(await authnToken(craft(edHeader({ x5c: fakeChain }), claims())));
  });
});

describe('JWT-08 kid injection', () => {
  const injected: ReadonlyArray<readonly [string, unknown]> = [
    ['empty', ''],
    ['path traversal', '../../../../dev/null'],
    ['/dev/null', '/dev/null'],
    ['/invalid_path', '/invalid_path'],
    ['command', '|sleep 10'],
    ['SQL', "x' UNION SELECT '1';--"],
    ['129 characters', 'k'.repeat(129)],
    ['__proto__', '__proto__'],
    ['number', 1],
    ['object', { kid: 'ed-2030-01' }],
    ['array', ['ed-2030-01']],
    ['null', null],
    ['true', true],
  ];
  for (const [label, kid] of injected) {
    it(`kid ${label} → invalid_token quickly, only ever a Map key`, async () => {
      const started = performance.now();
      expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt', kid }, claims())));
      expect(performance.now() - started).toBeLessThan(200);
      for (const looked of keys.lookups) {
        expect(typeof looked).toBe('string');
        expect((looked as string).length).toBeLessThanOrEqual(128);
      }
      expect(bearer.stats.verifications).toBe(0);
    });
  }

  it('kid of 10 KB: refused by size at 8 KB, and by the kid bound when the size limit is raised; never looked up', async () => {
    const jwt = craft({ alg: 'EdDSA', typ: 'at+jwt', kid: 'k'.repeat(10_240) }, claims());
    expectRefused(await authnToken(jwt));
    const roomy = new BearerAuthenticator(keys, revocations, options({ maxTokenBytes: 65_536 }));
    const result = await authnToken(jwt, roomy);
    expectRefused(result);
    if (result.outcome === 'rejected') expect(result.error.reason).toBe('kid missing or malformed');
    expect(keys.lookups).toEqual([]);
  });

  it('a missing kid → invalid_token', async () => {
    expectRefused(await authnToken(craft({ alg: 'EdDSA', typ: 'at+jwt' }, claims())));
  });
});

describe('issue #23 item 4: a kid this instance does not hold yet', () => {
  /** Keys that learn `late` (a key another instance began signing with) only when asked to look again. */
  class LateKeys extends SpyKeys {
    resolved: string[] = [];
    constructor(private readonly late: Signer | undefined) {
      super();
    }
    async resolveKid(kid: string): Promise<void> {
      this.resolved.push(kid);
      await new Promise((resolve) => setTimeout(resolve, 10));
      if (this.late !== undefined) this.map.set(this.late.kid, this.late.published);
    }
  }

  it('is looked up once and then verified against the key the store holds: five requests with the token, one lookup', async () => {
    const late = await makeSigner('late-key', 'EdDSA', false);
    const lateKeys = new LateKeys(late);
    const authenticator = new BearerAuthenticator(lateKeys, revocations, options());
    const jwt = await token(late);
    const results = await Promise.all(Array.from({ length: 5 }, () => authnToken(jwt, authenticator)));
    for (const result of results) expect(expectPrincipal(result).subject).toBe('client-1');
    expect(lateKeys.resolved).toEqual(['late-key']);
    // Known now: no further lookup.
    expectPrincipal(await authnToken(await token(late), authenticator));
    expect(lateKeys.resolved).toEqual(['late-key']);
  });

  it('stays refused when the lookup does not find it, and a wrong alg is refused after it as before', async () => {
    const lateKeys = new LateKeys(undefined);
    const authenticator = new BearerAuthenticator(lateKeys, revocations, options());
    const result = await authnToken(await token(attacker), authenticator);
    expectRefused(result);
    if (result.outcome === 'rejected') expect(result.error.reason).toBe('unknown kid');
    expect(lateKeys.resolved).toEqual(['attacker']);

    const late = await makeSigner('late-es', 'ES256', false);
    const confused = craft({ alg: 'EdDSA', typ: 'at+jwt', kid: late.kid }, claims());
    const refused = await authnToken(confused, new BearerAuthenticator(new LateKeys(late), revocations, options()));
    expectRefused(refused);
    if (refused.outcome === 'rejected') expect(refused.error.reason).toBe('alg does not match the key');
  });

  it('without a resolver an unknown kid is refused at once, with no verification', async () => {
    const result = await authnToken(await token(attacker));
    expectRefused(result);
    if (result.outcome === 'rejected') expect(result.error.reason).toBe('unknown kid');
    expect(bearer.stats.verifications).toBe(0);
  });
});

describe('JWT-10 psychic signature', () => {
  it('ES256 r = s = 0 (CVE-2022-21449) → invalid_token', async () => {
    const good = await token(es);
    const [h, p] = good.split('.') as [string, string, string];
    expectRefused(await authnToken(`${h}.${p}.${Buffer.alloc(64).toString('base64url')}`));
    // r = s = n (the curve order) is the other classic form.
    const n = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');
    expectRefused(await authnToken(`${h}.${p}.${Buffer.concat([n, n]).toString('base64url')}`));
    expectPrincipal(await authnToken(good));
  });
});

describe('JWT-12 non-canonical token text', () => {
  it('padding, standard base64 alphabet, whitespace and DER-encoded ECDSA signatures → invalid_token before verification', async () => {
    const good = await token(es);
    const [h, p, s] = good.split('.') as [string, string, string];
    const standard = (segment: string): string => Buffer.from(segment, 'base64url').toString('base64');
    const variants = [
      `${h}=.${p}.${s}`,
      `${h}.${p}=.${s}`,
      `${h}.${p}.${s}=`,
      `${h}.${p}.${s}==`,
      `${standard(h)}.${standard(p)}.${standard(s)}`,
      `${h}.${p}.${s.replace(/-/g, '+').replace(/_/g, '/')}+/`,
      `${good} `,
      `${good}\t`,
      `${good}\n`,
      ` ${good}`,
      `${h}. ${p}.${s}`,
      `${h}.${p}.${s}\u00a0`,
    ];
    for (const variant of variants) {
      if (variant === good) continue;
      expectRefused(await authnToken(variant));
    }
    expectRefused(await authnToken(craft({ alg: 'ES256', typ: 'at+jwt', kid: es.kid }, claims(), es, true)));
    expect(bearer.stats.verifications).toBe(1); // only the DER one reached jose (and failed there)
    expectPrincipal(await authnToken(good));
  });
});

describe('JWT-13 segment count', () => {
  it('2, 4 and 5 segments and a JSON-serialized JWS → invalid_token', async () => {
    const good = await token();
    const [h, p, s] = good.split('.') as [string, string, string];
    for (const variant of [`${h}.${p}`, `${good}.${s}`, `${h}.${p}.${s}.${s}.${s}`, `${h}..${p}.${s}`, `${h}.${p}..${s}`]) {
      expectRefused(await authnToken(variant));
    }
    const jwe = `${b64u('{"alg":"dir","enc":"A256GCM","kid":"ed-2030-01"}')}..${b64u('iv')}.${b64u('ciphertext')}.${b64u('tag')}`;
    expectRefused(await authnToken(jwe));
    expectRefused(await authnToken(JSON.stringify({ protected: h, payload: p, signature: s })));
    expect(bearer.stats.verifications).toBe(0);
  });
});

describe('JWT-14 typ', () => {
  for (const typ of ['JWT', 'jwt', 'dpop+jwt', 'logout+jwt', 'application/jwt', 'at+jwt ', 'application/at+jwt; x=y', 'at+JWT+x', '']) {
    it(`typ ${JSON.stringify(typ)} → invalid_token`, async () => {
      expectRefused(await authnToken(craft(edHeader({ typ }), claims())));
    });
  }
  it('typ missing → invalid_token', async () => {
    expectRefused(await authnToken(craft({ alg: 'EdDSA', kid: ed.kid }, claims())));
  });
  for (const typ of ['at+jwt', 'application/at+jwt', 'AT+JWT', 'Application/AT+JWT']) {
    it(`typ ${typ} → accepted (media types compare case-insensitively)`, async () => {
      expectPrincipal(await authnToken(await token(ed, {}, typ)));
    });
  }
});

describe('JWT-17 issuer', () => {
  for (const iss of [`${ISSUER}/`, ISSUER.toUpperCase(), ISSUER.replace('https:', 'http:'), 'https://evil.test', `${ISSUER}#`]) {
    it(`iss ${iss} → invalid_token`, async () => {
      expectRefused(await authnToken(await token(ed, { iss })));
    });
  }
});

describe('JWT-19 time claims with an injected clock', () => {
  it(`exp = now − (tolerance + 1) → invalid_token; exp = now − (tolerance − 10) → accepted`, async () => {
    expectRefused(await authnToken(await token(ed, { exp: nowS() - (TOLERANCE_S + 1), iat: nowS() - 100 })));
    expectPrincipal(await authnToken(await token(ed, { exp: nowS() - (TOLERANCE_S - 10), iat: nowS() - 100 })));
  });
  it('nbf = now + 60 → invalid_token; nbf within tolerance → accepted', async () => {
    expectRefused(await authnToken(await token(ed, { nbf: nowS() + 60 })));
    expectPrincipal(await authnToken(await token(ed, { nbf: nowS() + TOLERANCE_S - 1 })));
  });
  it('iat = now + 3600 → invalid_token', async () => {
    expectRefused(await authnToken(await token(ed, { iat: nowS() + 3600, exp: nowS() + 7200 })));
  });
  it('a token older than maxTokenAge → invalid_token, even when exp is far away', async () => {
    expectRefused(await authnToken(await token(ed, { iat: nowS() - MAX_AGE_S - TOLERANCE_S - 1, exp: nowS() + 600 })));
    expectPrincipal(await authnToken(await token(ed, { iat: nowS() - MAX_AGE_S + 10, exp: nowS() + 600 })));
  });
});

describe('JWT-20 required claims', () => {
  for (const claim of ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti']) {
    it(`${claim} missing → invalid_token`, async () => {
      const payload = claims();
      delete payload[claim];
      expectRefused(await authnToken(craft(edHeader(), payload)));
    });
  }
});

describe('JWT-21 type confusion', () => {
  const confusers: readonly unknown[] = [null, true, false, 'jwt_tool', 0];
  const stringClaims = ['iss', 'sub', 'client_id', 'jti'];
  const cases: Array<readonly [string, unknown]> = [];
  for (const claim of [...stringClaims, 'aud', 'exp', 'iat', 'nbf', 'scope']) {
    for (const value of confusers) {
      // Valid combinations are not confusion: a string sub/client_id/jti/scope, a string aud (wrong audiences are the
      // authorizer's business), nbf 0.
      if (typeof value === 'string' && ['sub', 'client_id', 'jti', 'scope', 'aud'].includes(claim)) continue;
      if (value === 0 && claim === 'nbf') continue;
      cases.push([claim, value]);
    }
  }
  cases.push(
    ['exp', '9999999999'],
    ['iat', String(nowS())],
    ['nbf', '0'],
    ['scope', ['echo:read']],
    ['scope', { echo: 'read' }],
    ['scope', 'echo:read\techo:write'],
    ['scope', 'echo"read'],
    ['aud', []],
    ['aud', [AUDIENCE, 1]],
    ['aud', [AUDIENCE, '']],
    ['aud', ''],
    ['aud', { aud: AUDIENCE }],
    ['sub', ''],
    ['sub', ['client-1']],
    ['client_id', ''],
    ['client_id', { id: 'client-1' }],
    ['jti', ''],
    ['jti', 12345],
    ['exp', -1],
  );
  for (const [claim, value] of cases) {
    it(`${claim} = ${JSON.stringify(value)} → invalid_token, never a throw`, async () => {
      expectRefused(await authnToken(craft(edHeader(), claims({ [claim]: value }))));
    });
  }
  it('exp = 1e999 (Infinity after JSON.parse) → invalid_token', async () => {
    const payload = JSON.stringify(claims()).replace(/"exp":\d+/, '"exp":1e999');
    expectRefused(await authnToken(craft(edHeader(), payload)));
  });
  for (const name of ['alg', 'typ', 'kid']) {
    for (const value of confusers) {
      it(`header ${name} = ${JSON.stringify(value)} → invalid_token`, async () => {
        expectRefused(await authnToken(craft(edHeader({ [name]: value }), claims())));
      });
    }
  }
  for (const [label, text] of [
    ['array', '[]'],
    ['null', 'null'],
    ['string', '"at+jwt"'],
    ['number', '1'],
    ['not JSON', '{alg:EdDSA}'],
    ['invalid UTF-8', '\u00ff'],
  ] as const) {
    it(`header ${label} → invalid_token`, async () => {
      const headerPart = label === 'invalid UTF-8' ? Buffer.from([0xff, 0xfe]).toString('base64url') : b64u(text);
      const good = await token();
      const [, p, s] = good.split('.') as [string, string, string];
      expectRefused(await authnToken(`${headerPart}.${p}.${s}`));
    });
  }
  for (const [label, text] of [
    ['array', '[]'],
    ['null', 'null'],
    ['not JSON', '{"iss":'],
  ] as const) {
    it(`payload ${label} (validly signed) → invalid_token`, async () => {
      expectRefused(await authnToken(craft(edHeader(), text)));
    });
  }
});

describe('JWT-22 crit', () => {
  for (const crit of [['x-unknown'], [], ['exp'], ['b64'], 'x-unknown', null]) {
    it(`crit ${JSON.stringify(crit)} → invalid_token`, async () => {
      expectRefused(await authnToken(craft(edHeader({ crit, 'x-unknown': 1 }), claims())));
    });
  }
  it('crit in an unprotected header is not expressible in the compact form: the JSON serialization is refused', async () => {
    const good = await token();
    const [h, p, s] = good.split('.') as [string, string, string];
    expectRefused(await authnToken(JSON.stringify({ protected: h, header: { crit: ['exp'] }, payload: p, signature: s })));
  });
});

describe('JWT-24 prototype pollution', () => {
  it('a validly signed __proto__ claim → invalid_token, and nothing is polluted', async () => {
    const payload = JSON.stringify(claims({ scope: undefined })).replace(/^\{/, '{"__proto__":{"admin":true,"scope":"admin"},');
    expectRefused(await authnToken(craft(edHeader(), payload)));
    expect(({} as Record<string, unknown>)['admin']).toBeUndefined();
    expect(({} as Record<string, unknown>)['scope']).toBeUndefined();
  });
  it('a __proto__ header parameter → invalid_token', async () => {
    const header = JSON.stringify(edHeader()).replace(/^\{/, '{"__proto__":{"alg":"none"},');
    expectRefused(await authnToken(craft(header, claims())));
  });
  it('constructor / prototype claims grant nothing: the principal is built from checked claims only', async () => {
    const principal = expectPrincipal(
      await authnToken(await token(ed, { scope: 'echo:read', constructor: { admin: true }, prototype: { scope: 'admin' }, admin: true })),
    );
    expect([...principal.scopes]).toEqual(['echo:read']);
    expect(Object.keys(principal).sort()).toEqual(['audiences', 'clientId', 'expiresAt', 'method', 'scopes', 'subject', 'tokenId']);
    expect(Object.isFrozen(principal)).toBe(true);
  });
});

describe('JWT-25 altered claims with the original signature', () => {
  it('→ invalid_token and the injected value is never reflected', async () => {
    const good = await token(ed, { scope: 'echo:read' });
    const [h, , s] = good.split('.') as [string, string, string];
    const marker = 'INJECTED-admin-scope';
    for (const altered of [claims({ scope: `echo:read ${marker}` }), claims({ sub: marker }), claims({ exp: nowS() + 10 ** 6, jti: marker })]) {
      const result = await authnToken(`${h}.${b64u(JSON.stringify(altered))}.${s}`);
      expectRefused(result);
      expect(JSON.stringify(result)).not.toContain(marker);
      if (result.outcome === 'rejected') {
        expect(result.error.reason).not.toContain(marker);
        expect(result.error.message).not.toContain(marker);
      }
    }
  });
});

describe('JWT-26 where the token may be', () => {
  it('access_token in the query → invalid_request, with or without an Authorization header, however encoded', async () => {
    const jwt = await token();
    for (const query of [
      `access_token=${jwt}`,
      `a=1&access_token=${jwt}`,
      `%61ccess_token=${jwt}`,
      `access%5Ftoken=${jwt}`,
      `ACCESS_TOKEN=${jwt}`,
      'access_token',
      'access_token=',
    ]) {
      expectRefused(await authn(undefined, query), 'invalid_request');
      expectRefused(await authn(`Bearer ${jwt}`, query), 'invalid_request');
      expectRefused(await authn('Basic dTpw', query), 'invalid_request');
    }
    expect(hasQueryAccessToken('token=1&accessXtoken=2&x=access_tokens')).toBe(false);
    expect(bearer.stats.verifications).toBe(0);
  });

  it('scheme is case-insensitive: bearer, BEARER, bEaReR accepted', async () => {
    const jwt = await token();
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) expectPrincipal(await authn(`${scheme} ${jwt}`));
  });

  it('no Authorization header, or another scheme → not-applicable (no error code: the route answers a plain 401)', async () => {
    const jwt = await token();
    expect(await authn(undefined)).toEqual({ outcome: 'not-applicable' });
    expect(await authn(undefined, 'a=1&b=2')).toEqual({ outcome: 'not-applicable' });
    for (const header of ['Basic dXNlcjpwYXNz', `DPoP ${jwt}`, `Bearerx ${jwt}`, `Token ${jwt}`, '']) {
      expect(await authn(header)).toEqual({ outcome: 'not-applicable' });
    }
  });

  it('a Bearer header without exactly one space then a token → refused', async () => {
    const jwt = await token();
    expectRefused(await authn('Bearer'), 'invalid_request');
    expectRefused(await authn('Bearer '), 'invalid_request');
    expectRefused(await authn(`Bearer\t${jwt}`), 'invalid_request');
    expectRefused(await authn(`Bearer,${jwt}`), 'invalid_request');
    expectRefused(await authn(`Bearer  ${jwt}`));
    expectRefused(await authn(`Bearer ${jwt}, Bearer ${jwt}`));
  });
});

describe('JWT-27 oversized tokens', () => {
  it('a 20 KB token → invalid_token before any decoding, lookup or crypto', async () => {
    const jwt = craft(edHeader({ pad: 'x'.repeat(20_000) }), claims());
    expect(jwt.length).toBeGreaterThan(20_000);
    const result = await authnToken(jwt);
    expectRefused(result);
    if (result.outcome === 'rejected') expect(result.error.reason).toBe('token too large');
    expect(keys.lookups).toEqual([]);
    expect(bearer.stats.verifications).toBe(0);
  });
  it('the limit is exact: maxTokenBytes accepted, one more refused', async () => {
    const jwt = await token();
    expectPrincipal(await authnToken(jwt, new BearerAuthenticator(keys, revocations, options({ maxTokenBytes: jwt.length }))));
    expectRefused(await authnToken(jwt, new BearerAuthenticator(keys, revocations, options({ maxTokenBytes: jwt.length - 1 }))));
  });
});

describe('verified-token cache', () => {
  it('a second request with the same token is answered from the cache, synchronously, without jwtVerify', async () => {
    const jwt = await token();
    expectPrincipal(await authnToken(jwt));
    expect(bearer.stats).toEqual({ verifications: 1, cacheHits: 0, cacheSize: 1 });
    const second = bearer.authenticate(request(`Bearer ${jwt}`));
    expect(second).not.toBeInstanceOf(Promise);
    expectPrincipal(await second);
    expect(bearer.stats).toEqual({ verifications: 1, cacheHits: 1, cacheSize: 1 });
  });

  it('concurrent first requests with one token share one verification', async () => {
    const jwt = await token();
    const results = await Promise.all(Array.from({ length: 10 }, () => authnToken(jwt)));
    for (const result of results) expectPrincipal(result);
    expect(bearer.stats.verifications).toBe(1);
  });

  it('the key is the exact token bytes: another scheme spelling hits, any other text is verified on its own', async () => {
    const jwt = await token();
    expectPrincipal(await authn(`Bearer ${jwt}`));
    expectPrincipal(await authn(`bearer ${jwt}`));
    expect(bearer.stats.verifications).toBe(1);
    expectRefused(await authnToken(`${jwt}A`));
  });

  it('failures are not cached', async () => {
    const good = await token();
    const [h, p] = good.split('.') as [string, string, string];
    const bad = `${h}.${p}.${Buffer.alloc(64, 1).toString('base64url')}`;
    expectRefused(await authnToken(bad));
    expectRefused(await authnToken(bad));
    expect(bearer.stats).toEqual({ verifications: 2, cacheHits: 0, cacheSize: 0 });
  });

  it('a revoked jti is refused immediately even when cached (iss, jti)', async () => {
    const jti = randomUUID();
    const jwt = await token(ed, { jti });
    expectPrincipal(await authnToken(jwt));
    revocations.revoked.add(`${ISSUER}\n${jti}`);
    const result = await authnToken(jwt);
    expectRefused(result);
    if (result.outcome === 'rejected') expect(result.error.reason).toBe('token revoked');
    expect(bearer.stats.verifications).toBe(1);
    // Revoked by another issuer's (iss, jti) pair means nothing here.
    const other = await token(ed);
    revocations.revoked.add(`https://other.test\n${jti}`);
    expectPrincipal(await authnToken(other));
  });

  it('a token whose kid is no longer published is refused even when cached; a different key under the same kid re-verifies', async () => {
    const jwt = await token();
    expectPrincipal(await authnToken(jwt));
    keys.map.delete(ed.kid);
    expectRefused(await authnToken(jwt));
    expect(bearer.stats.verifications).toBe(1);
    // Same kid now names the attacker's key: the cached verification says nothing about it, and jose refuses the token.
    keys.map.set(ed.kid, attacker.published);
    expectRefused(await authnToken(jwt));
    expect(bearer.stats.verifications).toBe(2);
    keys.map.set(ed.kid, ed.published);
    expectPrincipal(await authnToken(jwt));
  });

  it('a cached token expires on the clock, exactly where a fresh verification would refuse it', async () => {
    const jwt = await token(ed, { exp: nowS() + 60 });
    expectPrincipal(await authnToken(jwt));
    nowMs += (60 + TOLERANCE_S - 1) * 1000;
    expectPrincipal(await authnToken(jwt));
    nowMs += 1000;
    expectRefused(await authnToken(jwt));
    // The same instant, without the cache, gives the same answer.
    expectRefused(await authnToken(jwt, new BearerAuthenticator(keys, revocations, options())));
  });

  it('a cached token stops at maxTokenAge even if exp is later', async () => {
    const jwt = await token(ed, { exp: nowS() + 2 * MAX_AGE_S });
    expectPrincipal(await authnToken(jwt));
    nowMs += (MAX_AGE_S + TOLERANCE_S + 1) * 1000;
    expectRefused(await authnToken(jwt));
  });

  it('is bounded by cacheEntries', async () => {
    const small = new BearerAuthenticator(keys, revocations, options({ cacheEntries: 2 }));
    for (let i = 0; i < 5; i++) expectPrincipal(await authnToken(await token(), small));
    expect(small.stats.cacheSize).toBe(2);
  });

  it('principals from the cache are the same frozen object', async () => {
    const jwt = await token();
    const first = expectPrincipal(await authnToken(jwt));
    const second = expectPrincipal(await authnToken(jwt));
    expect(second).toBe(first);
    expect(Object.isFrozen(first.audiences)).toBe(true);
    // Shared by every request with this token: the scopes cannot be changed at run time either.
    expect(() => (first.scopes as Set<string>).add('admin')).toThrow(TypeError);
    expect(() => (first.scopes as Set<string>).delete('echo:read')).toThrow(TypeError);
    expect(() => (first.scopes as Set<string>).clear()).toThrow(TypeError);
    expect([...expectPrincipal(await authnToken(jwt)).scopes]).toEqual(['echo:read', 'echo:write']);
  });
});

describe('OA-18 certificate-bound tokens (cnf)', () => {
  const certificate = (raw: Buffer): PeerCertificate => ({
    raw,
    authorized: true,
    authorizationError: undefined,
    subjectAltName: undefined,
    extKeyUsage: undefined,
    validTo: 'Jan  1 00:00:00 2099 GMT',
  });
  const der = Buffer.from('client certificate DER stand-in');
  const thumbprint = createHash('sha256').update(der).digest('base64url');

  it('cnf.x5t#S256 is honoured on every request: matching certificate accepted, another or none refused', async () => {
    const jwt = await token(ed, { cnf: { 'x5t#S256': thumbprint } });
    const principal = expectPrincipal(await authn(`Bearer ${jwt}`, '', bearer, certificate(der)));
    expect(principal.certificateThumbprint).toBe(thumbprint);
    expectRefused(await authn(`Bearer ${jwt}`, '', bearer, certificate(Buffer.from('another certificate'))));
    expectRefused(await authn(`Bearer ${jwt}`, '', bearer, undefined));
  });

  it('cnf.jkt (DPoP-bound) sent as Bearer, unknown or malformed cnf → invalid_token', async () => {
    for (const cnf of [{ jkt: thumbprint }, { 'x5t#S256': thumbprint, jkt: thumbprint }, { 'x5t#S256': 'short' }, {}, 'x', null]) {
      expectRefused(await authn(`Bearer ${await token(ed, { cnf })}`, '', bearer, certificate(der)));
    }
  });
});
