// One request/response pair, the same shape for HTTP/1.1 and HTTP/2, plus the only code that writes gateway-made responses.
// Every response the gateway makes carries HSTS, nosniff and the request id; refusals are RFC 9457 problem bodies.
import { constants as http2Constants, type Http2ServerResponse } from 'node:http2';
import type { Writable } from 'node:stream';
import { GatewayError, oauthErrorBody, problemBody } from '../errors/catalogue.js';
import { type Answer, type HttpExchange, type RequestBody, type ServerRequest, TextBody } from '../pipeline/stage.js';

/** Two years, as Mozilla's guidelines recommend; sent on every response including errors (TLS-07). */
export const HSTS_VALUE = 'max-age=63072000; includeSubDomains';

export function securityHeaders(exchange: HttpExchange): Record<string, string> {
  const headers: Record<string, string> = {
    'strict-transport-security': HSTS_VALUE,
    'x-content-type-options': 'nosniff',
    'x-request-id': exchange.requestId,
  };
  if (exchange.protocol === 'h1' && exchange.closeAfterResponse()) headers['connection'] = 'close';
  return headers;
}

/**
 * Answers a refusal: an RFC 9457 problem body, or with `oauth` the RFC 6749 §5.2 body the OAuth endpoints use. `close`:
 * the request body is unread or the framing cannot be trusted, so the connection (HTTP/1.1) or stream (HTTP/2) ends here.
 */
export function sendProblem(exchange: HttpExchange, error: GatewayError, opts: { close?: boolean; oauth?: boolean } = {}): void {
  const { res } = exchange;
  if (res.headersSent) {
    // Too late for a status: the only honest signal left is an aborted stream.
    abortResponse(exchange);
    return;
  }
  const body = opts.oauth === true ? oauthErrorBody(error) : problemBody(error, exchange.requestId);
  const headers: Record<string, string | number> = {
    ...securityHeaders(exchange),
    'content-type': opts.oauth === true ? 'application/json' : 'application/problem+json',
    'cache-control': 'no-store',
    ...(opts.oauth === true ? { pragma: 'no-cache' } : {}),
    'content-length': Buffer.byteLength(body),
    ...error.headers,
  };
  // After a framing error or an unread body the byte stream cannot be trusted for another request.
  if (opts.close === true && exchange.protocol === 'h1') headers['connection'] = 'close';
  res.writeHead(error.status, headers);
  endWith(exchange, body);
  if (opts.close === true) releaseUnreadBody(exchange);
}

/**
 * For a complete response to a request whose body the gateway will not read. HTTP/1.1: the caller sent
 * `Connection: close`. HTTP/2: once the response is out, the stream is ended with RST_STREAM(NO_ERROR) (RFC 9113 §8.1),
 * so the client stops sending without taking it for an error and the stream does not hold a slot until the body deadline.
 */
export function releaseUnreadBody(exchange: HttpExchange): void {
  const { res } = exchange;
  if (!('stream' in res)) return;
  const { stream } = res;
  // The RST must follow the response's END_STREAM on the wire, or the client sees a reset instead of a complete response.
  // The writable side's 'finish' comes once nghttp2 took the last data; the END_STREAM flag may need a turn or two more,
  // so wait (bounded) until nghttp2 reports the stream closed locally. A client that does not read its response at all
  // (window 0) never lets 'finish' come: that stream is ended by the body deadline or the session idle timeout instead.
  let turns = 64;
  const closeWhenSent = (): void => {
    if (stream.closed || stream.destroyed) return;
    if (stream.state.localClose === 1 || --turns === 0) stream.close(http2Constants.NGHTTP2_NO_ERROR);
    else setImmediate(closeWhenSent);
  };
  // The stream's own writable side, not the response's 'finish' (which the compatibility layer emits only when the whole
  // stream closes — never, while the request side waits for a body nobody reads).
  if (stream.writableFinished) closeWhenSent();
  else stream.once('finish', closeWhenSent);
}

/**
 * A built-in answer: JSON (no-store unless the answer says otherwise), or no body at all (the 200 of a revocation).
 * Returns the body bytes sent.
 */
export function sendAnswer(exchange: HttpExchange, answer: Answer): number {
  if (answer.body === undefined) {
    exchange.res.writeHead(answer.status, { ...securityHeaders(exchange), 'content-length': 0, ...answer.headers });
    exchange.res.end();
    return 0;
  }
  const text = answer.body instanceof TextBody ? answer.body : undefined;
  const body = text?.text ?? JSON.stringify(answer.body);
  exchange.res.writeHead(answer.status, {
    ...securityHeaders(exchange),
    'content-type': text?.contentType ?? 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    ...answer.headers,
  });
  endWith(exchange, body);
  return exchange.isHead ? 0 : Buffer.byteLength(body);
}

