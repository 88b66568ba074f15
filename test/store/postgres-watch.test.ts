// Change fan-out on PostgreSQL (LISTEN/NOTIFY), at the store: a write committed by one process is reported to the
// listeners of every other, with the revocation itself; a write rolled back is never reported; another schema's writes are
// not heard; a foreign or malformed payload on the channel reads as "re-read everything". The listening line cut (reset,
// or silently stalled) is found by the heartbeat, reconnected with backoff, and followed by a `resync`, because what was
// notified meanwhile is lost. Real server only (GATEHOUSE_TEST_POSTGRES_URL); skipped with a visible message without it.
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { StoreChange } from '../../src/store/contract.js';
import { PostgresCredentialStore } from '../../src/store/postgres.js';
import { changeChannel, encodeChange, parseChange, type WatchTiming } from '../../src/store/postgres-watch.js';
import { dropTestSchemas, POSTGRES_URL, testSchema } from '../support/services.js';
import { client, key, storeError } from '../support/store-fixtures.js';
import { hostPort, TcpRelay } from '../support/tcp-relay.js';

afterAll(dropTestSchemas);

const FAST: WatchTiming = { heartbeatMs: 200, heartbeatTimeoutMs: 300, reconnectMinMs: 50, reconnectMaxMs: 200 };

function via(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.hostname = '127.0.0.1';
  parsed.port = String(port);
  return parsed.toString();
}

/** Collects what a watch reports, and waits for what a test expects. */
class Heard {
  readonly changes: StoreChange[] = [];
  readonly lost: string[] = [];
  readonly listening: number[] = [];
  private waiters: (() => void)[] = [];

  readonly events = {
    onChange: (change: StoreChange) => this.push(() => this.changes.push(change)),
    onLost: (error: string) => this.push(() => this.lost.push(error)),
    onListening: (downMs: number) => this.push(() => this.listening.push(downMs)),
  };

  private push(record: () => void): void {
    record();
    for (const wake of this.waiters.splice(0)) wake();
  }

