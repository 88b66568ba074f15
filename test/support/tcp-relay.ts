// A TCP relay on 127.0.0.1 in front of a real server (PostgreSQL, Redis), so a test can cut the line, or make it hang,
// and then restore it — the outage a client of that server sees, without stopping the shared server itself.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export type RelayMode = 'pass' | 'refuse' | 'blackhole';

export class TcpRelay {
  private mode: RelayMode = 'pass';
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listens on 127.0.0.1 (port 0) and relays to target. */
  static async start(target: { readonly host: string; readonly port: number }): Promise<TcpRelay> {
    let relay: TcpRelay | undefined;
    const server = createServer((socket) => relay?.accept(socket, target));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    relay = new TcpRelay(server, (server.address() as AddressInfo).port);
    return relay;
  }

  private accept(socket: Socket, target: { readonly host: string; readonly port: number }): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    if (this.mode === 'refuse') {
      socket.destroy();
      return;
    }
    // blackhole: the connection is accepted and never answered.
    if (this.mode === 'blackhole') return;
    const upstream = createConnection(target);
    this.sockets.add(upstream);
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      socket.destroy();
    });
    upstream.on('error', () => undefined);
    socket.on('close', () => upstream.destroy());
    socket.pipe(upstream);
    upstream.pipe(socket);
  }

  /**
   * pass: relay; refuse: reset every open connection and every new one; blackhole: every open connection stops
   * carrying bytes (kept open) and new ones are accepted but never answered.
   */
  set(mode: RelayMode): void {
    this.mode = mode;
    if (mode === 'refuse') for (const socket of this.sockets) socket.destroy();
    if (mode === 'blackhole') {
      for (const socket of this.sockets) {
        socket.unpipe();
        socket.pause();
      }
    }
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** host and port of a postgres:// or redis:// URL. */
export function hostPort(url: string, defaultPort: number): { readonly host: string; readonly port: number } {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: parsed.port === '' ? defaultPort : Number(parsed.port) };
}
