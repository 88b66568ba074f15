// Test helpers for the issuer: a gateway with the authorization server and bearer routes, clients written to its real
// store, tokens from its real token endpoint, and forged tokens signed with its real signing key (for claim-level cases).
import { route, type RouteInput } from './routes.js';
import { join } from 'node:path';
import { SignJWT, type JWTPayload, type JWTHeaderParameters } from 'jose';
import { request, type Agent } from 'undici';
import type { ConfigInput } from '../../src/config/schema.js';
import { KeyRing } from '../../src/issuer/key-ring.js';
import type { SigningKeyHandle } from '../../src/issuer/signing-key.js';
import { loadKeyEncryptionKey } from '../../src/lib/key-encryption.js';
import { generateClientId, generateClientSecret, hashSecret } from '../../src/issuer/secrets.js';
import type { Client } from '../../src/store/contract.js';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';
import { startGateway, type TestCertificates, type TestGateway } from './harness.js';

/**
 * The base config plus `issuer: {}` (overridable) and two bearer echo routes: `/api` (scope `echo:read`, all-of) and
 * `/any` (any of `a:1` `a:2`), both for the default audience.
 */
export function withIssuer(base: ConfigInput, issuer: NonNullable<ConfigInput['issuer']> = {}, routes: RouteInput[] = []): ConfigInput {
  return {
    ...base,
    issuer,
    routes: [
      ...base.routes,
      route('api', '/api', { methods: ['GET', 'POST'], authn: ['bearer'], authz: { allow: 'authenticated', scopes: { all_of: ['echo:read'] } } }),
      route('any', '/any', { authn: ['bearer'], authz: { allow: 'authenticated', scopes: { any_of: ['a:1', 'a:2'] } } }),
      ...routes,
    ],
  };
}

export function startIssuerGateway(
  configure: (base: ConfigInput, certs: TestCertificates) => ConfigInput = (base) => withIssuer(base),
  deps: { dataDir?: string } = {},
): Promise<TestGateway> {
  return startGateway(configure, deps);
}

export interface TestClient {
  readonly id: string;
  readonly secret: string;
}

/** Runs `use` on the gateway's own store (a second connection, as the CLI would open), closing it afterwards. */
export async function withStore<T>(gw: TestGateway, use: (store: SqliteCredentialStore) => Promise<T>): Promise<T> {
  const store = SqliteCredentialStore.open(join(gw.dataDir, 'gatehouse.db'));
  try {
    return await use(store);
  } finally {
    await store.close();
  }
}

/** Registers a client in the gateway's store (as `gatehouse clients add` would) and returns its id and clear secret. */
export async function addClient(
  gw: TestGateway,
  opts: {
    scopes?: string[];
    audiences?: string[];
    enabled?: boolean;
    hash?: string;
    secret?: string;
    id?: string;
    accessTokenTtlS?: number;
    requireDpop?: boolean;
    tlsClientAuthSubject?: string;
  } = {},
): Promise<TestClient> {
  const id = opts.id ?? generateClientId();
  const secret = opts.secret ?? generateClientSecret();
  const now = Date.now();
  const hash = opts.hash ?? (await hashSecret(secret));
  await withStore(gw, (store) =>
    store.createClient({
      id,
      name: `test ${id}`,
      secrets: [{ hash, createdAt: now, expiresAt: null }],
      scopes: opts.scopes ?? ['echo:read'],
      audiences: opts.audiences ?? [],
      enabled: opts.enabled ?? true,
      tokensNotBeforeS: null,
      accessTokenTtlS: opts.accessTokenTtlS ?? null,
      requireDpop: opts.requireDpop ?? false,
      tlsClientAuthSubject: opts.tlsClientAuthSubject ?? null,
      createdAt: now,
      updatedAt: now,
    }),
  );
  return { id, secret };
}

/** Changes a client in the store (disable, new scopes, ...), as the CLI would. */
export function updateClient(gw: TestGateway, id: string, change: (client: Client) => Client): Promise<Client> {
  return withStore(gw, (store) => store.updateClient(id, change));
}

export function readClient(gw: TestGateway, id: string): Promise<Client | undefined> {
  return withStore(gw, (store) => store.getClient(id));
}

export function basicAuth(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

export interface OAuthResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  readonly json: Record<string, unknown> | undefined;
}

/** Sends one request and reads the whole answer; `json` is the parsed body when it is JSON. */
export async function send(
  gw: TestGateway,
  opts: { method?: 'GET' | 'POST' | 'PUT'; path: string; body?: string; headers?: Record<string, string>; dispatcher?: Agent },
): Promise<OAuthResponse> {
  const res = await request(`${gw.origin}${opts.path}`, {
    method: opts.method ?? 'GET',
    dispatcher: opts.dispatcher ?? gw.agent(),
    headers: opts.headers ?? {},
    ...(opts.body !== undefined ? { body: opts.body } : {}),
  });
  const text = await res.body.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

/** POSTs a form to an issuer endpoint (`body` is sent as given; `headers` are added). */
export function postForm(gw: TestGateway, path: string, body: string, headers: Record<string, string> = {}): Promise<OAuthResponse> {
  return send(gw, { method: 'POST', path, body, headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers } });
}

/** A token from the real token endpoint (client_secret_basic); throws unless 200. */
export async function getToken(gw: TestGateway, client: TestClient, extra = ''): Promise<string> {
  const res = await postForm(gw, '/oauth2/token', `grant_type=client_credentials${extra}`, { authorization: basicAuth(client.id, client.secret) });
  if (res.status !== 200 || typeof res.json?.['access_token'] !== 'string') throw new Error(`token request failed: ${res.status} ${res.text}`);
  return res.json['access_token'];
}

/** GET with a bearer token (or any Authorization value) on the given path. */
export function callWith(gw: TestGateway, path: string, authorization: string | undefined): Promise<OAuthResponse> {
  return send(gw, { path, headers: authorization === undefined ? {} : { authorization } });
}

/** The gateway's current signing key, loaded from its own store and master key file. */
export function currentSigningKey(gw: TestGateway): Promise<SigningKeyHandle> {
  return withStore(gw, async (store) => (await KeyRing.load(store, loadKeyEncryptionKey({ file: join(gw.dataDir, 'master.key') }))).signingKey());
}

/** The claims the gateway issues, for `issuer`, `client` and the default audience (= issuer). */
export function validClaims(gw: TestGateway, clientId: string, scope = 'echo:read'): JWTPayload {
  const issuer = gw.gateway.issuer?.identifier ?? '';
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: issuer,
    sub: clientId,
    client_id: clientId,
    aud: issuer,
    scope,
    iat: now,
    exp: now + 600,
    jti: `forged-${Math.random().toString(36).slice(2)}`,
  };
}

/** Signs arbitrary claims with the gateway's real key (header defaults: its alg and kid, typ at+jwt). */
export async function forgeToken(gw: TestGateway, claims: JWTPayload, header: Partial<JWTHeaderParameters> = {}): Promise<string> {
  const key = await currentSigningKey(gw);
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt', ...header }).sign(key.privateKey);
}
