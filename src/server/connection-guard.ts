// The connection guard: the first thing a TCP connection meets, before any TLS work.
// Caps live connections globally and per IP, limits the rate of new connections per IP, and tracks sockets for draining.
import type { Socket } from 'node:net';
import type { RateLimiterMemory } from 'rate-limiter-flexible';

/** IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the same client as `1.2.3.4`. */
export function normalizeAddress(address: string | undefined): string {
  if (address === undefined) return 'unknown';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

export class ConnectionGuard {
  private readonly perIp = new Map<string, number>();
  private readonly sockets = new Set<Socket>();
  private refusedTotal = 0;

  constructor(
    private readonly limits: { readonly maxConnections: number; readonly maxPerIp: number },
    private readonly newConnectionRate: RateLimiterMemory,
  ) {}

  /** Admits or destroys a fresh TCP connection. Returns false when it was refused. */
  admit(socket: Socket): boolean {
    const ip = normalizeAddress(socket.remoteAddress);
    const current = this.perIp.get(ip) ?? 0;
    if (this.sockets.size >= this.limits.maxConnections || current >= this.limits.maxPerIp) {
      this.refusedTotal++;
      socket.destroy();
      return false;
    }
    this.perIp.set(ip, current + 1);
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      const left = (this.perIp.get(ip) ?? 1) - 1;
      if (left <= 0) this.perIp.delete(ip);
      else this.perIp.set(ip, left);
    });
    // The rate decision resolves in a microtask, long before a handshake could complete.
    this.newConnectionRate.consume(ip).catch(() => {
      this.refusedTotal++;
      socket.destroy();
    });
    return true;
  }

  get liveConnections(): number {
    return this.sockets.size;
  }

  get refused(): number {
    return this.refusedTotal;
  }

  liveSockets(): Iterable<Socket> {
    return this.sockets;
  }
}
