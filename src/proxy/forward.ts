// The reverse-proxy handler: forwards an admitted request to its upstream with undici's dispatch() (its fastest API),
// streaming both ways with backpressure, framing the upstream request itself, and mapping upstream failures to 502/504.
import { constants as http2Constants } from 'node:http2';
import { Transform, type TransformCallback, type Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { Dispatcher, Pool } from 'undici';
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, ForwardAdmission, ForwardOutcome, Forwarder, ForwardTicket, HttpExchange } from '../pipeline/stage.js';
import { abortResponse, clientGone, securityHeaders, sendProblem } from '../server/exchange.js';
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.js';
import type { Target } from './targets.js';
import type { Upstream } from './upstream.js';
import { newSpanId, traceparentFor } from '../lib/trace-context.js';

type UpstreamHeaders = Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseStart']>>[2];

export interface ProxyRouteOptions {
  readonly stripPrefix: boolean;
  readonly forwardAuthorization: boolean;
  readonly preserveHost: boolean;
  readonly identityPrefix: string;
}

/**
 * Counts streamed request body bytes and fails the stream once a route's limit is crossed (H1-15), or at its end when the
 * body is not what the client completed: Node's HTTP/2 compatibility request ends cleanly even when the stream was reset,
 * which would otherwise hand the upstream a truncated body as a complete request (H2-06).
 */
