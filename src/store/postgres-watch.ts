// Change fan-out over PostgreSQL LISTEN/NOTIFY. Every write to the store notifies on the schema's channel inside its own
// transaction, so a notification is delivered once the change is committed and never for one rolled back. Each gateway
// listens on one dedicated connection (outside the pool), checks it with a heartbeat (a line that silently stops
// answering is found within a few seconds, not when TCP gives up), and reconnects with backoff; after a reconnect it
// reports `resync`, because what was notified meanwhile is lost.
import { createHash } from 'node:crypto';
import pg from 'pg';
import { StoreError, type StoreChange, type StoreWatch, type StoreWatchEvents } from './contract.js';

/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; a revocation that would not fit is sent as "re-read revocations". */
const MAX_PAYLOAD_BYTES = 7900;
/** Channel names are identifiers: at most 63 bytes. */
const MAX_CHANNEL_BYTES = 63;

export interface WatchTiming {
  /** How often the listening connection must answer a `SELECT 1`, and how long it may take. */
  readonly heartbeatMs: number;
  readonly heartbeatTimeoutMs: number;
  /** Reconnect delays double from the first to the last (with jitter), and stay there while the outage lasts. */
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
}

export const DEFAULT_WATCH_TIMING: WatchTiming = Object.freeze({ heartbeatMs: 5000, heartbeatTimeoutMs: 3000, reconnectMinMs: 250, reconnectMaxMs: 10_000 });

/** The channel of one schema's changes: `gatehouse_<schema>`, shortened with a hash of the schema when too long. */
export function changeChannel(schema: string): string {
  const channel = `gatehouse_${schema}`;
  if (channel.length <= MAX_CHANNEL_BYTES) return channel;
  return `gatehouse_${schema.slice(0, 36)}_${createHash('sha256').update(schema).digest('hex').slice(0, 16)}`;
}

export function encodeChange(change: StoreChange): string {
  if (change.kind !== 'revoked') return JSON.stringify({ k: change.kind });
  const { iss, jti, expiresAt } = change.revocation;
  const payload = JSON.stringify({ k: 'revoked', iss, jti, exp: expiresAt });
  return Buffer.byteLength(payload) < MAX_PAYLOAD_BYTES ? payload : JSON.stringify({ k: 'revocations' });
}

const SIMPLE_KINDS = new Set(['clients', 'keys', 'revocations', 'certificates', 'resync']);

/**
 * A notification's payload. Anything unexpected (another writer on the channel, a newer Gatehouse) is read as `resync`:
 * re-reading everything is always safe, trusting an unknown payload never is.
 */
export function parseChange(payload: string | undefined): StoreChange {
  let value: unknown;
  try {
    value = JSON.parse(payload ?? '');
  } catch {
    return { kind: 'resync' };
  }
  if (typeof value !== 'object' || value === null) return { kind: 'resync' };
  const { k, iss, jti, exp } = value as Record<string, unknown>;
  if (k === 'revoked') {
    if (typeof iss === 'string' && typeof jti === 'string' && typeof exp === 'number' && Number.isSafeInteger(exp)) {
      return { kind: 'revoked', revocation: { iss, jti, expiresAt: exp } };
    }
    return { kind: 'revocations' };
  }
  if (typeof k === 'string' && SIMPLE_KINDS.has(k)) return { kind: k as 'clients' | 'keys' | 'revocations' | 'certificates' | 'resync' };
  return { kind: 'resync' };
}

export class PostgresWatch implements StoreWatch {
  private client: pg.Client | undefined;
  private closed = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  /** When the current outage began (undefined while listening). */
  private lostAt: number | undefined;

  private constructor(
    private readonly connection: pg.ClientConfig,
    private readonly channel: string,
    private readonly events: StoreWatchEvents,
    private readonly timing: WatchTiming,
  ) {}

  /** Resolves once LISTEN is in place; throws StoreError('unavailable') when the first connection fails. */
  static async start(
    connection: pg.ClientConfig,
    channel: string,
    events: StoreWatchEvents,
    timing: WatchTiming = DEFAULT_WATCH_TIMING,
  ): Promise<PostgresWatch> {
    const watch = new PostgresWatch(connection, channel, events, timing);
    try {
      await watch.connect();
    } catch (error) {
      throw new StoreError('unavailable', `listen for store changes: ${message(error)}`);
    }
    return watch;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) await endQuietly(client);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client(this.connection);
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    client.on('notification', (notification) => {
      if (client === this.client && notification.channel === this.channel) this.events.onChange(parseChange(notification.payload));
    });
    try {
      await client.connect();
      // The channel is ours (changeChannel of a checked schema name), quoted as an identifier all the same.
      await client.query(`LISTEN "${this.channel}"`);
    } catch (error) {
      await endQuietly(client);
      throw error;
    }
    if (this.closed) {
      await endQuietly(client);
      return;
    }
    this.client = client;
    this.attempt = 0;
    this.scheduleHeartbeat(client);
  }

  private scheduleHeartbeat(client: pg.Client): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.heartbeat(client), this.timing.heartbeatMs);
    this.timer.unref();
  }

  private async heartbeat(client: pg.Client): Promise<void> {
    if (client !== this.client) return;
    let timeout: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.query('SELECT 1'),
        new Promise((_, reject) => {
          timeout = setTimeout(
            () => reject(new Error(`no answer to the heartbeat within ${this.timing.heartbeatTimeoutMs} ms`)),
            this.timing.heartbeatTimeoutMs,
          );
        }),
      ]);
      if (client === this.client) this.scheduleHeartbeat(client);
    } catch (error) {
      this.lost(client, error);
    } finally {
      clearTimeout(timeout);
    }
  }

  /** The current connection failed: drop it (an active heartbeat makes end() destroy the socket) and reconnect. */
  private lost(client: pg.Client, error: unknown): void {
    if (client !== this.client || this.closed) return;
    this.client = undefined;
    clearTimeout(this.timer);
    void endQuietly(client);
    this.lostAt = Date.now();
    this.events.onLost?.(message(error));
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    const base = Math.min(this.timing.reconnectMaxMs, this.timing.reconnectMinMs * 2 ** Math.min(this.attempt, 16));
    this.attempt += 1;
    // Jitter (50–100 % of the delay): instances that lost the server together do not come back in lockstep.
    this.timer = setTimeout(() => void this.reconnect(), base / 2 + Math.random() * (base / 2));
    this.timer.unref();
  }

  private async reconnect(): Promise<void> {
    if (this.closed) return;
    try {
      await this.connect();
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (this.closed || this.client === undefined) return;
    const downMs = Date.now() - (this.lostAt ?? Date.now());
    this.lostAt = undefined;
    this.events.onListening?.(downMs);
    // Whatever was notified while the line was down is lost: the receiver re-reads everything.
    this.events.onChange({ kind: 'resync' });
  }
}

/** Ends a connection politely, but within a second: on a line that stopped answering, the socket is destroyed. */
async function endQuietly(client: pg.Client): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([client.end().catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, 1000)))]);
  clearTimeout(timer);
  client.connection.stream.destroy();
}

function message(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).replace(/[\r\n]+/g, ' ').slice(0, 300);
}
