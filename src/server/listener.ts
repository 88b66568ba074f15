// The TLS listener: one HTTP/2 server with HTTP/1.1 fallback, every protocol limit and timeout set, and graceful drain.
// Flow: TCP accept → connection guard → TLS handshake (renegotiation off) → HTTP/1.1 or HTTP/2 → Ingress.
import { randomBytes, X509Certificate } from 'node:crypto';
import { createSecureServer, type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session } from 'node:http2';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { GatewayError, type ErrorCode } from '../errors/catalogue.js';
import { rawProblemResponse, refuseTunnel } from './exchange.js';
import { ALPN, readTlsMaterial, secureContextOptions, type TlsMaterial } from '../tls/context.js';
import type { ConnectionGuard } from './connection-guard.js';
import { ACTIVE_REQUESTS, CONNECTION_INFO, CURRENT_EXCHANGE, describeConnection, type Ingress, type TaggedSocket } from './ingress.js';
import { newRequestId } from './request-id.js';

/** HTTP/1.1 parser failures answered on the raw socket, which is then closed (the byte stream can't be trusted). */
const PARSE_ERROR_STATUS: Readonly<Record<string, readonly [number, string, ErrorCode]>> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'headers_too_large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'request_timeout'],
};
const BAD_REQUEST = [400, 'Bad Request', 'bad_request'] as const;

/** What a connection-level refusal sent: its status and code, or nothing (the socket was destroyed unanswered). */
export interface RawAnswer {
  readonly status: number;
  readonly code: ErrorCode;
}

export interface ListenerEvents {
  /**
   * An HTTP/1.1 parse failure or refused protocol use, for the security log and the audit; `requestId` is the one sent to
   * the client, `answer` what it was sent (undefined: nothing, the connection was destroyed).
   */
  onParseError(code: string, peer: string, requestId: string, answer: RawAnswer | undefined, protocol: 'h1' | 'h2'): void;
  /** A TLS handshake completed: its version (TLSv1.3, …) and the application protocol agreed (h2, http/1.1). */
  onHandshake?(version: string, protocol: string): void;
  /** A TLS handshake failed, with the error code Node gave (an OpenSSL reason such as ERR_SSL_NO_SHARED_CIPHER, ECONNRESET, …). */
  onHandshakeFailure?(code: string | undefined): void;
}

export class Listener {
  readonly server: Http2SecureServer;
  private readonly sessions = new Set<ServerHttp2Session>();
  /** Established TLS connections, to find idle HTTP/1.1 keep-alive sockets when draining. */
  private readonly tlsSockets = new Set<TaggedSocket>();
  private ticketTimer: NodeJS.Timeout | undefined;
  private draining = false;
  /** The session-ticket keys in use; replaced every tls.ticket_key_rotation_s (here, or by whoever shares them). */
  private ticketKeys: Buffer;
  /** The certificate, key and client CA file in use (the last reload's). */
  private material: TlsMaterial;
  private storeClientCa: string | undefined;

