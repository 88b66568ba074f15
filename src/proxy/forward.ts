// The reverse-proxy handler: forwards an admitted request to its upstream with undici's dispatch() (its fastest API),
// streaming both ways with backpressure, framing the upstream request itself, and mapping upstream failures to 502/504.
import { readFileSync } from 'node:fs';
import { Transform, type TransformCallback, type Writable } from 'node:stream';
import type { Logger } from 'pino';
import { Pool, type Dispatcher } from 'undici';
import type { UpstreamConfig } from '../config/schema.js';
import { GatewayError } from '../errors/catalogue.js';
import type { DeepReadonly } from '../lib/deep-freeze.js';
import type { AuthenticatedRequest, Handler } from '../pipeline/stage.js';
import { securityHeaders, sendProblem, type HttpExchange } from '../server/exchange.js';
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.js';

type UpstreamHeaders = Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseStart']>>[2];

export class Upstream {
  readonly name: string;
  readonly authority: string;
  readonly pool: Pool;

  constructor(name: string, config: DeepReadonly<UpstreamConfig>) {
    const url = new URL(config.url);
    this.name = name;
    this.authority = url.host;
    this.pool = new Pool(url.origin, {
      connections: config.connections,
      connectTimeout: config.connect_timeout_ms,
      headersTimeout: config.headers_timeout_ms,
      bodyTimeout: config.body_timeout_ms,
      keepAliveTimeout: 4_000,
      // Responses are streamed, never buffered whole; a header block from the upstream is bounded like the client's.
      maxHeaderSize: 16_384,
      pipelining: 1,
      ...(url.protocol === 'https:'
        ? {
            connect: {
              // The upstream is verified against its pinned CA only (TLS-15); there is no switch to turn this off.
              rejectUnauthorized: true,
              ...(config.ca !== undefined ? { ca: readFileSync(config.ca) } : {}),
              servername: url.hostname,
              minVersion: 'TLSv1.2' as const,
            },
          }
        : {}),
    });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

export interface ProxyRouteOptions {
  readonly stripPrefix: boolean;
  readonly forwardAuthorization: boolean;
  readonly preserveHost: boolean;
  readonly identityPrefix: string;
}

/** Counts streamed request body bytes and fails the stream once a route's limit is crossed (H1-15). */
class BodyLimit extends Transform {
  private seen = 0;
  exceeded = false;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      this.exceeded = true;
      callback(new Error('request body over route limit'));
      return;
    }
    callback(null, chunk);
  }
}

export class ProxyHandler implements Handler {
  constructor(
    private readonly upstream: Upstream,
    private readonly options: ProxyRouteOptions,
    private readonly forwardedFor: (request: AuthenticatedRequest, received: string | string[] | undefined) => string,
    private readonly log: Logger,
  ) {}

  handle(request: AuthenticatedRequest, exchange: HttpExchange): Promise<void> {
    const { req, res } = exchange;
    let path = request.path;
    if (this.options.stripPrefix) {
      const prefix = request.route.pathPrefix.endsWith('/') ? request.route.pathPrefix.slice(0, -1) : request.route.pathPrefix;
      path = path.slice(prefix.length);
      if (!path.startsWith('/')) path = `/${path}`;
    }
    if (request.query !== '') path += `?${request.query}`;

    const { principal } = request;
    const headers = upstreamRequestHeaders(
      req.headers,
      { identityPrefix: this.options.identityPrefix, forwardAuthorization: this.options.forwardAuthorization },
      {
        host: this.options.preserveHost ? request.authority : this.upstream.authority,
        forwardedFor: this.forwardedFor(request, req.headers['x-forwarded-for']),
        forwardedHost: request.authority,
        requestId: request.id,
        contentLength: request.contentLength,
        identity:
          principal.method === 'anonymous'
            ? undefined
            : {
                subject: principal.subject,
                method: principal.method,
                scopes: [...principal.scopes].join(' '),
                certificateThumbprint: principal.certificateThumbprint,
              },
      },
    );

    // The body is invited only now, after the request was admitted (H1-12): no `100 Continue` for refused requests.
    if (request.hasBody && /100-continue/i.test(req.headers.expect ?? '')) res.writeContinue();

    let body: BodyLimit | typeof req | null = null;
    let limiter: BodyLimit | undefined;
    if (request.hasBody) {
      if (request.contentLength === undefined) {
        limiter = new BodyLimit(request.route.bodyLimitBytes);
        req.on('error', (error) => limiter?.destroy(error));
        body = req.pipe(limiter);
      } else {
        body = req;
      }
    }

    return new Promise<void>((resolve) => {
      const handler = new ForwardingHandler(exchange, this.log, this.upstream.name, limiter, resolve);
      this.upstream.pool.dispatch(
        {
          path,
          method: request.method as Dispatcher.HttpMethod,
          headers,
          body,
          // A request with a body is never replayed on another connection: not every upstream is idempotent (REL-05).
          idempotent: !request.hasBody && (request.method === 'GET' || request.method === 'HEAD'),
          blocking: false,
          upgrade: null,
        },
        handler,
      );
    });
  }
}

