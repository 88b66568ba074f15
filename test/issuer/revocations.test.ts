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
  requireDpop: false,
  tlsClientAuthSubject: null,
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
      // A client this instance never saw is not refused outright: one lookup decides (see below).
      expect(set.acceptsClientToken('nobody', cutOff)).toBe('unknown');
    } finally {
      await store.close();
    }
  });
});

describe('a client this instance has not seen yet (issue #23 item 2)', () => {
  /** The SQLite store, counting client lookups. */
  function counting(file: string): { store: SqliteCredentialStore; lookups: () => number } {
    const store = SqliteCredentialStore.open(join(dir, file));
    let lookups = 0;
    const getClient = store.getClient.bind(store);
    store.getClient = (id: string) => {
      lookups++;
      return getClient(id);
    };
    return { store, lookups: () => lookups };
  }

  it('is unknown, not refused; one lookup for any number of concurrent requests makes it known', async () => {
    const { store, lookups } = counting('unseen.db');
    try {
      let clock = T0;
      const set = new RevocationSet(store, () => clock);
      await set.refresh();
      // Added since the last read (another instance, the CLI), its notice still on the way.
      await store.createClient(client('new'));
      const iat = Math.floor(T0 / 1000);
      expect(set.acceptsClientToken('new', iat)).toBe('unknown');
      clock += 10;
      await Promise.all([set.resolveClient('new'), set.resolveClient('new'), set.resolveClient('new')]);
      expect(lookups()).toBe(1);
      expect(set.acceptsClientToken('new', iat)).toBe(true);
    } finally {
      await store.close();
    }
  });

  it('a client the store does not have (or has disabled) is refused, and not looked up again for a while', async () => {
    const { store, lookups } = counting('missing.db');
    try {
      let clock = T0;
      const set = new RevocationSet(store, () => clock);
      await store.createClient({ ...client('off'), enabled: false });
      await set.refresh();
      const iat = Math.floor(T0 / 1000);
      // Disabled at the last read: refused without a lookup.
      expect(set.acceptsClientToken('off', iat)).toBe(false);
      expect(set.acceptsClientToken('gone', iat)).toBe('unknown');
      await set.resolveClient('gone');
      expect(set.acceptsClientToken('gone', iat)).toBe(false);
      expect(lookups()).toBe(1);
      // The answer holds for 5 s, then the id is looked up again (it may have been added since).
      clock += 5_001;
      expect(set.acceptsClientToken('gone', iat)).toBe('unknown');
    } finally {
      await store.close();
    }
  });
});
