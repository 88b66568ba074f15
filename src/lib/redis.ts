// The one Redis connection of a gateway (ioredis), for the shared limiters. Built to fail fast: no offline queue (a
// command while disconnected is refused at once, and the limiter falls back to its in-memory insurance), bounded connect
// and command timeouts, reconnects with capped, jittered backoff for as long as the process runs. Outages and recoveries
// are reported once per transition, never per command.
import { Redis } from 'ioredis';

export interface RedisSettings {
  /** redis://[user:password@]host[:port][/db] or rediss:// (TLS); never printed with its password. */
  readonly url: string;
  /** PEM: the CA the server's certificate must chain to (rediss://); the host name is checked. */
  readonly ca?: string | undefined;
  /** Bounds connecting and every command. */
  readonly timeoutMs: number;
}

export type RedisState = { readonly up: true; readonly downMs: number } | { readonly up: false; readonly error: string };

/** The URL without its password, for messages. */
export function describeRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.username !== '' ? `${decodeURIComponent(parsed.username)}@` : ''}${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`;
  } catch {
    return 'redis://(unparsable URL)';
  }
}

/** Reconnect delays: 100 ms doubling to 5 s, each 50–100 % of that (instances that lost Redis together come back spread). */
export function reconnectDelayMs(attempt: number): number {
  const base = Math.min(5000, 100 * 2 ** Math.min(attempt, 16));
  return Math.round(base / 2 + Math.random() * (base / 2));
}

export class RedisConnection {
  readonly client: Redis;
  private up = false;
  private downSince: number = Date.now();
  private lastError = 'not connected yet';
  private closed = false;

  constructor(
    settings: RedisSettings,
    private readonly onState: (state: RedisState) => void = () => undefined,
  ) {
    const tls = settings.url.startsWith('rediss:') ? { ...(settings.ca !== undefined ? { ca: settings.ca } : {}), rejectUnauthorized: true } : undefined;
    this.client = new Redis(settings.url, {
      // No queue while disconnected: a limiter must learn at once that Redis is away (RL-05), not after the backlog.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: settings.timeoutMs,
      commandTimeout: settings.timeoutMs,
      retryStrategy: (attempt) => (this.closed ? null : reconnectDelayMs(attempt)),
      lazyConnect: false,
      connectionName: 'gatehouse',
      ...(tls !== undefined ? { tls } : {}),
    });
    this.client.on('ready', () => this.transition(true));
    // 'error' comes with every failed attempt and every dropped line: remembered for the next report, never thrown.
    this.client.on('error', (error: Error) => {
      this.lastError = error.message.replace(/[\r\n]+/g, ' ').slice(0, 300);
      if (this.up) this.transition(false);
    });
    this.client.on('close', () => {
      if (!this.up) return;
      this.lastError = 'connection closed';
      this.transition(false);
    });
  }

  /** Resolves once ready, or after `ms` either way (a gateway starts on insurance limits when Redis is away). */
  async waitReady(ms: number): Promise<boolean> {
    if (this.up) return true;
    let timer: NodeJS.Timeout | undefined;
    let onReady: (() => void) | undefined;
    const ready = await Promise.race([
      new Promise<boolean>((resolve) => {
        onReady = () => resolve(true);
        this.client.once('ready', onReady);
      }),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
    ]);
    clearTimeout(timer);
    if (onReady !== undefined) this.client.off('ready', onReady);
    return ready;
  }

  async close(): Promise<void> {
    this.closed = true;
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }

  private transition(up: boolean): void {
    if (up === this.up || this.closed) return;
    this.up = up;
    if (up) {
      this.onState({ up: true, downMs: Date.now() - this.downSince });
    } else {
      this.downSince = Date.now();
      this.onState({ up: false, error: this.lastError });
    }
  }
}