  constructor(
    private readonly config: Config,
    /** The certificate, key and client CA as Gateway.create read and checked them; reloads read the files again. */
    tlsMaterial: TlsMaterial,
    private readonly guard: ConnectionGuard,
    private readonly ingress: Ingress,
    private readonly log: Logger,
    private readonly events: ListenerEvents,
    /**
     * Session-ticket keys shared with other processes on this port (the workers of `serve --workers N`, from their primary,
     * which rotates them: setTicketKeys), so a session resumes whichever worker gets the next connection. Without them this
     * listener makes and rotates its own.
     */
    private readonly sharedTicketKeys?: Buffer,
    /** The client CA of the credential store (tls.store_client_ca), when it has one yet. */
    storeClientCa?: string,
  ) {
    this.ticketKeys = sharedTicketKeys ?? randomBytes(48);
    const limits = config.limits;
    const h2 = limits.http2;
    const clientCa = config.tls.client_ca !== undefined || config.tls.store_client_ca;
    this.material = tlsMaterial;
    this.storeClientCa = storeClientCa;
    this.server = createSecureServer({
      ...secureContextOptions(tlsMaterial, this.clientCas()),
      ALPNProtocols: ALPN,
      allowHTTP1: true,
      // Client certificates are asked for but optional: only routes with the mtls authenticator require one,
      // and only a certificate the handshake verified counts (socket.authorized), TLS-09/TLS-12.
      requestCert: clientCa,
      rejectUnauthorized: false,
      handshakeTimeout: limits.handshake_timeout_ms,
      ticketKeys: this.ticketKeys,
      settings: {
        maxConcurrentStreams: h2.max_concurrent_streams,
        initialWindowSize: h2.initial_window_size,
        maxHeaderListSize: limits.max_header_bytes,
        enablePush: false,
      },
      maxSessionMemory: h2.max_session_memory_mb,
      maxHeaderListPairs: h2.max_header_list_pairs,
      maxSessionInvalidFrames: h2.max_session_invalid_frames,
      maxSessionRejectedStreams: h2.max_session_rejected_streams,
      maxOutstandingPings: h2.max_outstanding_pings,
      maxSettings: h2.max_settings,
      unknownProtocolTimeout: limits.handshake_timeout_ms,
      // Headers and body go out in separate writes; with Nagle on, each response could wait ~40 ms for a delayed ACK.
      noDelay: true,
    });
    const server = this.server;
    server.maxConnections = limits.max_connections;
    // HTTP/1.1 fallback limits: the properties Node's HTTP/1 connection listener reads from the server.
    Object.assign(server, {
      headersTimeout: limits.headers_timeout_ms,
      requestTimeout: limits.request_timeout_ms,
      keepAliveTimeout: limits.keep_alive_timeout_ms,
      maxRequestsPerSocket: limits.max_requests_per_socket,
      connectionsCheckingInterval: Math.min(1000, limits.headers_timeout_ms),
      maxHeaderSize: limits.max_header_bytes,
      // Node's own missing-Host answer is a bare 400 (no HSTS, no problem body, no audit); the edge check refuses it instead (H1-09).
      requireHostHeader: false,
    });
    // Idle sockets and HTTP/2 sessions are closed after this much inactivity (slow readers included).
    server.setTimeout(limits.idle_timeout_ms);

    server.on('connection', (socket: Socket) => {
      this.guard.admit(socket);
    });
    server.on('secureConnection', (socket: TLSSocket) => {
      // Belt and braces with SSL_OP_NO_RENEGOTIATION: a renegotiation attempt errors and the socket is destroyed (TLS-04).
      socket.disableRenegotiation();
      this.events.onHandshake?.(socket.getProtocol() ?? 'unknown', socket.alpnProtocol === false ? 'none' : (socket.alpnProtocol ?? 'none'));
      const tagged = socket as TaggedSocket;
      tagged[CONNECTION_INFO] = describeConnection(socket);
      this.tlsSockets.add(tagged);
      socket.once('close', () => this.tlsSockets.delete(tagged));
      if (this.draining) socket.destroy();
    });
    server.on('tlsClientError', (error: Error & { code?: string }, socket: TLSSocket) => {
      this.log.debug({ code: error.code, peer: socket.remoteAddress }, 'TLS handshake failed');
      this.events.onHandshakeFailure?.(error.code);
      socket.destroy();
    });
    server.on('session', (session: ServerHttp2Session) => {
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      session.on('error', (error: Error & { code?: string }) => this.log.debug({ code: error.code }, 'HTTP/2 session error'));
      if (this.draining) session.close();
    });
    server.on('unknownProtocol', (socket: TLSSocket) => socket.destroy());
    const maxPerSocket = limits.max_requests_per_socket;
    const served = new WeakMap<object, number>();
    const handle = (req: IncomingMessage | Http2ServerRequest, res: Parameters<Ingress['handle']>[1]): void => {
      // Node marks the last response a socket may carry `Connection: close` but leaves the socket open for the client to
      // close; setting the header ourselves makes Node end the socket after that response (H1-18).
      if (maxPerSocket > 0 && req.httpVersionMajor === 1) {
        const count = (served.get(req.socket) ?? 0) + 1;
        served.set(req.socket, count);
        if (count >= maxPerSocket) res.setHeader('connection', 'close');
      }
      this.ingress.handle(req, res);
    };
    server.on('request', handle);
    server.on('checkContinue', handle);
    // Without a listener Node answers any other expectation with a bare 417 (no HSTS, no audit); the edge handles the
    // request instead and the Expect header is never forwarded.
    server.on('checkExpectation', handle);
    server.on('connect', (req: IncomingMessage | Http2ServerRequest, socketOrRes: Socket | Http2ServerResponse) => this.refuseConnect(req, socketOrRes));
    server.on('clientError', (error: Error & { code?: string }, socket: Socket) => this.onClientError(error, socket));
  }

