// AZ-12: scopes are space-delimited exact tokens. Near misses never grant a required scope.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestGateway } from '../support/harness.js';
import { addClient, callWith, forgeToken, startIssuerGateway, validClaims, type TestClient } from '../support/issuer.js';

describe('AZ-12 scope matching', () => {
  let gw: TestGateway;
  let client: TestClient;
  beforeAll(async () => {
    gw = await startIssuerGateway();
    client = await addClient(gw);
    // The gateway learns of clients from its store (or when one authenticates): make it read the new one now.
    await gw.gateway.issuer!.refresh();
  });
  afterAll(() => gw.stop());

  // Tokens signed with the gateway's own key: only the scope claim differs from a good token.
  const call = async (scope: string): Promise<{ status: number; challenge: unknown }> => {
    const res = await callWith(gw, '/api/x', `Bearer ${await forgeToken(gw, validClaims(gw, client.id, scope))}`);
    return { status: res.status, challenge: res.headers['www-authenticate'] };
  };

  it('grants exactly the listed tokens: /api needs echo:read', async () => {
    expect((await call('echo:read')).status).toBe(200);
    expect((await call('a:1 echo:read')).status).toBe(200);
    expect((await call('echo:read  a:1')).status).toBe(200);
  });

  it('near misses are 403 insufficient_scope naming the required scope', async () => {
    for (const scope of ['echo:readwrite', 'echo:read,echo:write', 'ECHO:READ', 'echo:rea', 'echo', 'echo:read:x', 'a:1']) {
      const res = await call(scope);
      expect(res.status, scope).toBe(403);
      expect(res.challenge, scope).toBe('Bearer error="insufficient_scope", scope="echo:read"');
    }
  });

  it('a scope claim with a control character is no scope list at all: 401 invalid_token', async () => {
    for (const scope of ['echo:read\u0000write', 'echo:read\twrite', 'echo:read\nx']) {
      const res = await call(scope);
      expect(res.status, JSON.stringify(scope)).toBe(401);
      expect(res.challenge).toBe('Bearer error="invalid_token"');
    }
  });
});