  async until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; heard ${JSON.stringify(this.changes)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  kinds(): string[] {
    return this.changes.map((change) => change.kind);
  }
}

describe('change payloads', () => {
  it('a revocation travels with its token id and expiry; every other change is a kind', () => {
    const revocation = { iss: 'https://gw.test', jti: 'abc', expiresAt: 1_700_000_000_000 };
    expect(parseChange(encodeChange({ kind: 'revoked', revocation }))).toEqual({ kind: 'revoked', revocation });
    for (const kind of ['clients', 'keys', 'revocations', 'resync'] as const) expect(parseChange(encodeChange({ kind }))).toEqual({ kind });
  });

  it('a revocation too large for a notification is sent as "re-read revocations"', () => {
    const encoded = encodeChange({ kind: 'revoked', revocation: { iss: 'https://gw.test', jti: 'j'.repeat(8000), expiresAt: 1 } });
    expect(Buffer.byteLength(encoded)).toBeLessThan(8000);
    expect(parseChange(encoded)).toEqual({ kind: 'revocations' });
  });

  it('anything unexpected reads as resync, a malformed revocation as "re-read revocations"', () => {
    for (const payload of [undefined, '', 'not json', '42', 'null', '[]', '{}', '{"k":"drop_tables"}', '{"k":7}']) {
      expect(parseChange(payload), String(payload)).toEqual({ kind: 'resync' });
    }
    for (const payload of ['{"k":"revoked"}', '{"k":"revoked","iss":"a","jti":"b","exp":"soon"}', '{"k":"revoked","iss":"a","jti":"b","exp":1.5}']) {
      expect(parseChange(payload), payload).toEqual({ kind: 'revocations' });
    }
  });

  it('a channel name is an identifier of at most 63 bytes, distinct per schema', () => {
    expect(changeChannel('gatehouse')).toBe('gatehouse_gatehouse');
    const long = changeChannel('s'.repeat(63));
    expect(long.length).toBeLessThanOrEqual(63);
    expect(changeChannel(`${'s'.repeat(62)}t`)).not.toBe(long);
  });
});

if (POSTGRES_URL === undefined) {
  describe.skip('PostgreSQL change fan-out: SKIPPED (set GATEHOUSE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test)', () => {
    it('needs a PostgreSQL server', () => undefined);
  });
} else {
  const url = POSTGRES_URL;

  describe('PostgreSQL change fan-out', () => {
    it('every committed write is reported to another process; rolled-back writes and other schemas are not', async () => {
      const schema = testSchema();
      const writer = await PostgresCredentialStore.open({ url, schema });
      const listener = await PostgresCredentialStore.open({ url, schema });
      const other = await PostgresCredentialStore.open({ url, schema: testSchema() });
      const heard = new Heard();
      const watch = await listener.watch(heard.events);
      try {
        await other.createClient(client('elsewhere'));
        await other.revoke({ iss: 'https://gw.test', jti: 'elsewhere', expiresAt: Date.now() + 60_000 });

        const revocation = { iss: 'https://gw.test', jti: 'jti-1', expiresAt: Date.now() + 60_000 };
        await writer.revoke(revocation);
        await heard.until(() => heard.changes.length >= 1, 'the revocation');
        expect(heard.changes).toEqual([{ kind: 'revoked', revocation }]);

        await writer.createClient(client('c1'));
        await writer.updateClient('c1', (c) => ({ ...c, enabled: false }));
        expect(await writer.removeClient('c1')).toBe(true);
        await writer.addSigningKey(key('k1'));
        await writer.rotateSigningKey(key('k2', { createdAt: 2_000 }), { kid: 'k1', retiredAt: 3_000, expiresAt: 9_000 });
        await writer.changeSigningKeys((keys) => ({ update: keys.filter((k) => k.kid === 'k2').map((k) => ({ ...k, revokedAt: 4_000 })), insert: [] }));
        await heard.until(() => heard.changes.length >= 7, 'six more changes');
        expect(heard.kinds()).toEqual(['revoked', 'clients', 'clients', 'clients', 'keys', 'keys', 'keys']);

        // Rolled back: a caller's change that throws, a rotation from a key already retired, a removal of nothing, a
        // key change that changes nothing. None of them is heard; the marker write after them is the next thing heard.
        await expect(writer.updateClient('nobody', (c) => c)).rejects.toThrow();
        await writer.createClient(client('c2'));
        await expect(
          writer.updateClient('c2', () => {
            throw new Error('changed my mind');
          }),
        ).rejects.toThrow('changed my mind');
        expect((await storeError(writer.rotateSigningKey(key('k3', { createdAt: 5_000 }), { kid: 'k1', retiredAt: 6_000, expiresAt: 9_000 }))).code).toBe(
          'conflict',
        );
        expect(await writer.removeClient('c1')).toBe(false);
        await writer.changeSigningKeys(() => ({ update: [], insert: [] }));
        await writer.revoke({ ...revocation, jti: 'marker' });
        await heard.until(() => heard.changes.some((c) => c.kind === 'revoked' && c.revocation.jti === 'marker'), 'the marker');
        expect(heard.kinds().slice(7)).toEqual(['clients', 'revoked']);
      } finally {
        await watch.close();
        await Promise.all([writer.close(), listener.close(), other.close()]);
      }
    });

    it('a closed watch reports nothing more; closing the store closes its watches', async () => {
      const schema = testSchema();
      const writer = await PostgresCredentialStore.open({ url, schema });
      const listener = await PostgresCredentialStore.open({ url, schema });
      const closedEarly = new Heard();
      const byStore = new Heard();
      const first = await listener.watch(closedEarly.events);
      const second = await listener.watch(byStore.events);
      try {
        await first.close();
        await writer.createClient(client('after-close'));
        await byStore.until(() => byStore.changes.length === 1, 'the change on the open watch');
        await listener.close();
        await writer.createClient(client('after-store-close'));
        await writer.revoke({ iss: 'i', jti: 'j', expiresAt: Date.now() + 60_000 });
        // A round trip through the server after the writes: a notification still due would have been delivered by now.
        await writer.listClients();
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect(closedEarly.changes).toEqual([]);
        expect(byStore.changes).toHaveLength(1);
        expect((await storeError(listener.watch(new Heard().events))).code).toBe('unavailable');
      } finally {
        await second.close();
        await writer.close();
      }
    });

    it('a foreign notification on the channel is read as resync', async () => {
      const schema = testSchema();
      const listener = await PostgresCredentialStore.open({ url, schema });
      const heard = new Heard();
      const watch = await listener.watch(heard.events);
      const raw = new pg.Client({ connectionString: url });
      await raw.connect();
      try {
        await raw.query('SELECT pg_notify($1, $2)', [changeChannel(schema), '{"k":"revoked","iss":"x"}']);
        await raw.query('SELECT pg_notify($1, $2)', [changeChannel(schema), 'DROP TABLE clients']);
        await heard.until(() => heard.changes.length === 2, 'two notifications');
        expect(heard.changes).toEqual([{ kind: 'revocations' }, { kind: 'resync' }]);
      } finally {
        await raw.end();
        await watch.close();
        await listener.close();
      }
    });

    for (const cut of ['refuse', 'blackhole'] as const) {
      it(`the listening line ${cut === 'refuse' ? 'reset' : 'silently stalled'}: reported lost, reconnected when it is back, then resync`, async () => {
        const schema = testSchema();
        const relay = await TcpRelay.start(hostPort(url, 5432));
        const writer = await PostgresCredentialStore.open({ url, schema });
        const listener = await PostgresCredentialStore.open({ url: via(url, relay.port), schema, connectTimeoutMs: 300, watchTiming: FAST });
        const heard = new Heard();
        const watch = await listener.watch(heard.events);
        try {
          relay.set(cut);
          await heard.until(() => heard.lost.length === 1, 'the loss');
          if (cut === 'blackhole') expect(heard.lost[0]).toContain('heartbeat');
          // Made while nobody listens: lost as a notification, found by the resync.
          await writer.revoke({ iss: 'i', jti: 'while-cut', expiresAt: Date.now() + 60_000 });
          // Reconnect attempts keep failing while the line is down, without reporting anything new.
          await new Promise((resolve) => setTimeout(resolve, 800));
          expect(heard.listening).toEqual([]);
          expect(heard.lost).toHaveLength(1);
          expect(heard.changes).toEqual([]);

          relay.set('pass');
          await heard.until(() => heard.kinds().includes('resync'), 'the resync');
          expect(heard.listening).toHaveLength(1);
          expect(heard.listening[0]).toBeGreaterThanOrEqual(800);
          // And it listens again.
          await writer.createClient(client('after-reconnect'));
          await heard.until(() => heard.kinds().includes('clients'), 'a change after the reconnect');
          expect(heard.kinds()).toEqual(['resync', 'clients']);
        } finally {
          await watch.close();
          await Promise.all([writer.close(), listener.close()]);
          await relay.close();
        }
      });
    }
  });
}
