// Where every HTTP request enters (HTTP/1.1 and HTTP/2 alike): the request id, the edge checks, the probes, the router,
// then the pipeline; per-connection facts (peer, client address, certificate) are computed once and kept on the socket.
import { BlockList, isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { AccessLog } from './access-log.js';
import type { Pipeline } from '../pipeline/pipeline.js';
import type { ClientConnection, PeerCertificate } from '../pipeline/stage.js';
import { limitKey, normalizeAddress } from './connection-guard.js';
import { checkRequest, type EdgeLimits } from './edge.js';
import { answerBodyDeadline } from './exchange.js';
import type { HttpExchange, ServerReply, ServerRequest } from '../pipeline/stage.js';
import { newRequestId } from './request-id.js';
import type { Router } from './router.js';
import { traceOf } from '../lib/trace-context.js';

/** Per-connection facts computed once after the handshake and stored on the TLS socket. */
export const CONNECTION_INFO = Symbol('gatehouse.connection');
export const ACTIVE_REQUESTS = Symbol('gatehouse.activeRequests');
/** The latest HTTP/1.1 exchange on a socket: lets a parser error tell whether it belongs to the request in flight. */
export const CURRENT_EXCHANGE = Symbol('gatehouse.currentExchange');

export interface ConnectionInfo {
  readonly peerAddress: string;
  readonly peerCertificate: PeerCertificate | undefined;
}

export interface TaggedSocket extends TLSSocket {
  [CONNECTION_INFO]?: ConnectionInfo;
  [ACTIVE_REQUESTS]?: number;
  [CURRENT_EXCHANGE]?: HttpExchange;
}

export function describeConnection(socket: TLSSocket): ConnectionInfo {
  const peer = socket.getPeerCertificate(false);
  const hasCertificate = peer !== null && typeof peer === 'object' && Buffer.isBuffer(peer.raw);
  return {
    peerAddress: normalizeAddress(socket.remoteAddress),
    peerCertificate: hasCertificate
      ? {
          raw: peer.raw,
          authorized: socket.authorized,
          authorizationError: socket.authorizationError === undefined || socket.authorizationError === null ? undefined : String(socket.authorizationError),
          subjectAltName: peer.subjectaltname,
          extKeyUsage: (peer as { ext_key_usage?: string[] }).ext_key_usage,
          validTo: peer.valid_to,
        }
      : undefined,
  };
}

export interface IngressOptions {
  readonly router: Router;
  readonly pipeline: Pipeline;
  readonly limits: EdgeLimits;
  readonly trustedProxies: BlockList | undefined;
  readonly requestTimeoutMs: number;
  readonly ipv6PrefixLength: number;
  readonly accessLog: boolean;
  readonly log: Logger;
  readonly isDraining: () => boolean;
  /** False once shutdown began (readiness grace and drain): /readyz then answers 503. */
  readonly isReady: () => boolean;
}

export class Ingress {
  /** The route table in force: a reload swaps it; a request keeps the route it was matched to. */
  private router: Router;
  private readonly accessLog: AccessLog | undefined;

  constructor(private readonly options: IngressOptions) {
    this.router = options.router;
    this.accessLog = options.accessLog ? new AccessLog(options.log) : undefined;
  }

  useRouter(router: Router): void {
    this.router = router;
  }

  /** Entry point for both `request` and `checkContinue`: a 100 Continue is only sent once the pipeline admitted the request. */
  handle(req: ServerRequest, res: ServerReply): void {
    const startedAt = performance.now();
    const socket = req.socket as TaggedSocket;
    const protocol: 'h1' | 'h2' = req.httpVersionMajor === 2 ? 'h2' : 'h1';
    const requestId = newRequestId();
    const exchange: HttpExchange = {
      req,
      res,
      requestId,
      protocol,
      isHead: req.method === 'HEAD',
      closeAfterResponse: this.options.isDraining,
    };
    const info = socket[CONNECTION_INFO] ?? describeConnection(socket);
    // A trusted proxy may name the client (X-Forwarded-For) and the trace (traceparent); anyone else's claims are replaced.
    const trustedPeer = this.options.trustedProxies !== undefined && isTrusted(this.options.trustedProxies, info.peerAddress);
    const clientAddress = trustedPeer ? this.forwardedClient(info.peerAddress, req) : info.peerAddress;
    const connection: ClientConnection = {
      peerAddress: info.peerAddress,
      clientAddress,
      limitKey: limitKey(clientAddress, this.options.ipv6PrefixLength),
      protocol,
      peerCertificate: info.peerCertificate,
    };
    // What the access log names the request by, once the edge knew it; probes are not logged.
    let logged: { readonly path: string | undefined; readonly route: string | undefined } | undefined;
    if (protocol === 'h1') {
      socket[ACTIVE_REQUESTS] = (socket[ACTIVE_REQUESTS] ?? 0) + 1;
      socket[CURRENT_EXCHANGE] = exchange;
    }
    // One listener per request for everything that happens when its answer ends (none when nothing does).
    if (protocol === 'h1' || this.accessLog !== undefined) {
      res.once('close', () => {
        if (protocol === 'h1') {
          socket[ACTIVE_REQUESTS] = (socket[ACTIVE_REQUESTS] ?? 1) - 1;
          if (socket[CURRENT_EXCHANGE] === exchange) delete socket[CURRENT_EXCHANGE];
        }
        if (logged !== undefined) this.logRequest(exchange, logged.path, logged.route, connection, startedAt);
      });
    }

    const trace = traceOf(req.headers.traceparent, req.headers.tracestate, trustedPeer);
    const edge = checkRequest(req, requestId, trace, connection, this.router, this.options.limits, startedAt);
    if (!edge.ok) {
      if (this.accessLog !== undefined) logged = { path: edge.partial.path, route: edge.partial.routeId };
      void this.options.pipeline.refuseAtEdge({ ...edge.partial, connection, traceId: trace.traceId }, exchange, edge.error, edge.close);
      return;
    }
    // Probes pass the same edge checks as every request (a duplicate Host or 150 headers are refused here too); their
    // answers are neither logged nor audited: a load balancer asks every few seconds.
    if ('probe' in edge) {
      const path = edge.probe === 'liveness' ? '/healthz' : '/readyz';
      this.options.pipeline.answerProbe(
        { kind: edge.probe, method: req.method ?? '', path, connection, traceId: trace.traceId },
        exchange,
        this.options.isReady(),
      );
      return;
    }
    if (this.accessLog !== undefined) logged = { path: edge.context.path, route: edge.context.route.id };
    if (edge.context.hasBody) this.armBodyDeadline(exchange);
    void this.options.pipeline.run(edge.context, exchange);
  }

  /**
   * The client address used for per-IP limits and the audit when the peer is a configured trusted proxy: the right-most
   * X-Forwarded-For entry that is not itself a trusted proxy (HDR-04); the peer when there is none.
   */
  private forwardedClient(peer: string, req: ServerRequest): string {
    const trusted = this.options.trustedProxies;
    if (trusted === undefined) return peer;
    const header = req.headers['x-forwarded-for'];
    if (header === undefined) return peer;
    const hops = (Array.isArray(header) ? header.join(',') : header).split(',').map((h) => normalizeAddress(h.trim()));
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i] ?? '';
      if (isIP(hop) === 0) return peer;
      if (!isTrusted(trusted, hop)) return hop;
    }
    return peer;
  }

  /** Node's requestTimeout covers HTTP/1.1 only; this deadline bounds slow request bodies on HTTP/2 too (H1-17). */
  private armBodyDeadline(exchange: HttpExchange): void {
    const { req } = exchange;
    const timer = setTimeout(() => {
      if (req.complete) return;
      this.options.log.info({ request_id: exchange.requestId }, 'request body deadline passed');
      answerBodyDeadline(exchange);
    }, this.options.requestTimeoutMs);
    timer.unref();
    const clear = (): void => clearTimeout(timer);
    req.once('end', clear);
    req.once('close', clear);
    exchange.res.once('close', clear);
  }

  private logRequest(exchange: HttpExchange, path: string | undefined, route: string | undefined, connection: ClientConnection, startedAt: number): void {
    this.accessLog?.write({
      requestId: exchange.requestId,
      method: exchange.req.method,
      path,
      route,
      status: exchange.res.statusCode,
      completed: exchange.res.writableFinished,
      durationMs: performance.now() - startedAt,
      clientIp: connection.clientAddress,
      protocol: connection.protocol,
    });
  }
}

/** Whether an address is in a list made by trustedProxyList (anything that is not an IP address is not). */
export function isTrusted(list: BlockList, address: string): boolean {
  const family = isIP(address);
  return family !== 0 && list.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

export function trustedProxyList(cidrs: readonly string[]): BlockList | undefined {
  if (cidrs.length === 0) return undefined;
  const list = new BlockList();
  for (const entry of cidrs) {
    const [address = '', bits] = entry.split('/');
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(bits), type);
  }
  return list;
}
