// The built-in `echo` service: answers with the principal and the canonical request as the gateway saw them.
// Useful to check a route's authentication and canonicalization without an upstream; it never reflects credentials.
import { GatewayError } from '../errors/catalogue.js';
import type { AuthenticatedRequest, Handler } from '../pipeline/stage.js';
import { clientGone, sendJson, sendProblem, type HttpExchange } from '../server/exchange.js';

export class EchoService implements Handler {
  async handle(request: AuthenticatedRequest, exchange: HttpExchange): Promise<void> {
    // A body is never echoed; it is drained so the connection stays usable. The edge refuses a Content-Length over the
    // route limit; a chunked or HTTP/2 body without one is counted here and refused with 413 once it crosses the limit (H1-15).
    if (request.hasBody && !(await drain(exchange, request.route.bodyLimitBytes))) {
      // sendProblem aborts the stream instead when a response has already started; `close` ends an HTTP/1.1 connection
      // whose unread body can't be trusted for another request.
      if (!clientGone(exchange)) sendProblem(exchange, new GatewayError('payload_too_large', { reason: 'streamed body over route limit' }), { close: true });
      return;
    }
    if (exchange.res.headersSent || clientGone(exchange)) return;
    const { principal } = request;
    sendJson(exchange, 200, {
      request_id: request.id,
      route: request.route.id,
      principal: {
        subject: principal.subject,
        method: principal.method,
        scopes: [...principal.scopes],
        certificate_thumbprint: principal.certificateThumbprint ?? null,
      },
      request: {
        method: request.method,
        host: request.host,
        path: request.path,
        query: request.query,
        protocol: request.connection.protocol,
        client_ip: request.connection.clientAddress,
      },
    });
  }
}

/** Reads and discards the request body; resolves false (and stops reading) as soon as it crosses `limit`. */
function drain(exchange: HttpExchange, limit: number): Promise<boolean> {
  return new Promise((resolve) => {
    let seen = 0;
    const { req } = exchange;
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > limit) {
        req.off('data', onData);
        req.pause();
        resolve(false);
      }
    };
    req.on('data', onData);
    req.once('end', () => resolve(true));
    req.once('error', () => resolve(true));
    req.once('close', () => resolve(true));
  });
}