class ForwardingHandler implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private finished = false;

  constructor(
    private readonly exchange: HttpExchange,
    private readonly log: Logger,
    private readonly upstreamName: string,
    private readonly bodyLimit: BodyLimit | undefined,
    private readonly done: () => void,
  ) {
    // A client that goes away aborts the upstream request, so no upstream work outlives its caller (RL-03).
    exchange.res.once('close', () => {
      if (!this.finished) this.controller?.abort(new Error('client closed the stream'));
      this.finish();
    });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: UpstreamHeaders): void {
    const { res } = this.exchange;
    if (statusCode < 200) return;
    const out = clientResponseHeaders(headers);
    Object.assign(out, securityHeaders(this.exchange));
    try {
      res.writeHead(statusCode, out);
    } catch (error) {
      // Only reachable with a header Node refuses to send (e.g. an invalid value): the response is unusable.
      this.log.warn({ request_id: this.exchange.requestId, upstream: this.upstreamName, err: (error as Error).message }, 'upstream response headers rejected');
      controller.abort(error as Error);
      return;
    }
    res.on('drain', () => controller.resume());
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!(this.exchange.res as Writable).write(chunk)) controller.pause();
  }

  onResponseEnd(): void {
    this.finished = true;
    this.exchange.res.end();
    this.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.finished = true;
    const { res } = this.exchange;
    if (res.closed || res.destroyed) {
      this.finish();
      return;
    }
    if (res.headersSent) {
      // Mid-stream failure: the client must see a truncated (aborted) response, never a silently short one.
      this.log.warn({ request_id: this.exchange.requestId, upstream: this.upstreamName, code: errorCode(error) }, 'upstream failed mid-response');
      res.destroy();
      this.finish();
      return;
    }
    const refusal = this.classify(error);
    if (refusal.status >= 500) {
      this.log.warn({ request_id: this.exchange.requestId, upstream: this.upstreamName, code: errorCode(error) }, 'upstream request failed');
    }
    sendProblem(this.exchange, refusal, { close: true });
    this.finish();
  }

  private classify(error: Error): GatewayError {
    if (this.bodyLimit?.exceeded === true) return new GatewayError('payload_too_large', { reason: 'streamed body over route limit' });
    switch (errorCode(error)) {
      case 'UND_ERR_CONNECT_TIMEOUT':
      case 'UND_ERR_HEADERS_TIMEOUT':
        return new GatewayError('upstream_timeout', { reason: errorCode(error) });
      case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
        return new GatewayError('invalid_framing', { reason: 'body length differs from content-length' });
      case 'UND_ERR_INFO':
      case 'HPE_INVALID_CONSTANT':
      case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
      case 'UND_ERR_HEADERS_OVERFLOW':
        return new GatewayError('upstream_invalid_response', { reason: errorCode(error) });
      default:
        return new GatewayError('upstream_unavailable', { reason: errorCode(error) });
    }
  }

  private finish(): void {
    this.done();
  }
}

function errorCode(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : error.name;
}
