// The bearer path's in-memory view of client states against a real SQLite store: a token cut-off from a disable holds,
// and an authentication that read the client before a disable (and waited for argon2) cannot bring it back.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { disableClient, enableClient } from '../../src/issuer/clients.js';
import { RevocationSet } from '../../src/issuer/revocations.js';
import type { Client } from '../../src/store/contract.js';
import { SqliteCredentialStore } from '../../src/store/sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'gatehouse-revocations-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const T0 = 1_800_000_000_000;
const client = (id: string): Client => ({
  id,
  name: id,
  secrets: [],
  scopes: [],
  audiences: [],
  enabled: true,
  tokensNotBeforeS: null,
  accessTokenTtlS: null,
  createdAt: T0,
  updatedAt: T0,
});

describe('client states in the revocation set', () => {
  it('a read from before the last refresh cannot revive a client disabled since', async () => {
    const store = SqliteCredentialStore.open(join(dir, 'stale.db'));
    try {
      let clock = T0;
      const set = new RevocationSet(store, () => clock);
      await store.createClient(client('c'));
      await set.refresh();
      const iat = Math.floor(T0 / 1000);
      expect(set.acceptsClientToken('c', iat)).toBe(true);

      // An authentication reads the client (enabled), then waits for argon2 while the client is disabled and refreshed.
      clock += 10;
      const readAt = clock;
      const stale = await store.getClient('c');
      clock += 10;
      await disableClient(store, 'c', clock);
      clock += 10;
      await set.refresh();
      expect(set.acceptsClientToken('c', iat)).toBe(false);
      set.clientSeen(stale!, readAt);
      expect(set.acceptsClientToken('c', iat)).toBe(false);
      // A read that began after the snapshot's does count (the client may be newer than the last refresh).
      clock += 10;
      set.clientSeen({ ...stale!, id: 'fresh' }, clock);
      expect(set.acceptsClientToken('fresh', iat)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('after disable and enable, only tokens issued from the enable on are accepted', async () => {
    const store = SqliteCredentialStore.open(join(dir, 'cutoff.db'));
    try {
      const set = new RevocationSet(store);
      await store.createClient(client('d'));
      const before = Math.floor(Date.now() / 1000);
      await disableClient(store, 'd', Date.now());
      const { client: enabled } = await enableClient(store, 'd');
      await set.refresh();
      const cutOff = enabled.tokensNotBeforeS ?? 0;
      expect(cutOff).toBeGreaterThan(before);
      expect(Date.now()).toBeGreaterThanOrEqual(cutOff * 1000);
      expect(set.acceptsClientToken('d', before)).toBe(false);
      expect(set.acceptsClientToken('d', cutOff - 1)).toBe(false);
      expect(set.acceptsClientToken('d', cutOff)).toBe(true);
      expect(set.acceptsClientToken('nobody', cutOff)).toBe(false);
    } finally {
      await store.close();
    }
  });
});