  /** Binds `at` (the public listener: server.host and server.port). */
  listen(at: { readonly host: string; readonly port: number } = this.config.server): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: at.host, port: at.port }, () => {
        this.server.off('error', reject);
        if (this.sharedTicketKeys === undefined) {
          this.ticketTimer = setInterval(() => this.setTicketKeys(randomBytes(48)), this.config.tls.ticket_key_rotation_s * 1000);
          this.ticketTimer.unref();
        } else {
          // node:cluster's listen hands every worker the ticket keys the port's first worker had: a replacement would
          // go back to those. The primary's current ones are put back.
          this.server.setTicketKeys(this.ticketKeys);
        }
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Replaces the session-ticket keys: tickets issued under the old ones no longer resume a session. */
  setTicketKeys(keys: Buffer): void {
    this.ticketKeys = keys;
    this.server.setTicketKeys(keys);
  }

  /** Re-reads certificate files and swaps them in for new handshakes; live connections keep theirs (TLS-14). */
  reloadCertificates(): void {
    this.material = readTlsMaterial(this.config.tls);
    this.applySecureContext();
  }

  /** When the server certificate in use (the last reload's) expires, epoch ms. */
  get certificateNotAfter(): number {
    return Date.parse(new X509Certificate(this.material.cert).validTo);
  }

  /** New handshakes also accept client certificates of this CA (the store's, once `gatehouse ca init` made it). */
  trustStoreClientCa(certPem: string): void {
    if (certPem === this.storeClientCa) return;
    this.storeClientCa = certPem;
    this.applySecureContext();
  }

  /** Client certificates are asked for (tls.client_ca or tls.store_client_ca): the CAs they must chain to, maybe none yet. */
  private clientCas(): (Buffer | string)[] | undefined {
    const { tls } = this.config;
    if (tls.client_ca === undefined && !tls.store_client_ca) return undefined;
    return [
      ...(this.material.ca !== undefined ? [this.material.ca] : []),
      ...(tls.store_client_ca && this.storeClientCa !== undefined ? [this.storeClientCa] : []),
    ];
  }

  private applySecureContext(): void {
    this.server.setSecureContext(secureContextOptions(this.material, this.clientCas()));
    // setSecureContext() restores the ticket keys the server was constructed with; the current rotated keys are put back.
    this.server.setTicketKeys(this.ticketKeys);
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /**
   * Graceful drain: stop accepting, GOAWAY to HTTP/2 sessions, `Connection: close` on HTTP/1.1 responses, idle keep-alive
   * sockets closed at once; whatever is still open when the drain timeout passes is destroyed.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    if (this.ticketTimer !== undefined) clearInterval(this.ticketTimer);
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.sessions) session.close();
    const closeIdle = (): void => {
      for (const socket of this.tlsSockets) {
        if (socket.alpnProtocol !== 'h2' && (socket[ACTIVE_REQUESTS] ?? 0) === 0) socket.destroy();
      }
    };
    closeIdle();
    const sweep = setInterval(closeIdle, 50);
    const deadline = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), timeoutMs).unref());
    const outcome = await Promise.race([closed.then(() => 'closed' as const), deadline]);
    clearInterval(sweep);
    if (outcome === 'timeout') {
      this.log.warn({ open: this.guard.liveConnections }, 'drain timeout passed; closing remaining connections');
      for (const session of this.sessions) session.destroy();
      for (const socket of this.guard.liveSockets()) socket.destroy();
      await closed;
    }
  }

  private refuseConnect(req: IncomingMessage | Http2ServerRequest, socketOrRes: Socket | Http2ServerResponse): void {
    const requestId = newRequestId();
    const protocol = 'writeHead' in socketOrRes ? 'h2' : 'h1';
    this.events.onParseError('CONNECT', String(req.socket.remoteAddress), requestId, { status: 405, code: 'method_not_allowed' }, protocol);
    if ('writeHead' in socketOrRes) {
      refuseTunnel(socketOrRes, requestId);
      return;
    }
    this.writeRawAndClose(socketOrRes, new GatewayError('method_not_allowed', { headers: { allow: '' } }), 'Method Not Allowed', requestId);
  }

  /** Node only closes timed-out or malformed connections itself when no listener exists, so this one always does (H1-17). */
  private onClientError(error: Error & { code?: string }, socket: Socket): void {
    const code = error.code ?? 'UNKNOWN';
    if (code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const requestId = newRequestId();
    // A raw answer is only safe when it answers the failing bytes: no request is in flight, or the one in flight is the
    // request whose body failed to parse and none of its response was sent. Otherwise (a bad request pipelined behind one
    // still being answered, or a failure mid-response) the client would read it as, or inside, an earlier response.
    const tagged = socket as TaggedSocket;
    const active = tagged[ACTIVE_REQUESTS] ?? 0;
    const current = tagged[CURRENT_EXCHANGE];
    const answerable = active === 0 || (active === 1 && current !== undefined && !current.req.complete && !current.res.headersSent);
    if (!answerable) {
      this.events.onParseError(code, String(socket.remoteAddress), requestId, undefined, 'h1');
      socket.destroy();
      return;
    }
    const [status, text, errorCode] = PARSE_ERROR_STATUS[code] ?? BAD_REQUEST;
    // Recorded as what is sent: a 431 is on record as headers_too_large with status 431, not as a generic bad request.
    this.events.onParseError(code, String(socket.remoteAddress), requestId, { status, code: errorCode }, 'h1');
    this.writeRawAndClose(socket, new GatewayError(errorCode, { reason: code }), text, requestId);
  }

  private writeRawAndClose(socket: Socket, error: GatewayError, reasonPhrase: string, requestId: string): void {
    socket.end(rawProblemResponse(error, reasonPhrase, requestId));
    lingerThenDestroy(socket);
  }
}

/** How long, and how many unread bytes, a refused connection is drained before it is destroyed. */
const LINGER_MS = 2000;
const LINGER_BYTES = 1024 * 1024;

/**
 * Lingering close (as nginx does): closing a socket with unread input makes the kernel send RST, which can destroy the
 * error response in the client's receive buffer before the client reads it. So the input is read and discarded for a
 * short, bounded while after the answer was sent; then the socket is destroyed whatever the client does.
 */
function lingerThenDestroy(socket: Socket): void {
  let discarded = 0;
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.removeAllListeners('data');
  socket.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > LINGER_BYTES) socket.destroy();
  });
  socket.once('end', () => socket.destroy());
  socket.once('close', () => clearTimeout(timer));
  socket.resume();
}
