// The bench's bearer traffic: one client written to the store before the gateway starts, and many distinct access tokens
// fetched from the real token endpoint (real traffic carries many tokens; each is verified once, then served from cache).
import { readFileSync } from 'node:fs';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JSONWebKeySet, type JWK } from 'jose';
import { Agent, request } from 'undici';
import { generateClientId, generateClientSecret, hashSecret } from '../src/issuer/secrets.js';
import { SqliteCredentialStore } from '../src/store/sqlite.js';

/** Writes one client to the store before the gateway starts, as `gatehouse clients add` would. */
export async function registerClient(file: string): Promise<{ id: string; secret: string }> {
  const store = SqliteCredentialStore.open(file);
  const id = generateClientId();
  const secret = generateClientSecret();
  const now = Date.now();
  try {
    await store.createClient({
      id,
      name: 'bench',
      secrets: [{ hash: await hashSecret(secret), createdAt: now, expiresAt: null }],
      scopes: ['bench:read'],
      audiences: [],
      enabled: true,
      tokensNotBeforeS: null,
      accessTokenTtlS: null,
      requireDpop: false,
      tlsClientAuthSubject: null,
      createdAt: now,
      updatedAt: now,
    });
  } finally {
    await store.close();
  }
  return { id, secret };
}

export async function fetchTokens(port: number, caFile: string, client: { id: string; secret: string }, count: number): Promise<string[]> {
  const agent = new Agent({ connect: { ca: readFileSync(caFile), servername: 'localhost' }, connections: 4 });
  const authorization = `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`;
  const one = async (): Promise<string> => {
    const res = await request(`https://127.0.0.1:${port}/oauth2/token`, {
      method: 'POST',
      dispatcher: agent,
      headers: { host: 'localhost', authorization, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials',
    });
    const body = (await res.body.json()) as { access_token?: unknown };
    if (res.statusCode !== 200 || typeof body.access_token !== 'string') throw new Error(`token request failed with ${res.statusCode}`);
    return body.access_token;
  };
  try {
    const tokens: string[] = [];
    while (tokens.length < count) tokens.push(...(await Promise.all(Array.from({ length: Math.min(8, count - tokens.length) }, one))));
    return tokens;
  } finally {
    await agent.close();
  }
}

/** A DPoP client's key pair (as JWKs, to hand to the load generator) and the token bound to it. */
export interface DpopHolder {
  readonly token: string;
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
}

/** A DPoP proof (RFC 9449) for `htm` `htu`, signed by the holder's ES256 key; `token` adds its `ath`. */
export async function dpopProof(key: { privateJwk: JWK; publicJwk: JWK }, htm: string, htu: string, token?: string): Promise<string> {
  const { importJWK } = await import('jose');
  const { createHash, randomBytes } = await import('node:crypto');
  return new SignJWT({
    htm,
    htu,
    iat: Math.floor(Date.now() / 1000),
    jti: randomBytes(12).toString('base64url'),
    ...(token !== undefined ? { ath: createHash('sha256').update(token).digest('base64url') } : {}),
  })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.publicJwk })
    .sign(await importJWK(key.privateJwk, 'ES256'));
}

/** `count` DPoP clients: each its own ES256 key pair and a token the token endpoint bound to it (`cnf.jkt`). */
export async function fetchDpopTokens(port: number, caFile: string, client: { id: string; secret: string }, count: number): Promise<DpopHolder[]> {
  const agent = new Agent({ connect: { ca: readFileSync(caFile), servername: 'localhost' }, connections: 4 });
  const authorization = `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`;
  try {
    const holders: DpopHolder[] = [];
    for (let i = 0; i < count; i++) {
      const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
      const key = { privateJwk: await exportJWK(privateKey), publicJwk: await exportJWK(publicKey) };
      const res = await request(`https://127.0.0.1:${port}/oauth2/token`, {
        method: 'POST',
        dispatcher: agent,
        headers: {
          host: 'localhost',
          authorization,
          'content-type': 'application/x-www-form-urlencoded',
          dpop: await dpopProof(key, 'POST', 'https://localhost/oauth2/token'),
        },
        body: 'grant_type=client_credentials',
      });
      const body = (await res.body.json()) as { access_token?: unknown; token_type?: unknown };
      if (res.statusCode !== 200 || typeof body.access_token !== 'string' || body.token_type !== 'DPoP')
        throw new Error(`DPoP token request failed with ${res.statusCode}`);
      const claims = JSON.parse(Buffer.from(body.access_token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { cnf?: { jkt?: string } };
      if (claims.cnf?.jkt !== (await calculateJwkThumbprint(key.publicJwk))) throw new Error('the DPoP token is not bound to the key');
      holders.push({ token: body.access_token, ...key });
    }
    return holders;
  } finally {
    await agent.close();
  }
}

/** The gateway's published signing keys (the peer stacks verify the same tokens with them). */
export async function fetchJwks(port: number, caFile: string): Promise<JSONWebKeySet> {
  const agent = new Agent({ connect: { ca: readFileSync(caFile), servername: 'localhost' } });
  try {
    const res = await request(`https://127.0.0.1:${port}/.well-known/jwks.json`, { dispatcher: agent, headers: { host: 'localhost' } });
    if (res.statusCode !== 200) throw new Error(`GET /.well-known/jwks.json answered ${res.statusCode}`);
    return (await res.body.json()) as JSONWebKeySet;
  } finally {
    await agent.close();
  }
}
