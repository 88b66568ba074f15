// Issue #23 item 1 (SQLite): a gateway on the embedded store notices what another process commits (the CLI, another
// gateway on the host) within a second, by PRAGMA data_version, with the periodic refresh set to a minute: a disabled
// client's token, a revoked token and a newly added client's token are honoured at once, without a restart.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { TestGateway } from '../support/harness.js';
import { eventually } from '../support/eventually.js';
import { addClient, callWith, forgeToken, getToken, startIssuerGateway, updateClient, validClaims, withIssuer, withStore } from '../support/issuer.js';
import { generateClientId } from '../../src/issuer/secrets.js';
import { SignJWT } from 'jose';
import { Issuer, KID_LOOKUP_INTERVAL_MS } from '../../src/issuer/issuer.js';
import { KeyRing } from '../../src/issuer/key-ring.js';
import { planImmediateRotation } from '../../src/issuer/key-schedule.js';
import { generateSigningKey } from '../../src/issuer/signing-key.js';
import type { SigningKey, SigningKeyChange, SigningKeyStore } from '../../src/store/contract.js';
import { loadKeyEncryptionKey } from '../../src/lib/key-encryption.js';
import { SQLITE_WATCH_INTERVAL_MS } from '../../src/store/sqlite.js';

/** A store holding one signing key: how the test signs with a key before the gateway's store has it. */
class OneKey implements SigningKeyStore {
  constructor(private readonly key: SigningKey) {}
  async listSigningKeys(): Promise<readonly SigningKey[]> {
    return [this.key];
  }
  addSigningKey(): Promise<void> {
    throw new Error('read only');
  }
  rotateSigningKey(): Promise<void> {
    throw new Error('read only');
  }
  changeSigningKeys(): Promise<SigningKeyChange> {
    throw new Error('read only');
  }
  purgeExpiredSigningKeys(): Promise<number> {
    throw new Error('read only');
  }
}

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

  it('issue #23 item 4: a token signed with a key made a moment ago elsewhere (keys rotate --now) is verified after one key read', async () => {
    const client = await addClient(gw);
    const kek = loadKeyEncryptionKey({ file: join(gw.dataDir, 'master.key') });
    // The key another instance made and signs with: the token exists before the key reaches this gateway's store.
    const next = await generateSigningKey('EdDSA', kek, Date.now(), Date.now());
    const signer = (await KeyRing.load(new OneKey(next), kek)).signingKey();
    const token = await new SignJWT(validClaims(gw, client.id)).setProtectedHeader({ alg: signer.alg, kid: signer.kid, typ: 'at+jwt' }).sign(signer.privateKey);
    await withStore(gw, (store) => store.changeSigningKeys((keys) => planImmediateRotation(keys, Date.now(), next, 600)));
    // At once: before the quarter-second watch can have told the gateway.
    expect((await callWith(gw, '/api/x', `Bearer ${token}`)).status).toBe(200);
  });

  it('forged kids cannot make the store work: thirty at once, each shaped like a real kid, cost at most two key reads', async () => {
    const client = await addClient(gw);
    const forged = await Promise.all(
      Array.from({ length: 30 }, () => forgeToken(gw, validClaims(gw, client.id), { kid: randomBytes(32).toString('base64url') })),
    );
    const notOurs = await forgeToken(gw, validClaims(gw, client.id), { kid: 'not-a-thumbprint' });
    // Counted from here: the re-reads unknown kids cause (each one read of the store's keys). The store's own reads are not
    // counted: the quarter-second watch re-reads after the client added above, whenever it notices it (CI once saw that
    // background read fall inside the window and count as a third).
    const reads = vi.spyOn(Issuer.prototype as unknown as { lookUpKeys(): Promise<void> }, 'lookUpKeys');
    try {
      const started = performance.now();
      const statuses = await Promise.all(forged.map((token) => callWith(gw, '/api/x', `Bearer ${token}`).then((res) => res.status)));
      const elapsed = performance.now() - started;
      expect(statuses).toEqual(forged.map(() => 401));
      // Thumbprint-shaped kids are looked up (the spy sees them), thirty of them in at most two reads — one now and one
      // for those that came while it ran — or, on a machine so loaded that the thirty straggle in over seconds, at most
      // one more per KID_LOOKUP_INTERVAL_MS: never one per forged token.
      expect(reads.mock.calls.length).toBeGreaterThanOrEqual(1);
      expect(reads.mock.calls.length).toBeLessThanOrEqual(Math.max(2, 1 + Math.ceil(elapsed / KID_LOOKUP_INTERVAL_MS)));
      // A kid that cannot be one of this issuer's (not a thumbprint) is not even looked up.
      reads.mockClear();
      expect((await callWith(gw, '/api/x', `Bearer ${notOurs}`)).status).toBe(401);
      expect(reads).not.toHaveBeenCalled();
    } finally {
      reads.mockRestore();
    }
  });
});
