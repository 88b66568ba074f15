import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestGateway } from '../support/harness.js';
import { addClient, callWith, getToken, startIssuerGateway } from '../support/issuer.js';

describe('issuer smoke', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startIssuerGateway();
  });
  afterAll(() => gw.stop());
  it('issues a token that opens the bearer route', async () => {
    const client = await addClient(gw);
    const token = await getToken(gw, client);
    const res = await callWith(gw, '/api', `Bearer ${token}`);
    expect(res.status).toBe(200);
  });
});
