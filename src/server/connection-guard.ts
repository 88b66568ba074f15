// The connection guard: the first thing a TCP connection meets, before any TLS work.
// Caps live connections globally and per IP, limits the rate of new connections per IP, and tracks sockets for draining.
import { isIP, type Socket } from 'node:net';
import type { RateLimiterMemory } from 'rate-limiter-flexible';

/** IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the same client as `1.2.3.4`. */
export function normalizeAddress(address: string | undefined): string {
  if (address === undefined) return 'unknown';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** Expands an IPv6 address to its 16 bytes (embedded IPv4 tails included); undefined when it is not one. */
function ipv6Bytes(address: string): Uint8Array | undefined {
  if (isIP(address) !== 6) return undefined;
  let text = address.split('%')[0] ?? '';
  const bytes = new Uint8Array(16);
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (tail !== null) {
    const hex = (a: string, b: string): string => ((Number(a) << 8) | Number(b)).toString(16);
    text = `${text.slice(0, tail.index)}${hex(tail[1] ?? '0', tail[2] ?? '0')}:${hex(tail[3] ?? '0', tail[4] ?? '0')}`;
  }
  const [head = '', rest] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = rest === undefined || rest === '' ? [] : rest.split(':');
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  groups.forEach((group, i) => {
    const value = parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  return bytes;
}

/**
 * The key per-IP limits count under. An IPv4 address is one client; an IPv6 client usually controls a whole /64, so
 * keying on the full address would hand it 2^64 separate budgets. IPv6 addresses are keyed on their first `prefixLength`
 * bits. The audit still records the full address.
 */
export function limitKey(address: string, prefixLength: number): string {
  const bytes = ipv6Bytes(address);
  if (bytes === undefined) return address;
  const full = Math.floor(prefixLength / 8);
  const out = Array.from(bytes.subarray(0, full), (b) => b.toString(16).padStart(2, '0'));
  const bits = prefixLength % 8;
  if (bits !== 0) out.push(((bytes[full] ?? 0) & (0xff << (8 - bits)) & 0xff).toString(16).padStart(2, '0'));
  return `${out.join('')}/${prefixLength}`;
}

export class ConnectionGuard {
  private readonly perIp = new Map<string, number>();
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly limits: { readonly maxConnections: number; readonly maxPerIp: number; readonly ipv6PrefixLength: number },
    private readonly newConnectionRate: RateLimiterMemory,
  ) {}

  /** Admits or destroys a fresh TCP connection. Returns false when it was refused. */
  admit(socket: Socket): boolean {
    const ip = limitKey(normalizeAddress(socket.remoteAddress), this.limits.ipv6PrefixLength);
    const current = this.perIp.get(ip) ?? 0;
    if (this.sockets.size >= this.limits.maxConnections || current >= this.limits.maxPerIp) {
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
      socket.destroy();
    });
    return true;
  }

  get liveConnections(): number {
    return this.sockets.size;
  }

  liveSockets(): Iterable<Socket> {
    return this.sockets;
  }
}
