// Issue #23 item 1 (SQLite): a gateway on the embedded store notices what another process commits (the CLI, another
// gateway on the host) within a second, by PRAGMA data_version, with the periodic refresh set to a minute: a disabled
// client's token, a revoked token and a newly added client's token are honoured at once, without a restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestGateway } from '../support/harness.js';
import { eventually } from '../support/eventually.js';
import { addClient, callWith, forgeToken, getToken, startIssuerGateway, updateClient, validClaims, withIssuer, withStore } from '../support/issuer.js';
import { generateClientId } from '../../src/issuer/secrets.js';
import { SQLITE_WATCH_INTERVAL_MS } from '../../src/store/sqlite.js';

describe('a gateway on SQLite watches the store', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) => withIssuer(base, { refresh_interval_ms: 60_000 }));
  });
  afterAll(() => gw.stop());

  it('a client disabled by another process: its token is refused within a second (the refresh interval is a minute)', async () => {
    expect(SQLITE_WATCH_INTERVAL_MS).toBeLessThanOrEqual(250);
    const client = await addClient(gw);
    const token = await getToken(gw, client);
    expect((await callWith(gw, '/api/x', `Bearer ${token}`)).status).toBe(200);
    await updateClient(gw, client.id, (c) => ({ ...c, enabled: false, tokensNotBeforeS: Math.floor(Date.now() / 1000) + 1 }));
    const took = await eventually(async () => (await callWith(gw, '/api/x', `Bearer ${token}`)).status === 401, 1000, 'the token refused');
    expect(took).toBeLessThan(1000);
  });

  it('a token revoked by another process is refused within a second', async () => {
    const client = await addClient(gw);
    const token = await getToken(gw, client);
    const { jti, iss } = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { jti: string; iss: string };
    expect((await callWith(gw, '/api/x', `Bearer ${token}`)).status).toBe(200);
    await withStore(gw, (store) => store.revoke({ iss, jti, expiresAt: Date.now() + 600_000 }));
    await eventually(async () => (await callWith(gw, '/api/x', `Bearer ${token}`)).status === 401, 1000, 'the revoked token refused');
  });

  it('issue #23 item 2: a token of a client added a moment ago elsewhere is resolved by one lookup, not refused', async () => {
    const id = generateClientId();
    // Signed by this issuer's key (as another instance sharing the store would), for a client this gateway has not read yet.
    const token = await forgeToken(gw, validClaims(gw, id));
    await addClient(gw, { id });
    // At once: before the quarter-second watch can have told the gateway.
    expect((await callWith(gw, '/api/x', `Bearer ${token}`)).status).toBe(200);
    // A client the store does not have stays refused.
    const stranger = await forgeToken(gw, validClaims(gw, generateClientId()));
    expect((await callWith(gw, '/api/x', `Bearer ${stranger}`)).status).toBe(401);
  });
});
