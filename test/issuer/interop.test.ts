// Interoperability: oauth4webapi, an unmodified standards client, against the gateway's authorization server — discovery
// (RFC 8414), client_credentials with client_secret_basic and client_secret_post (RFC 6749), introspection (RFC 7662) and
// revocation (RFC 7009), and DPoP (RFC 9449): a DPoP-bound token and a resource call with its proofs. Only its customFetch hook is used, to reach the test listener through an agent trusting the test CA.
import * as oauth from 'oauth4webapi';
import { calculateJwkThumbprint, decodeJwt, exportJWK } from 'jose';
import { fetch as undiciFetch, type Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestGateway } from '../support/harness.js';
import { addClient, callWith, startIssuerGateway, withIssuer, type TestClient } from '../support/issuer.js';
import { route } from '../support/routes.js';

describe('oauth4webapi interop', () => {
  let gw: TestGateway;
  let agent: Agent;
  let issuer: URL;
  let as: oauth.AuthorizationServer;
  let options: { [oauth.customFetch]: (url: string, init: oauth.CustomFetchOptions<string, unknown>) => Promise<Response> };

  beforeAll(async () => {
    gw = await startIssuerGateway((base) =>
      withIssuer(base, { client_auth: { per_ip: { points: 1000, duration_s: 60 } }, dpop: { require_nonce: true } }, [
        route('dpop', '/dpop', { authn: ['dpop'], authz: { allow: 'authenticated', scopes: { all_of: ['echo:read'] } } }),
      ]),
    );
    agent = gw.agent();
    // The default issuer is https://localhost:<port>; the test server certificate covers localhost.
    issuer = new URL(`https://localhost:${gw.port}`);
    options = {
      [oauth.customFetch]: async (url, init) =>
        // undici's Response is the same class Node's global fetch returns; the cast only bridges the two type declarations.
        (await undiciFetch(url, { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher: agent })) as unknown as Response,
    };
    as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...options }));
  });
  afterAll(() => gw.stop());

  const asClient = (c: TestClient): oauth.Client => ({ client_id: c.id });

  it('discovery: metadata is accepted as-is and names the https endpoints', () => {
    expect(as.issuer).toBe(`https://localhost:${gw.port}`);
    expect(as.token_endpoint).toBe(`https://localhost:${gw.port}/oauth2/token`);
    expect(as.introspection_endpoint).toBe(`https://localhost:${gw.port}/oauth2/introspect`);
    expect(as.revocation_endpoint).toBe(`https://localhost:${gw.port}/oauth2/revoke`);
    expect(as.jwks_uri).toBe(`https://localhost:${gw.port}/.well-known/jwks.json`);
  });

  it('discovery: a mismatching expected issuer is rejected by the client (the check is real)', async () => {
    const other = new URL(`https://127.0.0.1:${gw.port}`);
    const res = await oauth.discoveryRequest(other, { algorithm: 'oauth2', ...options });
    await expect(oauth.processDiscoveryResponse(other, res)).rejects.toThrow(/issuer/);
  });

  for (const [name, auth] of [
    ['client_secret_basic', oauth.ClientSecretBasic],
    ['client_secret_post', oauth.ClientSecretPost],
  ] as const) {
    it(`${name}: token, introspection, revocation, then the token is refused on /api`, async () => {
      const c = await addClient(gw, { scopes: ['echo:read', 'a:1'] });
      const clientAuth = auth(c.secret);
      const tokenRes = await oauth.processClientCredentialsResponse(
        as,
        asClient(c),
        await oauth.clientCredentialsGrantRequest(as, asClient(c), clientAuth, new URLSearchParams({ scope: 'echo:read' }), options),
      );
      expect(tokenRes.token_type).toBe('bearer'); // oauth4webapi lower-cases token_type
      expect(tokenRes.expires_in).toBe(600);
      expect(tokenRes.refresh_token).toBeUndefined();
      expect(tokenRes.scope).toBe('echo:read');
      const token = tokenRes.access_token;
      expect(decodeJwt(token).iss).toBe(as.issuer);
      expect((await callWith(gw, '/api', `Bearer ${token}`)).status).toBe(200);

      const active = await oauth.processIntrospectionResponse(as, asClient(c), await oauth.introspectionRequest(as, asClient(c), clientAuth, token, options));
      expect(active.active).toBe(true);
      expect(active.client_id).toBe(c.id);
      expect(active.scope).toBe('echo:read');
      expect(active.iss).toBe(as.issuer);

      await expect(oauth.processRevocationResponse(await oauth.revocationRequest(as, asClient(c), clientAuth, token, options))).resolves.toBeUndefined();

      const after = await callWith(gw, '/api', `Bearer ${token}`);
      expect(after.status).toBe(401);
      const inactive = await oauth.processIntrospectionResponse(as, asClient(c), await oauth.introspectionRequest(as, asClient(c), clientAuth, token, options));
      expect(inactive).toEqual({ active: false });
    });
  }

  it('a secret with reserved characters survives ClientSecretBasic percent-encoding and ClientSecretPost form encoding', async () => {
    const c = await addClient(gw, { secret: 'p:a+s/s%w&o=r d?é~' });
    for (const auth of [oauth.ClientSecretBasic, oauth.ClientSecretPost]) {
      const res = await oauth.processClientCredentialsResponse(
        as,
        asClient(c),
        await oauth.clientCredentialsGrantRequest(as, asClient(c), auth(c.secret), {}, options),
      );
      expect(decodeJwt(res.access_token).client_id).toBe(c.id);
    }
  });

  it('a wrong secret surfaces in the client as a Basic challenge, whichever method the client used', async () => {
    const c = await addClient(gw);
    const outcome = async (auth: oauth.ClientAuth): Promise<unknown> =>
      oauth.processClientCredentialsResponse(as, asClient(c), await oauth.clientCredentialsGrantRequest(as, asClient(c), auth, {}, options)).then(
        () => undefined,
        (error: unknown) => error,
      );
    // RFC 6749 §5.2 / RFC 9110 §11.6.1: a 401 with WWW-Authenticate, which oauth4webapi reports as a challenge.
    for (const auth of [oauth.ClientSecretBasic(`${c.secret}x`), oauth.ClientSecretPost(`${c.secret}x`)]) {
      const failure = await outcome(auth);
      expect(failure).toBeInstanceOf(oauth.WWWAuthenticateChallengeError);
      const challenge = failure as oauth.WWWAuthenticateChallengeError;
      expect(challenge.status).toBe(401);
      expect(challenge.cause.map((ch) => ch.scheme)).toEqual(['basic']);
      expect(await challenge.response.json()).toMatchObject({ error: 'invalid_client' });
    }
  });

  /** Runs `attempt` again once when the server asked for a DPoP nonce: the client learned it from the answer (RFC 9449 §8). */
  async function retryingNonce<T>(attempt: () => Promise<T>): Promise<T> {
    try {
      return await attempt();
    } catch (error) {
      if (!oauth.isDPoPNonceError(error)) throw error;
      return attempt();
    }
  }

  it('DPoP with server nonces: the client gets a DPoP-bound token and calls a dpop route, retrying once with the nonce it is given', async () => {
    const c = await addClient(gw, { scopes: ['echo:read'] });
    const keyPair = await oauth.generateKeyPair('ES256');
    const dpop = oauth.DPoP(asClient(c), keyPair);
    let attempts = 0;
    const tokenRes = await retryingNonce(async () => {
      attempts++;
      const grant = await oauth.clientCredentialsGrantRequest(as, asClient(c), oauth.ClientSecretBasic(c.secret), {}, { ...options, DPoP: dpop });
      return oauth.processClientCredentialsResponse(as, asClient(c), grant);
    });
    // The first proof had no nonce (use_dpop_nonce), the second the one the gateway sent.
    expect(attempts).toBe(2);
    expect(tokenRes.token_type).toBe('dpop');
    const jkt = await calculateJwkThumbprint(await exportJWK(keyPair.publicKey));
    expect(decodeJwt(tokenRes.access_token)['cnf']).toEqual({ jkt });

    const resource = new URL(`https://localhost:${gw.port}/dpop/items`);
    const call = await retryingNonce(() =>
      oauth.protectedResourceRequest(tokenRes.access_token, 'GET', resource, new Headers(), null, { ...options, DPoP: dpop }),
    );
    expect(call.status).toBe(200);
    expect(await call.json()).toMatchObject({ principal: { subject: c.id, method: 'dpop' } });
    // A second call makes a fresh proof: each is good once, and the client never reuses one.
    expect((await oauth.protectedResourceRequest(tokenRes.access_token, 'GET', resource, new Headers(), null, { ...options, DPoP: dpop })).status).toBe(200);

    expect((await callWith(gw, '/api', `Bearer ${tokenRes.access_token}`)).status).toBe(401);
  });
});