/**
 * The bytes of a problem response written straight to an HTTP/1.1 socket, for refusals made before Node produced a request
 * (a parser error, a CONNECT): the same body and security headers as every other refusal, and `Connection: close`, since
 * the byte stream can no longer be trusted.
 */
export function rawProblemResponse(error: GatewayError, reasonPhrase: string, requestId: string): string {
  const body = problemBody(error, requestId);
  return (
    `HTTP/1.1 ${error.status} ${reasonPhrase}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `Strict-Transport-Security: ${HSTS_VALUE}\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: ${requestId}\r\n` +
    Object.entries(error.headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('') +
    `Cache-Control: no-store\r\nConnection: close\r\n\r\n${body}`
  );
}

/** The answer to an HTTP/2 CONNECT: 405 with the security headers and no body (there is no tunnel to speak into). */
export function refuseTunnel(res: Http2ServerResponse, requestId: string): void {
  res.writeHead(405, { 'strict-transport-security': HSTS_VALUE, 'x-content-type-options': 'nosniff', 'x-request-id': requestId, allow: '' });
  res.end();
}

function endWith(exchange: HttpExchange, body: string): void {
  if (exchange.isHead) exchange.res.end();
  else (exchange.res as Writable).end(body);
}

/**
 * Ends a response that already started as visibly failed. On HTTP/1.1 the connection is destroyed, so the client sees a short
 * body or an unterminated chunked stream. On HTTP/2 a plain destroy() resets the stream with NO_ERROR, which clients take as a
 * clean end (a silently truncated body), so the stream is reset with INTERNAL_ERROR instead.
 */
export function abortResponse(exchange: HttpExchange): void {
  const { res } = exchange;
  if ('stream' in res) res.stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR);
  else res.destroy();
}

/**
 * The client side is gone: HTTP/2 stream closed or reset, HTTP/1.1 response destroyed. (Http2ServerResponse has no
 * `destroyed`/`closed` of its own, so the stream is asked.)
 */
export function clientGone(exchange: HttpExchange): boolean {
  const { res } = exchange;
  if ('stream' in res) return res.stream.destroyed || res.stream.closed;
  return res.destroyed || res.closed;
}

/** The one reader of request bodies: what intakes and services get instead of the exchange. */
export function requestBody(exchange: HttpExchange): RequestBody {
  const { req } = exchange;
  return {
    header: (name) => {
      const value = req.headers[name];
      return Array.isArray(value) ? value.join(', ') : value;
    },
    read: (limit) => consumeBody(req, limit, true).then((result) => (result === 'read' ? Buffer.alloc(0) : result)),
    discard: (limit) => consumeBody(req, limit, false).then((result) => (Buffer.isBuffer(result) ? 'read' : result)),
  };
}

/**
 * Reads a request body to its end: the bytes (or 'read' when not kept), 'too_large' as soon as it crosses `limit`
 * (reading stops: the rest is never buffered), 'gone' when the stream failed or closed before its end.
 */
function consumeBody(req: ServerRequest, limit: number, keep: boolean): Promise<Buffer | 'read' | 'too_large' | 'gone'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (result: Buffer | 'read' | 'too_large' | 'gone'): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onClose);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        finish('too_large');
      } else if (keep) chunks.push(chunk);
    };
    const onEnd = (): void => finish(keep ? Buffer.concat(chunks, size) : 'read');
    const onGone = (): void => finish('gone');
    const onClose = (): void => {
      if (!req.complete) finish('gone');
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onGone);
    req.once('close', onClose);
  });
}

/** `Expect: 100-continue` is answered only for a request that was admitted (H1-12): the body is invited now. */
export function inviteBody(exchange: HttpExchange): void {
  const expect = exchange.req.headers.expect;
  if (expect !== undefined && expect.toLowerCase() === '100-continue') exchange.res.writeContinue();
}

/**
 * The request-body deadline passed before the body was complete: 408 (or, when a response already started, the response
 * cut), the flag the pipeline records what was sent from, and the request stream ended.
 */
export function answerBodyDeadline(exchange: HttpExchange): void {
  exchange.bodyDeadlinePassed = true;
  if (exchange.res.headersSent) abortResponse(exchange);
  else sendProblem(exchange, new GatewayError('request_timeout'), { close: true });
  const { req } = exchange;
  // On HTTP/2 destroying the request does not reset the stream (and 'close' would never reach the handler, which would
  // keep its upstream request open): the stream itself is cancelled.
  if ('stream' in req) req.stream.close(http2Constants.NGHTTP2_CANCEL);
  else req.destroy();
}
