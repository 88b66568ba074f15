// Raw HTTP/1.1-over-TLS client for the security tests: writes exact bytes and parses what comes back message by message
// (interim 1xx responses, Content-Length and chunked bodies), so keep-alive refusals need not wait for a socket close.
import { once } from 'node:events';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { openTls, type TestCertificates } from '../support/harness.js';

export interface RawMessage {
  readonly status: number;
  /** Lower-case names; a repeated header keeps its last value. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

export class RawConnection {
  /** Every byte the server sent on this connection, for "never contained X" assertions. */
  received = Buffer.alloc(0);
  closed = false;
  private pending = Buffer.alloc(0);
  private wake: (() => void) | undefined;

  private constructor(readonly socket: TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      this.pending = Buffer.concat([this.pending, chunk]);
      this.wake?.();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  static async open(port: number, certs: TestCertificates, tls: ConnectionOptions = {}): Promise<RawConnection> {
    return new RawConnection(await openTls(port, certs, tls));
  }

  get text(): string {
    return this.received.toString('latin1');
  }

  write(bytes: string | Buffer): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  /** The next message (a 1xx included), or undefined when the server closed or `timeoutMs` passed first. */
  async next(timeoutMs = 3000, opts: { head?: boolean } = {}): Promise<RawMessage | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const parsed = this.tryParse(opts.head === true);
      if (parsed !== undefined) return parsed;
      if (this.closed) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          this.wake = undefined;
          resolve();
        };
      });
    }
  }

  /** The next final (>= 200) response, skipping interim ones. */
  async response(timeoutMs = 3000, opts: { head?: boolean } = {}): Promise<RawMessage | undefined> {
    for (;;) {
      const message = await this.next(timeoutMs, opts);
      if (message === undefined || message.status >= 200) return message;
    }
  }

  /** Resolves true once the server has closed the connection, false if it is still open after `timeoutMs`. */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.closed) return true;
    return Promise.race([once(this.socket, 'close').then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(this.closed), timeoutMs))]);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private tryParse(head: boolean): RawMessage | undefined {
    const end = this.pending.indexOf('\r\n\r\n');
    if (end === -1) return undefined;
    const lines = this.pending.subarray(0, end).toString('latin1').split('\r\n');
    const match = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (match === null) throw new Error(`not an HTTP/1.1 response: ${JSON.stringify(lines[0])}`);
    const status = Number(match[1]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let offset = end + 4;
    let body = Buffer.alloc(0);
    if (status >= 200 && !head && status !== 204 && status !== 304) {
      if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
        const chunks: Buffer[] = [];
        for (;;) {
          const lineEnd = this.pending.indexOf('\r\n', offset);
          if (lineEnd === -1) return undefined;
          const size = parseInt(this.pending.subarray(offset, lineEnd).toString('latin1'), 16);
          if (size === 0) {
            const trailerEnd = this.pending.indexOf('\r\n\r\n', lineEnd);
            if (trailerEnd === -1) return undefined;
            offset = trailerEnd + 4;
            break;
          }
          if (this.pending.length < lineEnd + 2 + size + 2) return undefined;
          chunks.push(this.pending.subarray(lineEnd + 2, lineEnd + 2 + size));
          offset = lineEnd + 2 + size + 2;
        }
        body = Buffer.concat(chunks);
      } else if (headers['content-length'] !== undefined) {
        const length = Number(headers['content-length']);
        if (this.pending.length < offset + length) return undefined;
        body = this.pending.subarray(offset, offset + length);
        offset += length;
      } else {
        // Close-delimited body.
        if (!this.closed) return undefined;
        body = this.pending.subarray(offset);
        offset = this.pending.length;
      }
    }
    this.pending = this.pending.subarray(offset);
    return { status, headers, body: Buffer.from(body) };
  }
}

/** One request on a fresh connection: the first final response (or undefined) and whether the server then closed. */
export async function rawExchange(
  port: number,
  certs: TestCertificates,
  bytes: string | Buffer,
  opts: { timeoutMs?: number; closeWaitMs?: number; head?: boolean; tls?: ConnectionOptions } = {},
): Promise<{ response: RawMessage | undefined; closed: boolean; text: string }> {
  const connection = await RawConnection.open(port, certs, opts.tls);
  try {
    connection.write(bytes);
    const response = await connection.response(opts.timeoutMs ?? 3000, { head: opts.head ?? false });
    const closed = await connection.waitClosed(opts.closeWaitMs ?? 1000);
    return { response, closed, text: connection.text };
  } finally {
    connection.destroy();
  }
}

/** Parses a problem+json body's `code`. */
export function codeOf(message: RawMessage | undefined): string | undefined {
  if (message === undefined) return undefined;
  try {
    return (JSON.parse(message.body.toString('utf8')) as { code?: string }).code;
  } catch {
    return undefined;
  }
}