class BodyLimit extends Transform {
  /** Body bytes read so far. */
  seen = 0;
  exceeded = false;
  constructor(
    private readonly limit: number,
    private readonly expected: number | undefined,
    private readonly source: HttpExchange['req'],
  ) {
    super();
  }
  override _flush(callback: TransformCallback): void {
    const reset = 'stream' in this.source && this.source.stream.rstCode !== undefined && this.source.stream.rstCode !== http2Constants.NGHTTP2_NO_ERROR;
    if (reset || (this.expected !== undefined && this.seen !== this.expected)) {
      callback(new Error('request body incomplete'));
      return;
    }
    callback();
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

export class ProxyHandler implements Forwarder {
  readonly kind = 'forwarder';

  constructor(
    private readonly upstream: Upstream,
    private readonly options: ProxyRouteOptions,
    private readonly forwardedFor: (request: AuthenticatedRequest, received: string | string[] | undefined) => string,
    private readonly log: Logger,
  ) {}

  /** A slow upstream must not make the gateway hoard requests: past its queue bound, refuse at once (and say when to retry). */
  admit(): ForwardAdmission {
    const upstream = this.upstream;
    if (upstream.inFlight >= upstream.capacity) return QUEUE_FULL;
    // Every target ejected: refused at once, on record, instead of a wait for a connect timeout per request.
    if (!upstream.balancer.anyAvailable()) return { admitted: false, error: noHealthyUpstream(upstream) };
    upstream.inFlight++;
    let held = true;
    return {
      admitted: true,
      ticket: {
        release: () => {
          if (!held) return;
          held = false;
          upstream.inFlight--;
        },
      },
    };
  }

  forward(request: AuthenticatedRequest, exchange: HttpExchange, ticket: ForwardTicket): Promise<ForwardOutcome> {
    // Whatever fails before undici has the request (building its headers, a dispatch that throws) gives the capacity back:
    // only undici's own end of the request releases it otherwise. Releasing twice is harmless.
    try {
      return this.start(request, exchange, ticket).catch((error: unknown) => {
        ticket.release();
        throw error;
      });
    } catch (error) {
      ticket.release();
      throw error;
    }
  }

  private start(request: AuthenticatedRequest, exchange: HttpExchange, ticket: ForwardTicket): Promise<ForwardOutcome> {
    const { req } = exchange;
    let path = request.path;
    if (this.options.stripPrefix) {
      const prefix = request.route.pathPrefix.endsWith('/') ? request.route.pathPrefix.slice(0, -1) : request.route.pathPrefix;
      path = path.slice(prefix.length);
      if (!path.startsWith('/')) path = `/${path}`;
    }
    if (request.query !== '') path += `?${request.query}`;
    // The request's path is canonical (no dot segment, no encoded slash): under the base path it stays under it.
    path = `${this.upstream.basePath}${path}`;

    const { principal } = request;
    const headers = upstreamRequestHeaders(
      req.headers,
      { identityPrefix: this.options.identityPrefix, forwardAuthorization: this.options.forwardAuthorization },
      {
        // Set per target below, unless the client's Host is kept.
        host: request.authority,
        forwardedFor: this.forwardedFor(request, req.headers['x-forwarded-for']),
        forwardedHost: request.authority,
        requestId: request.id,
        traceparent: traceparentFor(request.trace, newSpanId()),
        tracestate: request.trace.state,
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

    // The client may already have reset the stream (RST_STREAM right after HEADERS): its 'close' event is then gone, so
    // nothing would ever abort the upstream request. Such a request is never sent (H2-01, RL-03).
    if (clientGone(exchange)) {
      ticket.release();
      return Promise.resolve(NOT_SENT_CLIENT_GONE);
    }

    let body: BodyLimit | null = null;
    if (request.hasBody) {
      const limiter = new BodyLimit(request.route.bodyLimitBytes, request.contentLength, req);
      req.on('error', (error) => limiter.destroy(error));
      body = req.pipe(limiter);
    }

    // The ticket is given back when undici is done with the request (response end or error: it always reports one, also
    // for a queued request aborted before it started and for a destroyed pool), never merely because the client left —
    // a request still waiting in the pool's queue must keep counting, or departed clients could grow that queue unbounded.
    const release = (): void => ticket.release();
    const upstream = this.upstream;
    const preserveHost = this.options.preserveHost;
    const subject = principal.method === 'anonymous' ? undefined : principal.subject;
    // A request with a body is never replayed: not on another connection, not on another target (REL-05).
    const replayable = !request.hasBody;
    // A request that may have reached its target is sent again only when doing it twice does no harm (RFC 9110 §9.2.2).
    const idempotent = IDEMPOTENT.has(request.method);
    const tried = new Set<Target<Pool>>();
    upstream.retries.earn();
    return new Promise<ForwardOutcome>((resolve) => {
      const handler = new ForwardingHandler(exchange, this.log, upstream, body ?? undefined, resolve, release, request.route.quota !== undefined, idempotent);
      /** Sends the request to the next target: false when none is left (every other one tried or ejected). */
      const send = (): boolean => {
        const target = upstream.balancer.pick(subject, tried);
        if (target === undefined) return false;
        tried.add(target);
        if (!preserveHost) headers['host'] = target.hostHeader;
        handler.attempt(target, replayable ? send : undefined);
        target.pool.dispatch(
          {
            path,
            method: request.method as Dispatcher.HttpMethod,
            headers,
            body,
            idempotent: replayable && (request.method === 'GET' || request.method === 'HEAD'),
            blocking: false,
            upgrade: null,
          },
          handler,
        );
        return true;
      };
      if (!send()) handler.noTarget();
    });
  }
}

/** Every target of the upstream is out: 503, and Retry-After says when the first one returns. */
function noHealthyUpstream(upstream: Upstream): GatewayError {
  const retryAfter = Math.max(1, Math.ceil(upstream.balancer.untilFirstReturn() / 1000));
  return new GatewayError('no_healthy_upstream', {
    reason: `every target of ${upstream.name} is ejected`,
    headers: { 'retry-after': String(retryAfter) },
  });
}

const QUEUE_FULL: ForwardAdmission = Object.freeze({
  admitted: false,
  error: new GatewayError('service_unavailable', { reason: 'upstream queue full', headers: { 'retry-after': '1' } }),
});
const NOT_SENT_CLIENT_GONE: ForwardOutcome = Object.freeze({
  upstream: 'not sent',
  upstreamStatus: null,
  code: null,
  error: null,
  bytesIn: 0,
  bytesOut: 0,
  target: null,
  retried: [],
  upstreamMs: null,
});

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/** Errors raised before any byte of the request reached the target: the request may go to another one. */
const NOT_CONNECTED = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND']);

class ForwardingHandler implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private finished = false;
  private clientClosed = false;
  private unsendableResponse = false;
  private outcome: ForwardOutcome['upstream'] = 'aborted';
  private upstreamStatus: number | null = null;
  private code: string | null = null;
  private error: string | null = null;
  private bytesOut = 0;
  /** The target of the current attempt, and whether its response began. */
  private target: Target<Pool> | undefined;
  private responding = false;
  /** Sends the request to another target; undefined when it may not be replayed. */
  private retry: (() => boolean) | undefined;
  /** Attempts that failed before any byte reached their target: `host:port CODE`. */
  private readonly retried: string[] = [];
  /** When the first attempt was dispatched (performance.now()), and when undici reported the request's end. */
  private sentAt: number | undefined;
  private endedAt: number | undefined;

  constructor(
    private readonly exchange: HttpExchange,
    private readonly log: Logger,
    private readonly upstream: Upstream,
    private readonly bodyLimit: BodyLimit | undefined,
    private readonly done: (outcome: ForwardOutcome) => void,
    /** Called once undici reports the request's end (onResponseEnd / onResponseError). */
    private readonly release: () => void,
    /** The route has a quota: the gateway's RateLimit fields are already on the response, the upstream's are dropped. */
    private readonly ownRateLimit: boolean,
    /** The method may be repeated: a request that got no response headers in time may go to another target. */
    private readonly idempotent: boolean,
  ) {
    // A client that goes away aborts the upstream request, so no upstream work outlives its caller (RL-03).
    exchange.res.once('close', () => {
      this.clientClosed = true;
      if (!this.finished) this.controller?.abort(new Error('client closed the stream'));
      this.finish();
    });
    // A request body that stops before it is complete (client reset, deadline) must abort the upstream request too,
    // or it would wait on the body and hold its pool connection. A request already complete (no body, or all of it read)
    // cannot stop short: no listener for it.
    if (!exchange.req.complete) {
      exchange.req.once('close', () => {
        if (!exchange.req.complete && !this.finished) {
          this.clientClosed = true;
          this.controller?.abort(new Error('request body did not complete'));
          this.bodyLimit?.destroy(new Error('request body did not complete'));
        }
      });
    }
  }

  /** The request goes to `target` now; `retry` sends it to another one if this one cannot be reached. */
  attempt(target: Target<Pool>, retry: (() => boolean) | undefined): void {
    this.sentAt ??= performance.now();
    this.target = target;
    this.retry = retry;
    this.controller = undefined;
    this.responding = false;
    target.inFlight++;
  }

  /** Every target was ejected between the admission and now: nothing was sent. */
  noTarget(): void {
    this.release();
    this.finished = true;
    this.outcome = 'not sent';
    this.code = 'no_healthy_upstream';
    sendProblem(this.exchange, noHealthyUpstream(this.upstream));
    this.finish();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // undici calls this only when a connection is free: a request queued behind busy connections whose client left
    // meanwhile is dropped here instead of being sent (M1).
    if (this.clientClosed) controller.abort(new Error('client closed the stream'));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: UpstreamHeaders): void {
    const { res } = this.exchange;
    if (statusCode < 200) return;
    this.responding = true;
    // Passive health: a 502, 503 or 504 (the target is failing, overloaded or cannot reach what it needs) counts against it
    // like a failed connection; anything else, a 500 of one request's application error included, clears its record.
    if (statusCode === 502 || statusCode === 503 || statusCode === 504) this.targetFailed(String(statusCode));
    else this.target?.succeeded(this.upstream.now(), this.upstream.health);
    this.upstreamStatus = statusCode;
    const out = clientResponseHeaders(headers, this.ownRateLimit);
    Object.assign(out, securityHeaders(this.exchange));
    try {
      res.writeHead(statusCode, out);
    } catch (error) {
      // A header Node refuses to send, e.g. a repeated Content-Type on HTTP/2 (single-value field): the response is unusable.
      // writeHead may have stored some upstream headers before throwing; none of them may ride along on the 502.
      this.log.warn({ request_id: this.exchange.requestId, upstream: this.upstream.name, err: (error as Error).message }, 'upstream response headers rejected');
      for (const name of res.getHeaderNames()) res.removeHeader(name);
      this.unsendableResponse = true;
      controller.abort(error as Error);
      return;
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    // A dead client response never emits 'drain': pausing would hold the upstream connection forever.
    if (clientGone(this.exchange)) {
      controller.abort(new Error('client closed the stream'));
      return;
    }
    this.bytesOut += chunk.length;
    const { res } = this.exchange;
    // Backpressure: the upstream pauses until the client has taken what was written (one listener per full buffer, not
    // one per response).
    if (!(res as Writable).write(chunk)) {
      controller.pause();
      res.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(): void {
    this.attemptEnded();
    this.release();
    this.finished = true;
    this.outcome = 'responded';
    this.exchange.res.end();
    this.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.attemptEnded();
    const code = errorCode(error);
    if (!this.responding && !this.clientClosed && !clientGone(this.exchange) && this.bodyLimit?.exceeded !== true) {
      // No connection, or no answer in time: the target's failure (a client that left, or a body over its limit, is not).
      if (NOT_CONNECTED.has(code) || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') this.targetFailed(code);
      // Nothing of the request reached this target, or it did and repeating it does no harm: another target may take it,
      // each at most once, while the upstream's retry budget allows.
      const replay = NOT_CONNECTED.has(code) || (code === 'UND_ERR_HEADERS_TIMEOUT' && this.idempotent);
      if (replay && this.retry !== undefined && this.upstream.retries.take()) {
        const failed = this.target?.authority ?? '?';
        this.retried.push(`${failed} ${code}`);
        if (this.retry()) {
          this.log.info(
            { request_id: this.exchange.requestId, upstream: this.upstream.name, target: failed, code },
            'upstream target failed the request; sent to another',
          );
          return;
        }
        // No other target to take it: the token and the attempt go back.
        this.retried.pop();
        this.upstream.retries.refund();
      }
    }
    this.release();
    this.finished = true;
    const { res } = this.exchange;
    if (clientGone(this.exchange)) {
      this.finish();
      return;
    }
    this.outcome = 'failed';
    this.error = code;
    if (res.headersSent) {
      // Mid-stream failure: the client must see a truncated (aborted) response, never a silently short one.
      this.log.warn({ request_id: this.exchange.requestId, upstream: this.upstream.name, code }, 'upstream failed mid-response');
      abortResponse(this.exchange);
      this.finish();
      return;
    }
    const refusal = this.classify(error);
    this.code = refusal.code;
    if (refusal.status >= 500) {
      this.log.warn({ request_id: this.exchange.requestId, upstream: this.upstream.name, code }, 'upstream request failed');
    }
    sendProblem(this.exchange, refusal, { close: true });
    this.finish();
  }

  private attemptEnded(): void {
    if (this.target !== undefined) this.target.inFlight--;
    this.endedAt = performance.now();
  }

  /** Passive health: counts a failure of the current target, and says so when it takes the target out. */
  private targetFailed(why: string): void {
    const target = this.target;
    if (target === undefined || !target.failed(this.upstream.now(), this.upstream.health)) return;
    this.log.warn(
      { upstream: this.upstream.name, target: target.authority, why, ejected_ms: target.ejectedUntil - this.upstream.now() },
      'upstream target ejected: it failed too many requests in a row',
    );
  }

  private classify(error: Error): GatewayError {
    if (this.bodyLimit?.exceeded === true) return new GatewayError('payload_too_large', { reason: 'streamed body over route limit' });
    if (this.unsendableResponse) return new GatewayError('upstream_invalid_response', { reason: 'response headers not sendable' });
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

  /** The first call settles the outcome (a client that leaves first makes it `aborted`); later calls change nothing. */
  private finish(): void {
    this.done({
      upstream: this.outcome,
      upstreamStatus: this.upstreamStatus,
      code: this.code,
      error: this.error,
      bytesIn: this.bodyLimit?.seen ?? 0,
      bytesOut: this.bytesOut,
      target: this.target?.authority ?? null,
      retried: this.retried,
      upstreamMs: this.sentAt === undefined ? null : Math.round(((this.endedAt ?? performance.now()) - this.sentAt) * 100) / 100,
    });
  }
}

function errorCode(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : error.name;
}
