// LOG-02: after a run with known secrets and tokens — issued, used, refused, introspected, revoked, put in a query
// string — no file the gateway wrote under its data directory's audit folder, and no log line, contains any of them
// (nor a token's signature alone).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestGateway } from '../support/harness.js';
import { addClient, basicAuth, callWith, getToken, postForm, startIssuerGateway, withIssuer } from '../support/issuer.js';

describe('LOG-02 no secret or token in any audit or log file', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway((base) => withIssuer(base));
  });
  afterAll(() => gw.stop());

  it('issues, uses, refuses, introspects and revokes, then finds none of the values written anywhere', async () => {
    const a = await addClient(gw, { scopes: ['echo:read', 'gatehouse:introspect'] });
    const b = await addClient(gw);
    const tokenA = await getToken(gw, a);
    const tokenB = await getToken(gw, b);
    expect((await callWith(gw, '/api/x', `Bearer ${tokenA}`)).status).toBe(200);
    // Refused in every way a credential can be: a wrong secret, a tampered token, a token in the query string.
    await postForm(gw, '/oauth2/token', 'grant_type=client_credentials', { authorization: basicAuth(a.id, `${a.secret}x`) });
    await postForm(gw, '/oauth2/token', `grant_type=client_credentials&client_id=${b.id}&client_secret=${b.secret}`);
    expect((await callWith(gw, '/api/x', `Bearer ${tokenB.slice(0, -4)}AAAA`)).status).toBe(401);
    expect((await callWith(gw, `/api/x?access_token=${tokenB}`, undefined)).status).toBe(400);
    expect((await postForm(gw, '/oauth2/introspect', `token=${tokenB}`, { authorization: basicAuth(a.id, a.secret) })).status).toBe(200);
    expect((await postForm(gw, '/oauth2/revoke', `token=${tokenB}`, { authorization: basicAuth(b.id, b.secret) })).status).toBe(200);
    expect((await callWith(gw, '/api/x', `Bearer ${tokenB}`)).status).toBe(401);
    await gw.gateway.audit.flush();

    const auditDir = join(gw.dataDir, 'audit');
    const files = readdirSync(auditDir).filter((name) => name.endsWith('.jsonl'));
    expect(files.length).toBeGreaterThan(0);
    const written = [...files.map((name) => readFileSync(join(auditDir, name), 'utf8')), ...gw.logs].join('\n');
    // The run was recorded (so the search below searched something).
    expect(written).toContain(a.id);
    for (const [name, value] of [
      ['secret A', a.secret],
      ['secret B', b.secret],
      ['token A', tokenA],
      ['token B', tokenB],
      ['signature A', tokenA.split('.')[2] ?? ''],
      ['signature B', tokenB.split('.')[2] ?? ''],
      ['basic credentials', basicAuth(a.id, a.secret).slice('Basic '.length)],
    ] as const) {
      expect(value.length, name).toBeGreaterThan(20);
      expect(written.includes(value), name).toBe(false);
    }
  });
});
